//! Flows from [`Client`]: [`Client::flow`] builds a whole DAG by member keys and creates it in
//! one request (one transaction, so no member is claimable before the edges that hold it back
//! exist); [`Client::add_children`] spawns the children a running handler then waits for; and
//! one method per `FlowBackend` call, taking the same arguments and returning the same result.
//!
//! Member ids are minted here with `ExecutionId::for_flow`, under the server's partition counts
//! ([`Client::partitions`]), so that edges can name them before anything is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use ff_core::wire::{
    AddFlowMemberRequest, ApplyEdgeRequest, CancelFlowRequest, CreateFlowGraphRequest, ListEdgesResponse,
    StageEdgeRequest, SubmitRequest, cancel_wait_param,
};
use ff_core::{
    AddExecutionToFlowArgs, AddExecutionToFlowResult, ApplyDependencyToChildArgs, ApplyDependencyToChildResult,
    CANCEL_FLOW_WAIT_CAP, CancelFlowArgs, CancelFlowResult, CancelFlowWait, CreateFlowArgs, CreateFlowGraphArgs,
    CreateFlowGraphResult, CreateFlowResult, DependencyKind, EdgeDependencyPolicy, EdgeDirection, EdgeId, EdgeSnapshot,
    EngineError, ExecutionId, FlowGraphEdge, FlowGraphPolicy, FlowId, FlowSnapshot, ListFlowsArgs, ListFlowsPage,
    Namespace, SetEdgeGroupPolicyArgs, SetEdgeGroupPolicyResult, StageDependencyEdgeArgs, StageDependencyEdgeResult,
};
use reqwest::Method;

use super::{Client, REQUEST_TIMEOUT, enc};
use crate::error::SdkError;

/// How many times [`Client::add_children`] re-reads the graph revision when another writer
/// changed the graph between its read and its edge.
const STALE_REVISION_RETRIES: u32 = 16;

/// A flow under construction: members by key, edges and policies between keys. Built by
/// [`Client::flow`], sent by [`FlowBuilder::create`].
#[must_use = "a flow builder does nothing until `create` is awaited"]
pub struct FlowBuilder<'a> {
    client: &'a Client,
    flow: CreateFlowArgs,
    members: Vec<(String, SubmitRequest)>,
    edges: Vec<(String, String, Option<String>)>,
    policies: Vec<(String, EdgeDependencyPolicy)>,
}

