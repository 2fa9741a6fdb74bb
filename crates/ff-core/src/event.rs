//! The engine's event log as seen by subscribers.
//!
//! Every terminal transition and lease change is written to an append-only log in the same
//! transaction as the state change. A cursor names a position in that log; a subscriber that
//! resumes from a cursor sees every event after it exactly once, in commit-safe order.

use std::fmt;
use std::pin::Pin;

use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::id::{ExecutionId, LaneId, Namespace, TimestampMs};

/// Opaque, resumable position in the event log (`"<tx>-<id>"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventCursor {
    /// Writing transaction's id.
    pub tx: u64,
    /// Event id within the log.
    pub id: i64,
}

impl EventCursor {
    /// Before every event still retained: a read from it is never `cursor_expired`, and starts
    /// at the oldest event the retention passes have not pruned.
    pub const BEGINNING: Self = Self { tx: 0, id: 0 };

    /// Parses `"<tx>-<id>"`.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        let bad = || EngineError::validation(ValidationKind::InvalidOffset, format!("malformed event cursor {s:?}"));
        let (tx, id) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self { tx: tx.parse().map_err(|_| bad())?, id: id.parse().map_err(|_| bad())? })
    }
}

impl fmt::Display for EventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.id)
    }
}

/// How an execution ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompletionOutcome {
    /// Completed.
    Success,
    /// Failed.
    Failure,
    /// Cancelled.
    Cancelled,
    /// Expired.
    Expired,
    /// Skipped: a flow member whose dependencies can no longer be satisfied.
    Skipped,
}

/// One terminal transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CompletionEvent {
    /// Resume after this event by passing this cursor.
    pub cursor: EventCursor,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Outcome.
    pub outcome: CompletionOutcome,
    /// Namespace.
    pub namespace: Namespace,
    /// Lane.
    pub lane_id: LaneId,
    /// When it happened.
    pub at: TimestampMs,
}

/// Restricts which events a subscriber sees.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScannerFilter {
    /// Only this namespace.
    pub namespace: Option<Namespace>,
    /// Only executions carrying this tag `(key, value)`.
    pub instance_tag: Option<(String, String)>,
}

/// A live stream of completion events.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<CompletionEvent, EngineError>> + Send>>;
