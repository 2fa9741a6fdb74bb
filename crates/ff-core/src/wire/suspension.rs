//! The JSON bodies of the suspension routes whose shape differs from the backend method's
//! `…Args`: the execution and waitpoint ids travel in the path, and signal payloads travel as
//! submission inputs do (an inline JSON value stored with encoding `json`, or base64). Each
//! converts from the `…Args` (the SDK's side) and into them, given the path's ids (the server's
//! side).
//!
//! A signal's waitpoint token may travel in the body (`waitpoint_token`) or in the
//! [`WAITPOINT_TOKEN_HEADER`]; giving both, different, is refused.

use serde::{Deserialize, Serialize};

use super::{BASE64_PATTERN, HANDLE_TOKEN_PATTERN, base64_len, decode_bytes, encode_bytes};
use crate::error::EngineError;
use crate::execution::{MAX_NAME_BYTES, NAME_PATTERN};
use crate::id::{ExecutionId, LaneId, SignalId, TimestampMs, WaitpointId};
use crate::suspension::{
    DeliverApprovalSignalArgs, DeliverSignalArgs, MAX_SIGNAL_PAYLOAD_BYTES, MAX_SUSPENSION_DELAY_MS, ResumeSignal,
    SuspendArgs,
};

/// The header an outside caller may present a waitpoint token in, instead of the body.
pub const WAITPOINT_TOKEN_HEADER: &str = "x-waitpoint-token";

/// Source type of a signal delivered over HTTP that names none.
pub const DEFAULT_SIGNAL_SOURCE_TYPE: &str = "external";

/// `POST /v1/executions/{id}/waitpoints/{waitpoint_id}/signals`: deliver a signal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(transform = exclusive_payloads)]
pub struct DeliverSignalRequest {
    /// The signal's id (minted when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_id: Option<SignalId>,
    /// Its name, which the resume condition's matchers compare.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub signal_name: String,
    /// Its category, e.g. `approval`, `callback` (default `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub signal_category: Option<String>,
    /// Who sends it: type, e.g. `user`, `webhook` (default `external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub source_type: Option<String>,
    /// Who sends it: identity (default empty); `DistinctSources` counts (type, identity) pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub source_identity: Option<String>,
    /// JSON payload, stored as UTF-8 JSON bytes with encoding `json`. Exclusive with
    /// `payload_base64`. At most 64 KiB encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Binary payload, base64 (at most 64 KiB decoded). Exclusive with `payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = base64_len(MAX_SIGNAL_PAYLOAD_BYTES)), pattern(BASE64_PATTERN))]
    pub payload_base64: Option<String>,
    /// Encoding label of a binary payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub payload_encoding: Option<String>,
    /// The sender's correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub correlation_id: Option<String>,
    /// A repeat with the same key within the dedup TTL is `Duplicate` and records nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub idempotency_key: Option<String>,
    /// How long the idempotency key deduplicates (default 24 h, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000_000u64))]
    pub dedup_ttl_ms: Option<u64>,
    /// Refuse the signal when the execution already has this many (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_signals_per_execution: Option<u32>,
    /// The waitpoint's token (`<kid>:<hex>`), unless it travels in the `X-Waitpoint-Token`
    /// header. A caller holding the API token may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waitpoint_token: Option<String>,
}

impl DeliverSignalRequest {
    /// The body for `args` (its ids travel in the path): the payload as base64 with its
    /// encoding label.
    pub fn from_args(args: &DeliverSignalArgs) -> Self {
        Self {
            signal_id: args.signal_id,
            signal_name: args.signal_name.clone(),
            signal_category: args.signal_category.clone(),
            source_type: Some(args.source_type.clone()),
            source_identity: Some(args.source_identity.clone()),
            payload: None,
            payload_base64: args.payload.as_deref().map(encode_bytes),
            payload_encoding: args.payload_encoding.clone(),
            correlation_id: args.correlation_id.clone(),
            idempotency_key: args.idempotency_key.clone(),
            dedup_ttl_ms: args.dedup_ttl_ms,
            max_signals_per_execution: args.max_signals_per_execution,
            waitpoint_token: args.waitpoint_token.clone(),
        }
    }

