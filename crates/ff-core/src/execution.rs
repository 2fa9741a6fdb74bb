//! Execution ingress, attempt outcomes and read models.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::handle::LeaseFence;
use crate::id::{
    AttemptId, AttemptIndex, ExecutionId, FlowId, LaneId, LeaseEpoch, LeaseId, Namespace, TimestampMs, WorkerInstanceId,
};
use crate::operator::CancelSource;
use crate::policy::ExecutionPolicy;
use crate::state::{PublicState, StateVector};
use crate::trace::TraceContext;

/// Largest input or result payload in bytes (8 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Longest execution kind, namespace, idempotency key or identity string in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest failure or cancellation message in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most executions one `create_executions` call accepts.
pub const MAX_CREATE_BATCH: usize = 10_000;
/// JSON Schema pattern of a name-like string: no control characters (what [`validate_name`]
/// accepts, apart from the length, which is counted in UTF-8 bytes).
pub const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// JSON Schema pattern of free text: no NUL character (see [`validate_text`]).
pub const TEXT_PATTERN: &str = r"^[^\x00]*$";

/// Checks a payload against [`MAX_PAYLOAD_BYTES`].
pub fn validate_payload(what: &str, bytes: &[u8]) -> Result<(), EngineError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(EngineError::validation(
            crate::error::ValidationKind::PayloadTooLarge,
            format!("{what} is {} bytes; the limit is {MAX_PAYLOAD_BYTES}", bytes.len()),
        ));
    }
    Ok(())
}

/// Refuses text holding a NUL character: stored text cannot hold one, so it is a caller's
/// error (`nul_in_text`), never a storage failure. Every text validator below starts here.
pub fn validate_text(what: &str, s: &str) -> Result<(), EngineError> {
    if s.contains('\0') {
        return Err(EngineError::validation(
            crate::error::ValidationKind::NulInText,
            format!("{what} contains a NUL character"),
        ));
    }
    Ok(())
}

