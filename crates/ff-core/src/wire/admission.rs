//! The JSON bodies of the admission routes (budgets, quota policies, claim grants, admission
//! blocks) whose shape differs from the backend method's `…Args`: the budget, the quota policy,
//! the execution or the lane travels in the path. Each converts from the `…Args` (the SDK's
//! side) and into them, given the path's ids (the server's side).
//!
//! A body may repeat the path's budget id (`budget_id` of [`SetBudgetLimitsRequest`]); the
//! server refuses one that differs. Handles travel as tokens, as in every lease-holder call.
//! The submission options that attach an execution to budgets and a quota policy are here too
//! ([`SubmitRequest::budget`], [`SubmitRequest::quota_policy`],
//! [`SubmitRequest::concurrency_key`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HANDLE_TOKEN_PATTERN, SubmitRequest, handle_token};
use crate::admission::block::{BlockExecutionForAdmissionArgs, BlockRouteArgs, UnblockExecutionArgs};
use crate::admission::budget::{
    MAX_DEDUP_KEY_BYTES, RecordSpendArgs, ReleaseBudgetArgs, SetBudgetLimitsArgs, UsageDimensions,
};
use crate::admission::grant::{
    ClaimExecutionArgs, ClaimForWorkerArgs, ClaimGrantOutcome, IssueClaimGrantArgs, IssueGrantAndClaimArgs,
};
use crate::admission::quota::{CheckAdmissionArgs, ReleaseAdmissionArgs};
use crate::capability::CapabilitySet;
use crate::execution::{MAX_MESSAGE_BYTES, MAX_NAME_BYTES, NAME_PATTERN, TEXT_PATTERN};
use crate::id::{
    AttemptIndex, BudgetId, ExecutionId, LaneId, LeaseEpoch, LeaseId, QuotaPolicyId, WorkerId, WorkerInstanceId,
};
use crate::lease::MAX_GRANT_TTL_MS;
use crate::policy::{LEASE_TTL_MAX_MS, LEASE_TTL_MIN_MS};
use crate::state::BlockingReason;

/// Submission options of admission: the budgets an execution draws on, the quota policy that
/// admits it and its concurrency key. Each sets one field of the request's policy (creating
/// the policy when the request has none).
impl SubmitRequest {
    /// Draws on `budget` too (a budget named twice is refused at submission).
    pub fn budget(mut self, budget: BudgetId) -> Self {
        self.policy.get_or_insert_with(Default::default).budget_ids.push(budget);
        self
    }

    /// Is admitted by the quota policy `policy`.
    pub fn quota_policy(mut self, policy: QuotaPolicyId) -> Self {
        self.policy.get_or_insert_with(Default::default).quota_policy_id = Some(policy);
        self
    }

    /// Counts against its quota policy's per-key cap as `key` (needs a quota policy).
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.policy.get_or_insert_with(Default::default).concurrency_key = Some(key.into());
        self
    }
}

/// `PUT /v1/budgets/{budget_id}/limits`: replace the limits of the named dimensions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetLimitsRequest {
    /// The path's budget, when repeated (another budget is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_id: Option<BudgetId>,
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Hard limit per dimension (0 = none).
    pub hard_limits: Vec<u64>,
    /// Soft limit per dimension (0 = none).
    pub soft_limits: Vec<u64>,
}

impl SetBudgetLimitsRequest {
    /// The body for `args`.
    pub fn from_args(args: &SetBudgetLimitsArgs) -> Self {
        Self {
            budget_id: Some(args.budget_id),
            dimensions: args.dimensions.clone(),
            hard_limits: args.hard_limits.clone(),
            soft_limits: args.soft_limits.clone(),
        }
    }

    /// The arguments for the budget in the path.
    pub fn into_args(self, budget_id: BudgetId) -> SetBudgetLimitsArgs {
        SetBudgetLimitsArgs {
            budget_id,
            dimensions: self.dimensions,
            hard_limits: self.hard_limits,
            soft_limits: self.soft_limits,
        }
    }
}

/// `POST /v1/budgets/{budget_id}/spend`: spend attributed to one execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSpendRequest {
    /// The execution that spent it.
    pub execution_id: ExecutionId,
    /// Amount per dimension (never negative).
    pub deltas: BTreeMap<String, i64>,
    /// Applies the spend at most once per budget.
    #[schemars(length(min = 1, max = MAX_DEDUP_KEY_BYTES), pattern(NAME_PATTERN))]
    pub idempotency_key: String,
}

