//! The operator controls and the fence-triple calls of [`Client`]: cancel, revoke a lease,
//! change a priority, replay, list expired leases; renew, complete and fail by the lease fence;
//! issue a reclaim grant. Each method takes the same arguments as the backend trait method it
//! mirrors (`OperatorBackend`, `LeaseBackend`, `AttemptEndBackend`) and returns the same result,
//! so code written against one runs against the other. The request bodies below are the
//! server's (`ff-server`'s `http/operator.rs` and `http/leases.rs`), written from the client's
//! side; the tests of both crates send them to a real server.

use ff_core::wire::encode_bytes;
use ff_core::{
    AttemptIndex, CancelExecutionArgs, CancelExecutionResult, CancelSource, CapabilitySet, ChangePriorityArgs,
    ChangePriorityResult, CompleteExecutionArgs, CompleteExecutionResult, ExecutionId, FailExecutionArgs,
    FailExecutionResult, FailureClass, IssueReclaimGrantArgs, IssueReclaimGrantOutcome, LaneId, LeaseFence, LeaseId,
    ListExpiredLeasesArgs, ListExpiredLeasesResult, RenewLeaseArgs, RenewLeaseResult, ReplayExecutionArgs,
    ReplayExecutionResult, RevokeLeaseArgs, RevokeLeaseResult, WorkerId, WorkerInstanceId,
};
use reqwest::Method;
use serde::Serialize;

use super::{Client, enc};
use crate::error::SdkError;

impl Client {
    /// Cancels any non-terminal execution as `args.source` (an operator by default, needing no
    /// fence); a lease it holds ends with it.
    pub async fn cancel_execution(&self, args: &CancelExecutionArgs) -> Result<CancelExecutionResult, SdkError> {
        let body = CancelBody { reason: &args.reason, source: args.source, fence: args.fence.as_ref() };
        self.post(&execution_path(&args.execution_id, "cancel"), &body).await
    }

    /// Takes the live lease away from its holder; `AlreadySatisfied` when there is none.
    pub async fn revoke_lease(&self, args: &RevokeLeaseArgs) -> Result<RevokeLeaseResult, SdkError> {
        let body = RevokeBody {
            expected_lease_id: args.expected_lease_id,
            worker_instance_id: args.worker_instance_id.as_ref(),
            reason: &args.reason,
        };
        self.post(&execution_path(&args.execution_id, "revoke-lease"), &body).await
    }

    /// Changes the priority of a non-terminal execution.
    pub async fn change_priority(&self, args: &ChangePriorityArgs) -> Result<ChangePriorityResult, SdkError> {
        let body = PriorityBody { new_priority: args.new_priority, lane_id: args.lane_id.as_ref() };
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
        let body = RenewBody { fence: args.fence.as_ref() };
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "renew"), &body).await
    }

    /// Completes the attempt named by its fence (or, as `operator_override`, whatever live lease
    /// the execution holds).
    pub async fn complete_execution(&self, args: &CompleteExecutionArgs) -> Result<CompleteExecutionResult, SdkError> {
        let body = CompleteBody {
            fence: args.fence.as_ref(),
            result_base64: args.result_payload.as_deref().map(encode_bytes),
            source: args.source,
        };
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "complete"), &body).await
    }

    /// Fails the attempt named by its fence, retried per the stored policy.
    pub async fn fail_execution(&self, args: &FailExecutionArgs) -> Result<FailExecutionResult, SdkError> {
        let body = FailBody {
            fence: args.fence.as_ref(),
            message: &args.failure_reason.message,
            detail: args.failure_reason.detail.as_deref(),
            classification: args.failure_category,
            source: args.source,
        };
        self.post(&attempt_path(&args.execution_id, args.attempt_index, "fail"), &body).await
    }

    /// Admits one worker to reclaim an execution whose lease expired or was revoked.
    pub async fn issue_reclaim_grant(
        &self,
        args: &IssueReclaimGrantArgs,
    ) -> Result<IssueReclaimGrantOutcome, SdkError> {
        let body = ReclaimBody {
            worker_id: &args.worker_id,
            worker_instance_id: &args.worker_instance_id,
            lane_id: &args.lane_id,
            grant_ttl_ms: args.grant_ttl_ms,
            worker_capabilities: &args.worker_capabilities,
        };
        self.post(&execution_path(&args.execution_id, "reclaim"), &body).await
    }
}

fn execution_path(id: &ExecutionId, op: &str) -> String {
    format!("/v1/executions/{}/{op}", enc(&id.to_string()))
}

fn attempt_path(id: &ExecutionId, attempt: AttemptIndex, op: &str) -> String {
    format!("/v1/executions/{}/attempts/{}/{op}", enc(&id.to_string()), attempt.0)
}

/// The operator's shape of the cancel body (no `handle`).
#[derive(Serialize)]
struct CancelBody<'a> {
    reason: &'a str,
    source: CancelSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<&'a LeaseFence>,
}

#[derive(Serialize)]
struct RevokeBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_lease_id: Option<LeaseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_instance_id: Option<&'a WorkerInstanceId>,
    reason: &'a str,
}

#[derive(Serialize)]
struct PriorityBody<'a> {
    new_priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    lane_id: Option<&'a LaneId>,
}

#[derive(Serialize)]
struct RenewBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<&'a LeaseFence>,
}

#[derive(Serialize)]
struct CompleteBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<&'a LeaseFence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_base64: Option<String>,
    source: CancelSource,
}

#[derive(Serialize)]
struct FailBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    fence: Option<&'a LeaseFence>,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    classification: FailureClass,
    source: CancelSource,
}

#[derive(Serialize)]
struct ReclaimBody<'a> {
    worker_id: &'a WorkerId,
    worker_instance_id: &'a WorkerInstanceId,
    lane_id: &'a LaneId,
    grant_ttl_ms: u64,
    worker_capabilities: &'a CapabilitySet,
}
