//! Flows: DAGs of executions joined by dependency edges.
//!
//! A flow is a header (kind, namespace, tags, graph revision) plus members: executions minted
//! in the flow's partition ([`ExecutionId::for_flow`]) that joined it; an execution belongs to
//! at most one flow. Edges ([`edge`]) say which members wait for which; each downstream's
//! inbound edges form one group ([`edge_group`]) whose policy decides when it may run or must
//! be skipped. A member's terminal transition resolves its outgoing edges in the same
//! transaction, so a satisfied downstream is claimable the moment its last upstream commits.
//!
//! The flow's state is derived from its members ([`FlowState::derive`]) whenever it is read,
//! so it is always current: `open` before any member started, `running` while a member runs or
//! waits for a worker, `blocked` while every unfinished member waits on something else
//! (dependencies, a delay, a signal), `completed` when every member ended and every sink (a
//! member nothing depends on) succeeded, `failed` when every member ended otherwise, and
//! `cancelled` once the flow was cancelled ([`cancel`]).

pub mod cancel;
pub mod edge;
pub mod edge_group;
pub mod graph;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::validate_name;
use crate::id::{ExecutionId, FlowId, Namespace, TimestampMs};
use crate::state::PublicState;

pub use cancel::*;
pub use edge::*;
pub use edge_group::{EdgeDependencyPolicy, EdgeGroupCounts, EdgeGroupState, OnSatisfied};
pub use graph::*;

/// Arguments of `create_flow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateFlowArgs {
    /// The flow's id (creating the same id again is idempotent).
    pub flow_id: FlowId,
    /// What kind of flow, e.g. `etl.nightly` (1..=256 bytes, no control characters).
    pub flow_kind: String,
    /// Tenant namespace; members must share it.
    #[serde(default)]
    pub namespace: Namespace,
    /// Who creates it; recorded as the creator of the flow's edges.
    #[serde(default)]
    pub creator_identity: Option<String>,
}

impl CreateFlowArgs {
    /// A flow of `kind` with a fresh id in the default namespace.
    pub fn new(flow_kind: impl Into<String>) -> Self {
        Self {
            flow_id: FlowId::new(),
            flow_kind: flow_kind.into(),
            namespace: Namespace::default(),
            creator_identity: None,
        }
    }

    /// Checks the names.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_name("flow_kind", &self.flow_kind, false)?;
        validate_name("namespace", self.namespace.as_str(), true)?;
        if let Some(c) = &self.creator_identity {
            validate_name("creator_identity", c, true)?;
        }
        Ok(())
    }
}

/// Outcome of `create_flow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CreateFlowResult {
    /// The flow was created.
    Created {
        /// The flow.
        flow_id: FlowId,
    },
    /// A flow with this id already exists; nothing was written.
    AlreadySatisfied {
        /// The flow.
        flow_id: FlowId,
    },
}

/// Arguments of `add_execution_to_flow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AddExecutionToFlowArgs {
    /// The flow (not cancelled).
    pub flow_id: FlowId,
    /// An existing execution in the flow's partition and namespace, in no other flow.
    pub execution_id: ExecutionId,
}

/// Outcome of `add_execution_to_flow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AddExecutionToFlowResult {
    /// It joined; the flow now has `new_node_count` members.
    Added {
        /// The member.
        execution_id: ExecutionId,
        /// Members after adding.
        new_node_count: u32,
    },
    /// It was a member already; nothing was written.
    AlreadyMember {
        /// The member.
        execution_id: ExecutionId,
        /// Members.
        node_count: u32,
    },
}

/// Arguments of `set_edge_group_policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetEdgeGroupPolicyArgs {
    /// The flow.
    pub flow_id: FlowId,
    /// The member whose inbound edges the policy combines.
    pub downstream_execution_id: ExecutionId,
    /// The policy. It may change until the first inbound edge is resolved.
    pub policy: EdgeDependencyPolicy,
}

/// Outcome of `set_edge_group_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SetEdgeGroupPolicyResult {
    /// The policy is set.
    Set,
    /// The same policy was set before; nothing was written.
    AlreadySet,
}

/// Arguments of `cascade_completion`: resolve whatever a terminal execution's outgoing edges
/// still need (normally nothing: its terminal transaction did it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CascadeCompletionArgs {
    /// The ended execution.
    pub execution_id: ExecutionId,
}