impl RecordSpendRequest {
    /// The body for `args`.
    pub fn from_args(args: &RecordSpendArgs) -> Self {
        Self {
            execution_id: args.execution_id,
            deltas: args.deltas.clone(),
            idempotency_key: args.idempotency_key.clone(),
        }
    }

    /// The arguments for the budget in the path.
    pub fn into_args(self, budget_id: BudgetId) -> RecordSpendArgs {
        RecordSpendArgs {
            budget_id,
            execution_id: self.execution_id,
            deltas: self.deltas,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// `POST /v1/budgets/{budget_id}/release`: give back what one execution spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBudgetRequest {
    /// The execution whose recorded spend is given back.
    pub execution_id: ExecutionId,
}

impl ReleaseBudgetRequest {
    /// The body for `args`.
    pub fn from_args(args: &ReleaseBudgetArgs) -> Self {
        Self { execution_id: args.execution_id }
    }

    /// The arguments for the budget in the path.
    pub fn into_args(self, budget_id: BudgetId) -> ReleaseBudgetArgs {
        ReleaseBudgetArgs { budget_id, execution_id: self.execution_id }
    }
}

/// `POST /v1/executions/{id}/attempts/{index}/usage`: usage reported by the lease holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportUsageRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// The budget the usage is charged to (one the execution draws on).
    pub budget_id: BudgetId,
    /// Amount used per dimension (never negative).
    pub deltas: BTreeMap<String, i64>,
    /// Applies the report at most once per budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_DEDUP_KEY_BYTES), pattern(NAME_PATTERN))]
    pub dedup_key: Option<String>,
}

impl ReportUsageRequest {
    /// The body for a report of `usage` to `budget_id` with the handle token `handle`.
    pub fn new(handle: String, budget_id: BudgetId, usage: UsageDimensions) -> Self {
        Self { handle, budget_id, deltas: usage.deltas, dedup_key: usage.dedup_key }
    }

    /// The usage this body reports (the handle and the budget are the caller's to read).
    pub fn usage(&self) -> UsageDimensions {
        UsageDimensions { deltas: self.deltas.clone(), dedup_key: self.dedup_key.clone() }
    }
}

/// `POST /v1/quota-policies/{quota_policy_id}/admissions`: admit an execution outside the
/// claim path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAdmissionRequest {
    /// What is admitted, for the caller's records.
    #[schemars(length(max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub dimension: String,
    /// The execution being admitted (its admission is held until released).
    pub execution_id: ExecutionId,
    /// A tighter rate window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// A tighter rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// A tighter concurrency cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_cap: Option<u32>,
    /// Jitter for the retry time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
}

impl CheckAdmissionRequest {
    /// The body for an admission of `args` named `dimension`.
    pub fn from_args(dimension: &str, args: &CheckAdmissionArgs) -> Self {
        Self {
            dimension: dimension.to_owned(),
            execution_id: args.execution_id,
            window_seconds: args.window_seconds,
            rate_limit: args.rate_limit,
            concurrency_cap: args.concurrency_cap,
            jitter_ms: args.jitter_ms,
        }
    }

    /// The dimension and the arguments (the policy is the path's).
    pub fn into_args(self) -> (String, CheckAdmissionArgs) {
        let args = CheckAdmissionArgs {
            execution_id: self.execution_id,
            window_seconds: self.window_seconds,
            rate_limit: self.rate_limit,
            concurrency_cap: self.concurrency_cap,
            jitter_ms: self.jitter_ms,
        };
        (self.dimension, args)
    }
}

/// `POST /v1/quota-policies/{quota_policy_id}/admissions/release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAdmissionRequest {
    /// The execution admitted by a `check_admission`.
    pub execution_id: ExecutionId,
}

impl ReleaseAdmissionRequest {
    /// The body for `args`.
    pub fn from_args(args: &ReleaseAdmissionArgs) -> Self {
        Self { execution_id: args.execution_id }
    }

    /// The arguments for the policy in the path.
    pub fn into_args(self, quota_policy_id: QuotaPolicyId) -> ReleaseAdmissionArgs {
        ReleaseAdmissionArgs { quota_policy_id, execution_id: self.execution_id }
    }
}

