//! The operator controls and the fence-triple calls of [`Client`]: cancel, revoke a lease,
//! change a priority, replay, list expired leases; renew, complete and fail by the lease fence;
//! issue a reclaim grant. Each method takes the same arguments as the backend trait method it
//! mirrors (`OperatorBackend`, `LeaseBackend`, `AttemptEndBackend`) and returns the same result,
//! so code written against one runs against the other. The request bodies are the server's own,
//! from `ff_core::wire`, built from the arguments by their `from_args`.

use ff_core::wire::{
    ChangePriorityRequest, CompleteExecutionRequest, FailExecutionRequest, OperatorCancelRequest, ReclaimGrantRequest,
    RenewLeaseRequest, RevokeLeaseRequest,
};
use ff_core::{
    AttemptIndex, CancelExecutionArgs, CancelExecutionResult, ChangePriorityArgs, ChangePriorityResult,
    CompleteExecutionArgs, CompleteExecutionResult, ExecutionId, FailExecutionArgs, FailExecutionResult,
    IssueReclaimGrantArgs, IssueReclaimGrantOutcome, ListExpiredLeasesArgs, ListExpiredLeasesResult, RenewLeaseArgs,
    RenewLeaseResult, ReplayExecutionArgs, ReplayExecutionResult, RevokeLeaseArgs, RevokeLeaseResult,
};
use reqwest::Method;

use super::{Client, enc};
use crate::error::SdkError;

impl Client {
    /// Cancels any non-terminal execution as `args.source` (an operator by default, needing no
    /// fence); a lease it holds ends with it.
    pub async fn cancel_execution(&self, args: &CancelExecutionArgs) -> Result<CancelExecutionResult, SdkError> {
        self.post(&execution_path(&args.execution_id, "cancel"), &OperatorCancelRequest::from_args(args)).await
    }

    /// Takes the live lease away from its holder; `AlreadySatisfied` when there is none.
    pub async fn revoke_lease(&self, args: &RevokeLeaseArgs) -> Result<RevokeLeaseResult, SdkError> {
        self.post(&execution_path(&args.execution_id, "revoke-lease"), &RevokeLeaseRequest::from_args(args)).await
    }

    /// Changes the priority of a non-terminal execution.
    pub async fn change_priority(&self, args: &ChangePriorityArgs) -> Result<ChangePriorityResult, SdkError> {
        let body = ChangePriorityRequest::from_args(args);
        let req = self.request(Method::PUT, &execution_path(&args.execution_id, "priority")).json(&body);
        Self::json(req).await
    }

    /// Makes a terminal execution runnable again, up to its policy's replay cap.
    pub async fn replay_execution(&self, args: &ReplayExecutionArgs) -> Result<ReplayExecutionResult, SdkError> {
        self.post(&execution_path(&args.execution_id, "replay"), &serde_json::json!({})).await
    }

    /// One page of active executions whose lease expired, by expiry then id.
    pub async fn list_expired_leases(&self, args: &ListExpiredLeasesArgs) -> Result<ListExpiredLeasesResult, SdkError> {
        let mut query = Vec::new();
        if let Some(t) = args.as_of {
            query.push(format!("as_of={}", t.0));
        }
        if let Some(after) = &args.after {
            query.push(format!("after_expires_at_ms={}", after.expires_at_ms.0));
            query.push(format!("after_execution_id={}", enc(&after.execution_id.to_string())));
        }
        if let Some(limit) = args.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(ns) = &args.namespace {
            query.push(format!("namespace={}", enc(ns.as_str())));
        }
        let mut path = "/v1/leases/expired".to_owned();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        Self::json(self.request(Method::GET, &path)).await
    }

    /// Extends the lease named by its fence, by the TTL stored with it.
    pub async fn renew_lease(&self, args: &RenewLeaseArgs) -> Result<RenewLeaseResult, SdkError> {
        let body = RenewLeaseRequest::from_args(args);
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "renew"), &body).await
    }

    /// Completes the attempt named by its fence (or, as `operator_override`, whatever live lease
    /// the execution holds).
    pub async fn complete_execution(&self, args: &CompleteExecutionArgs) -> Result<CompleteExecutionResult, SdkError> {
        let body = CompleteExecutionRequest::from_args(args);
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "complete"), &body).await
    }

    /// Fails the attempt named by its fence, retried per the stored policy.
    pub async fn fail_execution(&self, args: &FailExecutionArgs) -> Result<FailExecutionResult, SdkError> {
        let body = FailExecutionRequest::from_args(args);
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "fail"), &body).await
    }

    /// Admits one worker to reclaim an execution whose lease expired or was revoked.
    pub async fn issue_reclaim_grant(
        &self,
        args: &IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, SdkError> {
        self.post(&execution_path(&args.execution_id, "reclaim"), &ReclaimGrantRequest::from_args(args)).await
    }
}

fn execution_path(id: &ExecutionId, op: &str) -> String {
    format!("/v1/executions/{}/{op}", enc(&id.to_string()))
}

fn attempt_path(id: &ExecutionId, attempt: AttemptIndex, op: &str) -> String {
    format!("/v1/executions/{}/attempts/{}/{op}", enc(&id.to_string()), attempt.0)
}