/// Outcome of `cascade_completion`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CascadeOutcome {
    /// Edges this call resolved (0 when its terminal transaction had resolved them all).
    pub resolved: u32,
    /// Downstreams this call decided (made eligible or skipped), including further hops.
    pub cascaded_children: u32,
    /// Always true here: every hop is resolved before the call returns.
    pub synchronous: bool,
}

/// Arguments of `evaluate_flow_eligibility`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvaluateFlowEligibilityArgs {
    /// The execution.
    pub execution_id: ExecutionId,
}

/// Whether an execution may run as far as its dependencies are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowEligibility {
    /// No such execution.
    NotFound,
    /// It is waiting on something other than its dependencies (a delay, a worker with the
    /// right capabilities, a signal).
    NotRunnable,
    /// It is running (holds or held a lease of its current attempt).
    Owned,
    /// It has ended.
    Terminal,
    /// Its edge group can no longer be satisfied.
    Impossible,
    /// It waits for its upstreams.
    BlockedByDependencies,
    /// It may be claimed.
    Eligible,
}

/// Outcome of `evaluate_flow_eligibility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EvaluateFlowEligibilityResult {
    /// The execution's eligibility.
    Status {
        /// The status.
        status: FlowEligibility,
    },
}

/// A flow's derived state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// No member has started.
    Open,
    /// A member runs or waits for a worker.
    Running,
    /// Every unfinished member waits on something other than a worker.
    Blocked,
    /// Every member ended and every sink succeeded.
    Completed,
    /// Every member ended and some sink did not succeed.
    Failed,
    /// The flow was cancelled.
    Cancelled,
}

impl FlowState {
    /// The snake_case literal.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "open" => Ok(Self::Open),
            "running" => Ok(Self::Running),
            "blocked" => Ok(Self::Blocked),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(EngineError::invalid(format!("unknown flow state {other:?}"))),
        }
    }

    /// True for completed, failed and cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The state of a flow whose members are counted in `m` (`cancelled`: the flow was
    /// cancelled). The one definition of a flow's state.
    pub fn derive(cancelled: bool, m: &FlowMemberCounts) -> Self {
        if cancelled {
            return Self::Cancelled;
        }
        if m.total == 0 {
            return Self::Open;
        }
        let ended = m.completed + m.failed + m.cancelled + m.expired + m.skipped;
        if ended >= m.total {
            return if m.sinks_succeeded >= m.sinks { Self::Completed } else { Self::Failed };
        }
        if m.started == 0 && ended == 0 {
            return Self::Open;
        }
        if m.active > 0 || m.waiting > 0 { Self::Running } else { Self::Blocked }
    }
}

/// A flow's members counted by public state, plus what the derived state needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowMemberCounts {
    /// Members.
    pub total: u32,
    /// Waiting for a worker.
    pub waiting: u32,
    /// Waiting for a time.
    pub delayed: u32,
    /// Held back by budgets or quotas.
    pub rate_limited: u32,
    /// Waiting for upstreams or children.
    pub waiting_children: u32,
    /// Running.
    pub active: u32,
    /// Suspended.
    pub suspended: u32,
    /// Completed.
    pub completed: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
    /// Expired.
    pub expired: u32,
    /// Skipped.
    pub skipped: u32,
    /// Members that ever started an attempt.
    pub started: u32,
    /// Members nothing depends on.
    pub sinks: u32,
    /// Sinks that completed.
    pub sinks_succeeded: u32,
}

impl FlowMemberCounts {
    /// Counts one member in `state`.
    pub fn count(&mut self, state: PublicState) {
        self.total += 1;
        let slot = match state {
            PublicState::Waiting => &mut self.waiting,
            PublicState::Delayed => &mut self.delayed,
            PublicState::RateLimited => &mut self.rate_limited,
            PublicState::WaitingChildren => &mut self.waiting_children,
            PublicState::Active => &mut self.active,
            PublicState::Suspended | PublicState::Resumable => &mut self.suspended,
            PublicState::Completed => &mut self.completed,
            PublicState::Failed => &mut self.failed,
            PublicState::Cancelled => &mut self.cancelled,
            PublicState::Expired => &mut self.expired,
            PublicState::Skipped => &mut self.skipped,
        };
        *slot += 1;
    }
}

/// One downstream's edge group, as `describe_flow` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EdgeGroupSnapshot {
    /// The downstream member.
    pub downstream_execution_id: ExecutionId,
    /// How its inbound edges combine.
    pub policy: EdgeDependencyPolicy,
    /// Applied inbound edges.
    pub total_deps: u32,
    /// Upstreams that succeeded.
    pub satisfied_count: u32,
    /// Upstreams that failed, were cancelled or expired.
    pub failed_count: u32,
    /// Upstreams that were skipped.
    pub skipped_count: u32,
    /// Upstreams still running.
    pub running_count: u32,
    /// The group's decision.
    pub group_state: EdgeGroupState,
}

