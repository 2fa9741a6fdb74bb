//! Retires workers whose liveness TTL lapsed without a heartbeat, revoking their leases so
//! their executions are claimable at once.

use std::sync::Arc;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::EngineError;

use super::{ReconcileReport, Reconciler};
use crate::metrics::Metrics;

/// Worker-liveness reconciler.
pub struct WorkerLivenessReconciler {
    pool: Db,
    batch_size: u32,
    metrics: Arc<Metrics>,
}

impl WorkerLivenessReconciler {
    /// A reconciler retiring up to `batch_size` lapsed workers per pass.
    pub fn new(pool: impl Into<Db>, batch_size: u32, metrics: Arc<Metrics>) -> Self {
        let pool = pool.into();
        Self { pool, batch_size: batch_size.max(1), metrics }
    }
}

#[async_trait]
impl Reconciler for WorkerLivenessReconciler {
    fn name(&self) -> &'static str {
        "worker_liveness"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let retired = crate::worker::retire_lapsed(&self.pool, self.batch_size).await?;
        Metrics::add(&self.metrics.lease_revocations, retired.revoked_leases);
        Ok(ReconcileReport {
            processed: retired.workers,
            batch_full: retired.workers >= u64::from(self.batch_size),
            next_due: None,
        })
    }
}
