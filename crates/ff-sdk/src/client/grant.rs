//! Scheduling from the [`Client`]: claim grants (reserve a lane's best eligible execution, or a
//! chosen one, for one worker instance; claim with the grant), the operator's immediate claim,
//! the scan of a lane's eligible work, and blocking or unblocking one execution. One method
//! per `SchedulingBackend` call, taking the same arguments and returning the same result, but
//! for a claim with a grant, which returns the [`ClaimedTask`] a worker runs (the lease with
//! the execution's kind, input and tags).

use ff_core::wire::{
    BlockExecutionRequest, BlockRouteRequest, ClaimForWorkerRequest, ClaimWithGrantRequest, ClaimedExecution,
    EligibleExecutionsResponse, IssueClaimGrantRequest, OperatorClaimRequest, OperatorClaimResponse,
    UnblockExecutionRequest,
};
use ff_core::{
    BlockExecutionForAdmissionArgs, BlockOutcome, BlockRouteArgs, ClaimExecutionArgs, ClaimForWorkerArgs,
    ClaimForWorkerOutcome, ClaimGrantOutcome, ExecutionId, IssueClaimGrantArgs, IssueClaimGrantOutcome,
    IssueGrantAndClaimArgs, ScanEligibleArgs, UnblockExecutionArgs, UnblockOutcome,
};
use reqwest::{Method, StatusCode};

use super::{Client, enc};
use crate::error::SdkError;
use crate::transport::ClaimedTask;

impl Client {
    /// Reserves the lane's best eligible execution that the worker can run, for that worker
    /// instance; `NoWork` when there is none.
    pub async fn claim_for_worker(&self, args: &ClaimForWorkerArgs) -> Result<ClaimForWorkerOutcome, SdkError> {
        let path = format!("/v1/lanes/{}/grants", enc(args.lane_id.as_str()));
        let resp = Self::send(self.request(Method::POST, &path).json(&ClaimForWorkerRequest::from_args(args))).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(ClaimForWorkerOutcome::NoWork);
        }
        let bytes = resp.bytes().await?;
        let grant = serde_json::from_slice(&bytes).map_err(|e| SdkError::Decode(e.to_string()))?;
        Ok(ClaimForWorkerOutcome::Granted(grant))
    }

    /// Ids of a lane's eligible, unreserved executions, in claim order.
    pub async fn scan_eligible_executions(&self, args: &ScanEligibleArgs) -> Result<Vec<ExecutionId>, SdkError> {
        let mut path = format!("/v1/lanes/{}/eligible?limit={}", enc(args.lane_id.as_str()), args.limit);
        if let Some(p) = args.partition {
            path.push_str(&format!("&partition={p}"));
        }
        let resp: EligibleExecutionsResponse = Self::json(self.request(Method::GET, &path)).await?;
        Ok(resp.executions)
    }

    /// Reserves a chosen eligible execution for a worker instance.
    pub async fn issue_claim_grant(&self, args: &IssueClaimGrantArgs) -> Result<IssueClaimGrantOutcome, SdkError> {
        self.post(&execution_path(&args.execution_id, "grants"), &IssueClaimGrantRequest::from_args(args)).await
    }

    /// Claims with a grant issued to `args.worker_instance_id`, consuming it; the task is what a
    /// worker's claim returns, to run with a `WorkerTransport`'s lease-holder calls.
    pub async fn claim_execution(&self, args: &ClaimExecutionArgs) -> Result<ClaimedTask, SdkError> {
        let claimed: ClaimedExecution =
            self.post(&execution_path(&args.execution_id, "claim"), &ClaimWithGrantRequest::from_args(args)).await?;
        Ok(ClaimedTask::try_from(claimed)?)
    }

    /// Claims an eligible, reserved or reclaimable execution now, as the worker `operator`.
    pub async fn issue_grant_and_claim(&self, args: &IssueGrantAndClaimArgs) -> Result<ClaimGrantOutcome, SdkError> {
        let resp: OperatorClaimResponse = self
            .post(&execution_path(&args.execution_id, "operator-claim"), &OperatorClaimRequest::from_args(args))
            .await?;
        Ok(resp.into_outcome()?)
    }

    /// Parks an eligible execution for a budget, its quota or a route, until unblocked.
    pub async fn block_execution_for_admission(
        &self,
        args: &BlockExecutionForAdmissionArgs,
    ) -> Result<BlockOutcome, SdkError> {
        self.post(&execution_path(&args.execution_id, "block"), &BlockExecutionRequest::from_args(args)).await
    }

    /// Parks an eligible execution until a capable worker appears.
    pub async fn block_route(&self, args: &BlockRouteArgs) -> Result<BlockOutcome, SdkError> {
        self.post(&execution_path(&args.execution_id, "block-route"), &BlockRouteRequest::from_args(args)).await
    }

    /// Makes a blocked execution claimable again, if it is blocked for the expected reason
    /// (`not_blocked` otherwise); admission runs again.
    pub async fn unblock_execution(&self, args: &UnblockExecutionArgs) -> Result<UnblockOutcome, SdkError> {
        self.post(&execution_path(&args.execution_id, "unblock"), &UnblockExecutionRequest::from_args(args)).await
    }
}

fn execution_path(id: &ExecutionId, op: &str) -> String {
    format!("/v1/executions/{}/{op}", enc(&id.to_string()))
}
