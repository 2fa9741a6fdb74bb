//! Claims: ordering (priority, then FIFO), capability routing, delayed work, batches, claims with
//! context, renewal and progress.

use std::collections::BTreeSet;

use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// The highest priority is claimed first; equal priorities in creation order.
pub async fn highest_priority_first_then_fifo<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
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

/// A batch created in one call is claimed in submission order.
pub async fn batch_created_executions_are_claimed_in_submission_order<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let batch: Vec<_> = (0..50).map(|_| args("fifo")).collect();
    let ids: Vec<_> = batch.iter().map(|a| a.execution_id).collect();
    fx.backend.create_executions(batch).await.unwrap();
    let handles = fx.backend.claim_batch(&lane_id("fifo"), &CapabilitySet::empty(), policy("w"), 50).await.unwrap();
    let claimed: Vec<_> = handles.iter().map(|h| payload(h).execution_id).collect();
    assert_eq!(claimed, ids);
}

/// Only a worker holding every required capability claims a constrained execution; any worker
/// claims an unconstrained one.
pub async fn only_workers_with_every_required_capability_claim<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
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
    let h = fx.backend.claim(&lane, &caps(&[]), policy("plain")).await.unwrap().unwrap();
    assert_eq!(payload(&h).execution_id, any);
    let h = fx.backend.claim(&lane, &caps(&["gpu", "cuda12", "avx"]), policy("full")).await.unwrap().unwrap();
    assert_eq!(payload(&h).execution_id, gpu);
}

/// A delayed execution is not claimable until due; the promotion that fires at its time makes
/// it claimable (a higher-priority delayed execution does not hold up ready work meanwhile). A
/// delay to a time already past is eligible at once.
pub async fn delayed_execution_is_claimable_once_promoted<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let now = fx.now().await;
    let id = fx
        .create_with("delay", |a| {
            a.delay_until = Some(TimestampMs(now + 3_600_000));
            a.priority = 100;
        })
        .await;
    let ready = fx.create("delay").await;
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    let r = fx.claim("delay", "w").await;
    assert_eq!(payload(&r).execution_id, ready, "the delayed execution is skipped, the ready one taken");
    assert!(fx.try_claim("delay", "w").await.is_none());
    fx.make_past(&id, Timer::Eligible).await;
    fx.backend.promote_delayed(partition(&id), &lane_id("delay"), &id).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
    let h = fx.claim("delay", "w").await;
    assert_eq!(payload(&h).execution_id, id);
    assert_eq!(h.kind, HandleKind::Fresh);
    assert_eq!(fx.state(&id).await, PublicState::Active);

    // Parked until a time that has already passed: eligible at once, no promotion needed.
    fx.backend.delay(&h, TimestampMs(0)).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
    assert_eq!(fx.claim("delay", "w").await.kind, HandleKind::Resumed);
}

/// Claim order holds after a lane has been partly claimed: work arriving at a higher priority,
/// work released back with an earlier eligible time, and a lost lease are all taken before the
/// rest of the lane.
pub async fn order_holds_for_work_that_arrives_ahead_of_what_was_claimed<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let first = fx.create("ahead").await;
    let rest: Vec<ExecutionId> = create_many(&fx, 3).await;
    let h = fx.claim("ahead", "w").await;
    assert_eq!(payload(&h).execution_id, first);
    assert_eq!(payload(&fx.claim("ahead", "w").await).execution_id, rest[0]);

    let urgent = fx.create_with("ahead", |a| a.priority = 5).await;
    assert_eq!(payload(&fx.claim("ahead", "w").await).execution_id, urgent, "a higher priority goes first");

    // Released back at once: it is eligible again with its earlier eligible time.
    fx.backend.delay(&h, TimestampMs(0)).await.unwrap();
    assert_eq!(payload(&fx.claim("ahead", "w").await).execution_id, first, "released work keeps its place");
    fx.lose_lease(&first).await;
    assert_eq!(payload(&fx.claim("ahead", "w").await).execution_id, first, "a lost lease keeps its place");
    assert_eq!(payload(&fx.claim("ahead", "w").await).execution_id, rest[1]);
}

async fn create_many<H: ConformanceHarness>(fx: &Fixture<H>, n: usize) -> Vec<ExecutionId> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(fx.create("ahead").await);
    }
    ids
}

/// An empty lane answers `None` (and an empty batch) at once.
pub async fn empty_lane_returns_no_work<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    assert!(fx.try_claim("idle", "w").await.is_none());
    let none = fx.backend.claim_batch(&lane_id("idle"), &CapabilitySet::empty(), policy("w"), 5).await.unwrap();
    assert!(none.is_empty());
}

/// Renewal keeps the epoch and extends the expiry; progress is stored; the lease names its worker.
pub async fn renew_and_progress_update_the_lease<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("renew").await;
    let h = fx.claim("renew", "w").await;
    let before = fx.snapshot(&id).await.current_lease.unwrap();
    let r = fx.backend.renew(&h).await.unwrap();
    assert_eq!(r.lease_epoch, payload(&h).lease_epoch);
    assert!(r.expires_at_ms >= before.expires_at);
    fx.backend.progress(&h, Some(42), Some("halfway".into())).await.unwrap();
    let snap = fx.snapshot(&id).await;
    assert_eq!(snap.progress_pct, Some(42));
    assert_eq!(snap.progress_message.as_deref(), Some("halfway"));
    assert_eq!(snap.current_lease.unwrap().worker_instance_id.as_str(), "w");
}

/// `claim_with_context` returns each lease with its execution's kind, input and tags, one at a
/// time or in a batch, for fresh and reclaimed leases alike; `max == 0` is invalid.
pub async fn claims_with_context_return_what_the_handler_needs<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let tagged = fx
        .create_with("ctx", |a| {
            a.priority = 9;
            a.input_payload = b"{\"n\":1}".to_vec();
            a.execution_kind = "resize".into();
            a.tags.insert("app.owner".into(), "ann".into());
        })
        .await;
    let plain = fx.create("ctx").await;
    let third = fx.create("ctx").await;
    let lane = lane_id("ctx");
    let caps = CapabilitySet::empty();

    let one = fx.backend.claim_with_context(&lane, &caps, policy("w1"), 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(payload(&one[0].handle).execution_id, tagged);
    assert_eq!(one[0].context, fx.backend.read_execution_context(&tagged).await.unwrap());
    assert_eq!(one[0].context.tags.get("app.owner").map(String::as_str), Some("ann"));

    let many = fx.backend.claim_with_context(&lane, &caps, policy("w2"), 5).await.unwrap();
    let ids: Vec<_> = many.iter().map(|l| payload(&l.handle).execution_id).collect();
    assert_eq!(ids, vec![plain, third]);
    for l in &many {
        assert_eq!(
            (l.context.execution_kind.as_str(), l.context.input_payload.as_slice()),
            ("test.kind", &b"input"[..])
        );
    }

    // A reclaim carries the context too, and its handle is fenced like any other.
    fx.lose_lease(&tagged).await;
    let again = fx.backend.claim_with_context(&lane, &caps, policy("w3"), 1).await.unwrap();
    assert_eq!(again[0].handle.kind, HandleKind::Reclaimed);
    assert_eq!(again[0].context.execution_kind, "resize");
    let e = fx.backend.complete(&one[0].handle, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "the superseded lease is fenced out: {e:?}");
    fx.backend.complete(&again[0].handle, None).await.unwrap();

    assert!(fx.backend.claim_with_context(&lane, &caps, policy("w4"), 1).await.unwrap().is_empty());
    let e = fx.backend.claim_with_context(&lane, &caps, policy("w4"), 0).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
}
