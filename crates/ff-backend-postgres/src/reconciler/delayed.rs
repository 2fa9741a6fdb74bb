//! Relabels delayed executions whose time has come as eligible.
//!
//! Claims do not depend on this pass: the claim statement already takes a delayed execution once
//! its time has passed. This pass keeps the stored state (and so `public_state`) truthful.

use async_trait::async_trait;
use ff_core::{EngineError, ExecutionId, LaneId};
use sqlx::PgPool;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;

/// Promotes up to `$1` due delayed executions; or, with `$2..$4`, only that execution
/// (partition, lane) if due. See `ff_promote_delayed` in the schema.
pub(crate) const PROMOTE_SQL: &str = "SELECT ff_promote_delayed($1, $2, $3, $4)";

/// Delayed-execution promoter.
pub struct DelayedPromoter {
    pool: PgPool,
    batch_size: u32,
}

impl DelayedPromoter {
    /// A promoter handling up to `batch_size` executions per pass.
    pub fn new(pool: PgPool, batch_size: u32) -> Self {
        Self { pool, batch_size: batch_size.max(1) }
    }
}

#[async_trait]
impl Reconciler for DelayedPromoter {
    fn name(&self) -> &'static str {
        "delayed_promoter"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let n: i64 = sqlx::query_scalar(PROMOTE_SQL)
            .bind(i32::try_from(self.batch_size).unwrap_or(i32::MAX))
            .bind(None::<uuid::Uuid>)
            .bind(None::<i16>)
            .bind(None::<&str>)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let n = n as u64;
        Ok(ReconcileReport { processed: n, batch_full: n >= u64::from(self.batch_size) })
    }
}

/// Promotes one execution if it is delayed on `lane` and due.
pub(crate) async fn promote_one(pool: &PgPool, lane: &LaneId, id: &ExecutionId) -> Result<(), EngineError> {
    sqlx::query_scalar::<_, i64>(PROMOTE_SQL)
        .bind(0_i32)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(lane.as_str())
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}
