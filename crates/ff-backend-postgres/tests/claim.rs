//! Claim ordering (priority, then FIFO), capability routing, delays, batches and long-polls.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ff_core::*;

#[tokio::test]
async fn claims_highest_priority_first_then_fifo() {
    let fx = Fixture::new().await;
    let low1 = fx.create_with("prio", |a| a.priority = 1).await;
    let high1 = fx.create_with("prio", |a| a.priority = 500).await;
    let low2 = fx.create_with("prio", |a| a.priority = 1).await;
    let high2 = fx.create_with("prio", |a| a.priority = 500).await;
    let mut order = Vec::new();
    while let Some(h) = fx.try_claim("prio", "w").await {
        order.push(payload(&h).execution_id);
    }
    assert_eq!(order, vec![high1, high2, low1, low2]);
}

#[tokio::test]
async fn batch_created_executions_are_claimed_in_submission_order() {
    let fx = Fixture::new().await;
    let batch: Vec<_> = (0..50).map(|_| args("fifo")).collect();
    let ids: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    fx.backend.create_executions(batch).await.unwrap();
    let handles = fx.backend.claim_batch(&lane_id("fifo"), &CapabilitySet::empty(), policy("w"), 50).await.unwrap();
    let claimed: Vec<_> = handles.iter().map(|h| payload(h).execution_id).collect();
    assert_eq!(claimed, ids);
}

#[tokio::test]
async fn only_workers_with_every_required_capability_claim() {
    let fx = Fixture::new().await;
    let gpu = fx
        .create_with("caps", |a| {
            a.policy = Some(ExecutionPolicy {
                routing_requirements: Some(RoutingRequirements {
                    required_capabilities: BTreeSet::from(["gpu".to_owned(), "cuda12".to_owned()]),
                }),
                ..Default::default()
            })
        })
        .await;
    let caps = |c: &[&str]| CapabilitySet::try_from_iter(c.iter().copied()).unwrap();
    let lane = lane_id("caps");
    assert!(fx.backend.claim(&lane, &caps(&[]), policy("plain")).await.unwrap().is_none());
    assert!(fx.backend.claim(&lane, &caps(&["gpu"]), policy("half")).await.unwrap().is_none());
    let any = fx.create("caps").await;
    // A worker without capabilities still gets the unconstrained execution.
    let h = fx.backend.claim(&lane, &caps(&[]), policy("plain")).await.unwrap().unwrap();
    assert_eq!(payload(&h).execution_id, any);
    let h = fx.backend.claim(&lane, &caps(&["gpu", "cuda12", "avx"]), policy("full")).await.unwrap().unwrap();
    assert_eq!(payload(&h).execution_id, gpu);
}

#[tokio::test]
async fn delayed_execution_is_claimable_once_due_even_before_promotion() {
    let fx = Fixture::new().await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("delay", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    assert!(fx.try_claim("delay", "w").await.is_none());
    fx.make_due(&id).await;
    let h = fx.claim("delay", "w").await;
    assert_eq!(payload(&h).execution_id, id);
    assert_eq!(h.kind, HandleKind::Fresh);
    assert_eq!(fx.state(&id).await, PublicState::Active);
}

#[tokio::test]
async fn delay_releases_the_lease_and_the_next_claim_resumes_the_same_attempt() {
    let fx = Fixture::new().await;
    let id = fx.create("resume").await;
    let h = fx.claim("resume", "w1").await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    fx.backend.delay(&h, TimestampMs(now + 60_000)).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::Delay, Some(&ACTIVE)).unwrap());
    assert!(fx.try_claim("resume", "w2").await.is_none());
    fx.make_due(&id).await;
    let again = fx.claim("resume", "w2").await;
    assert_eq!(again.kind, HandleKind::Resumed);
    assert_eq!(payload(&again).attempt_index, payload(&h).attempt_index);
    assert_eq!(payload(&again).attempt_id, payload(&h).attempt_id);
    assert!(payload(&again).lease_epoch > payload(&h).lease_epoch);
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(1));
    fx.backend.complete(&again, None).await.unwrap();
}

#[tokio::test]
async fn complete_batch_fences_each_item_on_its_own() {
    let fx = Fixture::new().await;
    fx.backend.create_executions((0..3).map(|_| args("cb")).collect()).await.unwrap();
    let hs = fx.backend.claim_batch(&lane_id("cb"), &CapabilitySet::empty(), policy("w"), 3).await.unwrap();
    assert_eq!(hs.len(), 3);
    let stale_id = payload(&hs[1]).execution_id;
    fx.expire_lease(&stale_id).await;
    let mut foreign = hs[2].clone();
    foreign.backend = BackendTag::Sqlite;
    let results = fx
        .backend
        .complete_batch(vec![(hs[0].clone(), Some(b"a".to_vec())), (hs[1].clone(), None), (foreign, None)])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(EngineError::State(StateKind::LeaseExpired))), "{:?}", results[1]);
    assert!(matches!(results[2], Err(EngineError::Validation { kind: ValidationKind::HandleFromOtherBackend, .. })));
    assert_eq!(fx.state(&payload(&hs[0]).execution_id).await, PublicState::Completed);
    assert_eq!(fx.state(&stale_id).await, PublicState::Active);
    assert_eq!(fx.state(&payload(&hs[2]).execution_id).await, PublicState::Active);
    fx.backend.complete(&hs[2], None).await.unwrap();
}

