//! The flow-cancel reconciler: cancels flow members left in a cancel backlog (held by another
//! transaction when their flow was cancelled, or left by a caller of `cancel_flow_header` that
//! never acknowledged them), and the still-running siblings of decided cancel_remaining groups
//! that could not be cancelled when the group was decided.

use crate::db::Db;
use async_trait::async_trait;
use ff_core::{EngineError, ExecutionId, FlowId};
use uuid::Uuid;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;
use crate::flow::cancel::{DRAIN_FLOW_CANCEL_SQL, FLAGGED_GROUPS_SQL, drain_siblings};

/// Flow and sibling cancellation left for later.
pub struct FlowCancelReconciler {
    pool: Db,
    batch_size: u32,
}

impl FlowCancelReconciler {
    /// A reconciler handling up to `batch_size` backlog members and flagged groups per pass.
    pub fn new(pool: impl Into<Db>, batch_size: u32) -> Self {
        let pool = pool.into();
        Self { pool, batch_size: batch_size.max(1) }
    }
}

#[async_trait]
impl Reconciler for FlowCancelReconciler {
    fn name(&self) -> &'static str {
        "flow_cancel"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let limit = i32::try_from(self.batch_size).unwrap_or(i32::MAX);
        let members: i32 = sqlx::query_scalar(DRAIN_FLOW_CANCEL_SQL)
            .bind(limit)
            .bind(None::<Uuid>)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let groups: Vec<(Uuid, Uuid)> =
            sqlx::query_as(FLAGGED_GROUPS_SQL).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(map_sqlx)?;
        let mut cancelled = 0u64;
        for (flow, downstream) in &groups {
            // The partition of an id only labels the returned ids here; 0 is never read back.
            let d = ExecutionId::from_parts(0, *downstream);
            cancelled += drain_siblings(&self.pool, &FlowId(*flow), &d).await?.cancelled.len() as u64;
        }
        let n = members.max(0) as u64 + cancelled;
        Ok(ReconcileReport {
            processed: n,
            batch_full: members >= limit || groups.len() >= self.batch_size as usize,
            next_due: None,
        })
    }
}
