//! Leases: claims (single, batched, with context), renewal, progress reports by the holder,
//! and reclaim grants for executions whose lease expired or was revoked.

use async_trait::async_trait;

use crate::capability::CapabilitySet;
use crate::error::EngineError;
use crate::handle::Handle;
use crate::id::LaneId;
use crate::lease::*;

/// Taking, keeping and taking over leases.
#[async_trait]
pub trait LeaseBackend: Send + Sync {
    /// Claims the best execution on `lane` whose required capabilities are a subset of
    /// `capabilities`: highest priority first, then earliest eligible. `Ok(None)` = no work.
    async fn claim(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
    ) -> Result<Option<Handle>, EngineError>;

    /// Claims up to `max` executions in one round trip, same ordering and routing as `claim`.
    async fn claim_batch(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<Handle>, EngineError>;

    /// Claims like `claim_batch` and returns each lease with its execution's context (kind,
    /// input, tags) from the same round trip, so a worker can run its handler at once. With
    /// `max == 1`, concurrent callers may share one statement, as with `claim`.
    async fn claim_with_context(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<LeasedExecution>, EngineError>;

    /// Extends the handle's lease by the TTL stored with the lease (never a TTL the handle
    /// claims to carry).
    async fn renew(&self, handle: &Handle) -> Result<LeaseRenewal, EngineError>;

    /// Renews by the fence triple instead of a handle (for service layers): the same checks
    /// and the same stored TTL as `renew`.
    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<RenewLeaseResult, EngineError>;

    /// Records progress (percent 0..=100 and/or a message).
    async fn progress(&self, handle: &Handle, percent: Option<u8>, message: Option<String>) -> Result<(), EngineError>;

    /// Admits a worker to reclaim an execution whose lease expired or was revoked.
    async fn issue_reclaim_grant(&self, args: IssueReclaimGrantArgs) -> Result<IssueReclaimGrantOutcome, EngineError>;

    /// Consumes a reclaim grant: a new attempt takes over the execution.
    async fn reclaim_execution(&self, args: ReclaimExecutionArgs) -> Result<ReclaimExecutionOutcome, EngineError>;
}
