//! Signals: what an outsider delivers to a waitpoint, what each delivery did, what a resumed
//! handler reads, and the stream of deliveries.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::validate_name;
use crate::id::{ExecutionId, LaneId, SignalId, TimestampMs, WaitpointId};

use super::MAX_SIGNAL_PAYLOAD_BYTES;

/// Arguments of `deliver_signal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliverSignalArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// The signal's id (minted when absent).
    #[serde(default)]
    pub signal_id: Option<SignalId>,
    /// Its name, which matchers compare.
    pub signal_name: String,
    /// Its category, e.g. `approval`, `callback` (default `external`).
    #[serde(default)]
    pub signal_category: Option<String>,
    /// Who sends it: type (e.g. `user`, `webhook`, `operator`).
    pub source_type: String,
    /// Who sends it: identity; `DistinctSources` counts (type, identity) pairs.
    pub source_identity: String,
    /// Its payload, at most 64 KiB.
    #[serde(default)]
    pub payload: Option<Vec<u8>>,
    /// The payload's encoding, e.g. `json`.
    #[serde(default)]
    pub payload_encoding: Option<String>,
    /// The sender's correlation id.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// A repeat with the same key within the dedup TTL is `Duplicate`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How long the idempotency key deduplicates (default 24 h).
    #[serde(default)]
    pub dedup_ttl_ms: Option<u64>,
    /// Refuse the signal when the execution already has this many (default 10,000).
    #[serde(default)]
    pub max_signals_per_execution: Option<u32>,
    /// The waitpoint's token. A trusted caller (one holding the API token, or the backend's
    /// own user) may omit it.
    #[serde(default)]
    pub waitpoint_token: Option<String>,
}

impl DeliverSignalArgs {
    /// A signal named `name` from `source_type`/`source_identity` to a waitpoint.
    pub fn new(
        execution_id: ExecutionId,
        waitpoint_id: WaitpointId,
        name: impl Into<String>,
        source_type: impl Into<String>,
        source_identity: impl Into<String>,
    ) -> Self {
        Self {
            execution_id,
            waitpoint_id,
            signal_id: None,
            signal_name: name.into(),
            signal_category: None,
            source_type: source_type.into(),
            source_identity: source_identity.into(),
            payload: None,
            payload_encoding: None,
            correlation_id: None,
            idempotency_key: None,
            dedup_ttl_ms: None,
            max_signals_per_execution: None,
            waitpoint_token: None,
        }
    }

    /// Checks names, sizes and bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_name("signal_name", &self.signal_name, false)?;
        if let Some(c) = &self.signal_category {
            validate_name("signal_category", c, false)?;
        }
        validate_name("source_type", &self.source_type, false)?;
        validate_name("source_identity", &self.source_identity, true)?;
        for (what, v) in [
            ("payload_encoding", &self.payload_encoding),
            ("correlation_id", &self.correlation_id),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if let Some(v) = v {
                validate_name(what, v, false)?;
            }
        }
        if let Some(p) = &self.payload
            && p.len() > MAX_SIGNAL_PAYLOAD_BYTES
        {
            return Err(EngineError::validation(
                crate::error::ValidationKind::PayloadTooLarge,
                format!("signal payload of {} bytes exceeds {MAX_SIGNAL_PAYLOAD_BYTES}", p.len()),
            ));
        }
        if self.dedup_ttl_ms.is_some_and(|t| t == 0 || t > 30 * 24 * 3600 * 1000) {
            return Err(EngineError::invalid("dedup_ttl_ms must be within 1 ms..=30 days"));
        }
        if self.max_signals_per_execution == Some(0) {
            return Err(EngineError::invalid("max_signals_per_execution must be at least 1"));
        }
        Ok(())
    }
}

/// What a delivered signal did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalEffect {
    /// Recorded and counted; the condition is not satisfied yet.
    AppendedToWaitpoint,
    /// Recorded, and it satisfied the condition: the execution resumes.
    ResumeConditionSatisfied,
    /// Recorded; the condition names no such waitpoint.
    SignalIgnoredNotInCondition,
    /// Recorded; no matcher on its waitpoint accepts its name.
    SignalIgnoredMatcherFailed,
    /// Recorded on a pending waitpoint, to count once a suspension activates it.
    BufferedForPendingWaitpoint,
}

impl SignalEffect {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AppendedToWaitpoint => "appended_to_waitpoint",
            Self::ResumeConditionSatisfied => "resume_condition_satisfied",
            Self::SignalIgnoredNotInCondition => "signal_ignored_not_in_condition",
            Self::SignalIgnoredMatcherFailed => "signal_ignored_matcher_failed",
            Self::BufferedForPendingWaitpoint => "buffered_for_pending_waitpoint",
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        [
            Self::AppendedToWaitpoint,
            Self::ResumeConditionSatisfied,
            Self::SignalIgnoredNotInCondition,
            Self::SignalIgnoredMatcherFailed,
            Self::BufferedForPendingWaitpoint,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
        .ok_or_else(|| {
            EngineError::validation(crate::error::ValidationKind::Corruption, format!("unknown signal effect {s:?}"))
        })
    }
}

/// Outcome of `deliver_signal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeliverSignalResult {
    /// Recorded, with its effect.
    Accepted {
        /// The signal.
        signal_id: SignalId,
        /// What it did.
        effect: SignalEffect,
    },
    /// The idempotency key was seen within its TTL: nothing was recorded.
    Duplicate {
        /// The first signal with that key.
        existing_signal_id: SignalId,
    },
}

/// Arguments of `deliver_approval_signal`: an operator approves or rejects, without the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeliverApprovalSignalArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its lane (checked).
    pub lane_id: LaneId,
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// `approved` or `rejected`.
    pub signal_name: String,
    /// Who approves (recorded as the source identity, source type `operator`).
    pub operator_identity: String,
    /// Makes the idempotency key `approval:<name>:<suffix>`.
    pub idempotency_suffix: String,
    /// How long that key deduplicates (default 24 h).
    #[serde(default)]
    pub signal_dedup_ttl_ms: Option<u64>,
}

impl DeliverApprovalSignalArgs {
    /// Checks the name (`approved` or `rejected`) and the rest.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.signal_name != "approved" && self.signal_name != "rejected" {
            return Err(EngineError::invalid("an approval signal is named approved or rejected"));
        }
        validate_name("operator_identity", &self.operator_identity, false)?;
        validate_name("idempotency_suffix", &self.idempotency_suffix, false)
    }
}

/// A recorded signal, as the woken handler reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResumeSignal {
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
    /// Its payload.
    pub payload: Option<Vec<u8>>,
    /// The payload's encoding.
    pub payload_encoding: Option<String>,
}

/// One recorded signal delivery, as a subscription sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignalDeliveryEvent {
    /// Resume after this delivery by passing this cursor.
    pub cursor: crate::event::EventCursor,
    /// The execution.
    pub execution_id: ExecutionId,
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// The signal.
    pub signal_id: SignalId,
    /// Its name.
    pub signal_name: String,
    /// What it did.
    pub effect: SignalEffect,
    /// The execution's namespace.
    pub namespace: crate::id::Namespace,
    /// When it was accepted.
    pub at: TimestampMs,
}

/// A resumable stream of signal deliveries.
pub type SignalDeliveryStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SignalDeliveryEvent, EngineError>> + Send>>;