    /// The arguments for the waitpoint in the path; `header_token` is the token presented in
    /// [`WAITPOINT_TOKEN_HEADER`], if any. Every field is validated.
    pub fn into_args(
        self,
        execution_id: ExecutionId,
        waitpoint_id: WaitpointId,
        header_token: Option<String>,
    ) -> Result<DeliverSignalArgs, EngineError> {
        let waitpoint_token = match (self.waitpoint_token, header_token) {
            (Some(body), Some(header)) if body != header => {
                return Err(EngineError::invalid("the waitpoint token in the body and in the header differ"));
            }
            (body, header) => body.or(header),
        };
        let (payload, payload_encoding) = match (self.payload, self.payload_base64) {
            (Some(_), Some(_)) => return Err(EngineError::invalid("give either payload or payload_base64, not both")),
            (Some(v), None) => (
                Some(serde_json::to_vec(&v).map_err(|e| EngineError::invalid(format!("payload: {e}")))?),
                Some(self.payload_encoding.unwrap_or_else(|| "json".to_owned())),
            ),
            (None, Some(b)) => (Some(decode_bytes("payload_base64", &b)?), self.payload_encoding),
            (None, None) => (None, self.payload_encoding),
        };
        let args = DeliverSignalArgs {
            execution_id,
            waitpoint_id,
            signal_id: self.signal_id,
            signal_name: self.signal_name,
            signal_category: self.signal_category,
            source_type: self.source_type.unwrap_or_else(|| DEFAULT_SIGNAL_SOURCE_TYPE.to_owned()),
            source_identity: self.source_identity.unwrap_or_default(),
            payload,
            payload_encoding,
            correlation_id: self.correlation_id,
            idempotency_key: self.idempotency_key,
            dedup_ttl_ms: self.dedup_ttl_ms,
            max_signals_per_execution: self.max_signals_per_execution,
            waitpoint_token,
        };
        args.validate()?;
        Ok(args)
    }
}

fn exclusive_payloads(schema: &mut schemars::Schema) {
    super::exclusive(schema, "payload", "payload_base64");
}

/// `POST /v1/executions/{id}/waitpoints/{waitpoint_id}/approve` and `/reject`: an operator's
/// decision, delivered without the waitpoint's token. Every field may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// The execution's lane, checked when given (read from the execution when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_id: Option<LaneId>,
    /// Who decides, recorded as the signal's source identity (default `operator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub operator_identity: Option<String>,
    /// Makes the idempotency key `approval:<name>:<suffix>` (default: the waitpoint id, so a
    /// repeated decision on one waitpoint is a `Duplicate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub idempotency_suffix: Option<String>,
    /// How long that key deduplicates (default 24 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_dedup_ttl_ms: Option<u64>,
}

/// The operator identity of an approval that names none.
pub const DEFAULT_OPERATOR_IDENTITY: &str = "operator";

impl ApprovalRequest {
    /// The body for `args` (its execution, waitpoint and name travel in the path).
    pub fn from_args(args: &DeliverApprovalSignalArgs) -> Self {
        Self {
            lane_id: Some(args.lane_id.clone()),
            operator_identity: Some(args.operator_identity.clone()),
            idempotency_suffix: Some(args.idempotency_suffix.clone()),
            signal_dedup_ttl_ms: args.signal_dedup_ttl_ms,
        }
    }

    /// The arguments for the decision `signal_name` (`approved` or `rejected`) on the path's
    /// waitpoint of an execution on `lane_id` (the body's lane when it names one).
    pub fn into_args(
        self,
        execution_id: ExecutionId,
        waitpoint_id: WaitpointId,
        signal_name: &str,
        lane_id: LaneId,
    ) -> Result<DeliverApprovalSignalArgs, EngineError> {
        let args = DeliverApprovalSignalArgs {
            execution_id,
            lane_id: self.lane_id.unwrap_or(lane_id),
            waitpoint_id,
            signal_name: signal_name.to_owned(),
            operator_identity: self.operator_identity.unwrap_or_else(|| DEFAULT_OPERATOR_IDENTITY.to_owned()),
            idempotency_suffix: self.idempotency_suffix.unwrap_or_else(|| waitpoint_id.to_string()),
            signal_dedup_ttl_ms: self.signal_dedup_ttl_ms,
        };
        args.validate()?;
        Ok(args)
    }
}

/// `POST /v1/executions/{id}/resume`: an operator resumes a suspended execution whatever its
/// condition. Every field may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// What triggered it, recorded (default `operator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_type: Option<String>,
    /// Claimable this long after (default 0: at once; at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_SUSPENSION_DELAY_MS))]
    pub resume_delay_ms: Option<u64>,
}

/// `POST /v1/executions/{id}/attempts/{index}/suspend`: the lease holder suspends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// The waitpoints, condition, policy and timeout.
    pub suspension: SuspendArgs,
}

/// `POST /v1/executions/{id}/attempts/{index}/waitpoints`: the lease holder mints a pending
/// waitpoint, to hand its token out before suspending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWaitpointRequest {
    /// Handle token.
    #[schemars(pattern(HANDLE_TOKEN_PATTERN))]
    pub handle: String,
    /// The waitpoint's key, which resume conditions name.
    #[schemars(length(min = 1, max = MAX_NAME_BYTES), pattern(NAME_PATTERN))]
    pub waitpoint_key: String,
    /// It closes this long after unless a suspension activates it (1 ms..=7 days).
    #[schemars(range(min = 1, max = MAX_SUSPENSION_DELAY_MS))]
    pub expires_in_ms: u64,
}

/// `GET /v1/executions/{id}/waitpoints/{waitpoint_id}/token`: an open waitpoint's token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WaitpointTokenResponse {
    /// The token (`<kid>:<hex>`).
    pub waitpoint_token: String,
}