/// Checks a short name-like string: 1..=256 bytes (or empty when `allow_empty`), no control chars.
pub fn validate_name(what: &str, s: &str, allow_empty: bool) -> Result<(), EngineError> {
    validate_text(what, s)?;
    if (!allow_empty && s.is_empty()) || s.len() > MAX_NAME_BYTES || s.chars().any(char::is_control) {
        let range = if allow_empty { "0" } else { "1" };
        return Err(EngineError::invalid(format!(
            "{what} {s:?} must be {range}..={MAX_NAME_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// Checks a free-text message against [`MAX_MESSAGE_BYTES`].
pub fn validate_message(what: &str, s: &str) -> Result<(), EngineError> {
    validate_text(what, s)?;
    if s.len() > MAX_MESSAGE_BYTES {
        return Err(EngineError::invalid(format!("{what} is {} bytes; the limit is {MAX_MESSAGE_BYTES}", s.len())));
    }
    Ok(())
}

/// Arguments of `create_execution`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateExecutionArgs {
    /// Caller-minted id (see [`ExecutionId::solo`]).
    pub execution_id: ExecutionId,
    /// Tenant namespace (may be empty).
    #[serde(default)]
    pub namespace: Namespace,
    /// Lane to queue on; registered on first use.
    pub lane_id: LaneId,
    /// What kind of work this is (routes to a handler).
    pub execution_kind: String,
    /// Input payload (at most [`MAX_PAYLOAD_BYTES`]).
    #[serde(default)]
    pub input_payload: Vec<u8>,
    /// Encoding label of the payload, e.g. `json`.
    #[serde(default)]
    pub payload_encoding: Option<String>,
    /// 0..=9000, higher claimed first.
    #[serde(default)]
    pub priority: i32,
    /// Who created it.
    #[serde(default)]
    pub creator_identity: Option<String>,
    /// Deduplication key within the namespace: a second create with the same key returns the
    /// original id as `Duplicate` for as long as the original execution exists.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Caller tags (keys `<caller>.<field>`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Retry, timeout, reclaim and routing policy.
    #[serde(default)]
    pub policy: Option<ExecutionPolicy>,
    /// Not claimable before this time.
    #[serde(default)]
    pub delay_until: Option<TimestampMs>,
    /// Expires (terminal `expired`) if not finished by this time.
    #[serde(default)]
    pub execution_deadline_at: Option<TimestampMs>,
    /// The submitter's trace context, handed to every worker that claims the execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl CreateExecutionArgs {
    /// Minimal arguments: a fresh solo id for `lane` under the default partition config.
    pub fn new(
        execution_id: ExecutionId,
        lane_id: LaneId,
        execution_kind: impl Into<String>,
        input_payload: Vec<u8>,
    ) -> Self {
        Self {
            execution_id,
            namespace: Namespace::default(),
            lane_id,
            execution_kind: execution_kind.into(),
            input_payload,
            payload_encoding: None,
            priority: 0,
            creator_identity: None,
            idempotency_key: None,
            tags: BTreeMap::new(),
            policy: None,
            delay_until: None,
            execution_deadline_at: None,
            trace_context: None,
        }
    }

    /// Validates every field (partition range is the backend's to check).
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_name("namespace", self.namespace.as_str(), true)?;
        validate_name("execution_kind", &self.execution_kind, false)?;
        validate_payload("input_payload", &self.input_payload)?;
        if let Some(e) = &self.payload_encoding {
            validate_name("payload_encoding", e, false)?;
        }
        crate::policy::validate_priority(self.priority)?;
        if let Some(c) = &self.creator_identity {
            validate_name("creator_identity", c, true)?;
        }
        if let Some(k) = &self.idempotency_key {
            validate_name("idempotency_key", k, false)?;
        }
        if self.tags.len() > crate::tag::MAX_TAGS {
            return Err(EngineError::invalid(format!(
                "{} tags exceed the limit of {}",
                self.tags.len(),
                crate::tag::MAX_TAGS
            )));
        }
        for (k, v) in &self.tags {
            crate::tag::validate_tag_key(k)?;
            crate::tag::validate_tag_value(k, v)?;
        }
        if let Some(p) = &self.policy {
            p.validate()?;
        }
        if let Some(t) = self.delay_until {
            t.validate("delay_until")?;
        }
        if let Some(t) = self.execution_deadline_at {
            t.validate("execution_deadline_at")?;
        }
        Ok(())
    }
}

/// Outcome of `create_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CreateExecutionResult {
    /// A new execution was created.
    Created {
        /// Its id.
        execution_id: ExecutionId,
        /// Its initial state (`waiting` or `delayed`).
        public_state: PublicState,
    },
    /// The id or idempotency key already existed; this is the original execution.
    Duplicate {
        /// The original id.
        execution_id: ExecutionId,
    },
}

impl CreateExecutionResult {
    /// The id, created or original.
    pub fn execution_id(&self) -> ExecutionId {
        match self {
            Self::Created { execution_id, .. } | Self::Duplicate { execution_id } => *execution_id,
        }
    }
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailureReason {
    /// Short message.
    pub message: String,
    /// Optional detail (stack trace, response body...).
    #[serde(default)]
    pub detail: Option<String>,
}

impl FailureReason {
    /// A reason with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), detail: None }
    }
}

/// Failure classification: decides whether a retry is allowed at all (the stored policy decides
/// how many and when).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Might succeed on retry.
    Transient,
    /// Will not succeed on retry; fail now.
    Permanent,
    /// The worker's infrastructure failed; retry.
    InfraCrash,
    /// The work timed out; retry.
    Timeout,
    /// The work was cancelled from inside; fail now.
    Cancelled,
}

impl FailureClass {
    /// True when the stored retry policy may schedule another attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient | Self::InfraCrash | Self::Timeout)
    }

    /// Snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::InfraCrash => "infra_crash",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Outcome of `fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Another attempt will become claimable at `delay_until`.
    RetryScheduled {
        /// When the retry becomes claimable.
        delay_until: TimestampMs,
        /// Index the next attempt will have.
        next_attempt_index: AttemptIndex,
    },
    /// The execution failed for good.
    TerminalFailed,
}

/// Snapshot of the current attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttemptSummary {
    /// Attempt id.
    pub attempt_id: AttemptId,
    /// Attempt index.
    pub attempt_index: AttemptIndex,
}

/// Snapshot of the current (or last) lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseSummary {
    /// Lease id.
    pub lease_id: LeaseId,
    /// Epoch.
    pub lease_epoch: LeaseEpoch,
    /// Holder.
    pub worker_instance_id: WorkerInstanceId,
    /// Expiry.
    pub expires_at: TimestampMs,
    /// Attempt it belongs to.
    pub attempt_index: AttemptIndex,
    /// Last renewal or claim.
    pub last_heartbeat_at: Option<TimestampMs>,
}

