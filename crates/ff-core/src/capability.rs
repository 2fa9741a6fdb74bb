//! Capability routing tokens and the backend capability snapshot.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::policy::MAX_CAPABILITIES;

/// Longest capability token in bytes.
pub const CAPABILITY_TOKEN_MAX_BYTES: usize = 128;
/// JSON Schema pattern of a capability token: printable ASCII without space or comma.
pub const CAPABILITY_TOKEN_PATTERN: &str = r"^[\x21-\x2b\x2d-\x7e]+$";

/// The capabilities a worker offers. An execution is claimable by a worker when every capability
/// it requires is in the worker's set (an empty requirement matches every worker).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct CapabilitySet(
    #[schemars(
        length(max = MAX_CAPABILITIES),
        inner(length(min = 1, max = CAPABILITY_TOKEN_MAX_BYTES), pattern(CAPABILITY_TOKEN_PATTERN))
    )]
    pub BTreeSet<String>,
);

impl<S: Into<String>> FromIterator<S> for CapabilitySet {
    fn from_iter<I: IntoIterator<Item = S>>(tokens: I) -> Self {
        Self(tokens.into_iter().map(Into::into).collect())
    }
}

impl CapabilitySet {
    /// An empty set (matches only executions with no requirements).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds and validates a set from tokens.
    pub fn try_from_iter<I: IntoIterator<Item = S>, S: Into<String>>(tokens: I) -> Result<Self, EngineError> {
        let set: BTreeSet<String> = tokens.into_iter().map(Into::into).collect();
        validate_tokens(&set)?;
        Ok(Self(set))
    }

    /// True when every token of `required` is present.
    pub fn satisfies(&self, required: &BTreeSet<String>) -> bool {
        required.is_subset(&self.0)
    }
}

/// Validates capability tokens: at most 256, each 1..=128 bytes, printable ASCII without
/// commas or whitespace.
pub fn validate_tokens(tokens: &BTreeSet<String>) -> Result<(), EngineError> {
    if tokens.len() > MAX_CAPABILITIES {
        return Err(EngineError::validation(
            ValidationKind::InvalidCapabilities,
            format!("{} capabilities exceed the limit of {MAX_CAPABILITIES}", tokens.len()),
        ));
    }
    for t in tokens {
        let ok = !t.is_empty()
            && t.len() <= CAPABILITY_TOKEN_MAX_BYTES
            && t.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        if !ok {
            return Err(EngineError::validation(
                ValidationKind::InvalidCapabilities,
                format!(
                    "invalid capability token {t:?}: 1..={CAPABILITY_TOKEN_MAX_BYTES} printable ASCII bytes, no comma or space"
                ),
            ));
        }
    }
    Ok(())
}

/// Which backend family and version answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendIdentity {
    /// Family label, e.g. `postgres`.
    pub family: &'static str,
    /// Crate version.
    pub version: &'static str,
    /// Schema version the backend expects.
    pub schema_version: i64,
}

/// What a backend actually supports. Every flag is true only when the behaviour works end to end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Supports {
    /// `create_execution` and `create_executions` (idempotency, delay, priority, routing, deadline, tags).
    pub create_execution: bool,
    /// `claim` and `claim_batch` with capability routing, priority then FIFO.
    pub claim: bool,
    /// `renew`, `progress`.
    pub renew: bool,
    /// `complete`, `complete_batch`, `fail` (stored retry policy), `cancel`, `delay`.
    pub attempt_end: bool,
    /// `append_frame`, `read_stream` (durable frames).
    pub streams_durable: bool,
    /// Lease expiry marks executions reclaimable; claims, `issue_reclaim_grant` and
    /// `reclaim_execution` pick them up as new attempts.
    pub lease_reclaim: bool,
    /// Attempt timeouts and execution deadlines are enforced by a reconciler.
    pub timeouts: bool,
    /// Reads, listings and tags.
    pub reads: bool,
    /// Completion subscription over the event log with resumable cursors.
    pub subscribe_completions: bool,
    /// Flows and dependency edges.
    pub flows: bool,
    /// Suspension, waitpoints and signals.
    pub suspension: bool,
    /// Budgets and quotas.
    pub budgets: bool,
    /// Worker registry.
    pub worker_registry: bool,
}

/// Identity plus supported features.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Who answered.
    pub identity: BackendIdentity,
    /// What works.
    pub supports: Supports,
}
