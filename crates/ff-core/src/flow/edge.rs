//! Dependency edges: "downstream runs after upstream", staged on the flow's graph and then
//! applied to the downstream's edge group.
//!
//! Staging checks the graph: both ends are members of the flow, the edge is not a self-edge,
//! does not close a cycle and does not duplicate another edge; the caller's graph revision must
//! be current. Applying counts the edge into the downstream's group and, while the downstream
//! has not started, keeps it out of the claimable set until the group is decided. An applied
//! edge is resolved exactly once, when its upstream ends.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::execution::validate_name;
use crate::flow::edge_group::EdgeGroupState;
use crate::id::{EdgeId, ExecutionId, FlowId, TimestampMs};
use crate::state::TerminalOutcome;

/// What an edge requires of its upstream. Only success satisfies an edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// The upstream must complete successfully.
    #[default]
    SuccessOnly,
}

impl DependencyKind {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        "success_only"
    }
}

/// Where an edge is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// On the flow's graph, not yet counted into the downstream's group.
    Pending,
    /// Counted into the downstream's group.
    Applied,
}

/// How an applied edge's upstream ended, once it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeResolution {
    /// The upstream succeeded.
    Success,
    /// The upstream failed, was cancelled or expired.
    Failed,
    /// The upstream was skipped.
    Skipped,
}

impl EdgeResolution {
    /// The resolution an upstream's terminal outcome gives its edges (`None` while it runs).
    pub fn of(outcome: TerminalOutcome) -> Option<Self> {
        match outcome {
            TerminalOutcome::None => None,
            TerminalOutcome::Success => Some(Self::Success),
            TerminalOutcome::Skipped => Some(Self::Skipped),
            TerminalOutcome::Failed | TerminalOutcome::Cancelled | TerminalOutcome::Expired => Some(Self::Failed),
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "success" => Ok(Self::Success),
            "failed" => Ok(Self::Failed),
            "skipped" => Ok(Self::Skipped),
            other => Err(EngineError::validation(ValidationKind::Corruption, format!("edge resolution {other:?}"))),
        }
    }
}

/// Longest data-passing reference accepted, in bytes.
pub const MAX_DATA_PASSING_REF_BYTES: usize = 1024;

/// Arguments of `stage_dependency_edge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageDependencyEdgeArgs {
    /// The flow both ends belong to.
    pub flow_id: FlowId,
    /// The new edge's id (staging the same edge again is idempotent).
    pub edge_id: EdgeId,
    /// Runs first.
    pub upstream_execution_id: ExecutionId,
    /// Runs after.
    pub downstream_execution_id: ExecutionId,
    /// What the edge requires of its upstream.
    #[serde(default)]
    pub dependency_kind: DependencyKind,
    /// An opaque reference the downstream may use to find its upstream's output.
    #[serde(default)]
    pub data_passing_ref: Option<String>,
    /// The graph revision the caller last read (`describe_flow`); a newer one is
    /// `stale_graph_revision`.
    pub expected_graph_revision: u64,
}

impl StageDependencyEdgeArgs {
    /// Checks what needs no database: no self-edge, a sane data reference.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.upstream_execution_id == self.downstream_execution_id {
            return Err(EngineError::Conflict(crate::error::ConflictKind::SelfReferencingEdge));
        }
        validate_data_ref(self.data_passing_ref.as_deref())
    }
}

pub(crate) fn validate_data_ref(r: Option<&str>) -> Result<(), EngineError> {
    if let Some(r) = r {
        if r.len() > MAX_DATA_PASSING_REF_BYTES {
            return Err(EngineError::invalid(format!(
                "data_passing_ref of {} bytes exceeds {MAX_DATA_PASSING_REF_BYTES}",
                r.len()
            )));
        }
        validate_name("data_passing_ref", r, true)?;
    }
    Ok(())
}

/// Outcome of `stage_dependency_edge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum StageDependencyEdgeResult {
    /// The edge is on the graph; the graph's revision is now `new_graph_revision` (unchanged when
    /// the same edge was staged before).
    Staged {
        /// The edge.
        edge_id: EdgeId,
        /// The graph revision after staging.
        new_graph_revision: u64,
    },
}

/// Arguments of `apply_dependency_to_child`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApplyDependencyToChildArgs {
    /// The edge's flow.
    pub flow_id: FlowId,
    /// The staged edge.
    pub edge_id: EdgeId,
    /// The edge's upstream, checked against the stored edge.
    pub upstream_execution_id: ExecutionId,
    /// The edge's downstream, checked against the stored edge.
    pub downstream_execution_id: ExecutionId,
}

/// Outcome of `apply_dependency_to_child`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ApplyDependencyToChildResult {
    /// Counted into the downstream's group; `unsatisfied_count` inbound edges are unresolved.
    Applied {
        /// Applied inbound edges of the downstream whose upstream has not ended.
        unsatisfied_count: u32,
        /// The group's decision after applying (an upstream that had already ended resolves
        /// the edge at once).
        group_state: EdgeGroupState,
    },
    /// The edge was applied before.
    AlreadyApplied,
}

/// Arguments of `resolve_dependency`: resolve one applied edge whose upstream has ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResolveDependencyArgs {
    /// The edge's flow.
    pub flow_id: FlowId,
    /// The edge.
    pub edge_id: EdgeId,
    /// The outcome the caller believes the upstream ended with; checked against the stored one
    /// when given.
    #[serde(default)]
    pub upstream_outcome: Option<TerminalOutcome>,
}

/// Outcome of `resolve_dependency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ResolveDependencyResult {
    /// The upstream succeeded: the edge counts for its group.
    Satisfied {
        /// The group's decision afterwards.
        group_state: EdgeGroupState,
    },
    /// The upstream did not succeed: the edge counts against its group.
    Impossible {
        /// The group's decision afterwards.
        group_state: EdgeGroupState,
    },
    /// The edge was resolved before (normally in the upstream's own terminal transaction).
    AlreadyResolved,
}

/// Which edges `list_edges` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeDirection {
    /// Edges leaving `from_node` (its downstreams).
    Outgoing {
        /// The upstream end.
        from_node: ExecutionId,
    },
    /// Edges entering `to_node` (its upstreams).
    Incoming {
        /// The downstream end.
        to_node: ExecutionId,
    },
}

/// One dependency edge, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EdgeSnapshot {
    /// The edge.
    pub edge_id: EdgeId,
    /// Its flow.
    pub flow_id: FlowId,
    /// Runs first.
    pub upstream_execution_id: ExecutionId,
    /// Runs after.
    pub downstream_execution_id: ExecutionId,
    /// What it requires of its upstream.
    pub dependency_kind: DependencyKind,
    /// Always `all_required`: how edges combine is the downstream's group policy.
    pub satisfaction_condition: String,
    /// The caller's reference to the upstream's output.
    pub data_passing_ref: Option<String>,
    /// Staged or applied.
    pub edge_state: EdgeState,
    /// How its upstream ended, once resolved.
    pub resolution: Option<EdgeResolution>,
    /// When it was staged.
    pub created_at: TimestampMs,
    /// Who staged it (the flow's creator identity, or `engine`).
    pub created_by: String,
    /// When it was applied.
    pub applied_at: Option<TimestampMs>,
    /// When it was resolved.
    pub resolved_at: Option<TimestampMs>,
}
