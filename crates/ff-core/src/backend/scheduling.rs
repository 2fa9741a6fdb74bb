//! Scheduling: claim grants (a scheduler reserves work for a worker, the worker claims with
//! the grant), the operator's immediate claim, and the primitives that scan eligible work and
//! block or unblock one execution.

use async_trait::async_trait;

use crate::admission::block::*;
use crate::admission::grant::*;
use crate::error::EngineError;
use crate::id::ExecutionId;

/// Grants and admission blocks.
#[async_trait]
pub trait SchedulingBackend: Send + Sync {
    /// Reserves the best eligible execution on the lane that the worker can run (same order as
    /// a claim), signed with the waitpoint keystore's current key.
    async fn claim_for_worker(&self, args: ClaimForWorkerArgs) -> Result<ClaimForWorkerOutcome, EngineError>;

    /// Ids of eligible, unreserved executions on a lane, in claim order.
    async fn scan_eligible_executions(&self, args: ScanEligibleArgs) -> Result<Vec<ExecutionId>, EngineError>;

    /// Reserves a chosen eligible execution for a worker (`capability_mismatch` when the worker
    /// cannot run it, `execution_not_eligible` when it is not claimable now or is reserved for
    /// another worker).
    async fn issue_claim_grant(&self, args: IssueClaimGrantArgs) -> Result<IssueClaimGrantOutcome, EngineError>;

    /// Consumes a grant and claims: `invalid_claim_grant` for a key that does not verify, was
    /// used already or is another worker's; `claim_grant_expired` for a lapsed one.
    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimExecutionResult, EngineError>;

    /// An operator claims an eligible (or reserved, or reclaimable) execution now.
    async fn issue_grant_and_claim(&self, args: IssueGrantAndClaimArgs) -> Result<ClaimGrantOutcome, EngineError>;

    /// Parks an eligible execution until a capable worker appears.
    async fn block_route(&self, args: BlockRouteArgs) -> Result<BlockOutcome, EngineError>;

    /// Parks an eligible execution for a budget, its quota, or a route, until unblocked.
    async fn block_execution_for_admission(
        &self,
        args: BlockExecutionForAdmissionArgs,
    ) -> Result<BlockOutcome, EngineError>;

    /// Makes a blocked execution claimable again, if it is blocked for the expected reason
    /// (`not_blocked` otherwise); admission runs again, so it may wait for its quota or budget.
    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<UnblockOutcome, EngineError>;
}
