//! Submission, reads, tags and listings of executions and lanes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ff_core::wire::{SubmitBatchRequest, SubmitBatchResponse, SubmitRequest, TagValue};
use ff_core::{
    AttemptIndex, CreateExecutionResult, ExecutionId, LaneId, ListExecutionsPage, ListLanesPage, MAX_CREATE_BATCH,
    StreamCursor, StreamFrames,
};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};

pub(super) fn parse_id(raw: &str) -> Result<ExecutionId, ApiError> {
    Ok(ExecutionId::parse(raw)?)
}

pub(super) async fn submit(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    let args = req.into_args(&state.0.partitions)?;
    let result = state.backend().create_execution(args).await?;
    let status = match result {
        CreateExecutionResult::Created { .. } => StatusCode::CREATED,
        CreateExecutionResult::Duplicate { .. } => StatusCode::OK,
    };
    Ok((status, Json(result)).into_response())
}

pub(super) async fn submit_batch(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SubmitBatchRequest>,
) -> Result<Json<SubmitBatchResponse>, ApiError> {
    if req.executions.len() > MAX_CREATE_BATCH {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!("{} executions exceed the batch limit of {MAX_CREATE_BATCH}", req.executions.len()),
        ));
    }
    let args = req
        .executions
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.into_args(&state.0.partitions)
                .map_err(|e| ApiError::bad_request("invalid_input", format!("executions[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = state.backend().create_executions(args).await?;
    Ok(Json(SubmitBatchResponse { results }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    partition: u16,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListExecutionsPage>, ApiError> {
    state.0.partitions.check_execution_partition(q.partition)?;
    let cursor = q.cursor.as_deref().map(parse_id).transpose()?;
    let key = ff_core::Partition::execution(q.partition).key();
    let page = state.backend().list_executions(key, cursor, q.limit.unwrap_or(50)).await?;
    Ok(Json(page))
}

pub(super) async fn describe(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let snap = state.backend().describe_execution(&parse_id(&id)?).await?;
    Ok(Json(snap.ok_or(ApiError::not_found("execution"))?).into_response())
}

pub(super) async fn info(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let info = state.backend().read_execution_info(&parse_id(&id)?).await?;
    Ok(Json(info.ok_or(ApiError::not_found("execution"))?).into_response())
}

pub(super) async fn state(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let s = state.backend().read_execution_state(&parse_id(&id)?).await?;
    Ok(Json(s.ok_or(ApiError::not_found("execution"))?).into_response())
}

pub(super) async fn result(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Result<Response, ApiError> {
    let bytes = state.backend().get_execution_result(&parse_id(&id)?).await?;
    let bytes = bytes.ok_or(ApiError::not_found("result"))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
}

pub(super) async fn read_stream(
    State(state): State<AppState>,
    ApiPath((id, index)): ApiPath<(String, u32)>,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Json<StreamFrames>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_input", format!("limit {limit} outside 1..=1000")));
    }
    let from = q.from.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::Start);
    let to = q.to.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::End);
    let frames = state.backend().read_stream(&parse_id(&id)?, AttemptIndex(index), from, to, limit).await?;
    Ok(Json(frames))
}

pub(super) async fn get_tag(
    State(state): State<AppState>,
    ApiPath((id, key)): ApiPath<(String, String)>,
) -> Result<Json<TagValue>, ApiError> {
    let value = state.backend().get_execution_tag(&parse_id(&id)?, &key).await?;
    Ok(Json(TagValue { value: value.ok_or(ApiError::not_found("tag"))? }))
}

pub(super) async fn set_tag(
    State(state): State<AppState>,
    ApiPath((id, key)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<TagValue>,
) -> Result<StatusCode, ApiError> {
    state.backend().set_execution_tag(&parse_id(&id)?, &key, &body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LanesQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_lanes(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LanesQuery>,
) -> Result<Json<ListLanesPage>, ApiError> {
    let cursor = q.cursor.map(LaneId::try_new).transpose()?;
    Ok(Json(state.backend().list_lanes(cursor, q.limit.unwrap_or(100)).await?))
}
