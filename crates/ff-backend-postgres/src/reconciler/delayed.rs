//! Makes delayed executions (a delay, a retry backoff, a delayed create) claimable when their
//! time comes. Until then they are outside the claim index, so claims never walk past them.
//!
//! The pass reports when the next delayed execution is due and the driver sleeps exactly that
//! long; statements that delay work to an earlier time wake it through `ff_timer`
//! notifications ([`TimerWakeup`]). Promotion notifies the lanes of the promoted work, waking
//! long-polling claims.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::{EngineError, ExecutionId, LaneId};

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;
use crate::wakeup::TimerWakeup;
use tokio::sync::Notify;

/// Promotes up to `$1` due delayed executions; or, with `$2..$4`, only that execution
/// (partition, lane) if due. Returns the count, the next due time and the database time. See
/// `ff_promote_delayed` in the schema.
pub(crate) const PROMOTE_SQL: &str = "SELECT promoted, next_due_at_ms, now_ms FROM ff_promote_delayed($1, $2, $3, $4)";

/// Delayed-execution promoter: makes delayed executions claimable at their time. It sleeps
/// until the next one is due, and is woken sooner when work is delayed to an earlier time.
pub struct DelayedPromoter {
    pool: Db,
    batch_size: u32,
    interval: Duration,
    timer: Arc<TimerWakeup>,
}

impl DelayedPromoter {
    /// A promoter handling up to `batch_size` executions per pass, running at least every
    /// `interval`. Without a wakeup (see [`PostgresBackend::with_scanners`]) it learns of newly
    /// delayed work only at its next pass.
    ///
    /// [`PostgresBackend::with_scanners`]: crate::PostgresBackend::with_scanners
    pub fn new(pool: impl Into<Db>, batch_size: u32, interval: Duration) -> Self {
        let pool = pool.into();
        Self::with_timer(pool, batch_size, interval, Arc::default())
    }

    pub(crate) fn with_timer(pool: Db, batch_size: u32, interval: Duration, timer: Arc<TimerWakeup>) -> Self {
        Self { pool, batch_size: batch_size.max(1), interval, timer }
    }
}

#[async_trait]
impl Reconciler for DelayedPromoter {
    fn name(&self) -> &'static str {
        "delayed_promoter"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        // Until this pass knows the next due time, any newly delayed work wakes the promoter
        // again right after it, so nothing delayed during the pass is missed.
        self.timer.planned_at_ms.store(i64::MAX, Ordering::Relaxed);
        let (n, next_due_at_ms, now_ms): (i64, Option<i64>, i64) = sqlx::query_as(PROMOTE_SQL)
            .bind(i32::try_from(self.batch_size).unwrap_or(i32::MAX))
            .bind(None::<uuid::Uuid>)
            .bind(None::<i16>)
            .bind(None::<&str>)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
        let planned = next_due_at_ms.unwrap_or(i64::MAX).min(now_ms.saturating_add(interval_ms));
        self.timer.planned_at_ms.store(planned, Ordering::Relaxed);
        let n = n as u64;
        Ok(ReconcileReport {
            processed: n,
            batch_full: n >= u64::from(self.batch_size),
            next_due: next_due_at_ms.map(|due| Duration::from_millis(due.saturating_sub(now_ms).max(0) as u64)),
        })
    }

    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.timer.notify.clone())
    }
}

/// Promotes one execution if it is delayed on `lane` and due.
pub(crate) async fn promote_one(pool: &Db, lane: &LaneId, id: &ExecutionId) -> Result<(), EngineError> {
    sqlx::query(PROMOTE_SQL)
        .bind(0_i32)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(lane.as_str())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}
