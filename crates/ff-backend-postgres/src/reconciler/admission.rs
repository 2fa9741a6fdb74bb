//! The admission reconcilers.
//!
//! [`AdmissionReconciler`] fires admission's timers: executions held back only by a quota
//! policy's rate window are admitted when its oldest entry ages out (woken by
//! `ff_quota_timer`), budgets whose reset time has come are reset, and lapsed claim grants are
//! reaped. Each pass reports when the next window opens or reset is due.
//!
//! [`AdmissionRecountReconciler`] is the backstop: it recounts every quota policy's slots and
//! re-derives every budget's exhaustion from the rows that hold them, admitting or parking
//! what a lost race left behind. The counters are kept exact by the transactions that take and
//! release slots; this only repairs what a bug or a manual edit broke.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::{EngineError, Partition, PartitionConfig, PartitionFamily};
use tokio::sync::Notify;

use super::{ReconcileReport, Reconciler};
use crate::admission::{budget, grant, quota};
use crate::error::map_sqlx;
use crate::wakeup::TimerWakeup;

/// The database clock.
pub(crate) const ADMISSION_NOW_SQL: &str = "SELECT ff_now_ms()";

/// Rate windows, budget resets and grant expiry.
pub struct AdmissionReconciler {
    pool: Db,
    batch_size: u32,
    interval: Duration,
    timer: Arc<TimerWakeup>,
}

impl AdmissionReconciler {
    /// A reconciler handling up to `batch_size` policies, budgets and grants per pass, without a
    /// wakeup (it learns of a newly limited window at its next pass).
    pub fn new(pool: impl Into<Db>, batch_size: u32) -> Self {
        let pool = pool.into();
        Self::with_timer(pool, batch_size, Duration::from_secs(1), Arc::default())
    }

    pub(crate) fn with_timer(pool: Db, batch_size: u32, interval: Duration, timer: Arc<TimerWakeup>) -> Self {
        Self { pool, batch_size: batch_size.max(1), interval, timer }
    }
}

#[async_trait]
impl Reconciler for AdmissionReconciler {
    fn name(&self) -> &'static str {
        "admission"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        self.timer.planned_at_ms.store(i64::MAX, Ordering::Relaxed);
        let limit = i64::from(self.batch_size);
        let (admitted, next_window) = quota::admit_due(&self.pool, limit).await?;
        let (reset, next_reset) = budget::reset_due(&self.pool, limit).await?;
        let reaped = grant::reap(&self.pool, limit).await?;
        let (now,): (i64,) = sqlx::query_as(ADMISSION_NOW_SQL).fetch_one(&self.pool).await.map_err(map_sqlx)?;
        let next_due = [next_window, next_reset].into_iter().flatten().map(|t| t.0).min();
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        self.timer
            .planned_at_ms
            .store(next_due.unwrap_or(i64::MAX).min(now.saturating_add(interval_ms)), Ordering::Relaxed);
        Ok(ReconcileReport {
            processed: admitted as u64 + reset as u64 + reaped,
            batch_full: admitted as i64 >= limit || reset as i64 >= limit || reaped as i64 >= limit,
            next_due: next_due.map(|due| Duration::from_millis(due.saturating_sub(now).max(0) as u64)),
        })
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.timer.notify.clone())
    }
}

/// Recounts of quota slots and budget exhaustion, one partition of each per pass.
pub struct AdmissionRecountReconciler {
    pool: Db,
    partitions: PartitionConfig,
    next: std::sync::Mutex<(u16, u16)>,
}

impl AdmissionRecountReconciler {
    /// A reconciler that walks the quota and budget partitions of `partitions` round-robin.
    pub fn new(pool: impl Into<Db>, partitions: PartitionConfig) -> Self {
        let pool = pool.into();
        Self { pool, partitions, next: std::sync::Mutex::new((0, 0)) }
    }
}

#[async_trait]
impl Reconciler for AdmissionRecountReconciler {
    fn name(&self) -> &'static str {
        "admission_recount"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let (q, b) = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let current = *next;
            next.0 = (current.0 + 1) % self.partitions.num_quota_partitions.max(1);
            next.1 = (current.1 + 1) % self.partitions.num_budget_partitions.max(1);
            current
        };
        let quotas =
            quota::reconcile(&self.pool, &self.partitions, Partition { family: PartitionFamily::Quota, index: q })
                .await?;
        let budgets =
            budget::reconcile(&self.pool, &self.partitions, Partition { family: PartitionFamily::Budget, index: b })
                .await?;
        Ok(ReconcileReport { processed: quotas.repaired + budgets.repaired, batch_full: false, next_due: None })
    }
}
