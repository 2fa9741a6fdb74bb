//! Flows: create one (a header, or a whole DAG in one request and one transaction), add
//! members, stage and apply edges, set a downstream's group policy, cancel it, and read flows
//! and edges. Each handler is one backend call; its refusals (`cycle_detected`,
//! `self_referencing_edge`, `dependency_already_exists`, `stale_graph_revision`,
//! `execution_already_in_flow`, `flow_already_terminal`, `edge_group_policy_already_fixed`...)
//! write nothing.
//!
//! The flow is named by the path. A body may repeat it as `flow_id`; one that differs is
//! `400 flow_id_mismatch`, so a request built for one flow never edits another. The lease
//! holder's wait for its children is a lease-holder call, in `leases.rs`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ff_core::wire::{
    AddFlowMemberRequest, ApplyEdgeRequest, CancelFlowRequest, CreateFlowGraphRequest, ListEdgesResponse,
    MAX_CANCEL_WAIT_MS, StageEdgeRequest, cancel_wait_schema, parse_cancel_wait,
};
use ff_core::{
    AddExecutionToFlowResult, ApplyDependencyToChildResult, CancelFlowResult, CancelFlowWait, CreateFlowArgs,
    CreateFlowGraphResult, CreateFlowResult, DEFAULT_FLOW_PAGE, EdgeDependencyPolicy, EdgeDirection, EdgeSnapshot,
    ExecutionId, FlowId, FlowSnapshot, ListFlowsArgs, ListFlowsPage, MAX_FLOW_PAGE, Namespace, SetEdgeGroupPolicyArgs,
    SetEdgeGroupPolicyResult, StageDependencyEdgeResult,
};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, DownstreamPath, EdgePath, FlowPath};
use super::route::ApiRoute;
use super::{AppState, BATCH_LIMIT, SMALL_LIMIT};
use crate::openapi::QuerySchema;

