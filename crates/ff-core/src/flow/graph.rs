//! A whole DAG in one call: the flow, its members, their edges and group policies, created in
//! one transaction, so no member can be claimed before the edges that hold it back exist.
//!
//! [`CreateFlowGraphArgs::validate`] checks the graph before anything is written: distinct
//! members, edges between members only, no self-edges or duplicate pairs, no cycle (reported
//! with the members on it), and group policies whose quorum fits the downstream's inbound edges.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::error::{ConflictKind, EngineError};
use crate::execution::CreateExecutionArgs;
use crate::flow::CreateFlowArgs;
use crate::flow::edge::validate_data_ref;
use crate::flow::edge_group::EdgeDependencyPolicy;
use crate::id::{EdgeId, ExecutionId, FlowId};

/// Most members one `create_flow_graph` call accepts.
pub const MAX_GRAPH_MEMBERS: usize = 10_000;
/// Most edges one `create_flow_graph` call accepts.
pub const MAX_GRAPH_EDGES: usize = 50_000;

/// One edge of a whole-graph creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowGraphEdge {
    /// The edge's id; minted when absent.
    #[serde(default)]
    pub edge_id: Option<EdgeId>,
    /// Runs first.
    pub upstream_execution_id: ExecutionId,
    /// Runs after.
    pub downstream_execution_id: ExecutionId,
    /// An opaque reference to the upstream's output.
    #[serde(default)]
    pub data_passing_ref: Option<String>,
}

/// The group policy of one downstream in a whole-graph creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FlowGraphPolicy {
    /// The downstream member.
    pub downstream_execution_id: ExecutionId,
    /// How its inbound edges combine.
    pub policy: EdgeDependencyPolicy,
}

/// Arguments of `create_flow_graph`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateFlowGraphArgs {
    /// The flow.
    pub flow: CreateFlowArgs,
    /// Its members, created with it (their ids must be minted with `ExecutionId::for_flow`).
    pub members: Vec<CreateExecutionArgs>,
    /// Its edges, staged and applied.
    #[serde(default)]
    pub edges: Vec<FlowGraphEdge>,
    /// Group policies of downstreams that are not all-of.
    #[serde(default)]
    pub policies: Vec<FlowGraphPolicy>,
}

/// Outcome of `create_flow_graph`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CreateFlowGraphResult {
    /// Everything was created.
    Created {
        /// The flow.
        flow_id: FlowId,
        /// Its graph revision.
        graph_revision: u64,
        /// The members, in request order.
        member_execution_ids: Vec<ExecutionId>,
        /// The edges' ids, in request order.
        edge_ids: Vec<EdgeId>,
    },
    /// A flow with this id exists already; nothing was written.
    AlreadySatisfied {
        /// The flow.
        flow_id: FlowId,
    },
}

