//! Crash recovery: an expired lease becomes reclaimable, and a new attempt picks the work up,
//! either through a plain claim or through a reclaim grant; the reclaim cap fails the execution.

mod common;

use common::*;
use ff_backend_postgres::reconciler::{LeaseExpiryReconciler, Reconciler};
use ff_core::*;

fn reconciler(fx: &Fixture) -> LeaseExpiryReconciler {
    LeaseExpiryReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone())
}

#[tokio::test]
async fn expired_lease_is_marked_reclaimable_and_claimed_by_a_new_attempt() {
    let fx = Fixture::new().await;
    let id = fx.create("crash").await;
    let h = fx.claim("crash", "dead").await;
    // Not due yet: nothing happens.
    assert_eq!(reconciler(&fx).run_once().await.unwrap().processed, 0);
    fx.expire_lease(&id).await;
    assert_eq!(reconciler(&fx).run_once().await.unwrap().processed, 1);
    let v = fx.vector(&id).await;
    assert_eq!(v.ownership_state, OwnershipState::LeaseExpiredReclaimable);
    assert_eq!(v.public_state(), PublicState::Active);
    let r = fx.claim("crash", "alive").await;
    assert_eq!(r.kind, HandleKind::Reclaimed);
    assert_eq!(payload(&r).attempt_index, AttemptIndex(1));
    assert_eq!(payload(&r).lease_epoch.0, payload(&h).lease_epoch.0 + 1);
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.lease_reclaim_count, 1);
    assert_eq!(snap.total_attempt_count, 2);
    fx.backend.complete(&r, None).await.unwrap();
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind::text FROM ff_event WHERE execution_id = $1 ORDER BY tx_id, event_id")
            .bind(id.uuid())
            .fetch_all(fx.pool())
            .await
            .unwrap();
    assert_eq!(kinds, vec!["lease_acquired", "lease_expired", "lease_reclaimed", "completed"]);
}

#[tokio::test]
async fn reclaim_grant_admits_one_worker_and_mints_a_reclaimed_handle() {
    let fx = Fixture::new().await;
    let id = fx.create("grant").await;
    let _dead = fx.claim("grant", "dead").await;
    let grant_args = |worker: &str| IssueReclaimGrantArgs {
        execution_id: id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: lane_id("grant"),
        worker_capabilities: CapabilitySet::empty(),
        grant_ttl_ms: 10_000,
    };
    // A live lease is not reclaimable.
    match fx.backend.issue_reclaim_grant(grant_args("rescuer")).await.unwrap() {
        IssueReclaimGrantOutcome::NotReclaimable { detail, .. } => assert_eq!(detail, "lease is live"),
        other => panic!("{other:?}"),
    }
    // An expired lease is, even before the reconciler marks it.
    fx.expire_lease(&id).await;
    let grant = match fx.backend.issue_reclaim_grant(grant_args("rescuer")).await.unwrap() {
        IssueReclaimGrantOutcome::Granted(g) => g,
        other => panic!("{other:?}"),
    };
    let reclaim = |worker: &str, key: String| ReclaimExecutionArgs {
        execution_id: id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: lane_id("grant"),
        grant_key: key,
        lease_ttl_ms: 30_000,
    };
    // Another worker cannot use it.
    let e = fx.backend.reclaim_execution(reclaim("thief", grant.grant_key.clone())).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    let out = fx.backend.reclaim_execution(reclaim("rescuer", grant.grant_key.clone())).await.unwrap();
    let ReclaimExecutionOutcome::Claimed { handle, attempt_index } = out else { panic!("{out:?}") };
    assert_eq!(handle.kind, HandleKind::Reclaimed);
    assert_eq!(attempt_index, AttemptIndex(1));
    // The grant is consumed.
    let again = fx.backend.reclaim_execution(reclaim("rescuer", grant.grant_key)).await.unwrap();
    assert!(matches!(again, ReclaimExecutionOutcome::GrantNotFound { .. }), "{again:?}");
    fx.backend.complete(&handle, Some(b"saved".to_vec())).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
}

#[tokio::test]
async fn reclaim_cap_fails_the_execution() {
    let fx = Fixture::new().await;
    let id = fx
        .create_with("cap", |a| a.policy = Some(ExecutionPolicy { max_reclaim_count: Some(1), ..Default::default() }))
        .await;
    fx.claim("cap", "w1").await;
    fx.expire_lease(&id).await;
    reconciler(&fx).run_once().await.unwrap();
    let h = fx.claim("cap", "w2").await;
    assert_eq!(h.kind, HandleKind::Reclaimed);
    fx.expire_lease(&id).await;
    reconciler(&fx).run_once().await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Failed);
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.blocking_detail.as_deref(), Some("max_reclaims_exceeded"));
    assert!(fx.try_claim("cap", "w3").await.is_none());
}

#[tokio::test]
async fn mark_lease_expired_if_due_is_a_no_op_when_not_due() {
    let fx = Fixture::new().await;
    let id = fx.create("noop").await;
    fx.claim("noop", "w").await;
    let before = fx.fingerprint(&id).await;
    fx.backend.mark_lease_expired_if_due(Partition::execution(id.partition_index()), &id).await.unwrap();
    assert_eq!(fx.fingerprint(&id).await, before);
    let wrong = Partition::execution(id.partition_index().wrapping_add(1) % 256);
    assert_eq!(fx.backend.mark_lease_expired_if_due(wrong, &id).await.unwrap_err().code(), "invalid_input");
}

#[tokio::test]
async fn with_scanners_runs_the_reconcilers_in_the_background() {
    let fx = Fixture::new().await;
    let mut backend = ff_backend_postgres::PostgresBackend::from_pool(fx.pool().clone(), PartitionConfig::default());
    let cfg = ff_backend_postgres::PostgresScannerConfig {
        lease_expiry_interval: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    assert!(backend.with_scanners(cfg.clone()));
    let shared = backend.clone();
    assert!(!backend.with_scanners(cfg), "a shared Arc cannot start scanners");
    drop(shared);
    let id = fx.create("bg").await;
    let h = backend
        .claim(&lane_id("bg"), &CapabilitySet::empty(), ClaimPolicy::new("pool", "w", 50))
        .await
        .unwrap()
        .unwrap();
    let mut reclaimable = false;
    for _ in 0..200 {
        if fx.vector(&id).await.ownership_state == OwnershipState::LeaseExpiredReclaimable {
            reclaimable = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reclaimable, "the background lease-expiry reconciler marks the lease");
    assert!(backend.renew(&h).await.is_err());
    backend.shutdown_prepare(std::time::Duration::from_secs(5)).await.unwrap();
}
