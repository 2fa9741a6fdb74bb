//! Operational routes: health, metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ff_core::wire::HealthResponse;

use super::AppState;
use super::error::ApiError;

pub(super) async fn healthz(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    state.backend().ping().await?;
    Ok(Json(HealthResponse { status: "ok".into(), backend: state.backend().backend_label().into() }))
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.0.telemetry.render()).into_response()
}

pub(super) async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