/// `PUT /v1/lanes/{lane_id}/quota-policy` (and its answer to `GET`): the lane's quota policy,
/// which executions created on the lane without their own take (`null` for none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaneQuotaPolicy {
    /// The policy, or `null`.
    #[serde(default)]
    pub quota_policy_id: Option<QuotaPolicyId>,
}

impl LaneQuotaPolicy {
    /// The arguments for the lane in the path.
    pub fn into_args(self, lane_id: crate::id::LaneId) -> crate::admission::quota::SetLaneQuotaPolicyArgs {
        crate::admission::quota::SetLaneQuotaPolicyArgs { lane_id, quota_policy_id: self.quota_policy_id }
    }
}

/// `POST /v1/lanes/{lane_id}/grants`: reserve the lane's best eligible execution for a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimForWorkerRequest {
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process the grant is for.
    pub worker_instance_id: WorkerInstanceId,
    /// The worker's capabilities.
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
    /// How long the grant stays valid.
    #[schemars(range(min = 1, max = MAX_GRANT_TTL_MS))]
    pub grant_ttl_ms: u64,
}

impl ClaimForWorkerRequest {
    /// The body for `args`.
    pub fn from_args(args: &ClaimForWorkerArgs) -> Self {
        Self {
            worker_id: args.worker_id.clone(),
            worker_instance_id: args.worker_instance_id.clone(),
            worker_capabilities: args.worker_capabilities.clone(),
            grant_ttl_ms: args.grant_ttl_ms,
        }
    }

    /// The arguments for the lane in the path.
    pub fn into_args(self, lane_id: LaneId) -> ClaimForWorkerArgs {
        ClaimForWorkerArgs {
            lane_id,
            worker_id: self.worker_id,
            worker_instance_id: self.worker_instance_id,
            worker_capabilities: self.worker_capabilities,
            grant_ttl_ms: self.grant_ttl_ms,
        }
    }
}

/// `POST /v1/executions/{id}/grants`: reserve a chosen execution for a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueClaimGrantRequest {
    /// The execution's lane.
    pub lane_id: LaneId,
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process the grant is for.
    pub worker_instance_id: WorkerInstanceId,
    /// The worker's capabilities (must cover the execution's requirements).
    #[serde(default)]
    pub worker_capabilities: CapabilitySet,
    /// How long the grant stays valid.
    #[schemars(range(min = 1, max = MAX_GRANT_TTL_MS))]
    pub grant_ttl_ms: u64,
}

