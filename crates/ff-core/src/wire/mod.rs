//! JSON bodies of the HTTP API, shared by `ff-server` (which parses requests and writes
//! responses) and `ff-sdk` (which does the reverse), so both sides agree by construction.
//!
//! Conventions: byte payloads travel as standard base64 strings (`*_base64` fields) or, for JSON
//! inputs, as an inline JSON value (`input`); timestamps are epoch milliseconds; a worker's
//! [`Handle`] travels as an opaque token string (see [`handle_token`]). Request bodies reject
//! unknown fields, so a misspelt option is an error rather than silently ignored.

mod admission;
mod flow;
mod operator;
mod suspension;

pub use admission::*;
pub use flow::*;
pub use operator::*;
pub use suspension::*;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::capability::CapabilitySet;
use crate::capability::{CAPABILITY_TOKEN_MAX_BYTES, CAPABILITY_TOKEN_PATTERN};
use crate::error::{EngineError, ValidationKind};
use crate::execution::{
    CreateExecutionArgs, FailureClass, MAX_CREATE_BATCH, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_PAYLOAD_BYTES,
    NAME_PATTERN, TEXT_PATTERN,
};
use crate::handle::{BackendTag, Handle, HandleKind, HandleOpaque, HandlePayload};
use crate::id::{AttemptIndex, ExecutionId, LaneId, Namespace, TimestampMs, WorkerId, WorkerInstanceId};
use crate::lease::{LeasedExecution, MAX_CLAIM_BATCH, MAX_CLAIM_WAIT_MS};
use crate::partition::PartitionConfig;
use crate::policy::{ExecutionPolicy, LEASE_TTL_MAX_MS, LEASE_TTL_MIN_MS, MAX_CAPABILITIES, PRIORITY_MAX};
use crate::stream::{FRAME_TYPE_PATTERN, FrameKind, MAX_FRAME_BYTES, MAX_FRAME_TYPE_BYTES};
use crate::tag::{TAG_VALUE_MAX_BYTES, tags_schema};
use crate::trace::TraceContext;
use crate::worker::{
    MAX_DEATH_REASON_BYTES, MAX_WORKER_LANES, RegisterWorkerArgs, WORKER_TTL_MAX_MS, WORKER_TTL_MIN_MS,
};

/// Encodes bytes as standard base64.
pub fn encode_bytes(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a standard base64 field; `what` names the field in the error.
pub fn decode_bytes(what: &str, s: &str) -> Result<Vec<u8>, EngineError> {
    STANDARD.decode(s).map_err(|e| EngineError::invalid(format!("{what} is not valid base64: {e}")))
}

/// JSON Schema pattern of standard base64 as [`decode_bytes`] accepts it: padded, canonical.
pub const BASE64_PATTERN: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$";

/// Length of the base64 text of `bytes` bytes.
pub const fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// JSON Schema pattern of a handle token (see [`handle_token`]): the token's shape; whether its
/// payload decodes is only known when it is used.
pub const HANDLE_TOKEN_PATTERN: &str = r"^ffh1\.(?:postgres|valkey|sqlite)\.(?:fresh|resumed|suspended|reclaimed)\.(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]|[A-Za-z0-9_-][AQgw])?$";

const TOKEN_PREFIX: &str = "ffh1";

/// Encodes a handle as the token string workers send back: `ffh1.<backend>.<kind>.<base64url>`.
pub fn handle_token(handle: &Handle) -> String {
    let opaque = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&handle.opaque.0);
    format!("{TOKEN_PREFIX}.{}.{}.{opaque}", handle.backend.label(), handle.kind.as_str())
}

