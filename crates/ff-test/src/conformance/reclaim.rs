//! Reclaim: an expired lease becomes reclaimable, and a new attempt takes the work over, through
//! a plain claim or a reclaim grant; the reclaim cap fails the execution.

use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// The expiry hook does nothing before the lease is due; once due the execution is reclaimable
/// and a plain claim takes it as `Reclaimed`, a new attempt under the next epoch.
pub async fn plain_claim_reclaims_an_expired_lease<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("crash").await;
    let h = fx.claim("crash", "dead").await;
    let live = fx.fingerprint(&id).await;
    fx.backend.mark_lease_expired_if_due(partition(&id), &id).await.unwrap();
    assert_eq!(fx.fingerprint(&id).await, live, "not due: a no-op");
    assert_eq!(fx.vector(&id).await, ACTIVE);

    fx.lose_lease(&id).await;
    let v = fx.vector(&id).await;
    assert_eq!(v.ownership_state, OwnershipState::LeaseExpiredReclaimable);
    assert_eq!(v.public_state(), PublicState::Active);
    let r = fx.claim("crash", "alive").await;
    assert_eq!(r.kind, HandleKind::Reclaimed);
    assert_eq!(payload(&r).attempt_index, AttemptIndex(1));
    assert_eq!(payload(&r).lease_epoch.0, payload(&h).lease_epoch.0 + 1);
    let snap = fx.snapshot(&id).await;
    assert_eq!(snap.lease_reclaim_count, 1);
    assert_eq!(snap.total_attempt_count, 2);
    fx.backend.complete(&r, None).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
}

/// The expiry hook rejects a partition that is not the execution's, writing nothing.
pub async fn lease_expiry_hook_rejects_the_wrong_partition<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("noop").await;
    fx.claim("noop", "w").await;
    fx.make_past(&id, Timer::LeaseExpiry).await;
    let before = fx.fingerprint(&id).await;
    let wrong = Partition::execution(id.partition_index().wrapping_add(1) % 256);
    let e = fx.backend.mark_lease_expired_if_due(wrong, &id).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert_eq!(fx.fingerprint(&id).await, before);
}

fn grant_args(id: ExecutionId, worker: &str) -> IssueReclaimGrantArgs {
    IssueReclaimGrantArgs {
        execution_id: id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: lane_id("grant"),
        worker_capabilities: CapabilitySet::empty(),
        grant_ttl_ms: 10_000,
    }
}

fn reclaim_args(id: ExecutionId, worker: &str, key: String) -> ReclaimExecutionArgs {
    ReclaimExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: lane_id("grant"),
        grant_key: key,
        lease_ttl_ms: 30_000,
    }
}

/// A live lease is not reclaimable; an expired one is (even before the expiry hook ran); the
/// grant admits only its worker, once, and mints a `Reclaimed` handle for a new attempt.
pub async fn reclaim_grant_admits_one_worker_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("grant").await;
    let dead = fx.claim("grant", "dead").await;
    match fx.backend.issue_reclaim_grant(grant_args(id, "rescuer")).await.unwrap() {
        IssueReclaimGrantOutcome::NotReclaimable { detail, .. } => assert_eq!(detail, "lease is live"),
        other => panic!("{other:?}"),
    }
    fx.make_past(&id, Timer::LeaseExpiry).await;
    let grant = match fx.backend.issue_reclaim_grant(grant_args(id, "rescuer")).await.unwrap() {
        IssueReclaimGrantOutcome::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    assert_eq!(grant.execution_id, id);
    let e = fx.backend.reclaim_execution(reclaim_args(id, "thief", grant.grant_key.clone())).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input", "another worker cannot use the grant");
    let out = fx.backend.reclaim_execution(reclaim_args(id, "rescuer", grant.grant_key.clone())).await.unwrap();
    let ReclaimExecutionOutcome::Claimed { handle, attempt_index } = out else { panic!("{out:?}") };
    assert_eq!(handle.kind, HandleKind::Reclaimed);
    assert_eq!(attempt_index, AttemptIndex(1));
    assert_eq!(payload(&handle).attempt_index, AttemptIndex(1));
    let again = fx.backend.reclaim_execution(reclaim_args(id, "rescuer", grant.grant_key)).await.unwrap();
    assert!(matches!(again, ReclaimExecutionOutcome::GrantNotFound { .. }), "the grant is consumed: {again:?}");
    let e = fx.backend.complete(&dead, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    fx.backend.complete(&handle, Some(b"saved".to_vec())).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"saved".to_vec()));
}

/// Losing the lease at the reclaim cap fails the execution, and nobody can claim it.
pub async fn reclaim_cap_fails_the_execution<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx
        .create_with("cap", |a| a.policy = Some(ExecutionPolicy { max_reclaim_count: Some(1), ..Default::default() }))
        .await;
    fx.claim("cap", "w1").await;
    fx.lose_lease(&id).await;
    let h = fx.claim("cap", "w2").await;
    assert_eq!(h.kind, HandleKind::Reclaimed);
    fx.lose_lease(&id).await;
    assert_eq!(fx.state(&id).await, PublicState::Failed);
    assert_eq!(fx.snapshot(&id).await.blocking_detail.as_deref(), Some("max_reclaims_exceeded"));
    assert!(fx.try_claim("cap", "w3").await.is_none());
}
