//! Maintenance hooks: the per-execution timer transitions reconcilers run in batches, callable
//! one at a time. Each checks the id's partition, then runs the same statement its reconciler
//! uses, so a hook and a reconciler pass can never disagree about what is due. The retention
//! passes run the retention reconciler's statements (see `retention`).

use async_trait::async_trait;
use ff_core::backend::{ExpirePhase, MaintenanceBackend};
use ff_core::*;

use crate::backend::PostgresBackend;
use crate::fence::check_partition;
use crate::metrics::Metrics;
use crate::{lease, reconciler, retention};

#[async_trait]
impl MaintenanceBackend for PostgresBackend {
    async fn mark_lease_expired_if_due(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        let c = lease::expiry::expire_one(&self.pool, execution_id).await?;
        Metrics::add(&self.metrics.lease_expiries, c.reclaimable + c.failed);
        Ok(())
    }

    async fn promote_delayed(
        &self,
        partition: Partition,
        lane: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        reconciler::delayed::promote_one(&self.pool, lane, execution_id).await
    }

    async fn expire_execution(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<(), EngineError> {
        check_partition(partition, execution_id, &self.partitions)?;
        if reconciler::timeout::expire_one(&self.pool, execution_id, phase).await? {
            Metrics::add(&self.metrics.expirations, 1);
        }
        Ok(())
    }

    async fn trim_retention(&self, args: TrimRetentionArgs) -> Result<TrimRetentionOutcome, EngineError> {
        retention::trim(&self.pool, &args).await
    }

    async fn prune_event_log(&self, args: PruneEventLogArgs) -> Result<PruneEventLogOutcome, EngineError> {
        retention::prune_events(&self.pool, &args).await
    }
}
