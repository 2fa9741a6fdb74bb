//! Retention: how long terminal executions and the event log are kept, and the arguments and
//! outcomes of the passes that delete what has aged out.
//!
//! A terminal execution is kept for its window after it ended: its lane's override, else its
//! namespace's override, else the default the retention reconciler is configured with. A flow
//! member goes only with its whole flow, once every member is terminal and past its window. The
//! event log is pruned from its oldest end; a reader whose cursor lies before the newest pruned
//! event gets `cursor_expired` rather than a silent gap, while [`EventCursor::BEGINNING`] always
//! means "from the oldest event still retained". Each validates itself: a window outside
//! `1..=`[`MAX_RETENTION_MS`] or a batch outside `1..=`[`MAX_RETENTION_BATCH`] is
//! `invalid_input`.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::event::EventCursor;
use crate::execution::validate_name;
use crate::id::{LaneId, Namespace, TimestampMs};

/// The longest retention window accepted: about 100 years.
pub const MAX_RETENTION_MS: i64 = 100 * 366 * 24 * 3_600_000;

/// The largest batch one retention pass takes.
pub const MAX_RETENTION_BATCH: u32 = 10_000;

/// The default retention window: 7 days.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// Checks a retention window in milliseconds.
pub fn validate_retention_ms(what: &str, ms: i64) -> Result<(), EngineError> {
    if !(1..=MAX_RETENTION_MS).contains(&ms) {
        return Err(EngineError::invalid(format!("{what} must be 1..={MAX_RETENTION_MS} ms, got {ms}")));
    }
    Ok(())
}

/// Checks a retention batch size.
pub fn validate_retention_batch(batch_size: u32) -> Result<(), EngineError> {
    if !(1..=MAX_RETENTION_BATCH).contains(&batch_size) {
        return Err(EngineError::invalid(format!("batch_size must be 1..={MAX_RETENTION_BATCH}, got {batch_size}")));
    }
    Ok(())
}

/// What a retention override applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum RetentionScope {
    /// Every execution of a lane (wins over a namespace's override).
    Lane(LaneId),
    /// Every execution of a namespace, on lanes without an override of their own.
    Namespace(Namespace),
}

impl RetentionScope {
    /// `lane` or `namespace`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Lane(_) => "lane",
            Self::Namespace(_) => "namespace",
        }
    }

    /// The lane or namespace name.
    pub fn id(&self) -> &str {
        match self {
            Self::Lane(l) => l.as_str(),
            Self::Namespace(n) => n.as_str(),
        }
    }

    /// A scope from its stored kind and id.
    pub fn from_parts(kind: &str, id: &str) -> Result<Self, EngineError> {
        let scope = match kind {
            "lane" => Self::Lane(LaneId::try_new(id)?),
            "namespace" => Self::Namespace(Namespace::new(id)),
            other => {
                return Err(EngineError::invalid(format!(
                    "retention scope kind must be lane or namespace, got {other:?}"
                )));
            }
        };
        scope.validate()?;
        Ok(scope)
    }

    /// Checks the namespace name (a lane name is checked when it is made).
    pub fn validate(&self) -> Result<(), EngineError> {
        match self {
            Self::Lane(_) => Ok(()),
            Self::Namespace(n) => validate_name("namespace", n.as_str(), true),
        }
    }
}

/// Arguments of `set_retention_policy`: the window of a lane or a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRetentionPolicyArgs {
    /// What the window applies to.
    pub scope: RetentionScope,
    /// How long a terminal execution is kept after it ended, 1..=[`MAX_RETENTION_MS`].
    pub retention_ms: i64,
}

impl SetRetentionPolicyArgs {
    /// Checks the scope and the window.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.scope.validate()?;
        validate_retention_ms("retention_ms", self.retention_ms)
    }
}

/// A stored retention override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RetentionPolicy {
    /// What the window applies to.
    pub scope: RetentionScope,
    /// How long a terminal execution is kept after it ended.
    pub retention_ms: i64,
    /// When it was last set (database time).
    pub updated_at: TimestampMs,
}

/// Every retention override (`GET /v1/retention`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RetentionPolicies {
    /// Lanes first, then namespaces, each by name.
    pub policies: Vec<RetentionPolicy>,
}

/// Arguments of `trim_retention`: one batch of one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrimRetentionArgs {
    /// The lane whose terminal executions are trimmed.
    pub lane: LaneId,
    /// The window of executions that neither their lane nor their namespace overrides.
    pub default_retention_ms: i64,
    /// At most this many executions found due (a flow found due goes whole, so more may go).
    pub batch_size: u32,
}

impl TrimRetentionArgs {
    /// Checks the window and the batch.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_retention_ms("default_retention_ms", self.default_retention_ms)?;
        validate_retention_batch(self.batch_size)
    }
}

/// What one `trim_retention` batch deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrimRetentionOutcome {
    /// Executions deleted with all their rows.
    pub executions: u32,
    /// Flows deleted whole.
    pub flows: u32,
    /// The batch was full: more may be due now.
    pub batch_full: bool,
}

/// Arguments of `prune_event_log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PruneEventLogArgs {
    /// Events older than this are pruned, 1..=[`MAX_RETENTION_MS`].
    pub retention_ms: i64,
    /// At most this many events.
    pub batch_size: u32,
}

impl PruneEventLogArgs {
    /// Checks the window and the batch.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_retention_ms("retention_ms", self.retention_ms)?;
        validate_retention_batch(self.batch_size)
    }
}

/// What one `prune_event_log` batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneEventLogOutcome {
    /// Events pruned.
    pub events: u32,
    /// The newest pruned cursor ([`EventCursor::BEGINNING`] while nothing was ever pruned): a
    /// read after a cursor before it is `cursor_expired`.
    pub horizon: EventCursor,
    /// The batch was full: more may be due now.
    pub batch_full: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_batches_are_bounded() {
        for (ms, ok) in [(-1, false), (0, false), (1, true), (MAX_RETENTION_MS, true), (MAX_RETENTION_MS + 1, false)] {
            assert_eq!(validate_retention_ms("w", ms).is_ok(), ok, "{ms}");
        }
        for (b, ok) in [(0, false), (1, true), (MAX_RETENTION_BATCH, true), (MAX_RETENTION_BATCH + 1, false)] {
            assert_eq!(validate_retention_batch(b).is_ok(), ok, "{b}");
        }
    }

    #[test]
    fn scopes_round_trip_through_their_parts() {
        let lane = RetentionScope::Lane(LaneId::try_new("emails").unwrap());
        assert_eq!(RetentionScope::from_parts(lane.kind(), lane.id()).unwrap(), lane);
        let ns = RetentionScope::Namespace(Namespace::new(""));
        assert_eq!(RetentionScope::from_parts(ns.kind(), ns.id()).unwrap(), ns);
        assert!(RetentionScope::from_parts("flow", "x").is_err());
        assert!(RetentionScope::from_parts("lane", "").is_err());
        assert!(RetentionScope::from_parts("namespace", "a\u{7}").is_err());
    }
}
