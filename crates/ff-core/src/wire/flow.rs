//! The JSON bodies of the flow routes whose shape differs from the backend method's `…Args`:
//! the flow id travels in the path, and member inputs travel as the submission body does
//! ([`SubmitRequest`]: JSON or base64, never a byte array). Each converts from the `…Args` (the
//! SDK's side) and into them, given the path's ids (the server's side).
//!
//! A body may repeat the path's flow id (`flow_id`); the server refuses one that differs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SubmitRequest;
use super::encode_bytes;
use crate::error::EngineError;
use crate::execution::{CreateExecutionArgs, MAX_MESSAGE_BYTES, TEXT_PATTERN};
use crate::flow::{
    AddExecutionToFlowArgs, ApplyDependencyToChildArgs, CANCEL_FLOW_WAIT_CAP, CancelFlowArgs, CancelFlowPolicy,
    CancelFlowWait, CreateFlowArgs, CreateFlowGraphArgs, DependencyKind, EdgeSnapshot, FlowGraphEdge, FlowGraphPolicy,
    MAX_DATA_PASSING_REF_BYTES, MAX_GRAPH_EDGES, MAX_GRAPH_MEMBERS, StageDependencyEdgeArgs,
};
use crate::id::{EdgeId, ExecutionId, FlowId};
use crate::partition::PartitionConfig;

/// `POST /v1/flows/graph`: a flow with its members, edges and group policies, created in one
/// transaction. Every member names its `execution_id`, minted with `ExecutionId::for_flow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFlowGraphRequest {
    /// The flow's header.
    pub flow: CreateFlowArgs,
    /// Its members, each with its `execution_id` (in the flow's partition) and in the flow's
    /// namespace.
    #[schemars(length(min = 1, max = MAX_GRAPH_MEMBERS))]
    pub members: Vec<SubmitRequest>,
    /// Its edges, staged and applied.
    #[serde(default)]
    #[schemars(length(max = MAX_GRAPH_EDGES))]
    pub edges: Vec<FlowGraphEdge>,
    /// Group policies of downstreams that are not all-of.
    #[serde(default)]
    pub policies: Vec<FlowGraphPolicy>,
}

impl CreateFlowGraphRequest {
    /// The body for `args`.
    pub fn from_args(args: &CreateFlowGraphArgs) -> Self {
        Self {
            flow: args.flow.clone(),
            members: args.members.iter().map(member_request).collect(),
            edges: args.edges.clone(),
            policies: args.policies.clone(),
        }
    }

    /// The arguments, each member checked as a submission is; a member without an id is
    /// refused (the caller mints it, so that its edges can name it).
    pub fn into_args(self, partitions: &PartitionConfig) -> Result<CreateFlowGraphArgs, EngineError> {
        let members = self
            .members
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                if m.execution_id.is_none() {
                    return Err(EngineError::invalid(format!(
                        "members[{i}]: a flow member needs an execution_id minted with ExecutionId::for_flow"
                    )));
                }
                m.into_args(partitions).map_err(|e| EngineError::invalid(format!("members[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CreateFlowGraphArgs { flow: self.flow, members, edges: self.edges, policies: self.policies })
    }
}

/// The submission body of one execution's arguments: the input as base64 with its encoding
/// label, every other field as is.
fn member_request(args: &CreateExecutionArgs) -> SubmitRequest {
    SubmitRequest {
        execution_id: Some(args.execution_id),
        namespace: Some(args.namespace.clone()),
        lane_id: args.lane_id.as_str().to_owned(),
        execution_kind: args.execution_kind.clone(),
        input: None,
        input_base64: (!args.input_payload.is_empty()).then(|| encode_bytes(&args.input_payload)),
        payload_encoding: args.payload_encoding.clone(),
        priority: args.priority,
        creator_identity: args.creator_identity.clone(),
        idempotency_key: args.idempotency_key.clone(),
        tags: args.tags.clone(),
        policy: args.policy.clone(),
        delay_until: args.delay_until,
        execution_deadline_at: args.execution_deadline_at,
        trace_context: args.trace_context.clone(),
    }
}

/// `POST /v1/flows/{flow_id}/members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddFlowMemberRequest {
    /// An existing execution in the flow's partition and namespace, in no other flow.
    pub execution_id: ExecutionId,
}

impl AddFlowMemberRequest {
    /// The body for `args`.
    pub fn from_args(args: &AddExecutionToFlowArgs) -> Self {
        Self { execution_id: args.execution_id }
    }

    /// The arguments for the flow in the path.
    pub fn into_args(self, flow_id: FlowId) -> AddExecutionToFlowArgs {
        AddExecutionToFlowArgs { flow_id, execution_id: self.execution_id }
    }
}

/// `POST /v1/flows/{flow_id}/edges`: stage an edge on the flow's graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageEdgeRequest {
    /// The path's flow, when repeated (another flow is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<FlowId>,
    /// The new edge's id (staging the same edge again is idempotent); minted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<EdgeId>,
    /// Runs first.
    pub upstream_execution_id: ExecutionId,
    /// Runs after.
    pub downstream_execution_id: ExecutionId,
    /// What the edge requires of its upstream (default `success_only`).
    #[serde(default)]
    pub dependency_kind: DependencyKind,
    /// An opaque reference the downstream may use to find its upstream's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_DATA_PASSING_REF_BYTES))]
    pub data_passing_ref: Option<String>,
    /// The graph revision the caller last read (`GET /v1/flows/{flow_id}`); a newer one is
    /// `stale_graph_revision`.
    pub expected_graph_revision: u64,
}

impl StageEdgeRequest {
    /// The body for `args`.
    pub fn from_args(args: &StageDependencyEdgeArgs) -> Self {
        Self {
            flow_id: Some(args.flow_id),
            edge_id: Some(args.edge_id),
            upstream_execution_id: args.upstream_execution_id,
            downstream_execution_id: args.downstream_execution_id,
            dependency_kind: args.dependency_kind,
            data_passing_ref: args.data_passing_ref.clone(),
            expected_graph_revision: args.expected_graph_revision,
        }
    }