/// What a graph edit answers when the flow or a member it names is absent.
const FLOW_NOT_FOUND: &str = "No such flow, or a member it names is not in it (`not_found`)";

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/flows", "Create a flow header (201 created, 200 the id exists)")
            .body::<CreateFlowArgs>(SMALL_LIMIT)
            .responds::<CreateFlowResult>(201, "Created (`Created`)")
            .responds::<CreateFlowResult>(200, "A flow with this id exists; nothing was written (`AlreadySatisfied`)")
            .to(post(create_flow)),
        ApiRoute::post(
            "/v1/flows/graph",
            "Create a flow with its members, edges and group policies in one transaction",
        )
        .body::<CreateFlowGraphRequest>(BATCH_LIMIT)
        .responds::<CreateFlowGraphResult>(201, "Everything was created (`Created`)")
        .responds::<CreateFlowGraphResult>(200, "A flow with this id exists; nothing was written (`AlreadySatisfied`)")
        .error(404, "An edge or policy names an execution that is not a member (`not_found`)")
        .error(
            409,
            "The edges close a cycle (`cycle_detected`), join a member to itself (`self_referencing_edge`) or \
             repeat a pair or an edge id (`dependency_already_exists`); a member's id exists \
             (`execution_already_exists`)",
        )
        .to(post(create_flow_graph)),
        ApiRoute::get("/v1/flows", "List flows in id order")
            .query::<FlowId>("cursor", false, "Exclusive flow id to continue after (the previous page's cursor)")
            .query_schema(
                "limit",
                false,
                format!("Page size, 1..={MAX_FLOW_PAGE} (default {DEFAULT_FLOW_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_FLOW_PAGE})),
            )
            .query::<Namespace>("namespace", false, "Only flows of this namespace (default: every namespace)")
            .query_schema(
                "partition",
                false,
                "Only flows of this partition (default: every one)",
                QuerySchema::Partition,
            )
            .responds::<ListFlowsPage>(200, "One page")
            .to(get(list_flows)),
        ApiRoute::get("/v1/flows/{flow_id}", "A flow with its derived state, member counts and edge groups")
            .responds::<FlowSnapshot>(200, "The flow")
            .error(404, "No such flow (`not_found`)")
            .to(get(describe_flow)),
        ApiRoute::post("/v1/flows/{flow_id}/members", "Add an existing execution to the flow")
            .body::<AddFlowMemberRequest>(SMALL_LIMIT)
            .responds::<AddExecutionToFlowResult>(201, "It joined (`Added`)")
            .responds::<AddExecutionToFlowResult>(200, "It was a member already; nothing was written (`AlreadyMember`)")
            .error(400, "The execution is not in the flow's partition or namespace (`invalid_input`)")
            .error(404, "No such flow or execution (`not_found`)")
            .error(
                409,
                "The execution is in another flow (`execution_already_in_flow`); the flow was cancelled \
                 (`flow_already_terminal`)",
            )
            .to(post(add_member)),
        ApiRoute::post("/v1/flows/{flow_id}/edges", "Stage a dependency edge on the flow's graph")
            .body::<StageEdgeRequest>(SMALL_LIMIT)
            .responds::<StageDependencyEdgeResult>(
                201,
                "On the graph (`Staged`), with the graph revision after staging (unchanged when the same edge \
                 was staged before)",
            )
            .error(400, "The body names another flow (`flow_id_mismatch`)")
            .error(404, FLOW_NOT_FOUND)
            .error(
                409,
                "The edge closes a cycle (`cycle_detected`), joins a member to itself (`self_referencing_edge`) \
                 or exists (`dependency_already_exists`); the graph changed since `expected_graph_revision` \
                 (`stale_graph_revision`, retryable); the flow was cancelled (`flow_already_terminal`)",
            )
            .to(post(stage_edge)),
        ApiRoute::get("/v1/flows/{flow_id}/edges", "The edges leaving (`from`) or entering (`to`) one member")
            .query::<ExecutionId>("from", false, "Edges whose upstream is this member (give `from` or `to`)")
            .query::<ExecutionId>("to", false, "Edges whose downstream is this member (give `from` or `to`)")
            .responds::<ListEdgesResponse>(200, "The edges, in edge id order")
            .to(get(list_edges)),
        ApiRoute::post("/v1/flows/{flow_id}/edges/apply", "Count a staged edge into its downstream's group")
            .body::<ApplyEdgeRequest>(SMALL_LIMIT)
            .responds::<ApplyDependencyToChildResult>(
                200,
                "Counted (`Applied`, with the group's state), or counted before (`AlreadyApplied`)",
            )
            .error(
                400,
                "The body names another flow (`flow_id_mismatch`), or ends that are not the stored edge's \
                 (`invalid_input`)",
            )
            .error(404, "No such flow or edge (`not_found`)")
            .error(409, "The flow was cancelled (`flow_already_terminal`)")
            .to(post(apply_edge)),
        ApiRoute::get("/v1/flows/{flow_id}/edges/{edge_id}", "One edge")
            .responds::<EdgeSnapshot>(200, "The edge")
            .error(404, "No such flow or edge (`not_found`)")
            .to(get(describe_edge)),
        ApiRoute::put(
            "/v1/flows/{flow_id}/groups/{downstream_execution_id}/policy",
            "Set how a downstream's inbound edges combine (until the first is resolved)",
        )
        .body::<EdgeDependencyPolicy>(SMALL_LIMIT)
        .responds::<SetEdgeGroupPolicyResult>(200, "Set (`Set`), or the same policy was set before (`AlreadySet`)")
        .error(400, "A quorum of 0 or larger than the other members of the flow (`invalid_input`)")
        .error(404, FLOW_NOT_FOUND)
        .error(
            409,
            "An inbound edge is resolved already (`edge_group_policy_already_fixed`); the flow was cancelled \
             (`flow_already_terminal`)",
        )
        .to(put(set_policy)),
        ApiRoute::post("/v1/flows/{flow_id}/cancel", "Cancel the flow and, by policy, its members")
            .body::<CancelFlowRequest>(SMALL_LIMIT)
            .query_schema(
                "wait",
                false,
                format!(
                    "How long to wait for members another transaction holds: `none` (default), milliseconds \
                     up to {MAX_CANCEL_WAIT_MS}, or `indefinite` (until every targeted member ended, at most \
                     {MAX_CANCEL_WAIT_MS} ms)"
                ),
                QuerySchema::Fixed(cancel_wait_schema()),
            )
            .responds::<CancelFlowResult>(
                200,
                "Every targeted member ended (`Cancelled`; a repeat reports the stored policy), some are still \
                 being cancelled in the background (`CancellationScheduled`), or the wait ended first \
                 (`PartiallyCancelled`)",
            )
            .error(404, "No such flow (`not_found`)")
            .to(post(cancel_flow)),
    ]
}

/// `400 flow_id_mismatch` when a body repeats a flow id other than the path's.
fn same_flow(path: FlowId, body: Option<FlowId>) -> Result<(), ApiError> {
    match body {
        Some(named) if named != path => {
            Err(ApiError::bad_request("flow_id_mismatch", format!("the body names flow {named}, the path flow {path}")))
        }
        _ => Ok(()),
    }
}