/// Snapshot of an execution (`describe_execution`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecutionSnapshot {
    /// Id.
    pub execution_id: ExecutionId,
    /// Owning flow, if any.
    pub flow_id: Option<FlowId>,
    /// Lane.
    pub lane_id: LaneId,
    /// Namespace.
    pub namespace: Namespace,
    /// Derived label.
    pub public_state: PublicState,
    /// Full state vector.
    pub state: StateVector,
    /// Why no progress.
    pub blocking_reason: Option<String>,
    /// Free-text detail (last failure message, cancel reason...).
    pub blocking_detail: Option<String>,
    /// Current attempt, if one was ever claimed.
    pub current_attempt: Option<AttemptSummary>,
    /// Live lease, if held.
    pub current_lease: Option<LeaseSummary>,
    /// Creation time.
    pub created_at: TimestampMs,
    /// Last state change.
    pub last_mutation_at: TimestampMs,
    /// Claims that minted a new attempt.
    pub total_attempt_count: u32,
    /// Lease reclaims so far.
    pub lease_reclaim_count: u32,
    /// Retries scheduled so far (reset by a replay).
    pub retry_count: u32,
    /// Times an operator replayed it.
    pub replay_count: u32,
    /// Last reported progress percent.
    pub progress_pct: Option<u8>,
    /// Last reported progress message.
    pub progress_message: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Full-shape execution read (`read_execution_info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecutionInfo {
    /// Id.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lane.
    pub lane_id: LaneId,
    /// Priority.
    pub priority: i32,
    /// Kind.
    pub execution_kind: String,
    /// State vector.
    pub state_vector: StateVector,
    /// Derived label.
    pub public_state: PublicState,
    /// Created.
    pub created_at: TimestampMs,
    /// First claimed.
    pub started_at: Option<TimestampMs>,
    /// Became terminal.
    pub completed_at: Option<TimestampMs>,
    /// Current attempt index (0 before the first claim).
    pub current_attempt_index: AttemptIndex,
    /// Owning flow.
    pub flow_id: Option<FlowId>,
    /// Free-text detail.
    pub blocking_detail: Option<String>,
    /// Earliest claim time while delayed.
    pub delay_until: Option<TimestampMs>,
    /// Absolute execution deadline.
    pub execution_deadline_at: Option<TimestampMs>,
    /// Required capabilities.
    pub required_capabilities: Vec<String>,
}

/// What a worker needs after a claim (`read_execution_context`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecutionContext {
    /// Input payload.
    pub input_payload: Vec<u8>,
    /// Kind.
    pub execution_kind: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The submitter's trace context, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

/// One page of `list_executions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListExecutionsPage {
    /// Ids in ascending order.
    pub executions: Vec<ExecutionId>,
    /// Pass as `cursor` for the next page; `None` when this is the last page.
    pub next_cursor: Option<ExecutionId>,
}

/// One page of `list_lanes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListLanesPage {
    /// Lanes in ascending order.
    pub lanes: Vec<LaneId>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<LaneId>,
}

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Arguments of `complete_execution`: the fence-triple peer of `complete`, for service layers
/// that keep the lease fields rather than a handle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompleteExecutionArgs {
    /// Execution.
    pub execution_id: ExecutionId,
    /// The leased attempt.
    pub attempt_index: AttemptIndex,
    /// The current lease. Required unless `source` is `operator_override`, which completes
    /// whatever live lease the execution holds.
    #[serde(default)]
    pub fence: Option<LeaseFence>,
    /// Result payload (at most 8 MiB).
    #[serde(default)]
    pub result_payload: Option<Vec<u8>>,
    /// Who completes it.
    #[serde(default = "lease_holder")]
    pub source: CancelSource,
}

impl CompleteExecutionArgs {
    /// Checks the payload and that a fence is present unless overridden.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(p) = &self.result_payload {
            validate_payload("result_payload", p)?;
        }
        fence_present(self.fence.as_ref(), self.source, "complete_execution")
    }
}

/// Outcome of `complete_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CompleteExecutionResult {
    /// The execution is terminal `completed`.
    Completed {
        /// Execution.
        execution_id: ExecutionId,
        /// Its state now (`completed`).
        public_state: PublicState,
    },
}

/// Arguments of `fail_execution`: the fence-triple peer of `fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FailExecutionArgs {
    /// Execution.
    pub execution_id: ExecutionId,
    /// The leased attempt.
    pub attempt_index: AttemptIndex,
    /// The current lease. Required unless `source` is `operator_override`, which fails
    /// whatever live lease the execution holds.
    #[serde(default)]
    pub fence: Option<LeaseFence>,
    /// Why.
    pub failure_reason: FailureReason,
    /// Classification (decides whether the stored retry policy may retry).
    pub failure_category: FailureClass,
    /// Who fails it.
    #[serde(default = "lease_holder")]
    pub source: CancelSource,
}

impl FailExecutionArgs {
    /// Checks the reason and that a fence is present unless overridden.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_message("failure message", &self.failure_reason.message)?;
        if let Some(d) = &self.failure_reason.detail {
            validate_message("failure detail", d)?;
        }
        fence_present(self.fence.as_ref(), self.source, "fail_execution")
    }
}

/// Outcome of `fail_execution` (the same as `fail`'s).
pub type FailExecutionResult = FailOutcome;

fn lease_holder() -> CancelSource {
    CancelSource::LeaseHolder
}

fn fence_present(fence: Option<&LeaseFence>, source: CancelSource, what: &str) -> Result<(), EngineError> {
    if fence.is_none() && !source.overrides_fence() {
        return Err(EngineError::validation(
            crate::error::ValidationKind::FenceRequired,
            format!("{what} needs the lease fence unless the source is operator_override"),
        ));
    }
    Ok(())
}
