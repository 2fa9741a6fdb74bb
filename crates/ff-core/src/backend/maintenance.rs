//! Maintenance: the per-execution hooks reconcilers call when a timer fires. Each compares
//! against the backend's clock and is a no-op when the timer is not due, so calling one early,
//! twice, or from two places at once is harmless. The retention passes (`trim_retention`,
//! `prune_event_log`) delete what has aged out, one batch per call, each batch one transaction.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::id::{ExecutionId, LaneId};
use crate::partition::Partition;
use crate::retention::{PruneEventLogArgs, PruneEventLogOutcome, TrimRetentionArgs, TrimRetentionOutcome};

/// Which timer expired an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpirePhase {
    /// The running attempt exceeded its attempt timeout.
    AttemptTimeout,
    /// The execution passed its deadline.
    ExecutionDeadline,
}

impl ExpirePhase {
    /// The snake_case label (as serialized, and as stored in an expired execution's detail).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AttemptTimeout => "attempt_timeout",
            Self::ExecutionDeadline => "execution_deadline",
        }
    }
}

/// Timer hooks.
#[async_trait]
pub trait MaintenanceBackend: Send + Sync {
    /// Marks the execution's lease expired if it is due: it becomes reclaimable, or fails when
    /// its reclaim cap is reached. A no-op when not due.
    async fn mark_lease_expired_if_due(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// Makes a delayed execution eligible if its time has come. No-op otherwise.
    async fn promote_delayed(
        &self,
        partition: Partition,
        lane: &LaneId,
        execution_id: &ExecutionId,
    ) -> Result<(), EngineError>;

    /// Expires an execution whose attempt timeout or deadline has passed. No-op when not due.
    async fn expire_execution(
        &self,
        partition: Partition,
        execution_id: &ExecutionId,
        phase: ExpirePhase,
    ) -> Result<(), EngineError>;

    /// Deletes one batch of the lane's terminal executions whose retention window has passed
    /// (oldest first), with every row of theirs; a flow member only together with its whole
    /// flow, once no member is live or within its window. Never touches a non-terminal
    /// execution. Loop while `batch_full`.
    async fn trim_retention(&self, args: TrimRetentionArgs) -> Result<TrimRetentionOutcome, EngineError>;

    /// Prunes one batch of events older than the window from the oldest end of the event log,
    /// and moves the horizon (the newest pruned cursor) with them. Loop while `batch_full`.
    async fn prune_event_log(&self, args: PruneEventLogArgs) -> Result<PruneEventLogOutcome, EngineError>;
}