/// One signal as `POST /v1/executions/{id}/attempts/{index}/signals` answers it: every field of
/// [`ResumeSignal`], the payload as base64 (`payload_base64`), and also inline as JSON
/// (`payload`) when its encoding is `json` and it parses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObservedSignal {
    /// The signal.
    pub signal_id: SignalId,
    /// Its waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Its waitpoint's key.
    pub waitpoint_key: String,
    /// Its name.
    pub signal_name: String,
    /// Its category.
    pub signal_category: String,
    /// Sender type.
    pub source_type: String,
    /// Sender identity.
    pub source_identity: String,
    /// The sender's correlation id.
    pub correlation_id: Option<String>,
    /// When it was accepted.
    pub accepted_at: TimestampMs,
    /// Its payload, base64.
    pub payload_base64: Option<String>,
    /// Its payload as JSON, when its encoding is `json` and it parses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// The payload's encoding.
    pub payload_encoding: Option<String>,
}

impl ObservedSignal {
    /// The body of `signal`.
    pub fn from_signal(signal: ResumeSignal) -> Self {
        let json = match (&signal.payload, signal.payload_encoding.as_deref()) {
            (Some(p), Some("json")) => serde_json::from_slice(p).ok(),
            _ => None,
        };
        Self {
            signal_id: signal.signal_id,
            waitpoint_id: signal.waitpoint_id,
            waitpoint_key: signal.waitpoint_key,
            signal_name: signal.signal_name,
            signal_category: signal.signal_category,
            source_type: signal.source_type,
            source_identity: signal.source_identity,
            correlation_id: signal.correlation_id,
            accepted_at: signal.accepted_at,
            payload_base64: signal.payload.as_deref().map(encode_bytes),
            payload: json,
            payload_encoding: signal.payload_encoding,
        }
    }

    /// The signal this body describes (its payload decoded from `payload_base64`).
    pub fn into_signal(self) -> Result<ResumeSignal, EngineError> {
        Ok(ResumeSignal {
            signal_id: self.signal_id,
            waitpoint_id: self.waitpoint_id,
            waitpoint_key: self.waitpoint_key,
            signal_name: self.signal_name,
            signal_category: self.signal_category,
            source_type: self.source_type,
            source_identity: self.source_identity,
            correlation_id: self.correlation_id,
            accepted_at: self.accepted_at,
            payload: self.payload_base64.as_deref().map(|b| decode_bytes("payload_base64", b)).transpose()?,
            payload_encoding: self.payload_encoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_body_carries_its_payload_and_token_either_way() {
        let (id, wp) = (ExecutionId::parse("{fp:3}:00000000-0000-0000-0000-000000000001").unwrap(), WaitpointId::new());
        let json = DeliverSignalRequest {
            signal_name: "approved".into(),
            payload: Some(serde_json::json!({"ok": true})),
            ..Default::default()
        };
        let args = json.into_args(id, wp, Some("k1:ab".into())).unwrap();
        assert_eq!(args.payload.as_deref(), Some(&b"{\"ok\":true}"[..]));
        assert_eq!(args.payload_encoding.as_deref(), Some("json"));
        assert_eq!(args.waitpoint_token.as_deref(), Some("k1:ab"));
        assert_eq!(args.source_type, DEFAULT_SIGNAL_SOURCE_TYPE);
        let round = DeliverSignalRequest::from_args(&args).into_args(id, wp, None).unwrap();
        assert_eq!(round, args);

        let cases: Vec<(DeliverSignalRequest, Option<&str>)> = vec![
            (
                DeliverSignalRequest {
                    signal_name: "a".into(),
                    payload: Some(serde_json::json!(1)),
                    payload_base64: Some("AA==".into()),
                    ..Default::default()
                },
                None,
            ),
            (
                DeliverSignalRequest {
                    signal_name: "a".into(),
                    waitpoint_token: Some("x".into()),
                    ..Default::default()
                },
                Some("y"),
            ),
            (
                DeliverSignalRequest {
                    signal_name: "a".into(),
                    payload_base64: Some("!".into()),
                    ..Default::default()
                },
                None,
            ),
            (DeliverSignalRequest { signal_name: "".into(), ..Default::default() }, None),
        ];
        for (req, header) in cases {
            let err = req.clone().into_args(id, wp, header.map(str::to_owned)).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{req:?}");
        }
    }

    #[test]
    fn an_observed_signal_shows_json_payloads_inline_and_round_trips() {
        let signal = ResumeSignal {
            signal_id: SignalId::new(),
            waitpoint_id: WaitpointId::new(),
            waitpoint_key: "approval".into(),
            signal_name: "approved".into(),
            signal_category: "external".into(),
            source_type: "user".into(),
            source_identity: "ann".into(),
            correlation_id: None,
            accepted_at: TimestampMs(1),
            payload: Some(b"{\"by\":\"ann\"}".to_vec()),
            payload_encoding: Some("json".into()),
        };
        let body = ObservedSignal::from_signal(signal.clone());
        assert_eq!(body.payload, Some(serde_json::json!({"by": "ann"})));
        assert_eq!(body.clone().into_signal().unwrap(), signal);
        let binary = ObservedSignal::from_signal(ResumeSignal { payload_encoding: None, ..signal });
        assert_eq!(binary.payload, None, "only a json payload is shown inline");
    }
}
