//! Reading, writing and clearing one tag of an execution.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use ff_core::wire::TagValue;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ExecutionPath};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get("/v1/executions/{id}/tags/{key}", "Read one tag")
            .responds::<TagValue>(200, "The value")
            .error(404, "No such execution or tag (`not_found`)")
            .to(get(get_tag)),
        ApiRoute::put("/v1/executions/{id}/tags/{key}", "Set one tag")
            .body::<TagValue>(SMALL_LIMIT)
            .empty(204, "Set")
            .error(404, "No such execution (`not_found`)")
            .to(axum::routing::put(set_tag)),
        ApiRoute::delete("/v1/executions/{id}/tags/{key}", "Clear one tag")
            .empty(204, "Cleared")
            .error(404, "No such execution or tag (`not_found`)")
            .to(axum::routing::delete(clear_tag)),
    ]
}

/// The `{key}` path segment.
#[derive(Deserialize)]
struct KeySegment {
    key: String,
}

async fn get_tag(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiPath(KeySegment { key }): ApiPath<KeySegment>,
) -> Result<Json<TagValue>, ApiError> {
    let value = state.backend().get_execution_tag(&id, &key).await?;
    Ok(Json(TagValue { value: value.ok_or(ApiError::not_found("tag"))? }))
}

async fn set_tag(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiPath(KeySegment { key }): ApiPath<KeySegment>,
    ApiJson(body): ApiJson<TagValue>,
) -> Result<StatusCode, ApiError> {
    state.backend().set_execution_tag(&id, &key, &body.value).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_tag(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiPath(KeySegment { key }): ApiPath<KeySegment>,
) -> Result<StatusCode, ApiError> {
    if state.backend().clear_execution_tag(&id, &key).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("tag"))
    }
}