    /// The arguments for the flow in the path (the caller has checked a repeated `flow_id`).
    pub fn into_args(self, flow_id: FlowId) -> StageDependencyEdgeArgs {
        StageDependencyEdgeArgs {
            flow_id,
            edge_id: self.edge_id.unwrap_or_default(),
            upstream_execution_id: self.upstream_execution_id,
            downstream_execution_id: self.downstream_execution_id,
            dependency_kind: self.dependency_kind,
            data_passing_ref: self.data_passing_ref,
            expected_graph_revision: self.expected_graph_revision,
        }
    }
}

/// `POST /v1/flows/{flow_id}/edges/apply`: count a staged edge into its downstream's group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyEdgeRequest {
    /// The path's flow, when repeated (another flow is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<FlowId>,
    /// The staged edge.
    pub edge_id: EdgeId,
    /// The edge's upstream, checked against the stored edge.
    pub upstream_execution_id: ExecutionId,
    /// The edge's downstream, checked against the stored edge.
    pub downstream_execution_id: ExecutionId,
}

impl ApplyEdgeRequest {
    /// The body for `args`.
    pub fn from_args(args: &ApplyDependencyToChildArgs) -> Self {
        Self {
            flow_id: Some(args.flow_id),
            edge_id: args.edge_id,
            upstream_execution_id: args.upstream_execution_id,
            downstream_execution_id: args.downstream_execution_id,
        }
    }

    /// The arguments for the flow in the path (the caller has checked a repeated `flow_id`).
    pub fn into_args(self, flow_id: FlowId) -> ApplyDependencyToChildArgs {
        ApplyDependencyToChildArgs {
            flow_id,
            edge_id: self.edge_id,
            upstream_execution_id: self.upstream_execution_id,
            downstream_execution_id: self.downstream_execution_id,
        }
    }
}

/// `POST /v1/flows/{flow_id}/cancel`; how long to wait is the `wait` query parameter
/// ([`parse_cancel_wait`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelFlowRequest {
    /// Why; recorded on the flow and on each cancelled member.
    #[schemars(length(max = MAX_MESSAGE_BYTES), pattern(TEXT_PATTERN))]
    pub reason: String,
    /// Which members to cancel (default `cancel_all`).
    #[serde(default)]
    pub cancellation_policy: CancelFlowPolicy,
}

impl CancelFlowRequest {
    /// The body for `args`.
    pub fn from_args(args: &CancelFlowArgs) -> Self {
        Self { reason: args.reason.clone(), cancellation_policy: args.cancellation_policy }
    }

    /// The arguments for the flow in the path.
    pub fn into_args(self, flow_id: FlowId) -> CancelFlowArgs {
        CancelFlowArgs { flow_id, reason: self.reason, cancellation_policy: self.cancellation_policy }
    }
}

