//! Each reconciler's `run_once` processes nothing while its timer is not due and the due
//! execution once it is; `with_scanners` runs them in the background. (What each timer does to
//! an execution is in the conformance suite, through the `MaintenanceBackend` hooks.)

mod common;

use common::*;
use ff_backend_postgres::reconciler::{DelayedPromoter, LeaseExpiryReconciler, Reconciler, TimeoutReconciler};
use ff_core::*;

#[tokio::test]
async fn lease_expiry_reconciler_marks_a_due_lease_reclaimable() {
    let fx = Fixture::new().await;
    let id = fx.create("crash").await;
    fx.claim("crash", "dead").await;
    let r = LeaseExpiryReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone());
    assert_eq!(r.run_once().await.unwrap().processed, 0);
    fx.expire_lease(&id).await;
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    assert_eq!(fx.vector(&id).await.ownership_state, OwnershipState::LeaseExpiredReclaimable);
    assert_eq!(r.run_once().await.unwrap().processed, 0);
}

#[tokio::test]
async fn timeout_reconciler_expires_an_execution_past_its_deadline() {
    let fx = Fixture::new().await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("dl", |a| a.execution_deadline_at = Some(TimestampMs(now + 3_600_000))).await;
    let r = TimeoutReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone());
    assert_eq!(r.run_once().await.unwrap().processed, 0);
    fx.make_past(&id, "deadline_at_ms").await;
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    assert_eq!(fx.state(&id).await, PublicState::Expired);
}

#[tokio::test]
async fn delayed_promoter_relabels_due_executions() {
    let fx = Fixture::new().await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("promo", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    let promoter = DelayedPromoter::new(fx.pool().clone(), 100);
    assert_eq!(promoter.run_once().await.unwrap().processed, 0);
    fx.make_due(&id).await;
    assert_eq!(promoter.run_once().await.unwrap().processed, 1);
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
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