/// `201` when the request created something, `200` when it found it done already.
fn created_or_ok<T: serde::Serialize>(created: bool, body: T) -> Response {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(body)).into_response()
}

async fn create_flow(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateFlowArgs>,
) -> Result<Response, ApiError> {
    let result = state.backend().create_flow(args).await?;
    Ok(created_or_ok(matches!(result, CreateFlowResult::Created { .. }), result))
}

async fn create_flow_graph(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateFlowGraphRequest>,
) -> Result<Response, ApiError> {
    let result = state.backend().create_flow_graph(req.into_args(&state.0.partitions)?).await?;
    Ok(created_or_ok(matches!(result, CreateFlowGraphResult::Created { .. }), result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<u32>,
    namespace: Option<String>,
    partition: Option<u16>,
}

async fn list_flows(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListFlowsPage>, ApiError> {
    if let Some(p) = q.partition {
        state.0.partitions.check_execution_partition(p)?;
    }
    let args = ListFlowsArgs {
        partition: q.partition,
        namespace: q.namespace.map(Namespace::new),
        cursor: q.cursor.as_deref().map(FlowId::parse).transpose()?,
        limit: q.limit,
    };
    Ok(Json(state.backend().list_flows(args).await?))
}

async fn describe_flow(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
) -> Result<Json<FlowSnapshot>, ApiError> {
    let flow = state.backend().describe_flow(&flow_id).await?;
    Ok(Json(flow.ok_or(ApiError::not_found("flow"))?))
}

async fn add_member(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    ApiJson(req): ApiJson<AddFlowMemberRequest>,
) -> Result<Response, ApiError> {
    let result = state.backend().add_execution_to_flow(req.into_args(flow_id)).await?;
    Ok(created_or_ok(matches!(result, AddExecutionToFlowResult::Added { .. }), result))
}

async fn stage_edge(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    ApiJson(req): ApiJson<StageEdgeRequest>,
) -> Result<Response, ApiError> {
    same_flow(flow_id, req.flow_id)?;
    let result = state.backend().stage_dependency_edge(req.into_args(flow_id)).await?;
    Ok(created_or_ok(true, result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgesQuery {
    from: Option<String>,
    to: Option<String>,
}

async fn list_edges(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    ApiQuery(q): ApiQuery<EdgesQuery>,
) -> Result<Json<ListEdgesResponse>, ApiError> {
    let direction = match (q.from, q.to) {
        (Some(from), None) => EdgeDirection::Outgoing { from_node: ExecutionId::parse(&from)? },
        (None, Some(to)) => EdgeDirection::Incoming { to_node: ExecutionId::parse(&to)? },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give exactly one of from (edges leaving a member) and to (edges entering it)",
            ));
        }
    };
    Ok(Json(ListEdgesResponse { edges: state.backend().list_edges(&flow_id, direction).await? }))
}

async fn apply_edge(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    ApiJson(req): ApiJson<ApplyEdgeRequest>,
) -> Result<Json<ApplyDependencyToChildResult>, ApiError> {
    same_flow(flow_id, req.flow_id)?;
    Ok(Json(state.backend().apply_dependency_to_child(req.into_args(flow_id)).await?))
}

async fn describe_edge(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    EdgePath(edge_id): EdgePath,
) -> Result<Json<EdgeSnapshot>, ApiError> {
    let edge = state.backend().describe_edge(&flow_id, &edge_id).await?;
    Ok(Json(edge.ok_or(ApiError::not_found("edge"))?))
}

async fn set_policy(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    DownstreamPath(downstream_execution_id): DownstreamPath,
    ApiJson(policy): ApiJson<EdgeDependencyPolicy>,
) -> Result<Json<SetEdgeGroupPolicyResult>, ApiError> {
    let args = SetEdgeGroupPolicyArgs { flow_id, downstream_execution_id, policy };
    Ok(Json(state.backend().set_edge_group_policy(args).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelQuery {
    wait: Option<String>,
}

async fn cancel_flow(
    State(state): State<AppState>,
    FlowPath(flow_id): FlowPath,
    ApiQuery(q): ApiQuery<CancelQuery>,
    ApiJson(req): ApiJson<CancelFlowRequest>,
) -> Result<Json<CancelFlowResult>, ApiError> {
    let wait = q.wait.as_deref().map(parse_cancel_wait).transpose()?.unwrap_or(CancelFlowWait::NoWait);
    Ok(Json(state.backend().cancel_flow(req.into_args(flow_id), wait).await?))
}
