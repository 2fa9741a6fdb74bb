//! Reconcilers: background passes that fire timers and repair state.
//!
//! Every reconciler has one shape: a struct holding its pool and batch size, and
//! [`Reconciler::run_once`], which handles at most one batch of due rows in one statement and
//! reports how many it handled. [`drive`] is the one shared loop: it repeats `run_once` while
//! full batches come back, then sleeps its interval (with jitter), or less when the pass knows
//! when its next row is due or its wakeup fires, until cancelled. Started by
//! `PostgresBackend::with_scanners`, they run only while this process holds the reconcilers'
//! leader lease (see `leader`). Tests call `run_once` directly. All timers compare against
//! database time.

pub(crate) mod admission;
pub(crate) mod delayed;
pub(crate) mod dependency;
pub(crate) mod flow_cancel;
pub(crate) mod lease_expiry;
pub(crate) mod retention;
pub(crate) mod suspension;
pub(crate) mod timeout;
pub(crate) mod worker_liveness;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::EngineError;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use admission::{AdmissionReconciler, AdmissionRecountReconciler};
pub use delayed::DelayedPromoter;
pub use dependency::DependencyReconciler;
pub use flow_cancel::FlowCancelReconciler;
pub use lease_expiry::LeaseExpiryReconciler;
pub use retention::{RetentionConfig, RetentionReconciler};
pub use suspension::SuspensionReconciler;
pub use timeout::TimeoutReconciler;
pub use worker_liveness::WorkerLivenessReconciler;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Rows changed.
    pub processed: u64,
    /// The pass filled its batch: more may be due.
    pub batch_full: bool,
    /// How long until the next row this reconciler handles is due, when it knows: the driver
    /// sleeps no longer than that, so a timer fires at its time instead of at the next tick.
    pub next_due: Option<Duration>,
}

/// A background pass.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// Name used in logs.
    fn name(&self) -> &'static str;

    /// Handles one batch of due rows.
    async fn run_once(&self) -> Result<ReconcileReport, EngineError>;

    /// Woken when a row this reconciler handles became due sooner than it planned to run
    /// (`None`: it only runs on its interval).
    fn wakeup(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Runs `r` every `interval` (±10 % jitter), or sooner when its last pass said the next row is
/// due sooner or its wakeup fires, until `cancel` fires. Errors are logged and never stop the
/// loop.
pub async fn drive(r: Arc<dyn Reconciler>, interval: Duration, cancel: CancellationToken) {
    let (_always, leader) = tokio::sync::watch::channel(true);
    drive_while_leading(r, interval, cancel, leader, None).await;
}

/// Called after a pass that changed rows (it may have added events to the log).
pub(crate) type AfterChanges = Arc<dyn Fn() + Send + Sync>;

/// [`drive`], running passes only while `leader` says this process leads (see `leader`).
pub(crate) async fn drive_while_leading(
    r: Arc<dyn Reconciler>,
    interval: Duration,
    cancel: CancellationToken,
    mut leader: tokio::sync::watch::Receiver<bool>,
    after_changes: Option<AfterChanges>,
) {
    let wakeup = r.wakeup().unwrap_or_default();
    loop {
        if !crate::leader::wait_to_lead(&mut leader, &cancel).await {
            return;
        }
        let mut next_due = None;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            if !*leader.borrow() {
                break;
            }
            let pass = r.run_once().await;
            if let (Ok(report), Some(hook)) = (&pass, &after_changes)
                && report.processed > 0
            {
                hook();
            }
            match pass {
                Ok(report) if report.batch_full => continue,
                Ok(report) => {
                    next_due = report.next_due;
                    break;
                }
                Err(e) => {
                    tracing::warn!(reconciler = r.name(), error = %e, "reconciler pass failed");
                    break;
                }
            }
        }
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        let sleep = next_due.map_or(interval.mul_f64(jitter), |due| due.min(interval.mul_f64(jitter)));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
            _ = wakeup.notified() => {}
        }
    }
}
