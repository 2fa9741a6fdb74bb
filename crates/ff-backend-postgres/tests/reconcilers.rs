//! Each reconciler's `run_once` processes nothing while its timer is not due and the due
//! execution once it is; `with_scanners` runs them in the background. (What each timer does to
//! an execution is in the conformance suite, through the `MaintenanceBackend` hooks.)

mod common;

use common::*;
use ff_backend_postgres::reconciler::{
    DelayedPromoter, LeaseExpiryReconciler, Reconciler, SuspensionReconciler, TimeoutReconciler,
};
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
    let promoter = DelayedPromoter::new(fx.pool().clone(), 100, std::time::Duration::from_secs(1));
    let idle = promoter.run_once().await.unwrap();
    assert_eq!(idle.processed, 0);
    let next = idle.next_due.expect("the pass reports when the delayed execution is due");
    assert!(next > std::time::Duration::from_secs(3_500), "due in about an hour, not {next:?}");
    fx.make_past(&id, "eligible_at_ms").await;
    let pass = promoter.run_once().await.unwrap();
    assert_eq!(pass.processed, 1);
    assert_eq!(pass.next_due, None, "nothing else is delayed");
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
}

/// The promoter wakes at the due time of work delayed after it went to sleep, not at its
/// interval: with a one-hour interval, a long-polling claim still gets an execution delayed by
/// a fraction of a second, whether it was created delayed or delayed by its lease holder.
#[tokio::test]
async fn delayed_work_is_promoted_at_its_time_not_at_the_next_tick() {
    let fx = Fixture::new().await;
    let mut backend = ff_backend_postgres::PostgresBackend::from_pool(fx.pool().clone(), PartitionConfig::default());
    let hour = std::time::Duration::from_secs(3_600);
    let cfg = ff_backend_postgres::PostgresScannerConfig { delayed_promoter_interval: hour, ..Default::default() };
    assert!(backend.with_scanners(cfg));
    // Let the promoter run its first pass and go to sleep for the hour.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let now = backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("timer", |a| a.delay_until = Some(TimestampMs(now + 300))).await;
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    let mut policy = ClaimPolicy::new("pool", "w", 30_000);
    policy.max_wait = Some(std::time::Duration::from_secs(30));
    let h = backend.claim(&lane_id("timer"), &CapabilitySet::empty(), policy.clone()).await.unwrap();
    let h = h.expect("promoted at its time and handed to the waiting claim");
    assert_eq!(HandlePayload::from_handle(&h, BackendTag::Postgres).unwrap().execution_id, id);

    let now = backend.server_time_ms().await.unwrap() as i64;
    backend.delay(&h, TimestampMs(now + 300)).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    let again = backend.claim(&lane_id("timer"), &CapabilitySet::empty(), policy).await.unwrap();
    assert_eq!(again.expect("promoted again at its time").kind, HandleKind::Resumed);
    backend.shutdown_prepare(std::time::Duration::from_secs(5)).await.unwrap();
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

#[tokio::test]
async fn suspension_reconciler_applies_due_timeouts_and_closes_expired_waitpoints() {
    let fx = Fixture::new().await;
    let id = fx.create("susp-rec").await;
    let h = fx.claim("susp-rec", "w").await;
    let mut args = SuspendArgs::for_signal("approval", "approved");
    args.timeout_at = Some(TimestampMs(fx.backend.server_time_ms().await.unwrap() as i64 + 3_600_000));
    args.timeout_behavior = TimeoutBehavior::Expire;
    fx.backend.suspend(&h, args).await.unwrap();
    let other = fx.create("susp-rec").await;
    let h2 = fx.claim("susp-rec", "w").await;
    let wp = fx.backend.create_waitpoint(&h2, "cb", std::time::Duration::from_secs(600)).await.unwrap();
    let pass = SuspensionReconciler::new(fx.pool().clone(), 100);
    let report = pass.run_once().await.unwrap();
    assert_eq!(report.processed, 0, "nothing is due");
    assert!(report.next_due.is_some(), "it knows when the next one is due");
    sqlx::query("UPDATE ff_suspension SET timeout_at_ms = ff_now_ms() - 1 WHERE execution_id = $1")
        .bind(id.uuid())
        .execute(fx.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE ff_waitpoint SET expires_at_ms = ff_now_ms() - 1 WHERE execution_id = $1")
        .bind(other.uuid())
        .execute(fx.pool())
        .await
        .unwrap();
    assert_eq!(pass.run_once().await.unwrap().processed, 2);
    assert_eq!(fx.state(&id).await, PublicState::Expired);
    assert_eq!(fx.backend.read_waitpoint_token(&wp.waitpoint_id).await.unwrap(), None, "the waitpoint closed");
}

/// A suspension timeout set earlier than the suspension reconciler planned to wake wakes it:
/// with an hour-long interval, a suspension timing out in a fraction of a second auto-resumes
/// and a long-polling claim gets the resumed attempt.
#[tokio::test]
async fn a_suspension_timeout_is_applied_at_its_time_not_at_the_next_tick() {
    let fx = Fixture::new().await;
    let mut backend = ff_backend_postgres::PostgresBackend::from_pool(fx.pool().clone(), PartitionConfig::default());
    let hour = std::time::Duration::from_secs(3_600);
    let cfg = ff_backend_postgres::PostgresScannerConfig { suspension_interval: hour, ..Default::default() };
    assert!(backend.with_scanners(cfg));
    // Let the reconciler run its first pass and go to sleep for the hour.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let id = fx.create("susp-timer").await;
    let mut policy = ClaimPolicy::new("pool", "w", 30_000);
    policy.max_wait = Some(std::time::Duration::from_secs(30));
    let h = backend.claim(&lane_id("susp-timer"), &CapabilitySet::empty(), policy.clone()).await.unwrap().unwrap();
    let now = backend.server_time_ms().await.unwrap() as i64;
    let mut args = SuspendArgs::for_signal("approval", "approved");
    args.timeout_at = Some(TimestampMs(now + 300));
    args.timeout_behavior = TimeoutBehavior::AutoResumeWithTimeoutSignal;
    backend.suspend(&h, args).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Suspended);
    let resumed = backend.claim(&lane_id("susp-timer"), &CapabilitySet::empty(), policy).await.unwrap();
    let resumed = resumed.expect("resumed by its timeout at its time and handed to the waiting claim");
    assert_eq!(resumed.kind, HandleKind::Resumed);
    let signals = backend.observe_signals(&resumed).await.unwrap();
    assert_eq!(signals.last().map(|s| s.signal_name.as_str()), Some("timeout"));
    backend.shutdown_prepare(std::time::Duration::from_secs(5)).await.unwrap();
}
