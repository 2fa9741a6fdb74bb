//! Attempt ends: complete (single and batched), cancel, and delay with the resumed attempt.

use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Completion stores the result and makes the execution terminal; nobody can claim it again.
pub async fn complete_stores_the_result<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("done").await;
    let h = fx.claim("done", "w").await;
    fx.backend.complete(&h, Some(vec![1, 2, 3])).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(vec![1, 2, 3]));
    assert!(fx.try_claim("done", "w").await.is_none());
}

/// Each item of a batch completion is fenced on its own: a stale item and a foreign handle fail
/// without affecting the others.
pub async fn complete_batch_fences_each_item_on_its_own<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    fx.backend.create_executions((0..3).map(|_| args("cb")).collect()).await.unwrap();
    let hs = fx.backend.claim_batch(&lane_id("cb"), &CapabilitySet::empty(), policy("w"), 3).await.unwrap();
    assert_eq!(hs.len(), 3);
    let stale_id = payload(&hs[1]).execution_id;
    fx.make_past(&stale_id, Timer::LeaseExpiry).await;
    let stale_before = fx.fingerprint(&stale_id).await;
    let mut foreign = hs[2].clone();
    foreign.backend = other_backend(hs[2].backend);
    let results = fx
        .backend
        .complete_batch(vec![(hs[0].clone(), Some(b"a".to_vec())), (hs[1].clone(), None), (foreign, None)])
        .await
        .unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(matches!(results[1], Err(EngineError::State(StateKind::LeaseExpired))), "{:?}", results[1]);
    assert!(
        matches!(results[2], Err(EngineError::Validation { kind: ValidationKind::HandleFromOtherBackend, .. })),
        "{:?}",
        results[2]
    );
    let first = payload(&hs[0]).execution_id;
    assert_eq!(fx.state(&first).await, PublicState::Completed);
    assert_eq!(fx.backend.get_execution_result(&first).await.unwrap(), Some(b"a".to_vec()));
    assert_eq!(fx.state(&stale_id).await, PublicState::Active);
    assert_eq!(fx.fingerprint(&stale_id).await, stale_before);
    assert_eq!(fx.state(&payload(&hs[2]).execution_id).await, PublicState::Active);
    fx.backend.complete(&hs[2], None).await.unwrap();
}

/// A batch holding a stale handle of an execution ahead of its live one credits the live one:
/// the stale item is refused as stale, the live one succeeds, and the stored result is the
/// live lease's. (A stalled worker and the worker that reclaimed its execution may complete in
/// the same round trip when their calls are grouped.)
pub async fn complete_batch_credits_the_live_lease_not_a_stale_one<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("credit").await;
    let stale = fx.claim("credit", "stalled").await;
    fx.lose_lease(&id).await;
    let live = fx.claim("credit", "reclaimer").await;
    assert_eq!(live.kind, HandleKind::Reclaimed);
    let results = fx
        .backend
        .complete_batch(vec![(stale, Some(b"stale".to_vec())), (live, Some(b"live".to_vec()))])
        .await
        .unwrap();
    assert!(matches!(results[0], Err(EngineError::State(StateKind::StaleLease))), "{:?}", results[0]);
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"live".to_vec()));
}

/// Cancel by the lease holder is terminal, keeps the reason, and the execution is not claimable.
pub async fn cancel_by_the_lease_holder_is_terminal<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("cancel").await;
    let h = fx.claim("cancel", "w").await;
    fx.backend.cancel(&h, "user asked").await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Cancelled);
    assert_eq!(fx.snapshot(&id).await.blocking_detail.as_deref(), Some("user asked"));
    assert!(fx.try_claim("cancel", "w").await.is_none());
}

/// Delay releases the lease; once due, the next claim resumes the same attempt under a new epoch.
pub async fn delay_releases_the_lease_and_the_next_claim_resumes_the_same_attempt<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("resume").await;
    let h = fx.claim("resume", "w1").await;
    let now = fx.now().await;
    fx.backend.delay(&h, TimestampMs(now + 60_000)).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::Delay, Some(&ACTIVE)).unwrap());
    assert!(fx.snapshot(&id).await.current_lease.is_none(), "the lease is released");
    assert!(fx.try_claim("resume", "w2").await.is_none());
    fx.make_due(&id).await;
    let again = fx.claim("resume", "w2").await;
    assert_eq!(again.kind, HandleKind::Resumed);
    assert_eq!(payload(&again).attempt_index, payload(&h).attempt_index);
    assert_eq!(payload(&again).attempt_id, payload(&h).attempt_id);
    assert!(payload(&again).lease_epoch > payload(&h).lease_epoch);
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(1));
    fx.backend.complete(&again, None).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
}
