//! Operator controls: cancelling, revoking, reprioritising and replaying executions without
//! holding their lease, and listing expired leases.

use async_trait::async_trait;

use crate::error::EngineError;
use crate::operator::*;

/// Acting on any execution, as an operator.
#[async_trait]
pub trait OperatorBackend: Send + Sync {
    /// Cancels a non-terminal execution in any state. A lease it holds ends with it (the
    /// holder's next call is refused), its open attempt closes as cancelled, and the same
    /// `cancelled` completion event a worker's cancel writes is appended. A terminal execution
    /// is `terminal`; a source other than `operator_override` must present the current lease
    /// while one is held.
    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelExecutionResult, EngineError>;

    /// Takes the live lease away from its holder: the execution becomes reclaimable at once
    /// (keeping its place in line), or fails when its reclaim cap is reached. A terminal
    /// execution is `terminal`; an expected lease or holder other than the current one is
    /// `stale_lease`; no live lease is `AlreadySatisfied`.
    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseResult, EngineError>;

    /// Changes the priority of a non-terminal execution; waiting work is re-ordered at once.
    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<ChangePriorityResult, EngineError>;

    /// Makes a terminal execution runnable again, up to its policy's replay cap.
    async fn replay_execution(&self, args: ReplayExecutionArgs) -> Result<ReplayExecutionResult, EngineError>;

    /// Active executions whose lease expired at or before `as_of`, by expiry then id.
    async fn list_expired_leases(&self, args: ListExpiredLeasesArgs) -> Result<ListExpiredLeasesResult, EngineError>;
}
