//! Marks expired leases reclaimable (or fails executions at their reclaim cap).

use std::sync::Arc;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::EngineError;

use super::{ReconcileReport, Reconciler};
use crate::metrics::Metrics;

/// Lease-expiry reconciler.
pub struct LeaseExpiryReconciler {
    pool: Db,
    batch_size: u32,
    metrics: Arc<Metrics>,
}

impl LeaseExpiryReconciler {
    /// A reconciler handling up to `batch_size` leases per pass.
    pub fn new(pool: impl Into<Db>, batch_size: u32, metrics: Arc<Metrics>) -> Self {
        let pool = pool.into();
        Self { pool, batch_size: batch_size.max(1), metrics }
    }
}

#[async_trait]
impl Reconciler for LeaseExpiryReconciler {
    fn name(&self) -> &'static str {
        "lease_expiry"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let c = crate::lease::expiry::expire_due(&self.pool, self.batch_size).await?;
        let processed = c.reclaimable + c.failed;
        Metrics::add(&self.metrics.lease_expiries, processed);
        Metrics::add(&self.metrics.failures, c.failed);
        Ok(ReconcileReport { processed, batch_full: processed >= u64::from(self.batch_size), next_due: None })
    }
}