/// Decodes a token made by [`handle_token`]; a damaged token is `Validation(InvalidHandle)`.
pub fn parse_handle_token(token: &str) -> Result<Handle, EngineError> {
    let bad =
        |why: &str| EngineError::validation(ValidationKind::InvalidHandle, format!("malformed handle token: {why}"));
    let mut parts = token.splitn(4, '.');
    if parts.next() != Some(TOKEN_PREFIX) {
        return Err(bad("unknown prefix"));
    }
    let backend = match parts.next() {
        Some("postgres") => BackendTag::Postgres,
        Some("valkey") => BackendTag::Valkey,
        Some("sqlite") => BackendTag::Sqlite,
        _ => return Err(bad("unknown backend")),
    };
    let kind = HandleKind::parse(parts.next().ok_or_else(|| bad("missing kind"))?).map_err(|_| bad("unknown kind"))?;
    let opaque = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts.next().ok_or_else(|| bad("missing payload"))?)
        .map_err(|_| bad("payload is not base64url"))?;
    Ok(Handle { backend, kind, opaque: HandleOpaque(opaque.into_boxed_slice()) })
}

/// `POST /v1/executions`: submit one execution. The server mints the id (on the lane's
/// partition) unless one is given. String lengths are limits in UTF-8 bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exclusive_inputs)]
pub struct SubmitRequest {
    /// Caller-minted id; when absent the server mints a solo id for the lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<ExecutionId>,
    /// Tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
    /// Lane to queue on.
    #[schemars(with = "LaneId")]
    pub lane_id: String,
    /// Handler routing key.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub execution_kind: String,
    /// JSON input, stored as UTF-8 JSON bytes with encoding `json`. Exclusive with `input_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Binary input, base64 (at most 8 MiB decoded). Exclusive with `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = base64_len(MAX_PAYLOAD_BYTES)), pattern(BASE64_PATTERN))]
    pub input_base64: Option<String>,
    /// Encoding label of a binary input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub payload_encoding: Option<String>,
    /// 0..=9000, higher first.
    #[serde(default)]
    #[schemars(range(min = 0, max = PRIORITY_MAX))]
    pub priority: i32,
    /// Who submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub creator_identity: Option<String>,
    /// Deduplication key within the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub idempotency_key: Option<String>,
    /// Tags (`<caller>.<field>` keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "tags_schema")]
    pub tags: BTreeMap<String, String>,
    /// Retry, timeout, reclaim and routing policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<ExecutionPolicy>,
    /// Not claimable before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_until: Option<TimestampMs>,
    /// Expires if not finished by this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_deadline_at: Option<TimestampMs>,
    /// The submitter's W3C trace context; a request's `traceparent` / `tracestate` headers
    /// give it to an execution that carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl SubmitRequest {
    /// A request with a JSON input.
    pub fn json(lane_id: impl Into<String>, execution_kind: impl Into<String>, input: serde_json::Value) -> Self {
        Self { lane_id: lane_id.into(), execution_kind: execution_kind.into(), input: Some(input), ..Self::default() }
    }

    /// Converts into backend arguments, minting the id when absent. Every field is validated.
    pub fn into_args(self, partitions: &PartitionConfig) -> Result<CreateExecutionArgs, EngineError> {
        let lane = LaneId::try_new(self.lane_id)?;
        let (input_payload, payload_encoding) = match (self.input, self.input_base64) {
            (Some(_), Some(_)) => return Err(EngineError::invalid("give either input or input_base64, not both")),
            (Some(v), None) => (
                serde_json::to_vec(&v).map_err(|e| EngineError::invalid(format!("input: {e}")))?,
                Some(self.payload_encoding.unwrap_or_else(|| "json".to_owned())),
            ),
            (None, Some(b)) => (decode_bytes("input_base64", &b)?, self.payload_encoding),
            (None, None) => (Vec::new(), self.payload_encoding),
        };
        let execution_id = match self.execution_id {
            Some(id) => {
                partitions.check_execution_partition(id.partition_index())?;
                id
            }
            None => ExecutionId::solo(&lane, partitions),
        };
        let mut args = CreateExecutionArgs::new(execution_id, lane, self.execution_kind, input_payload);
        args.namespace = self.namespace.unwrap_or_default();
        args.payload_encoding = payload_encoding;
        args.priority = self.priority;
        args.creator_identity = self.creator_identity;
        args.idempotency_key = self.idempotency_key;
        args.tags = self.tags;
        args.policy = self.policy;
        args.delay_until = self.delay_until;
        args.execution_deadline_at = self.execution_deadline_at;
        args.trace_context = self.trace_context;
        args.validate()?;
        Ok(args)
    }
}