/// Response of `GET /v1/flows/{flow_id}/edges`: the edges leaving (`from`) or entering (`to`)
/// one member, in edge id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListEdgesResponse {
    /// The edges.
    pub edges: Vec<EdgeSnapshot>,
}

/// Longest `wait` in milliseconds `POST /v1/flows/{flow_id}/cancel` accepts.
pub const MAX_CANCEL_WAIT_MS: u64 = CANCEL_FLOW_WAIT_CAP.as_millis() as u64;

/// Reads the `wait` query parameter of a flow cancellation: `none` (return at once), a number
/// of milliseconds in `1..=300000`, or `indefinite` (until every targeted member has ended, at
/// most [`CANCEL_FLOW_WAIT_CAP`]). `0` is `none`.
pub fn parse_cancel_wait(s: &str) -> Result<CancelFlowWait, EngineError> {
    match s {
        "none" | "0" => Ok(CancelFlowWait::NoWait),
        "indefinite" => Ok(CancelFlowWait::WaitIndefinite),
        ms => match ms.parse::<u64>() {
            Ok(ms) if ms <= MAX_CANCEL_WAIT_MS => Ok(CancelFlowWait::WaitTimeout(Duration::from_millis(ms))),
            _ => Err(EngineError::invalid(format!(
                "wait {s:?}: expected none, indefinite or milliseconds in 0..={MAX_CANCEL_WAIT_MS}"
            ))),
        },
    }
}

/// The `wait` query value [`parse_cancel_wait`] reads back as `wait` (a timeout is written in
/// whole milliseconds).
pub fn cancel_wait_param(wait: CancelFlowWait) -> String {
    match wait {
        CancelFlowWait::NoWait => "none".into(),
        CancelFlowWait::WaitIndefinite => "indefinite".into(),
        CancelFlowWait::WaitTimeout(d) => d.as_millis().min(u128::from(MAX_CANCEL_WAIT_MS)).to_string(),
    }
}

/// Schema of the `wait` query parameter.
pub fn cancel_wait_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "pattern": "^(none|indefinite|[0-9]{1,6})$"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::LaneId;

    #[test]
    fn cancel_waits_round_trip_and_bounds_hold() {
        for wait in [
            CancelFlowWait::NoWait,
            CancelFlowWait::WaitIndefinite,
            CancelFlowWait::WaitTimeout(Duration::from_millis(1500)),
            CancelFlowWait::WaitTimeout(CANCEL_FLOW_WAIT_CAP),
        ] {
            assert_eq!(parse_cancel_wait(&cancel_wait_param(wait)).unwrap(), wait);
        }
        assert_eq!(parse_cancel_wait("0").unwrap(), CancelFlowWait::NoWait);
        for bad in ["", "soon", "-1", "300001", "1.5"] {
            assert_eq!(parse_cancel_wait(bad).unwrap_err().code(), "invalid_input", "{bad:?}");
        }
    }

    #[test]
    fn a_graph_request_round_trips_and_refuses_members_without_ids() {
        let partitions = PartitionConfig::default();
        let flow = CreateFlowArgs::new("etl.nightly");
        let member = |input: Vec<u8>| {
            let mut m = CreateExecutionArgs::new(
                ExecutionId::for_flow(&flow.flow_id, &partitions),
                LaneId::try_new("etl").unwrap(),
                "step",
                input,
            );
            m.payload_encoding = Some("json".into());
            m
        };
        let members = vec![member(b"{\"n\":1}".to_vec()), member(Vec::new())];
        let args = CreateFlowGraphArgs {
            flow: flow.clone(),
            edges: vec![FlowGraphEdge {
                edge_id: Some(EdgeId::new()),
                upstream_execution_id: members[0].execution_id,
                downstream_execution_id: members[1].execution_id,
                data_passing_ref: None,
            }],
            members,
            policies: vec![],
        };
        let wire: CreateFlowGraphRequest =
            serde_json::from_value(serde_json::to_value(CreateFlowGraphRequest::from_args(&args)).unwrap()).unwrap();
        assert_eq!(wire.clone().into_args(&partitions).unwrap(), args);
        let mut anonymous = wire;
        anonymous.members[1].execution_id = None;
        let err = anonymous.into_args(&partitions).unwrap_err();
        assert!(err.to_string().contains("members[1]"), "{err}");
    }
}
