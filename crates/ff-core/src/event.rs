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

/// What happened to a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LeaseHistoryKind {
    /// A worker claimed the execution (a fresh attempt, or a resumed one).
    Acquired {
        /// The claiming worker instance.
        worker_instance_id: Option<String>,
    },
    /// A worker took over an attempt whose lease had lapsed.
    Reclaimed {
        /// The new owner.
        new_owner: Option<String>,
    },
    /// The lease lapsed without being renewed.
    Expired {
        /// The owner that stopped renewing.
        prev_owner: Option<String>,
    },
    /// The holder gave the lease up without ending the execution (delay, suspension, retry
    /// backoff, waiting for children).
    Released {
        /// The owner that released it.
        worker_instance_id: Option<String>,
    },
    /// An operator or the worker registry revoked it.
    Revoked {
        /// The owner that lost it.
        prev_owner: Option<String>,
    },
}

/// One lease change from the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseHistoryEvent {
    /// Resume after this event by passing this cursor.
    pub cursor: EventCursor,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lane.
    pub lane_id: LaneId,
    /// Attempt involved.
    pub attempt_index: Option<u32>,
    /// Lease epoch involved.
    pub lease_epoch: Option<u64>,
    /// What happened.
    pub kind: LeaseHistoryKind,
    /// When it happened.
    pub at: TimestampMs,
}

/// A live stream of lease changes.
pub type LeaseHistoryStream = Pin<Box<dyn Stream<Item = Result<LeaseHistoryEvent, EngineError>> + Send>>;

/// What happened to an execution's tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InstanceTagChange {
    /// The tag was set (or overwritten) to `value`.
    Attached {
        /// New value.
        value: String,
    },
    /// The tag was removed.
    Cleared,
}

/// One tag change from the event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceTagEvent {
    /// Resume after this event by passing this cursor.
    pub cursor: EventCursor,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: Namespace,
    /// Tag key.
    pub key: String,
    /// What happened.
    pub change: InstanceTagChange,
    /// When it happened.
    pub at: TimestampMs,
}

/// A live stream of tag changes.
pub type InstanceTagStream = Pin<Box<dyn Stream<Item = Result<InstanceTagEvent, EngineError>> + Send>>;