/// JSON Schema transform: at most one of two optional fields is given a non-null value.
fn exclusive(schema: &mut schemars::Schema, a: &str, b: &str) {
    let both = serde_json::json!({
        "required": [a, b],
        "properties": {a: {"not": {"type": "null"}}, b: {"not": {"type": "null"}}},
    });
    schema.insert("not".into(), both);
}

fn exclusive_inputs(schema: &mut schemars::Schema) {
    exclusive(schema, "input", "input_base64");
}

fn exclusive_frame_payloads(schema: &mut schemars::Schema) {
    exclusive(schema, "text", "bytes_base64");
}

/// `POST /v1/executions/batch`: submit many executions atomically (all or nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatchRequest {
    /// The executions, at most 10 000.
    #[schemars(length(max = MAX_CREATE_BATCH))]
    pub executions: Vec<SubmitRequest>,
}

/// Response of `POST /v1/executions/batch`: one result per input, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SubmitBatchResponse {
    /// Results in input order.
    pub results: Vec<crate::execution::CreateExecutionResult>,
}

/// `POST /v1/workers/{worker_id}/claim`: lease up to `max` executions of one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Lane to claim from.
    #[schemars(with = "LaneId")]
    pub lane_id: String,
    /// The claiming process.
    #[schemars(with = "WorkerInstanceId")]
    pub worker_instance_id: String,
    /// Worker capabilities; executions requiring more are skipped.
    #[serde(default)]
    #[schemars(
        length(max = MAX_CAPABILITIES),
        inner(length(min = 1, max = CAPABILITY_TOKEN_MAX_BYTES), pattern(CAPABILITY_TOKEN_PATTERN))
    )]
    pub capabilities: Vec<String>,
    /// Lease TTL in ms.
    #[schemars(range(min = LEASE_TTL_MIN_MS, max = LEASE_TTL_MAX_MS))]
    pub lease_ttl_ms: u64,
    /// How many executions at most (1..=1000, default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = MAX_CLAIM_BATCH))]
    pub max: usize,
    /// Long-poll: wait up to this many ms for work (<= 60 000; default 0 = answer at once).
    #[serde(default)]
    #[schemars(range(max = MAX_CLAIM_WAIT_MS))]
    pub max_wait_ms: u64,
}

impl ClaimRequest {
    /// The long-poll as the claim policy spells it (`None` = answer at once).
    pub fn max_wait(&self) -> Option<Duration> {
        (self.max_wait_ms > 0).then(|| Duration::from_millis(self.max_wait_ms))
    }
}

fn one() -> usize {
    1
}

/// One leased execution, with what its handler needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimedExecution {
    /// Token to send back with every lease-holder call.
    pub handle: String,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Attempt this lease belongs to.
    pub attempt_index: AttemptIndex,
    /// Fresh attempt, resumed attempt, or reclaim of a lost lease.
    pub claim_kind: HandleKind,
    /// Lane.
    pub lane_id: LaneId,
    /// Lease TTL (renewals extend by this much).
    pub lease_ttl_ms: u64,
    /// Handler routing key.
    pub execution_kind: String,
    /// Input, base64.
    pub input_base64: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The submitter's trace context: the handler's span is its child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