impl FlowBuilder<'_> {
    /// Uses `flow_id` instead of a fresh id (creating the same id again is `AlreadySatisfied`).
    pub fn flow_id(mut self, flow_id: FlowId) -> Self {
        self.flow.flow_id = flow_id;
        self
    }

    /// The flow's namespace; members that name none are put in it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.flow.namespace = Namespace::new(namespace.into());
        self
    }

    /// Who creates the flow; recorded as the creator of its edges.
    pub fn creator(mut self, identity: impl Into<String>) -> Self {
        self.flow.creator_identity = Some(identity.into());
        self
    }

    /// Adds a member known by `key` in this builder. Its id is minted in the flow's partition
    /// unless the request names one.
    pub fn member(mut self, key: impl Into<String>, execution: SubmitRequest) -> Self {
        self.members.push((key.into(), execution));
        self
    }

    /// `down` runs after `up` has completed.
    pub fn edge(self, up: impl Into<String>, down: impl Into<String>) -> Self {
        self.edge_inner(up.into(), down.into(), None)
    }

    /// [`edge`](Self::edge) with a reference the downstream may use to find its upstream's
    /// output.
    pub fn edge_with_ref(self, up: impl Into<String>, down: impl Into<String>, data_ref: impl Into<String>) -> Self {
        self.edge_inner(up.into(), down.into(), Some(data_ref.into()))
    }

    fn edge_inner(mut self, up: String, down: String, data_ref: Option<String>) -> Self {
        self.edges.push((up, down, data_ref));
        self
    }

    /// How `down`'s inbound edges combine (all-of when not set).
    pub fn policy(mut self, down: impl Into<String>, policy: EdgeDependencyPolicy) -> Self {
        self.policies.push((down.into(), policy));
        self
    }

    /// Creates the flow, its members, edges and policies in one request. A key named twice or
    /// an edge or policy naming an unknown key is `invalid_input`, and nothing is sent.
    pub async fn create(self) -> Result<FlowGraphOutcome, SdkError> {
        let partitions = self.client.partitions().await?;
        let flow_id = self.flow.flow_id;
        let trace = crate::telemetry::current_trace_context();
        let mut ids = BTreeMap::new();
        let mut members = Vec::with_capacity(self.members.len());
        for (key, mut execution) in self.members {
            let id = *execution.execution_id.get_or_insert_with(|| ExecutionId::for_flow(&flow_id, &partitions));
            execution.namespace.get_or_insert_with(|| self.flow.namespace.clone());
            if execution.trace_context.is_none() {
                execution.trace_context = trace.clone();
            }
            if ids.insert(key.clone(), id).is_some() {
                return Err(EngineError::invalid(format!("flow member {key:?} is added twice")).into());
            }
            members.push(execution);
        }
        let id_of = |key: &str| {
            ids.get(key).copied().ok_or_else(|| EngineError::invalid(format!("no flow member is keyed {key:?}")))
        };
        let edges = self
            .edges
            .iter()
            .map(|(up, down, data_ref)| {
                Ok(FlowGraphEdge {
                    edge_id: None,
                    upstream_execution_id: id_of(up)?,
                    downstream_execution_id: id_of(down)?,
                    data_passing_ref: data_ref.clone(),
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let policies = self
            .policies
            .iter()
            .map(|(down, policy)| Ok(FlowGraphPolicy { downstream_execution_id: id_of(down)?, policy: *policy }))
            .collect::<Result<Vec<_>, EngineError>>()?;
        let body = CreateFlowGraphRequest { flow: self.flow, members, edges, policies };
        let result = self.client.post("/v1/flows/graph", &body).await?;
        Ok(FlowGraphOutcome { flow_id, members: ids, result })
    }
}

/// What [`FlowBuilder::create`] did, with the member ids by key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowGraphOutcome {
    /// The flow.
    pub flow_id: FlowId,
    /// The members' ids, by the keys the builder named them with.
    pub members: BTreeMap<String, ExecutionId>,
    /// The server's answer: `Created`, or `AlreadySatisfied` when the flow id existed (then
    /// nothing was written and `members` names ids that were not created).
    pub result: CreateFlowGraphResult,
}

impl FlowGraphOutcome {
    /// The id of the member keyed `key`.
    pub fn member(&self, key: &str) -> Option<ExecutionId> {
        self.members.get(key).copied()
    }
}

impl Client {
    /// A builder of a flow of `kind` (e.g. `etl.nightly`) with a fresh id in the default
    /// namespace.
    pub fn flow(&self, kind: impl Into<String>) -> FlowBuilder<'_> {
        FlowBuilder {
            client: self,
            flow: CreateFlowArgs::new(kind),
            members: Vec::new(),
            edges: Vec::new(),
            policies: Vec::new(),
        }
    }

    /// Creates a flow header; `AlreadySatisfied` when the id exists.
    pub async fn create_flow(&self, args: &CreateFlowArgs) -> Result<CreateFlowResult, SdkError> {
        self.post("/v1/flows", args).await
    }

    /// Creates a flow with its members, edges and policies in one transaction.
    pub async fn create_flow_graph(&self, args: &CreateFlowGraphArgs) -> Result<CreateFlowGraphResult, SdkError> {
        self.post("/v1/flows/graph", &CreateFlowGraphRequest::from_args(args)).await
    }

    /// Adds an existing execution (minted for the flow) to it.
    pub async fn add_execution_to_flow(
        &self,
        args: &AddExecutionToFlowArgs,
    ) -> Result<AddExecutionToFlowResult, SdkError> {
        self.post(&flow_path(&args.flow_id, "members"), &AddFlowMemberRequest::from_args(args)).await
    }

    /// Stages an edge, checked against `args.expected_graph_revision`.
    pub async fn stage_dependency_edge(
        &self,
        args: &StageDependencyEdgeArgs,
    ) -> Result<StageDependencyEdgeResult, SdkError> {
        self.post(&flow_path(&args.flow_id, "edges"), &StageEdgeRequest::from_args(args)).await
    }

    /// Counts a staged edge into its downstream's group.
    pub async fn apply_dependency_to_child(
        &self,
        args: &ApplyDependencyToChildArgs,
    ) -> Result<ApplyDependencyToChildResult, SdkError> {
        self.post(&flow_path(&args.flow_id, "edges/apply"), &ApplyEdgeRequest::from_args(args)).await
    }

    /// Sets how a downstream's inbound edges combine.
    pub async fn set_edge_group_policy(
        &self,
        args: &SetEdgeGroupPolicyArgs,
    ) -> Result<SetEdgeGroupPolicyResult, SdkError> {
        let path =
            flow_path(&args.flow_id, &format!("groups/{}/policy", enc(&args.downstream_execution_id.to_string())));
        Self::json(self.request(Method::PUT, &path).json(&args.policy)).await
    }

    /// Cancels a flow and, by policy, its members, waiting as `wait` says for members another
    /// transaction held (the request's timeout grows by the wait).
    pub async fn cancel_flow(&self, args: &CancelFlowArgs, wait: CancelFlowWait) -> Result<CancelFlowResult, SdkError> {
        let waited = match wait {
            CancelFlowWait::NoWait => Duration::ZERO,
            CancelFlowWait::WaitTimeout(d) => d.min(CANCEL_FLOW_WAIT_CAP),
            CancelFlowWait::WaitIndefinite => CANCEL_FLOW_WAIT_CAP,
        };
        let path = format!("{}?wait={}", flow_path(&args.flow_id, "cancel"), cancel_wait_param(wait));
        let req = self.request(Method::POST, &path).timeout(REQUEST_TIMEOUT + waited);
        Self::json(req.json(&CancelFlowRequest::from_args(args))).await
    }

    /// A flow with its derived state, member counts and edge groups; `None` when absent.
    pub async fn describe_flow(&self, flow_id: &FlowId) -> Result<Option<FlowSnapshot>, SdkError> {
        self.get_optional(&format!("/v1/flows/{flow_id}")).await
    }

    /// One page of flows in id order.
    pub async fn list_flows(&self, args: &ListFlowsArgs) -> Result<ListFlowsPage, SdkError> {
        let mut query = Vec::new();
        if let Some(cursor) = &args.cursor {
            query.push(format!("cursor={cursor}"));
        }
        if let Some(limit) = args.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(ns) = &args.namespace {
            query.push(format!("namespace={}", enc(ns.as_str())));
        }
        if let Some(partition) = args.partition {
            query.push(format!("partition={partition}"));
        }
        let path = if query.is_empty() { "/v1/flows".to_owned() } else { format!("/v1/flows?{}", query.join("&")) };
        Self::json(self.request(Method::GET, &path)).await
    }

    /// The edges leaving or entering one member, in edge id order.
    pub async fn list_edges(&self, flow_id: &FlowId, direction: EdgeDirection) -> Result<Vec<EdgeSnapshot>, SdkError> {
        let query = match direction {
            EdgeDirection::Outgoing { from_node } => format!("from={}", enc(&from_node.to_string())),
            EdgeDirection::Incoming { to_node } => format!("to={}", enc(&to_node.to_string())),
        };
        let resp: ListEdgesResponse =
            Self::json(self.request(Method::GET, &format!("{}?{query}", flow_path(flow_id, "edges")))).await?;
        Ok(resp.edges)
    }

    /// One edge; `None` when absent.
    pub async fn describe_edge(&self, flow_id: &FlowId, edge_id: &EdgeId) -> Result<Option<EdgeSnapshot>, SdkError> {
        self.get_optional(&flow_path(flow_id, &format!("edges/{edge_id}"))).await
    }

    /// Spawns `children` for `parent`, a running member of `flow_id`: each is submitted (its id
    /// minted in the flow's partition unless it names one, in the flow's namespace unless it
    /// names one), added to the flow, and an edge child → parent is staged and applied. The
    /// parent then ends its attempt with [`HandlerError::wait_for_children`], and runs again,
    /// same attempt, once every child has ended. Returns the children's ids in order.
    ///
    /// Each step is its own request: a failure part-way leaves the children spawned so far in
    /// place (retrying with the same `execution_id`s resumes where it stopped).
    ///
    /// [`HandlerError::wait_for_children`]: crate::HandlerError::wait_for_children
    pub async fn add_children(
        &self,
        flow_id: &FlowId,
        parent: &ExecutionId,
        children: Vec<SubmitRequest>,
    ) -> Result<Vec<ExecutionId>, SdkError> {
        let partitions = self.partitions().await?;
        let flow = self.describe_flow(flow_id).await?.ok_or(EngineError::NotFound { entity: "flow" })?;
        let mut ids = Vec::with_capacity(children.len());
        for mut child in children {
            child.execution_id.get_or_insert_with(|| ExecutionId::for_flow(flow_id, &partitions));
            child.namespace.get_or_insert_with(|| flow.namespace.clone());
            let id = self.submit(&child).await?.execution_id();
            self.add_execution_to_flow(&AddExecutionToFlowArgs { flow_id: *flow_id, execution_id: id }).await?;
            let edge_id = self.stage_edge_at_current_revision(flow_id, id, *parent).await?;
            let apply = ApplyDependencyToChildArgs {
                flow_id: *flow_id,
                edge_id,
                upstream_execution_id: id,
                downstream_execution_id: *parent,
            };
            self.apply_dependency_to_child(&apply).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// Stages `up -> down` at the graph's current revision, reading it again when another
    /// writer moved it first; an edge staged before is found again rather than refused.
    async fn stage_edge_at_current_revision(
        &self,
        flow_id: &FlowId,
        up: ExecutionId,
        down: ExecutionId,
    ) -> Result<EdgeId, SdkError> {
        let existing = self.list_edges(flow_id, EdgeDirection::Outgoing { from_node: up }).await?;
        if let Some(edge) = existing.iter().find(|e| e.downstream_execution_id == down) {
            return Ok(edge.edge_id);
        }
        let mut args = StageDependencyEdgeArgs {
            flow_id: *flow_id,
            edge_id: EdgeId::new(),
            upstream_execution_id: up,
            downstream_execution_id: down,
            dependency_kind: DependencyKind::SuccessOnly,
            data_passing_ref: None,
            expected_graph_revision: 0,
        };
        let mut tries = 0;
        loop {
            let flow = self.describe_flow(flow_id).await?.ok_or(EngineError::NotFound { entity: "flow" })?;
            args.expected_graph_revision = flow.graph_revision;
            match self.stage_dependency_edge(&args).await {
                Ok(StageDependencyEdgeResult::Staged { edge_id, .. }) => return Ok(edge_id),
                Err(e) if e.code() == Some("stale_graph_revision") && tries < STALE_REVISION_RETRIES => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }
}

fn flow_path(flow_id: &FlowId, op: &str) -> String {
    format!("/v1/flows/{flow_id}/{op}")
}