impl CreateFlowGraphArgs {
    /// Checks the whole graph; returns the edge ids (minted where absent) in request order.
    pub fn validate(&self) -> Result<Vec<EdgeId>, EngineError> {
        self.flow.validate()?;
        if self.members.is_empty() {
            return Err(EngineError::invalid("a flow graph needs at least one member"));
        }
        if self.members.len() > MAX_GRAPH_MEMBERS {
            return Err(EngineError::invalid(format!(
                "{} members exceed the {MAX_GRAPH_MEMBERS} one call accepts",
                self.members.len()
            )));
        }
        if self.edges.len() > MAX_GRAPH_EDGES {
            return Err(EngineError::invalid(format!(
                "{} edges exceed the {MAX_GRAPH_EDGES} one call accepts",
                self.edges.len()
            )));
        }
        let mut members = HashSet::with_capacity(self.members.len());
        for m in &self.members {
            m.validate()?;
            if m.namespace != self.flow.namespace {
                return Err(EngineError::invalid(format!(
                    "member {} is in namespace {:?}, the flow in {:?}",
                    m.execution_id, m.namespace.0, self.flow.namespace.0
                )));
            }
            if !members.insert(m.execution_id) {
                return Err(EngineError::invalid(format!("member {} is listed twice", m.execution_id)));
            }
        }
        let mut pairs = HashSet::with_capacity(self.edges.len());
        let mut ids = Vec::with_capacity(self.edges.len());
        let mut seen_ids = HashSet::with_capacity(self.edges.len());
        let mut inbound: HashMap<ExecutionId, u32> = HashMap::new();
        for e in &self.edges {
            for end in [e.upstream_execution_id, e.downstream_execution_id] {
                if !members.contains(&end) {
                    return Err(EngineError::NotFound { entity: "flow member" });
                }
            }
            if e.upstream_execution_id == e.downstream_execution_id {
                return Err(EngineError::Conflict(ConflictKind::SelfReferencingEdge));
            }
            validate_data_ref(e.data_passing_ref.as_deref())?;
            if !pairs.insert((e.upstream_execution_id, e.downstream_execution_id)) {
                return Err(EngineError::Conflict(ConflictKind::DependencyAlreadyExists));
            }
            let id = e.edge_id.unwrap_or_default();
            if !seen_ids.insert(id) {
                return Err(EngineError::Conflict(ConflictKind::DependencyAlreadyExists));
            }
            ids.push(id);
            *inbound.entry(e.downstream_execution_id).or_default() += 1;
        }
        if find_cycle(self.edges.iter().map(|e| (e.upstream_execution_id, e.downstream_execution_id))).is_some() {
            return Err(EngineError::Conflict(ConflictKind::CycleDetected));
        }
        let mut with_policy = HashSet::new();
        for p in &self.policies {
            if !members.contains(&p.downstream_execution_id) {
                return Err(EngineError::NotFound { entity: "flow member" });
            }
            if !with_policy.insert(p.downstream_execution_id) {
                return Err(EngineError::invalid(format!("two policies for downstream {}", p.downstream_execution_id)));
            }
            p.policy.validate(inbound.get(&p.downstream_execution_id).copied().unwrap_or(0))?;
        }
        Ok(ids)
    }
}

/// Finds a cycle among `edges` (upstream, downstream), returning the members on one, or `None`
/// when the graph is acyclic.
pub fn find_cycle(edges: impl IntoIterator<Item = (ExecutionId, ExecutionId)>) -> Option<Vec<ExecutionId>> {
    let mut out: HashMap<ExecutionId, Vec<ExecutionId>> = HashMap::new();
    let mut indegree: HashMap<ExecutionId, usize> = HashMap::new();
    for (u, d) in edges {
        out.entry(u).or_default().push(d);
        indegree.entry(u).or_default();
        *indegree.entry(d).or_default() += 1;
    }
    let mut queue: VecDeque<ExecutionId> = indegree.iter().filter(|(_, n)| **n == 0).map(|(id, _)| *id).collect();
    while let Some(id) = queue.pop_front() {
        for d in out.get(&id).into_iter().flatten() {
            let n = indegree.get_mut(d).expect("every end has an entry");
            *n -= 1;
            if *n == 0 {
                queue.push_back(*d);
            }
        }
    }
    let mut left: Vec<ExecutionId> = indegree.into_iter().filter(|(_, n)| *n > 0).map(|(id, _)| id).collect();
    if left.is_empty() {
        None
    } else {
        left.sort();
        Some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<ExecutionId> {
        (0..n).map(|_| ExecutionId::in_partition(0)).collect()
    }

    #[test]
    fn cycles_are_found_and_dags_pass() {
        let v = ids(4);
        assert_eq!(find_cycle([(v[0], v[1]), (v[1], v[2]), (v[0], v[2]), (v[2], v[3])]), None);
        let cycle = find_cycle([(v[0], v[1]), (v[1], v[2]), (v[2], v[0]), (v[2], v[3])]).unwrap();
        // v[3] hangs off the cycle: it is never freed either, so it is reported with it.
        assert!([v[0], v[1], v[2]].iter().all(|id| cycle.contains(id)));
        assert!(find_cycle([(v[0], v[0])]).is_some());
        assert_eq!(find_cycle(std::iter::empty()), None);
    }
}