impl ClaimedExecution {
    /// The wire form of a lease the backend has just minted: the lease details are read from
    /// the handle once, here, so the receiver never decodes the handle to learn them.
    pub fn from_leased(leased: LeasedExecution) -> Result<Self, EngineError> {
        let LeasedExecution { handle, context } = leased;
        // The backend minted this handle a moment ago; failing to decode it is the engine's bug.
        let p = HandlePayload::from_handle(&handle, handle.backend)
            .map_err(|e| EngineError::Internal(format!("a freshly minted handle does not decode: {e}")))?;
        Ok(Self {
            handle: handle_token(&handle),
            execution_id: p.execution_id,
            attempt_index: p.attempt_index,
            claim_kind: handle.kind,
            lane_id: p.lane_id,
            lease_ttl_ms: p.lease_ttl_ms,
            execution_kind: context.execution_kind,
            input_base64: encode_bytes(&context.input_payload),
            tags: context.tags,
            trace_context: context.trace_context,
        })
    }
}

/// Response of a claim: possibly empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimResponse {
    /// Leased executions.
    pub claimed: Vec<ClaimedExecution>,
}

/// `POST /v1/workers/{worker_id}/complete-and-claim`: complete one execution, then lease up to
/// `claim.max` more, in one round trip (a busy worker's loop: one request per execution instead
/// of two). The claim is validated before anything is written; a completion that is refused
/// claims nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteAndClaimRequest {
    /// The completion, as `POST /v1/executions/{id}/complete` takes it.
    pub complete: CompleteRequest,
    /// The claim that follows it, as `POST /v1/workers/{worker_id}/claim` takes it.
    pub claim: ClaimRequest,
}

/// `POST /v1/workers/{worker_id}/instances`: register an instance of the worker pool named in
/// the path (or refresh its live registration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWorkerRequest {
    /// This worker process; unique across the registry.
    pub worker_instance_id: WorkerInstanceId,
    /// Lanes it claims from.
    #[serde(default)]
    #[schemars(length(max = MAX_WORKER_LANES))]
    pub lanes: Vec<LaneId>,
    /// Capabilities it offers.
    #[serde(default)]
    pub capabilities: CapabilitySet,
    /// How long it counts as alive after each registration or heartbeat.
    #[schemars(range(min = WORKER_TTL_MIN_MS, max = WORKER_TTL_MAX_MS))]
    pub liveness_ttl_ms: u64,
    /// Namespace it serves (default empty).
    #[serde(default)]
    pub namespace: Namespace,
}

impl RegisterWorkerRequest {
    /// The body of a registration of `args` (whose worker id goes in the path).
    pub fn from_args(args: &RegisterWorkerArgs) -> Self {
        Self {
            worker_instance_id: args.worker_instance_id.clone(),
            lanes: args.lanes.clone(),
            capabilities: args.capabilities.clone(),
            liveness_ttl_ms: args.liveness_ttl_ms,
            namespace: args.namespace.clone(),
        }
    }

    /// The registration this body asks for, for the worker pool named in the path.
    pub fn into_args(self, worker_id: WorkerId) -> RegisterWorkerArgs {
        RegisterWorkerArgs {
            worker_id,
            worker_instance_id: self.worker_instance_id,
            lanes: self.lanes,
            capabilities: self.capabilities,
            liveness_ttl_ms: self.liveness_ttl_ms,
            namespace: self.namespace,
        }
    }
}

/// `POST /v1/workers/{worker_id}/instances/{instance_id}/heartbeat`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatWorkerRequest {
    /// The namespace the instance registered in (default empty).
    #[serde(default)]
    pub namespace: Namespace,
}

/// Response of a heartbeat of a live registration (an unknown or lapsed one answers
/// `404 worker_not_registered`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeartbeatWorkerResponse {
    /// When the instance stops counting as alive without another heartbeat.
    pub next_expiry_ms: TimestampMs,
}

