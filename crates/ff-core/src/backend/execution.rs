//! Executions: ingress (single and batch creation), reads, tags and listings.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::error::EngineError;
use crate::execution::*;
use crate::id::{AttemptIndex, ExecutionId, LaneId};
use crate::partition::{Partition, PartitionKey};
use crate::state::PublicState;

/// Creating, reading, tagging and listing executions.
#[async_trait]
pub trait ExecutionBackend: Send + Sync {
    // ----- ingress -------------------------------------------------------------------------

    /// Creates one execution (or returns the original as `Duplicate`).
    async fn create_execution(&self, args: CreateExecutionArgs) -> Result<CreateExecutionResult, EngineError>;

    /// Creates many executions in one round trip. Results are in input order. The whole batch
    /// is validated first: one invalid item rejects the batch and writes nothing.
    async fn create_executions(
        &self,
        args: Vec<CreateExecutionArgs>,
    ) -> Result<Vec<CreateExecutionResult>, EngineError>;

    // ----- reads -----------------------------------------------------------------------------

    /// Snapshot; `Ok(None)` when absent.
    async fn describe_execution(&self, id: &ExecutionId) -> Result<Option<ExecutionSnapshot>, EngineError>;

    /// Full read; `Ok(None)` when absent.
    async fn read_execution_info(&self, id: &ExecutionId) -> Result<Option<ExecutionInfo>, EngineError>;

    /// Public state only; `Ok(None)` when absent.
    async fn read_execution_state(&self, id: &ExecutionId) -> Result<Option<PublicState>, EngineError>;

    /// Payload, kind and tags; `NotFound` when absent.
    async fn read_execution_context(&self, id: &ExecutionId) -> Result<ExecutionContext, EngineError>;

    /// Index of the current attempt; `NotFound` when absent.
    async fn read_current_attempt_index(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError>;

    /// Number of attempts ever started; `NotFound` when absent.
    async fn read_total_attempt_count(&self, id: &ExecutionId) -> Result<AttemptIndex, EngineError>;

    /// Result payload of a completed execution; `Ok(None)` when absent, not completed, or
    /// completed without a payload.
    async fn get_execution_result(&self, id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError>;

    /// Named fields of the execution row, as strings. Unknown names map to `None`. The partition
    /// must be the id's.
    async fn read_exec_core_fields(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        fields: &[&str],
    ) -> Result<HashMap<String, Option<String>>, EngineError>;

    /// Namespace; `Ok(None)` when absent.
    async fn get_execution_namespace(&self, id: &ExecutionId) -> Result<Option<String>, EngineError>;

    // ----- tags ------------------------------------------------------------------------------

    /// Sets one tag; `NotFound` when the execution is absent.
    async fn set_execution_tag(&self, id: &ExecutionId, key: &str, value: &str) -> Result<(), EngineError>;

    /// Removes a tag; `true` when it was set. Followers of instance tags see it cleared.
    /// `NotFound` when the execution is absent.
    async fn clear_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<bool, EngineError>;

    /// Reads one tag; `Ok(None)` when the tag or the execution is absent.
    async fn get_execution_tag(&self, id: &ExecutionId, key: &str) -> Result<Option<String>, EngineError>;

    // ----- listings --------------------------------------------------------------------------

    /// Executions of one partition in id order, after `cursor`, at most `limit` (<= 1000).
    async fn list_executions(
        &self,
        partition: PartitionKey,
        cursor: Option<ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsPage, EngineError>;

    /// Registered lanes in name order, after `cursor`, at most `limit` (<= 1000).
    async fn list_lanes(&self, cursor: Option<LaneId>, limit: usize) -> Result<ListLanesPage, EngineError>;
}
