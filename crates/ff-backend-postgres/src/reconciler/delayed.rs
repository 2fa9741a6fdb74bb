//! Relabels delayed executions whose time has come as eligible.
//!
//! Claims do not depend on this pass: the claim statement already takes a delayed execution once
//! its time has passed. This pass keeps the stored state (and so `public_state`) truthful.

use async_trait::async_trait;
use ff_core::{EngineError, ExecutionId, LaneId};
use sqlx::PgPool;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;

const PROMOTE_DUE: &str = "
UPDATE ff_execution SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker',
       last_mutation_at_ms = ff_now_ms()
WHERE execution_id IN (
    SELECT execution_id FROM ff_execution
    WHERE eligibility_state = 'not_eligible_until_time' AND eligible_at_ms <= ff_now_ms()
    ORDER BY eligible_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED)";

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
        let n = sqlx::query(PROMOTE_DUE)
            .bind(i64::from(self.batch_size))
            .execute(&self.pool)
            .await
            .map_err(map_sqlx)?
            .rows_affected();
        Ok(ReconcileReport { processed: n, batch_full: n >= u64::from(self.batch_size) })
    }
}

/// Promotes one execution if it is delayed on `lane` and due.
pub(crate) async fn promote_one(pool: &PgPool, lane: &LaneId, id: &ExecutionId) -> Result<(), EngineError> {
    sqlx::query(
        "UPDATE ff_execution SET eligibility_state = 'eligible_now', blocking_reason = 'waiting_for_worker', \
         last_mutation_at_ms = ff_now_ms() \
         WHERE execution_id = $1 AND partition_key = $2 AND lane_id = $3 \
           AND eligibility_state = 'not_eligible_until_time' AND eligible_at_ms <= ff_now_ms()",
    )
    .bind(id.uuid())
    .bind(id.partition_index() as i16)
    .bind(lane.as_str())
    .execute(pool)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}
