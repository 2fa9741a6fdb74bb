//! Reading an attempt's stream of frames (frames are appended by the lease holder, see
//! `leases.rs`). The backend bounds the read (`ff_core::stream::MAX_STREAM_READ`).

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use ff_core::{MAX_STREAM_READ, STREAM_CURSOR_PATTERN, StreamCursor, StreamFrames};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiQuery, AttemptPath, ExecutionPath};
use super::route::ApiRoute;
use crate::openapi::QuerySchema;

/// Frames returned when the request names no limit.
const DEFAULT_READ: u64 = 100;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get("/v1/executions/{id}/attempts/{index}/stream", "Read an attempt's frames")
            .query_schema("from", false, "First frame: `-` (start, default) or `<ms>-<seq>`", cursor())
            .query_schema("to", false, "Last frame: `+` (end, default) or `<ms>-<seq>`", cursor())
            .query_schema(
                "limit",
                false,
                format!("At most this many frames, 1..={MAX_STREAM_READ} (default {DEFAULT_READ})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_STREAM_READ})),
            )
            .responds::<StreamFrames>(200, "The frames")
            .error(404, "No such execution (`not_found`)")
            .to(get(read_stream)),
    ]
}

fn cursor() -> QuerySchema {
    QuerySchema::Fixed(json!({"type": "string", "pattern": STREAM_CURSOR_PATTERN}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
}

async fn read_stream(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt): AttemptPath,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Json<StreamFrames>, ApiError> {
    let from = q.from.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::Start);
    let to = q.to.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::End);
    let limit = q.limit.unwrap_or(DEFAULT_READ);
    Ok(Json(state.backend().read_stream(&id, attempt, from, to, limit).await?))
}
