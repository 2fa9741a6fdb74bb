//! The JSON bodies of the operator controls and of the fence-triple calls, shared by the server
//! (which reads them) and the SDK (which writes them). Each converts from the backend method's
//! `…Args` (the SDK's side) and into them, given the path's ids (the server's side), so the
//! mapping between the trait and the wire is written once.

use serde::{Deserialize, Serialize};

use super::{BASE64_PATTERN, base64_len, decode_bytes, encode_bytes};
use crate::capability::CapabilitySet;
use crate::error::EngineError;
use crate::execution::{
    CompleteExecutionArgs, FailExecutionArgs, FailureClass, FailureReason, MAX_MESSAGE_BYTES, MAX_PAYLOAD_BYTES,
    TEXT_PATTERN,
};
use crate::handle::LeaseFence;
use crate::id::{AttemptIndex, ExecutionId, LaneId, LeaseId, WorkerId, WorkerInstanceId};
use crate::lease::{IssueReclaimGrantArgs, MAX_GRANT_TTL_MS, RenewLeaseArgs};
use crate::operator::{CancelExecutionArgs, CancelSource, ChangePriorityArgs, RevokeLeaseArgs};
use crate::policy::PRIORITY_MAX;

/// Reason recorded by a revocation whose request names none.
pub const DEFAULT_REVOKE_REASON: &str = "operator_revoke";

/// `POST /v1/executions/{id}/cancel` without a `handle`: an operator's cancellation (or a
/// service layer's, presenting the fence).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorCancelRequest {
    /// Why; recorded as the execution's blocking detail.
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason: String,
    /// Who cancels (default `operator_override`, which needs no fence).
    #[serde(default)]
    pub source: CancelSource,
    /// The current lease, required from any other source while the execution holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<LeaseFence>,
}

impl OperatorCancelRequest {
    /// The body for `args`.
    pub fn from_args(args: &CancelExecutionArgs) -> Self {
        Self { reason: args.reason.clone(), source: args.source, fence: args.fence }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> CancelExecutionArgs {
        CancelExecutionArgs { execution_id, reason: self.reason, source: self.source, fence: self.fence }
    }
}

/// `PUT /v1/executions/{id}/priority`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePriorityRequest {
    /// New priority, higher first.
    #[schemars(range(min = 0, max = PRIORITY_MAX))]
    pub new_priority: i32,
    /// When given, the execution must be on this lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_id: Option<LaneId>,
}

impl ChangePriorityRequest {
    /// The body for `args`.
    pub fn from_args(args: &ChangePriorityArgs) -> Self {
        Self { new_priority: args.new_priority, lane_id: args.lane_id.clone() }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> ChangePriorityArgs {
        ChangePriorityArgs { execution_id, new_priority: self.new_priority, lane_id: self.lane_id }
    }
}

/// `POST /v1/executions/{id}/revoke-lease`; every field may be left out, and so may the body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeLeaseRequest {
    /// Revoke only this lease (another current lease is `stale_lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_lease_id: Option<LeaseId>,
    /// Revoke only a lease held by this worker instance (another holder is `stale_lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_instance_id: Option<WorkerInstanceId>,
    /// Why (default [`DEFAULT_REVOKE_REASON`]); recorded as the execution's blocking detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason: Option<String>,
}

impl RevokeLeaseRequest {
    /// The body for `args`.
    pub fn from_args(args: &RevokeLeaseArgs) -> Self {
        Self {
            expected_lease_id: args.expected_lease_id,
            worker_instance_id: args.worker_instance_id.clone(),
            reason: Some(args.reason.clone()),
        }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> RevokeLeaseArgs {
        RevokeLeaseArgs {
            execution_id,
            expected_lease_id: self.expected_lease_id,
            worker_instance_id: self.worker_instance_id,
            reason: self.reason.unwrap_or_else(|| DEFAULT_REVOKE_REASON.to_owned()),
        }
    }
}

/// `POST /v1/executions/{id}/attempts/{index}/renew`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLeaseRequest {
    /// The current lease; required (`fence_required` without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<LeaseFence>,
}

impl RenewLeaseRequest {
    /// The body for `args`.
    pub fn from_args(args: &RenewLeaseArgs) -> Self {
        Self { fence: args.fence }
    }

