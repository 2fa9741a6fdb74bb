//! Executions: ingress, reads, tags and listings. The [`ExecutionBackend`] impl delegates to
//! [`ingress`] (creation, one or many per statement) and [`read`] (everything that only reads,
//! plus tags).

pub(crate) mod ingress;
pub(crate) mod read;

use std::collections::HashMap;

use async_trait::async_trait;
use ff_core::backend::ExecutionBackend;
use ff_core::*;

use crate::backend::PostgresBackend;
use crate::metrics::Metrics;

#[async_trait]
impl ExecutionBackend for PostgresBackend {
    async fn create_execution(&self, args: CreateExecutionArgs) -> Result<CreateExecutionResult, EngineError> {
        let mut out = ingress::create(&self.pool, &self.partitions, std::slice::from_ref(&args)).await?;
        let r = out.pop().ok_or_else(|| EngineError::Internal("create returned no row".into()))?;
        if matches!(r, CreateExecutionResult::Created { .. }) {
            Metrics::add(&self.metrics.created, 1);
        }
        Ok(r)
    }

    async fn create_executions(
        &self,
        args: Vec<CreateExecutionArgs>,
    ) -> Result<Vec<CreateExecutionResult>, EngineError> {
        let out = ingress::create(&self.pool, &self.partitions, &args).await?;
        let created = out.iter().filter(|r| matches!(r, CreateExecutionResult::Created { .. })).count();
        Metrics::add(&self.metrics.created, created as u64);
        Ok(out)
    }

    async fn describe_execution(&self, id: &ExecutionId) -> Result<Option<ExecutionSnapshot>, EngineError> {
        read::describe(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_info(&self, id: &ExecutionId) -> Result<Option<ExecutionInfo>, EngineError> {
        read::info(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_state(&self, id: &ExecutionId) -> Result<Option<PublicState>, EngineError> {
        read::state(&self.pool, &self.partitions, id).await
    }

    async fn read_execution_context(&self, id: &ExecutionId) -> Result<ExecutionContext, EngineError> {
        read::context(&self.pool, &self.partitions, id).await
    }

    async fn read_current_attempt_index(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError> {
        read::attempt_counter(&self.pool, &self.partitions, id, "current_attempt_index").await
    }

    async fn read_total_attempt_count(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError> {
        read::attempt_counter(&self.pool, &self.partitions, id, "total_attempt_count").await
    }

    async fn get_execution_result(&self, id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
        read::result(&self.pool, &self.partitions, id).await
    }

    async fn read_exec_core_fields(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        fields: &[&str],
    ) -> Result<HashMap<String, Option<String>>, EngineError> {
        read::core_fields(&self.pool, &self.partitions, partition, execution_id, fields).await
    }

    async fn get_execution_namespace(&self, id: &ExecutionId) -> Result<Option<String>, EngineError> {
        read::namespace(&self.pool, &self.partitions, id).await
    }

    async fn set_execution_tag(&self, id: &ExecutionId, key: &str, value: &str) -> Result<(), EngineError> {
        self.announced(read::set_tag(&self.pool, &self.partitions, id, key, value).await)
    }

    async fn clear_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<bool, EngineError> {
        self.announced(read::clear_tag(&self.pool, &self.partitions, id, key).await)
    }

    async fn get_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<Option<String>, EngineError> {
        read::get_tag(&self.pool, &self.partitions, id, key).await
    }

    async fn list_executions(
        &self,
        partition: PartitionKey,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsPage, EngineError> {
        read::list_executions(&self.pool, &self.partitions, &partition, cursor, limit).await
    }

    async fn list_lanes(&self, cursor: Option<LaneId>, limit: usize) -> Result<ListLanesPage, EngineError> {
        read::list_lanes(&self.pool, cursor, limit).await
    }
}
