//! The dependency reconciler: a safety net that resolves applied edges whose upstream has
//! ended but which are still unresolved. Terminal transitions resolve their edges in their own
//! transaction, so this normally finds nothing; it repairs what a future transition path might
//! miss.

use crate::db::Db;
use async_trait::async_trait;
use ff_core::EngineError;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;

/// Resolves the edges of up to `$1` ended upstreams that still have unresolved applied edges.
pub(crate) const RESOLVE_STRAGGLERS_SQL: &str = "\
SELECT r.resolved, r.decided FROM ff_resolve_edges(ARRAY(
    SELECT DISTINCT e.upstream_id FROM ff_edge e JOIN ff_execution x ON x.execution_id = e.upstream_id
    WHERE e.applied_at_ms IS NOT NULL AND e.resolution IS NULL AND x.lifecycle_phase = 'terminal'
    LIMIT $1)) r";

/// Resolves edges their upstream's terminal transaction left unresolved.
pub struct DependencyReconciler {
    pool: Db,
    batch_size: u32,
}

impl DependencyReconciler {
    /// A reconciler handling up to `batch_size` upstreams per pass.
    pub fn new(pool: impl Into<Db>, batch_size: u32) -> Self {
        let pool = pool.into();
        Self { pool, batch_size: batch_size.max(1) }
    }
}

#[async_trait]
impl Reconciler for DependencyReconciler {
    fn name(&self) -> &'static str {
        "dependency"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let (resolved, _decided): (i32, i32) = sqlx::query_as(RESOLVE_STRAGGLERS_SQL)
            .bind(i64::from(self.batch_size))
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let n = resolved.max(0) as u64;
        if n > 0 {
            tracing::warn!(edges = n, "resolved dependency edges their upstream's transaction left unresolved");
        }
        Ok(ReconcileReport { processed: n, batch_full: n >= u64::from(self.batch_size), next_due: None })
    }
}