#[tokio::test]
async fn empty_lane_returns_none_and_long_poll_waits_for_work() {
    let fx = Fixture::new().await;
    assert!(fx.try_claim("idle", "w").await.is_none());
    let backend = fx.backend.clone();
    let waiter = tokio::spawn(async move {
        let mut p = policy("waiter");
        p.max_wait = Some(Duration::from_secs(10));
        backend.claim(&lane_id("idle"), &CapabilitySet::empty(), p).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = fx.create("idle").await;
    let h = waiter.await.unwrap().unwrap().expect("long-poll picks up new work");
    assert_eq!(payload(&h).execution_id, id);
}

#[tokio::test]
async fn claim_renew_progress_update_the_lease() {
    let fx = Fixture::new().await;
    let id = fx.create("renew").await;
    let h = fx.claim("renew", "w").await;
    let before = fx.backend.describe_execution(&id).await.unwrap().unwrap().current_lease.unwrap();
    let r = fx.backend.renew(&h).await.unwrap();
    assert_eq!(r.lease_epoch, payload(&h).lease_epoch);
    assert!(r.expires_at_ms >= before.expires_at);
    fx.backend.progress(&h, Some(42), Some("halfway".into())).await.unwrap();
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.progress_pct, Some(42));
    assert_eq!(snap.progress_message.as_deref(), Some("halfway"));
    assert_eq!(snap.current_lease.unwrap().worker_instance_id.as_str(), "w");
}

#[tokio::test]
async fn new_and_reclaimable_work_notifies_its_lane_on_commit() {
    let fx = Fixture::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(fx.pool()).await.unwrap();
    listener.listen("ff_lane_ready").await.unwrap();
    let id = fx.create("notify-me").await;
    assert_eq!(next(&mut listener).await.payload(), "notify-me");
    // Delayed work is not claimable yet: no notification for it.
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    fx.create_with("later", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    fx.claim("notify-me", "w").await;
    fx.expire_lease(&id).await;
    fx.backend.mark_lease_expired_if_due(Partition::execution(id.partition_index()), &id).await.unwrap();
    assert_eq!(next(&mut listener).await.payload(), "notify-me", "a reclaimable lease wakes its lane");
}

async fn next(l: &mut sqlx::postgres::PgListener) -> sqlx::postgres::PgNotification {
    tokio::time::timeout(Duration::from_secs(10), l.recv()).await.expect("a notification").unwrap()
}

#[tokio::test]
async fn claims_with_context_return_what_the_handler_needs_in_the_same_round_trip() {
    let f = Fixture::new().await;
    let tagged = f
        .create_with("ctx", |a| {
            a.priority = 9;
            a.input_payload = b"{\"n\":1}".to_vec();
            a.execution_kind = "resize".into();
            a.tags.insert("app.owner".into(), "ann".into());
        })
        .await;
    let plain = f.create("ctx").await;
    let third = f.create("ctx").await;

    // One at a time (through the group committer).
    let one = f.backend.claim_with_context(&lane_id("ctx"), &CapabilitySet::empty(), policy("w1"), 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(payload(&one[0].handle).execution_id, tagged);
    assert_eq!(one[0].context, f.backend.read_execution_context(&tagged).await.unwrap());
    assert_eq!(one[0].context.tags.get("app.owner").map(String::as_str), Some("ann"));

    // A batch.
    let many = f.backend.claim_with_context(&lane_id("ctx"), &CapabilitySet::empty(), policy("w2"), 5).await.unwrap();
    let ids: Vec<_> = many.iter().map(|l| payload(&l.handle).execution_id).collect();
    assert_eq!(ids, vec![plain, third]);
    for l in &many {
        assert_eq!(
            (l.context.execution_kind.as_str(), l.context.input_payload.as_slice()),
            ("test.kind", &b"input"[..])
        );
    }

    // A reclaim carries the context too, and its handle is fenced like any other.
    f.expire_lease(&tagged).await;
    f.backend.mark_lease_expired_if_due(Partition::execution(tagged.partition_index()), &tagged).await.unwrap();
    let again = f.backend.claim_with_context(&lane_id("ctx"), &CapabilitySet::empty(), policy("w3"), 1).await.unwrap();
    assert_eq!(again[0].handle.kind, HandleKind::Reclaimed);
    assert_eq!(again[0].context.execution_kind, "resize");
    assert!(f.backend.complete(&one[0].handle, None).await.is_err(), "the superseded lease is fenced out");
    f.backend.complete(&again[0].handle, None).await.unwrap();

    let none = f.backend.claim_with_context(&lane_id("ctx"), &CapabilitySet::empty(), policy("w4"), 1).await.unwrap();
    assert!(none.is_empty());
    let err =
        f.backend.claim_with_context(&lane_id("ctx"), &CapabilitySet::empty(), policy("w4"), 0).await.unwrap_err();
    assert_eq!(err.code(), "invalid_input");
}