/// `POST /v1/workers/{worker_id}/instances/{instance_id}/dead`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkWorkerDeadRequest {
    /// The namespace the instance registered in (default empty).
    #[serde(default)]
    pub namespace: Namespace,
    /// Why (1..=256 bytes); recorded on the executions whose leases it loses.
    #[schemars(length(min = 1, max = MAX_DEATH_REASON_BYTES), pattern(NAME_PATTERN))]
    pub reason: String,
}

/// Response of marking a registered instance dead (an unknown one answers
/// `404 worker_not_registered`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MarkWorkerDeadResponse {
    /// How many leases it lost.
    pub revoked_leases: u64,
}

/// Lease-holder call with nothing but the handle (`renew`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandleRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
}

/// `POST /v1/executions/{id}/progress`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// 0..=100.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub percent: Option<u8>,
    /// Free text.
    #[serde(default)]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub message: Option<String>,
}

/// `POST /v1/executions/{id}/frames`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exclusive_frame_payloads)]
pub struct AppendFrameRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// Application type label.
    #[schemars(length(min = 1, max = MAX_FRAME_TYPE_BYTES), pattern(FRAME_TYPE_PATTERN))]
    pub frame_type: String,
    /// Channel (default `event`).
    #[serde(default)]
    pub kind: Option<FrameKind>,
    /// UTF-8 payload (at most 64 KiB). Exclusive with `bytes_base64`.
    #[serde(default)]
    #[schemars(length(max = MAX_FRAME_BYTES))]
    pub text: Option<String>,
    /// Binary payload, base64 (at most 64 KiB decoded). Exclusive with `text`.
    #[serde(default)]
    #[schemars(length(max = base64_len(MAX_FRAME_BYTES)), pattern(BASE64_PATTERN))]
    pub bytes_base64: Option<String>,
    /// Optional correlation id.
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub correlation_id: Option<String>,
    /// How the stream keeps the frame (default durable).
    #[serde(default)]
    pub mode: Option<crate::stream::StreamMode>,
}

/// `POST /v1/executions/{id}/complete`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// Result payload, base64 (at most 8 MiB decoded).
    #[serde(default)]
    #[schemars(length(max = base64_len(MAX_PAYLOAD_BYTES)), pattern(BASE64_PATTERN))]
    pub result_base64: Option<String>,
}

/// `POST /v1/completions`: complete many executions in one call; each item is fenced alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteBatchRequest {
    /// Items, at most 1000.
    #[schemars(length(max = MAX_CLAIM_BATCH))]
    pub items: Vec<CompleteRequest>,
}

/// Response of `POST /v1/completions`: one entry per item, in order; `null` = completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompleteBatchResponse {
    /// Per-item error, or `None` when the item completed.
    pub results: Vec<Option<ErrorBody>>,
}

/// `POST /v1/executions/{id}/fail`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// Short message.
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub message: String,
    /// Longer detail.
    #[serde(default)]
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub detail: Option<String>,
    /// Decides whether a retry is allowed (default `transient`).
    #[serde(default = "transient")]
    pub classification: FailureClass,
}

fn transient() -> FailureClass {
    FailureClass::Transient
}

/// `POST /v1/executions/{id}/cancel` by the lease holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// Why.
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason: String,
}

/// `POST /v1/executions/{id}/delay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelayRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// When the execution becomes claimable again (resuming the same attempt).
    pub delay_until: TimestampMs,
}

/// `PUT /v1/executions/{id}/tags/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagValue {
    /// The value.
    #[schemars(length(max = TAG_VALUE_MAX_BYTES), pattern(TEXT_PATTERN))]
    pub value: String,
}

/// The one error shape of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`not_found`, `stale_lease`, `invalid_json`...).
    pub code: String,
    /// Human-readable message; never internal detail for server errors.
    pub message: String,
    /// True when retrying the same request may succeed.
    pub retryable: bool,
}