impl IssueClaimGrantRequest {
    /// The body for `args`.
    pub fn from_args(args: &IssueClaimGrantArgs) -> Self {
        Self {
            lane_id: args.lane_id.clone(),
            worker_id: args.worker_id.clone(),
            worker_instance_id: args.worker_instance_id.clone(),
            worker_capabilities: args.worker_capabilities.clone(),
            grant_ttl_ms: args.grant_ttl_ms,
        }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> IssueClaimGrantArgs {
        IssueClaimGrantArgs {
            execution_id,
            lane_id: self.lane_id,
            worker_id: self.worker_id,
            worker_instance_id: self.worker_instance_id,
            worker_capabilities: self.worker_capabilities,
            grant_ttl_ms: self.grant_ttl_ms,
        }
    }
}

/// `POST /v1/executions/{id}/claim`: claim with a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimWithGrantRequest {
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process (must be the grant's).
    pub worker_instance_id: WorkerInstanceId,
    /// The execution's lane.
    pub lane_id: LaneId,
    /// The grant key the grant was issued with.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES))]
    pub grant_key: String,
    /// TTL of the lease.
    #[schemars(range(min = LEASE_TTL_MIN_MS, max = LEASE_TTL_MAX_MS))]
    pub lease_ttl_ms: u64,
}

impl ClaimWithGrantRequest {
    /// The body for `args`.
    pub fn from_args(args: &ClaimExecutionArgs) -> Self {
        Self {
            worker_id: args.worker_id.clone(),
            worker_instance_id: args.worker_instance_id.clone(),
            lane_id: args.lane_id.clone(),
            grant_key: args.grant_key.clone(),
            lease_ttl_ms: args.lease_ttl_ms,
        }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> ClaimExecutionArgs {
        ClaimExecutionArgs {
            execution_id,
            worker_id: self.worker_id,
            worker_instance_id: self.worker_instance_id,
            lane_id: self.lane_id,
            grant_key: self.grant_key,
            lease_ttl_ms: self.lease_ttl_ms,
        }
    }
}

/// `POST /v1/executions/{id}/operator-claim`: an operator claims an execution now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorClaimRequest {
    /// The execution's lane.
    pub lane_id: LaneId,
    /// TTL of the lease.
    #[schemars(range(min = LEASE_TTL_MIN_MS, max = LEASE_TTL_MAX_MS))]
    pub lease_duration_ms: u64,
}

impl OperatorClaimRequest {
    /// The body for `args`.
    pub fn from_args(args: &IssueGrantAndClaimArgs) -> Self {
        Self { lane_id: args.lane_id.clone(), lease_duration_ms: args.lease_duration_ms }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> IssueGrantAndClaimArgs {
        IssueGrantAndClaimArgs { execution_id, lane_id: self.lane_id, lease_duration_ms: self.lease_duration_ms }
    }
}

/// Response of `POST /v1/executions/{id}/operator-claim`: the lease, with its handle as a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OperatorClaimResponse {
    /// Token to send back with the lease-holder calls that end what was claimed.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// The lease.
    pub lease_id: LeaseId,
    /// Its epoch.
    pub lease_epoch: LeaseEpoch,
    /// The attempt.
    pub attempt_index: AttemptIndex,
}

impl OperatorClaimResponse {
    /// The wire form of `outcome`.
    pub fn from_outcome(outcome: &ClaimGrantOutcome) -> Self {
        Self {
            handle: handle_token(&outcome.handle),
            lease_id: outcome.lease_id,
            lease_epoch: outcome.lease_epoch,
            attempt_index: outcome.attempt_index,
        }
    }

    /// The outcome this answer carries; a token that does not parse is `invalid_handle`.
    pub fn into_outcome(self) -> Result<ClaimGrantOutcome, crate::error::EngineError> {
        Ok(ClaimGrantOutcome {
            handle: super::parse_handle_token(&self.handle)?,
            lease_id: self.lease_id,
            lease_epoch: self.lease_epoch,
            attempt_index: self.attempt_index,
        })
    }
}

/// Response of `GET /v1/lanes/{lane_id}/eligible`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EligibleExecutionsResponse {
    /// Eligible, unreserved executions, in claim order.
    pub executions: Vec<ExecutionId>,
}

/// `POST /v1/executions/{id}/block`: park an eligible execution for admission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockExecutionRequest {
    /// The execution's lane.
    pub lane_id: LaneId,
    /// `waiting_for_budget`, `waiting_for_quota` or `waiting_for_capable_worker`.
    pub reason: BlockingReason,
    /// Detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason_detail: Option<String>,
}

impl BlockExecutionRequest {
    /// The body for `args`.
    pub fn from_args(args: &BlockExecutionForAdmissionArgs) -> Self {
        Self { lane_id: args.lane_id.clone(), reason: args.reason, reason_detail: args.reason_detail.clone() }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> BlockExecutionForAdmissionArgs {
        BlockExecutionForAdmissionArgs {
            execution_id,
            lane_id: self.lane_id,
            reason: self.reason,
            reason_detail: self.reason_detail,
        }
    }
}

/// `POST /v1/executions/{id}/block-route`: park an eligible execution until a capable worker
/// appears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRouteRequest {
    /// The execution's lane.
    pub lane_id: LaneId,
    /// A short code for why.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub reason_code: String,
    /// Detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason_detail: Option<String>,
}

impl BlockRouteRequest {
    /// The body for `args`.
    pub fn from_args(args: &BlockRouteArgs) -> Self {
        Self {
            lane_id: args.lane_id.clone(),
            reason_code: args.reason_code.clone(),
            reason_detail: args.reason_detail.clone(),
        }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> BlockRouteArgs {
        BlockRouteArgs {
            execution_id,
            lane_id: self.lane_id,
            reason_code: self.reason_code,
            reason_detail: self.reason_detail,
        }
    }
}

/// `POST /v1/executions/{id}/unblock`: make a blocked execution claimable again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnblockExecutionRequest {
    /// The execution's lane.
    pub lane_id: LaneId,
    /// The reason it is expected to be blocked for (another is `not_blocked`).
    pub expected_blocking_reason: BlockingReason,
}

