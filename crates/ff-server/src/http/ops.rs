//! Operational routes: health, metrics, the deployment's partition counts and the OpenAPI
//! document.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ff_core::PartitionConfig;
use ff_core::wire::HealthResponse;

use super::AppState;
use super::error::ApiError;
use super::route::ApiRoute;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get("/healthz", "Liveness and database reachability")
            .responds::<HealthResponse>(200, "Serving, and the database answers")
            .backend(true)
            .to(get(healthz)),
        ApiRoute::get("/metrics", "Prometheus metrics (text format)")
            .media(200, "text/plain", "The metrics")
            .to(get(metrics)),
        ApiRoute::get("/v1/partitions", "The deployment's partition counts (clients mint flow member ids with them)")
            .responds::<PartitionConfig>(200, "The partition counts")
            .backend(false)
            .to(get(partitions)),
        ApiRoute::get("/openapi.json", "This document")
            .media(200, "application/json", "The OpenAPI document")
            .to(get(openapi)),
    ]
}

/// `200` when the database answers a ping; otherwise `503` with the error shape, its message
/// saying the database is down (the cause is logged, not sent).
async fn healthz(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    if let Err(e) = state.backend().ping().await {
        tracing::warn!(error = %e, "health check failed: the database is down or unreachable");
        return Err(ApiError::Request {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "transport",
            message: DATABASE_DOWN.into(),
        });
    }
    Ok(Json(HealthResponse { status: "ok".into(), backend: state.backend().backend_label().into() }))
}

/// The message of a failed health check.
pub(crate) const DATABASE_DOWN: &str = "database down: the server cannot reach its database; retry later";

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.telemetry.render()).into_response()
}

/// The document built with the router, served as is.
async fn openapi(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.0.openapi.clone()).into_response()
}

/// The partition counts this server mints and checks ids with: a client minting flow member
/// ids (`ExecutionId::for_flow`) needs the same ones.
async fn partitions(State(state): State<AppState>) -> Json<PartitionConfig> {
    Json(state.0.partitions)
}