/// A flow, as `describe_flow` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowSnapshot {
    /// The flow.
    pub flow_id: FlowId,
    /// Its kind.
    pub flow_kind: String,
    /// Its namespace.
    pub namespace: Namespace,
    /// Derived from its members as of this read.
    pub public_flow_state: FlowState,
    /// Bumped by every change to members or edges.
    pub graph_revision: u64,
    /// Members.
    pub node_count: u32,
    /// Edges staged.
    pub edge_count: u32,
    /// Members by state.
    pub members: FlowMemberCounts,
    /// When created.
    pub created_at: TimestampMs,
    /// Last change to the header, members or edges.
    pub last_mutation_at: TimestampMs,
    /// When cancelled.
    pub cancelled_at: Option<TimestampMs>,
    /// Why cancelled.
    pub cancel_reason: Option<String>,
    /// How cancelled.
    pub cancellation_policy: Option<CancelFlowPolicy>,
    /// Caller tags.
    pub tags: BTreeMap<String, String>,
    /// Every downstream's group, by downstream id.
    pub edge_groups: Vec<EdgeGroupSnapshot>,
}

/// Arguments of `list_flows`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListFlowsArgs {
    /// Only this partition's flows (all when absent).
    #[serde(default)]
    pub partition: Option<u16>,
    /// Only this namespace's flows.
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Flows after this id (exclusive).
    #[serde(default)]
    pub cursor: Option<FlowId>,
    /// Page size, 1..=1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Default page size of `list_flows`.
pub const DEFAULT_FLOW_PAGE: u32 = 100;
/// Largest page of `list_flows`.
pub const MAX_FLOW_PAGE: u32 = 1000;

impl ListFlowsArgs {
    /// The page size to use, or the error for an out-of-range one.
    pub fn validate(&self) -> Result<u32, EngineError> {
        match self.limit {
            None => Ok(DEFAULT_FLOW_PAGE),
            Some(n) if (1..=MAX_FLOW_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(EngineError::invalid(format!("limit {n} outside 1..={MAX_FLOW_PAGE}"))),
        }
    }
}

/// One flow in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowSummary {
    /// The flow.
    pub flow_id: FlowId,
    /// Its kind.
    pub flow_kind: String,
    /// Its namespace.
    pub namespace: Namespace,
    /// When created.
    pub created_at: TimestampMs,
    /// Members.
    pub node_count: u32,
    /// Derived state as of this read.
    pub public_flow_state: FlowState,
}

/// One page of `list_flows`, in flow id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListFlowsPage {
    /// The flows.
    pub flows: Vec<FlowSummary>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<FlowId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(f: impl FnOnce(&mut FlowMemberCounts)) -> FlowMemberCounts {
        let mut c = FlowMemberCounts::default();
        f(&mut c);
        c
    }

    #[test]
    fn flow_state_derivation() {
        let cases = [
            (false, counts(|_| {}), FlowState::Open),
            (true, counts(|c| c.total = 3), FlowState::Cancelled),
            (false, counts(|c| (c.total, c.waiting) = (3, 3)), FlowState::Open),
            (false, counts(|c| (c.total, c.waiting, c.waiting_children, c.started) = (3, 1, 1, 1)), FlowState::Running),
            (false, counts(|c| (c.total, c.active, c.waiting_children, c.started) = (2, 1, 1, 1)), FlowState::Running),
            (false, counts(|c| (c.total, c.completed, c.delayed, c.started) = (2, 1, 1, 2)), FlowState::Blocked),
            (
                false,
                counts(|c| (c.total, c.completed, c.sinks, c.sinks_succeeded) = (3, 3, 1, 1)),
                FlowState::Completed,
            ),
            (
                false,
                counts(|c| (c.total, c.completed, c.skipped, c.sinks, c.sinks_succeeded) = (3, 2, 1, 1, 0)),
                FlowState::Failed,
            ),
            // A cancelled loser of a quorum is not a sink: the flow still completes.
            (
                false,
                counts(|c| (c.total, c.completed, c.cancelled, c.sinks, c.sinks_succeeded) = (4, 3, 1, 1, 1)),
                FlowState::Completed,
            ),
        ];
        for (cancelled, c, want) in cases {
            assert_eq!(FlowState::derive(cancelled, &c), want, "{c:?}");
        }
    }
}
