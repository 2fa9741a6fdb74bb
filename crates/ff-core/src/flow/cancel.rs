//! Cancelling a flow, and cancelling the losing siblings of a decided any-of or quorum group.
//!
//! A flow cancellation closes the flow (no new members or edges) and, by policy, cancels its
//! members: none, all that have not ended, or only those that have not started (running ones
//! finish). Members are cancelled like an operator cancel with source `flow_cascade`: a lease
//! they hold ends with them and their downstream groups resolve in the same transaction. A
//! member that cannot be cancelled at once (another transaction holds it) stays in the flow's
//! cancel backlog until a later pass cancels it; the waits of [`CancelFlowWait`] wait for that
//! backlog to empty.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::validate_message;
use crate::id::{ExecutionId, FlowId};

/// Which members a flow cancellation cancels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelFlowPolicy {
    /// None: only the flow is closed.
    FlowOnly,
    /// Every member that has not ended.
    #[default]
    CancelAll,
    /// Members that have not started (runnable, delayed, blocked); running ones finish.
    CancelPending,
}

impl CancelFlowPolicy {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::FlowOnly => "flow_only",
            Self::CancelAll => "cancel_all",
            Self::CancelPending => "cancel_pending",
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "flow_only" => Ok(Self::FlowOnly),
            "cancel_all" => Ok(Self::CancelAll),
            "cancel_pending" => Ok(Self::CancelPending),
            other => Err(EngineError::validation(
                crate::error::ValidationKind::Corruption,
                format!("unknown cancellation policy {other:?}"),
            )),
        }
    }
}

/// How long `cancel_flow` waits for members it could not cancel at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelFlowWait {
    /// Return at once; the backlog is drained in the background.
    #[default]
    NoWait,
    /// Drain the backlog for at most this long.
    WaitTimeout(#[schemars(with = "u64")] Duration),
    /// Drain the backlog until it is empty.
    WaitIndefinite,
}

/// Longest time `CancelFlowWait::WaitIndefinite` waits before reporting what is left.
pub const CANCEL_FLOW_WAIT_CAP: Duration = Duration::from_secs(300);

/// Arguments of `cancel_flow` and `cancel_flow_header`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelFlowArgs {
    /// The flow.
    pub flow_id: FlowId,
    /// Why (free text, at most 16 KiB); recorded on the flow and on each cancelled member.
    pub reason: String,
    /// Which members to cancel.
    #[serde(default)]
    pub cancellation_policy: CancelFlowPolicy,
}

impl CancelFlowArgs {
    /// Checks the reason.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_message("reason", &self.reason)
    }
}

/// Outcome of `cancel_flow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CancelFlowResult {
    /// The flow is cancelled and every targeted member has ended.
    Cancelled {
        /// The policy applied (the stored one when the flow was cancelled before).
        cancellation_policy: CancelFlowPolicy,
        /// The members this cancellation targeted.
        member_execution_ids: Vec<ExecutionId>,
    },
    /// The flow is cancelled; some targeted members are still being cancelled in the background.
    CancellationScheduled {
        /// The policy applied.
        cancellation_policy: CancelFlowPolicy,
        /// How many members are targeted.
        member_count: u32,
        /// The members targeted.
        member_execution_ids: Vec<ExecutionId>,
    },
    /// The wait ended with some targeted members not yet cancelled (they stay in the backlog).
    PartiallyCancelled {
        /// The policy applied.
        cancellation_policy: CancelFlowPolicy,
        /// The members targeted.
        member_execution_ids: Vec<ExecutionId>,
        /// Those still not cancelled.
        failed_member_execution_ids: Vec<ExecutionId>,
    },
}

/// Outcome of `cancel_flow_header`: the flow's atomic flip, leaving the members to the caller
/// (`cancel_execution` then `ack_cancel_member` per member) or to the backlog's reconciler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CancelFlowHeader {
    /// The flow is now cancelled; these members are in its cancel backlog.
    Cancelled {
        /// The policy applied.
        cancellation_policy: CancelFlowPolicy,
        /// The members to cancel.
        member_execution_ids: Vec<ExecutionId>,
    },
    /// The flow was cancelled before; nothing changed.
    AlreadyTerminal {
        /// The policy stored by the first cancellation.
        stored_cancellation_policy: Option<CancelFlowPolicy>,
        /// The reason stored by the first cancellation.
        stored_cancel_reason: Option<String>,
        /// Members still in the cancel backlog (at most 1000).
        member_execution_ids: Vec<ExecutionId>,
    },
}

/// What `reconcile_sibling_cancel_group` did with a group flagged for sibling cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SiblingCancelReconcileAction {
    /// The flag was stale (the group is gone or does not cancel its remaining upstreams) and
    /// was removed.
    SremmedStale,
    /// Every sibling has ended: the flag was cleared.
    CompletedDrain,
    /// Siblings are still running: left for the drain.
    NoOp,
}

/// What `drain_sibling_cancel_group` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SiblingCancelDrainResult {
    /// Siblings cancelled by this drain.
    pub cancelled: Vec<ExecutionId>,
    /// Siblings still running that could not be cancelled now (held by another transaction).
    pub remaining: u32,
}