/// Response of `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
    /// Backend label.
    pub backend: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{AttemptId, LeaseEpoch, LeaseId};

    #[test]
    fn handle_tokens_round_trip_and_reject_damage() {
        let lane = LaneId::try_new("l").unwrap();
        let p = HandlePayload {
            execution_id: ExecutionId::in_partition(3),
            attempt_index: AttemptIndex(1),
            attempt_id: AttemptId::new(),
            lease_id: LeaseId::new(),
            lease_epoch: LeaseEpoch(7),
            lease_ttl_ms: 1000,
            lane_id: lane,
            worker_instance_id: WorkerInstanceId::new("w"),
        };
        let h = p.into_handle(BackendTag::Postgres, HandleKind::Reclaimed);
        let t = handle_token(&h);
        assert_eq!(parse_handle_token(&t).unwrap(), h);
        for bad in [
            "",
            "ffh1",
            "ffh2.postgres.fresh.AA",
            "ffh1.mysql.fresh.AA",
            "ffh1.postgres.odd.AA",
            "ffh1.postgres.fresh.!!",
        ] {
            assert_eq!(parse_handle_token(bad).unwrap_err().code(), "invalid_handle", "{bad}");
        }
    }

    #[test]
    fn submit_requests_validate_and_mint_ids() {
        let pc = PartitionConfig::default();
        let args = SubmitRequest::json("emails", "send", serde_json::json!({"to": "a"})).into_args(&pc).unwrap();
        assert_eq!(args.execution_id.partition_index(), pc.lane_partition(&args.lane_id));
        assert_eq!(args.payload_encoding.as_deref(), Some("json"));
        assert_eq!(args.input_payload, br#"{"to":"a"}"#);

        let both = SubmitRequest { input_base64: Some("AA==".into()), ..SubmitRequest::json("l", "k", 1.into()) };
        assert_eq!(both.into_args(&pc).unwrap_err().code(), "invalid_input");
        let bad_b64 = SubmitRequest { input_base64: Some("***".into()), ..SubmitRequest::json("l", "k", 1.into()) };
        let bad_b64 = SubmitRequest { input: None, ..bad_b64 };
        assert_eq!(bad_b64.into_args(&pc).unwrap_err().code(), "invalid_input");
        let bad_lane = SubmitRequest::json("", "k", 1.into());
        assert!(bad_lane.into_args(&pc).is_err());
        let bad_partition = SubmitRequest {
            execution_id: Some(ExecutionId::in_partition(pc.num_flow_partitions)),
            ..SubmitRequest::json("l", "k", 1.into())
        };
        assert!(bad_partition.into_args(&pc).is_err());
        let unknown: Result<SubmitRequest, _> =
            serde_json::from_str(r#"{"lane_id":"l","execution_kind":"k","priorty":3}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn a_registration_body_carries_everything_but_the_pool() {
        let args = RegisterWorkerArgs {
            worker_id: WorkerId::new("pool"),
            worker_instance_id: WorkerInstanceId::new("w1"),
            lanes: vec![LaneId::try_new("l").unwrap()],
            capabilities: CapabilitySet::from_iter(["gpu"]),
            liveness_ttl_ms: 5_000,
            namespace: Namespace::new("ns"),
        };
        let body = RegisterWorkerRequest::from_args(&args);
        assert_eq!(body.clone().into_args(WorkerId::new("pool")), args);
        let json = serde_json::to_value(&body).unwrap();
        assert!(json.get("worker_id").is_none(), "{json}");
        let unknown: Result<RegisterWorkerRequest, _> =
            serde_json::from_str(r#"{"worker_instance_id":"w","liveness_ttl_ms":1000,"ttl":3}"#);
        assert!(unknown.is_err());
        let minimal: RegisterWorkerRequest =
            serde_json::from_str(r#"{"worker_instance_id":"w","liveness_ttl_ms":1000}"#).unwrap();
        assert!(minimal.lanes.is_empty() && minimal.namespace.as_str().is_empty());
        let beat: HeartbeatWorkerRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(beat, HeartbeatWorkerRequest::default());
    }
}