impl UnblockExecutionRequest {
    /// The body for `args`.
    pub fn from_args(args: &UnblockExecutionArgs) -> Self {
        Self { lane_id: args.lane_id.clone(), expected_blocking_reason: args.expected_blocking_reason }
    }

    /// The arguments for the execution in the path.
    pub fn into_args(self, execution_id: ExecutionId) -> UnblockExecutionArgs {
        UnblockExecutionArgs {
            execution_id,
            lane_id: self.lane_id,
            expected_blocking_reason: self.expected_blocking_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` survives JSON and names nothing the path carries.
    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(body: &T, absent: &str) {
        let json = serde_json::to_value(body).unwrap();
        assert!(json.get(absent).is_none(), "{json}");
        assert_eq!(&serde_json::from_value::<T>(json).unwrap(), body);
    }

    #[test]
    fn admission_bodies_carry_everything_but_the_path_ids() {
        let budget = BudgetId::new();
        let execution = ExecutionId::in_partition(2);
        let lane = LaneId::try_new("l").unwrap();

        let spend = RecordSpendArgs {
            budget_id: budget,
            execution_id: execution,
            deltas: [("tokens".to_owned(), 5)].into(),
            idempotency_key: "k".into(),
        };
        let body = RecordSpendRequest::from_args(&spend);
        round_trip(&body, "budget_id");
        assert_eq!(body.into_args(budget), spend);

        let release = ReleaseBudgetArgs { budget_id: budget, execution_id: execution };
        assert_eq!(ReleaseBudgetRequest::from_args(&release).into_args(budget), release);

        let limits = SetBudgetLimitsArgs {
            budget_id: budget,
            dimensions: vec!["tokens".into()],
            hard_limits: vec![10],
            soft_limits: vec![0],
        };
        let body = SetBudgetLimitsRequest::from_args(&limits);
        assert_eq!(body.budget_id, Some(budget));
        assert_eq!(body.into_args(budget), limits);

        let check = CheckAdmissionArgs {
            execution_id: execution,
            window_seconds: Some(60),
            rate_limit: Some(3),
            concurrency_cap: None,
            jitter_ms: None,
        };
        let body = CheckAdmissionRequest::from_args("calls", &check);
        round_trip(&body, "quota_policy_id");
        assert_eq!(body.into_args(), ("calls".to_owned(), check));

        let grant = IssueClaimGrantArgs {
            execution_id: execution,
            lane_id: lane.clone(),
            worker_id: WorkerId::new("pool"),
            worker_instance_id: WorkerInstanceId::new("w1"),
            worker_capabilities: CapabilitySet::from_iter(["gpu"]),
            grant_ttl_ms: 5_000,
        };
        let body = IssueClaimGrantRequest::from_args(&grant);
        round_trip(&body, "execution_id");
        assert_eq!(body.into_args(execution), grant);

        let unblock = UnblockExecutionArgs {
            execution_id: execution,
            lane_id: lane,
            expected_blocking_reason: BlockingReason::WaitingForBudget,
        };
        let body = UnblockExecutionRequest::from_args(&unblock);
        round_trip(&body, "execution_id");
        assert_eq!(body.into_args(execution), unblock);

        let unknown: Result<ReleaseBudgetRequest, _> =
            serde_json::from_str(&format!(r#"{{"execution_id":"{execution}","budget":"x"}}"#));
        assert!(unknown.is_err());
    }

    #[test]
    fn submission_options_fill_the_policy() {
        let (budget, other, policy) = (BudgetId::new(), BudgetId::new(), QuotaPolicyId::new());
        let req = SubmitRequest::json("l", "k", serde_json::json!(1))
            .budget(budget)
            .budget(other)
            .quota_policy(policy)
            .concurrency_key("acme");
        let p = req.policy.expect("a policy");
        assert_eq!(p.budget_ids, vec![budget, other]);
        assert_eq!(p.quota_policy_id, Some(policy));
        assert_eq!(p.concurrency_key.as_deref(), Some("acme"));
        assert!(p.validate().is_ok());
    }
}
