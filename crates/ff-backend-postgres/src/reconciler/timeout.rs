//! Expires executions past their execution deadline or whose running attempt exceeded its
//! attempt timeout: terminal `expired`, attempt closed, `expired` event.

use std::sync::Arc;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::backend::ExpirePhase;
use ff_core::{EngineError, ExecutionId};

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;
use crate::metrics::Metrics;

/// Expires up to `$1` due executions of each kind; or, with `$2..$4`, only that execution
/// (partition) for one timer. See `ff_expire_executions` in the schema.
pub(crate) const EXPIRE_EXECUTIONS_SQL: &str = "SELECT ff_expire_executions($1, $2, $3, $4)";

/// Attempt-timeout and execution-deadline reconciler.
pub struct TimeoutReconciler {
    pool: Db,
    batch_size: u32,
    metrics: Arc<Metrics>,
}

impl TimeoutReconciler {
    /// A reconciler handling up to `batch_size` executions of each kind per pass.
    pub fn new(pool: impl Into<Db>, batch_size: u32, metrics: Arc<Metrics>) -> Self {
        let pool = pool.into();
        Self { pool, batch_size: batch_size.max(1), metrics }
    }
}

#[async_trait]
impl Reconciler for TimeoutReconciler {
    fn name(&self) -> &'static str {
        "timeout"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let n: i64 = sqlx::query_scalar(EXPIRE_EXECUTIONS_SQL)
            .bind(i32::try_from(self.batch_size).unwrap_or(i32::MAX))
            .bind(None::<uuid::Uuid>)
            .bind(None::<i16>)
            .bind(None::<&str>)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let n = n as u64;
        Metrics::add(&self.metrics.expirations, n);
        Ok(ReconcileReport { processed: n, batch_full: n >= u64::from(self.batch_size), next_due: None })
    }
}

/// Expires one execution if due for `phase`; returns whether it did.
pub(crate) async fn expire_one(pool: &Db, id: &ExecutionId, phase: ExpirePhase) -> Result<bool, EngineError> {
    let n: i64 = sqlx::query_scalar(EXPIRE_EXECUTIONS_SQL)
        .bind(0_i32)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(phase.as_str())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(n > 0)
}
