//! Submission, reads and listings of executions. A submission's `traceparent` / `tracestate`
//! headers give their trace context to the executions whose body carries none.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ff_core::wire::{SubmitBatchRequest, SubmitBatchResponse, SubmitRequest};
use ff_core::{
    CreateExecutionResult, ExecutionId, ExecutionInfo, ExecutionSnapshot, ListExecutionsPage, MAX_LIST_LIMIT,
    PublicState,
};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ExecutionPath};
use super::route::ApiRoute;
use super::trace::TraceHeaders;
use super::{AppState, BATCH_LIMIT, SUBMIT_LIMIT};
use crate::openapi::QuerySchema;

/// Executions per page when the request names no limit.
const DEFAULT_PAGE: usize = 50;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/executions", "Submit an execution (201 created, 200 duplicate)")
            .body::<SubmitRequest>(SUBMIT_LIMIT)
            .responds::<CreateExecutionResult>(201, "Created (`status: created`)")
            .responds::<CreateExecutionResult>(
                200,
                "The id or idempotency key exists: the original (`status: duplicate`)",
            )
            .error(409, "An execution with this id exists with other content (`execution_already_exists`)")
            .to(post(submit)),
        ApiRoute::get("/v1/executions", "List one partition's executions")
            .query_schema("partition", true, "Execution partition index", QuerySchema::Partition)
            .query::<ExecutionId>("cursor", false, "Exclusive execution id to continue after")
            .query_schema(
                "limit",
                false,
                format!("Page size, at most {MAX_LIST_LIMIT} (default {DEFAULT_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 0, "maximum": MAX_LIST_LIMIT})),
            )
            .responds::<ListExecutionsPage>(200, "One page")
            .to(get(list)),
        ApiRoute::post("/v1/executions/batch", "Submit many executions atomically")
            .body::<SubmitBatchRequest>(BATCH_LIMIT)
            .responds::<SubmitBatchResponse>(200, "One result per execution, in order")
            .error(409, "An execution with one of the ids exists with other content (`execution_already_exists`)")
            .to(post(submit_batch)),
        ApiRoute::get("/v1/executions/{id}", "Snapshot of an execution")
            .responds::<ExecutionSnapshot>(200, "The snapshot")
            .error(404, "No such execution (`not_found`)")
            .to(get(describe)),
        ApiRoute::get("/v1/executions/{id}/info", "Full execution record")
            .responds::<ExecutionInfo>(200, "The record")
            .error(404, "No such execution (`not_found`)")
            .to(get(info)),
        ApiRoute::get("/v1/executions/{id}/state", "Public state only")
            .responds::<PublicState>(200, "The state")
            .error(404, "No such execution (`not_found`)")
            .to(get(state)),
        ApiRoute::get("/v1/executions/{id}/result", "Result payload (application/octet-stream)")
            .media(200, "application/octet-stream", "The result bytes")
            .error(404, "No such execution, or it has no result (`not_found`)")
            .to(get(result)),
    ]
}

async fn submit(
    State(state): State<AppState>,
    TraceHeaders(trace): TraceHeaders,
    ApiJson(mut req): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    req.trace_context = req.trace_context.or(trace);
    let args = req.into_args(&state.0.partitions)?;
    let result = state.backend().create_execution(args).await?;
    let status = match result {
        CreateExecutionResult::Created { .. } => StatusCode::CREATED,
        CreateExecutionResult::Duplicate { .. } => StatusCode::OK,
    };
    Ok((status, Json(result)).into_response())
}

async fn submit_batch(
    State(state): State<AppState>,
    TraceHeaders(trace): TraceHeaders,
    ApiJson(req): ApiJson<SubmitBatchRequest>,
) -> Result<Json<SubmitBatchResponse>, ApiError> {
    let args = req
        .executions
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.trace_context = r.trace_context.or_else(|| trace.clone());
            r.into_args(&state.0.partitions)
                .map_err(|e| ApiError::bad_request("invalid_input", format!("executions[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = state.backend().create_executions(args).await?;
    Ok(Json(SubmitBatchResponse { results }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    partition: u16,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListExecutionsPage>, ApiError> {
    state.0.partitions.check_execution_partition(q.partition)?;
    let cursor = q.cursor.as_deref().map(ExecutionId::parse).transpose()?;
    let key = ff_core::Partition::execution(q.partition).key();
    let page = state.backend().list_executions(key, cursor, q.limit.unwrap_or(DEFAULT_PAGE)).await?;
    Ok(Json(page))
}

async fn describe(State(state): State<AppState>, ExecutionPath(id): ExecutionPath) -> Result<Response, ApiError> {
    let snap = state.backend().describe_execution(&id).await?;
    Ok(Json(snap.ok_or(ApiError::not_found("execution"))?).into_response())
}

async fn info(State(state): State<AppState>, ExecutionPath(id): ExecutionPath) -> Result<Response, ApiError> {
    let info = state.backend().read_execution_info(&id).await?;
    Ok(Json(info.ok_or(ApiError::not_found("execution"))?).into_response())
}

async fn state(State(state): State<AppState>, ExecutionPath(id): ExecutionPath) -> Result<Response, ApiError> {
    let s = state.backend().read_execution_state(&id).await?;
    Ok(Json(s.ok_or(ApiError::not_found("execution"))?).into_response())
}

async fn result(State(state): State<AppState>, ExecutionPath(id): ExecutionPath) -> Result<Response, ApiError> {
    let bytes = state.backend().get_execution_result(&id).await?;
    let bytes = bytes.ok_or(ApiError::not_found("result"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