    /// The arguments for the attempt in the path.
    pub fn into_args(self, execution_id: ExecutionId, attempt_index: AttemptIndex) -> RenewLeaseArgs {
        RenewLeaseArgs { execution_id, attempt_index, fence: self.fence }
    }
}

/// `POST /v1/executions/{id}/attempts/{index}/complete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteExecutionRequest {
    /// The current lease; required unless `source` is `operator_override`, which completes
    /// whatever live lease the execution holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<LeaseFence>,
    /// Result payload, base64 (at most 8 MiB decoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = base64_len(MAX_PAYLOAD_BYTES)), pattern(BASE64_PATTERN))]
    pub result_base64: Option<String>,
    /// Who completes it (default `lease_holder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CancelSource>,
}

impl CompleteExecutionRequest {
    /// The body for `args`.
    pub fn from_args(args: &CompleteExecutionArgs) -> Self {
        Self {
            fence: args.fence,
            result_base64: args.result_payload.as_deref().map(encode_bytes),
            source: Some(args.source),
        }
    }

    /// The arguments for the attempt in the path; a result that is not base64 is refused.
    pub fn into_args(
        self,
        execution_id: ExecutionId,
        attempt_index: AttemptIndex,
    ) -> Result<CompleteExecutionArgs, EngineError> {
        Ok(CompleteExecutionArgs {
            execution_id,
            attempt_index,
            fence: self.fence,
            result_payload: self.result_base64.as_deref().map(|b| decode_bytes("result_base64", b)).transpose()?,
            source: self.source.unwrap_or(CancelSource::LeaseHolder),
        })
    }
}

/// `POST /v1/executions/{id}/attempts/{index}/fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailExecutionRequest {
    /// The current lease; required unless `source` is `operator_override`, which fails whatever
    /// live lease the execution holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<LeaseFence>,
    /// Short message.
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub message: String,
    /// Longer detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub detail: Option<String>,
    /// Decides whether a retry is allowed (default `transient`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<FailureClass>,
    /// Who fails it (default `lease_holder`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CancelSource>,
}

impl FailExecutionRequest {
    /// The body for `args`.
    pub fn from_args(args: &FailExecutionArgs) -> Self {
        Self {
            fence: args.fence,
            message: args.failure_reason.message.clone(),
            detail: args.failure_reason.detail.clone(),
            classification: Some(args.failure_category),
            source: Some(args.source),
        }
    }

    /// The arguments for the attempt in the path.
    pub fn into_args(self, execution_id: ExecutionId, attempt_index: AttemptIndex) -> FailExecutionArgs {
        FailExecutionArgs {
            execution_id,
            attempt_index,
            fence: self.fence,
            failure_reason: FailureReason { message: self.message, detail: self.detail },
            failure_category: self.classification.unwrap_or(FailureClass::Transient),
            source: self.source.unwrap_or(CancelSource::LeaseHolder),
        }
    }
}

/// `POST /v1/executions/{id}/reclaim`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclaimGrantRequest {
    /// Worker pool that will reclaim it.
    pub worker_id: WorkerId,
    /// Worker process that will reclaim it.
    pub worker_instance_id: WorkerInstanceId,
    /// Lane the worker serves (must be the execution's lane).
    pub lane_id: LaneId,
    /// How long the grant stays valid.
    #[schemars(range(min = 1, max = MAX_GRANT_TTL_MS))]
    pub grant_ttl_ms: u64,
    /// The worker's capabilities (must cover the execution's requirements).
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
}

impl ReclaimGrantRequest {
    /// The body for `args`.
    pub fn from_args(args: &IssueReclaimGrantArgs) -> Self {
        Self {
            worker_id: args.worker_id.clone(),
            worker_instance_id: args.worker_instance_id.clone(),
            lane_id: args.lane_id.clone(),
            grant_ttl_ms: args.grant_ttl_ms,
            worker_capabilities: args.worker_capabilities.clone(),
        }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> IssueReclaimGrantArgs {
        IssueReclaimGrantArgs {
            execution_id,
            worker_id: self.worker_id,
            worker_instance_id: self.worker_instance_id,
            lane_id: self.lane_id,
            worker_capabilities: self.worker_capabilities,
            grant_ttl_ms: self.grant_ttl_ms,
        }
    }
}
