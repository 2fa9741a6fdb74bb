//! The suspension reconciler: applies due suspension timeouts by their behaviour
//! (`ff_expire_suspensions`) and closes pending waitpoints past their lifetime
//! (`ff_expire_waitpoints`). Each pass reports when the next of either is due, so the driver
//! sleeps no longer than that.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::EngineError;
use tokio::sync::Notify;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;
use crate::wakeup::TimerWakeup;

/// Applies up to `$1` due suspension timeouts and closes up to `$1` expired pending waitpoints;
/// returns both counts, the next due time of either, and the database time.
pub(crate) const SUSPENSION_PASS_SQL: &str = "SELECT ff_expire_suspensions($1) AS timeouts, \
     ff_expire_waitpoints($1) AS waitpoints, \
     least((SELECT min(timeout_at_ms) FROM ff_suspension WHERE open AND timeout_at_ms IS NOT NULL), \
           (SELECT min(expires_at_ms) FROM ff_waitpoint WHERE state = 'pending')) AS next_due_ms, \
     ff_now_ms() AS now_ms";

/// Suspension timeouts and pending-waitpoint expiry.
pub struct SuspensionReconciler {
    pool: Db,
    batch_size: u32,
    interval: Duration,
    timer: Arc<TimerWakeup>,
}

impl SuspensionReconciler {
    /// A reconciler handling up to `batch_size` timeouts and waitpoints per pass. Without a
    /// wakeup (see [`PostgresBackend::with_scanners`]) it learns of an earlier new timeout only
    /// at its next pass.
    ///
    /// [`PostgresBackend::with_scanners`]: crate::PostgresBackend::with_scanners
    pub fn new(pool: impl Into<Db>, batch_size: u32) -> Self {
        let pool = pool.into();
        Self::with_timer(pool, batch_size, Duration::from_secs(1), Arc::default())
    }

    pub(crate) fn with_timer(pool: Db, batch_size: u32, interval: Duration, timer: Arc<TimerWakeup>) -> Self {
        Self { pool, batch_size: batch_size.max(1), interval, timer }
    }
}

#[async_trait]
impl Reconciler for SuspensionReconciler {
    fn name(&self) -> &'static str {
        "suspension"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        // Until this pass knows the next due time, anything announced wakes it again after.
        self.timer.planned_at_ms.store(i64::MAX, Ordering::Relaxed);
        let limit = i32::try_from(self.batch_size).unwrap_or(i32::MAX);
        let (timeouts, waitpoints, next_due, now): (i32, i32, Option<i64>, i64) =
            sqlx::query_as(SUSPENSION_PASS_SQL).bind(limit).fetch_one(&self.pool).await.map_err(map_sqlx)?;
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let planned = next_due.unwrap_or(i64::MAX).min(now.saturating_add(interval_ms));
        self.timer.planned_at_ms.store(planned, Ordering::Relaxed);
        let n = (timeouts.max(0) + waitpoints.max(0)) as u64;
        Ok(ReconcileReport {
            processed: n,
            batch_full: timeouts >= limit || waitpoints >= limit,
            next_due: next_due.map(|due| Duration::from_millis(due.saturating_sub(now).max(0) as u64)),
        })
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.timer.notify.clone())
    }
}
