//! Retention overrides: how long terminal executions of a lane or a namespace are kept before
//! the retention reconciler deletes them (a lane's override wins over its executions'
//! namespace's; without either the server's configured default applies). Each handler is one
//! backend call; a window outside `1..=MAX_RETENTION_MS` is `invalid_input` and writes nothing.
//! The namespace routes name a namespace by path, so the empty (default) namespace is set through
//! `PUT /v1/retention` and read from the listing.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use ff_core::{Namespace, RetentionPolicies, RetentionPolicy, RetentionScope, SetRetentionPolicyArgs};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, LanePath};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get("/v1/retention", "Every retention override, lanes first")
            .responds::<RetentionPolicies>(200, "The overrides")
            .to(get(list)),
        ApiRoute::put("/v1/retention", "Set (or replace) the retention window of a lane or a namespace")
            .body::<SetRetentionPolicyArgs>(SMALL_LIMIT)
            .responds::<RetentionPolicy>(200, "The stored override")
            .error(400, "A window outside 1..=MAX_RETENTION_MS, a malformed lane or namespace (`invalid_input`)")
            .to(put(set)),
        ApiRoute::get("/v1/retention/lanes/{lane_id}", "A lane's retention override")
            .responds::<RetentionPolicy>(200, "The override")
            .error(404, "The lane has no override (`not_found`)")
            .to(get(read_lane)),
        ApiRoute::delete("/v1/retention/lanes/{lane_id}", "Remove a lane's retention override")
            .empty(204, "Removed")
            .error(404, "The lane has no override (`not_found`)")
            .to(delete(clear_lane)),
        ApiRoute::get("/v1/retention/namespaces/{namespace}", "A namespace's retention override")
            .responds::<RetentionPolicy>(200, "The override")
            .error(404, "The namespace has no override (`not_found`)")
            .to(get(read_namespace)),
        ApiRoute::delete("/v1/retention/namespaces/{namespace}", "Remove a namespace's retention override")
            .empty(204, "Removed")
            .error(404, "The namespace has no override (`not_found`)")
            .to(delete(clear_namespace)),
    ]
}

/// The `{namespace}` path segment.
#[derive(Deserialize)]
struct NamespaceSegment {
    namespace: String,
}

async fn list(State(state): State<AppState>) -> Result<Json<RetentionPolicies>, ApiError> {
    Ok(Json(RetentionPolicies { policies: state.backend().list_retention_policies().await? }))
}

async fn set(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<SetRetentionPolicyArgs>,
) -> Result<Json<RetentionPolicy>, ApiError> {
    Ok(Json(state.backend().set_retention_policy(args).await?))
}

async fn read(state: &AppState, scope: RetentionScope) -> Result<Json<RetentionPolicy>, ApiError> {
    let policy = state.backend().read_retention_policy(&scope).await?;
    Ok(Json(policy.ok_or(ApiError::not_found("retention_policy"))?))
}

async fn clear(state: &AppState, scope: RetentionScope) -> Result<StatusCode, ApiError> {
    if state.backend().clear_retention_policy(&scope).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("retention_policy"))
    }
}

async fn read_lane(State(state): State<AppState>, LanePath(lane): LanePath) -> Result<Json<RetentionPolicy>, ApiError> {
    read(&state, RetentionScope::Lane(lane)).await
}

async fn clear_lane(State(state): State<AppState>, LanePath(lane): LanePath) -> Result<StatusCode, ApiError> {
    clear(&state, RetentionScope::Lane(lane)).await
}

async fn read_namespace(
    State(state): State<AppState>,
    ApiPath(NamespaceSegment { namespace }): ApiPath<NamespaceSegment>,
) -> Result<Json<RetentionPolicy>, ApiError> {
    read(&state, RetentionScope::Namespace(Namespace::new(namespace))).await
}

async fn clear_namespace(
    State(state): State<AppState>,
    ApiPath(NamespaceSegment { namespace }): ApiPath<NamespaceSegment>,
) -> Result<StatusCode, ApiError> {
    clear(&state, RetentionScope::Namespace(Namespace::new(namespace))).await
}
