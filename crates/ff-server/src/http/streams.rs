//! Reading an attempt's stream of frames (frames are appended by the lease holder, see
//! `leases.rs`): range reads, long-polling tails, a server-sent-events follow of the frames
//! (resumable with `Last-Event-ID`, each event's id being the frame's id) and the summary
//! document. The backend bounds every read (`ff_core::stream::MAX_STREAM_READ`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use ff_core::{
    AttemptIndex, EngineBackend, EngineError, ExecutionId, MAX_STREAM_READ, MAX_TAIL_BLOCK_MS, STREAM_CURSOR_PATTERN,
    StreamCursor, StreamFrame, StreamFrames, SummaryDocument, TailVisibility,
};
use futures::Stream;
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
        ApiRoute::get("/v1/executions/{id}/attempts/{index}/stream/tail", "Wait for an attempt's next frames")
            .query_schema(
                "after",
                false,
                "After this frame: `-` (start, default), `+` (only new ones) or `<ms>-<seq>`",
                cursor(),
            )
            .query_schema(
                "block_ms",
                false,
                format!("Wait up to this long for a frame, 0..={MAX_TAIL_BLOCK_MS} (default 0: answer at once)"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 0, "maximum": MAX_TAIL_BLOCK_MS})),
            )
            .query_schema(
                "limit",
                false,
                format!("At most this many frames, 1..={MAX_STREAM_READ} (default {DEFAULT_READ})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_STREAM_READ})),
            )
            .query::<TailVisibility>("visibility", false, "`all` (default) or `exclude_best_effort`")
            .responds::<StreamFrames>(200, "The frames (none, and not closed, when the wait ran out)")
            .error(404, "No such attempt (`not_found`)")
            .to(get(tail_stream)),
        ApiRoute::get("/v1/executions/{id}/attempts/{index}/stream/follow", "Follow an attempt's frames (SSE)")
            .query_schema(
                "after",
                false,
                "After this frame: `-` (start, default), `+` or `<ms>-<seq>`; `Last-Event-ID` wins",
                cursor(),
            )
            .query::<TailVisibility>("visibility", false, "`all` (default) or `exclude_best_effort`")
            .media(
                200,
                "text/event-stream",
                "Events `frame` (id = frame id), then `closed` when the attempt ends, or `error`",
            )
            .error(404, "No such attempt (`not_found`)")
            .to(get(follow_stream)),
        ApiRoute::get("/v1/executions/{id}/attempts/{index}/summary", "Read an attempt's summary document")
            .responds::<SummaryDocument>(200, "The summary")
            .error(404, "No such attempt, or no summary frame yet (`not_found`)")
            .to(get(read_summary)),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailQuery {
    after: Option<String>,
    block_ms: Option<u64>,
    limit: Option<u64>,
    visibility: Option<TailVisibility>,
}

async fn tail_stream(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt): AttemptPath,
    ApiQuery(q): ApiQuery<TailQuery>,
) -> Result<Json<StreamFrames>, ApiError> {
    let after = q.after.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::Start);
    let frames = state
        .backend()
        .tail_stream(
            &id,
            attempt,
            after,
            q.block_ms.unwrap_or(0),
            q.limit.unwrap_or(DEFAULT_READ),
            q.visibility.unwrap_or_default(),
        )
        .await?;
    Ok(Json(frames))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    after: Option<String>,
    visibility: Option<TailVisibility>,
}

/// How long one tail of a follow waits before it asks again (the connection stays open).
const FOLLOW_BLOCK_MS: u64 = 15_000;
/// Frames one tail of a follow reads at most.
const FOLLOW_BATCH: u64 = 500;

async fn follow_stream(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt): AttemptPath,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(h) => {
            StreamCursor::parse(h.to_str().map_err(|_| EngineError::invalid("Last-Event-ID is not text"))?.trim())?
        }
        None => q.after.as_deref().map(StreamCursor::parse).transpose()?.unwrap_or(StreamCursor::Start),
    };
    let visibility = q.visibility.unwrap_or_default();
    let backend = state.shared_backend();
    // Answer 404 for an absent attempt before the event stream starts; `+` becomes the
    // current last frame here, so the follow starts from the stream as it is now.
    let first = backend.tail_stream(&id, attempt, after, 0, FOLLOW_BATCH, visibility).await?;
    let after = match (after, first.frames.last()) {
        (_, Some(last)) => StreamCursor::At { ms: last.appended_at.0, seq: last.seq },
        (StreamCursor::End, None) => StreamCursor::At { ms: 0, seq: first.last_seq },
        (a, None) => a,
    };
    let state = Follow { backend, id, attempt, visibility, after, pending: Some(first), done: false };
    Ok(Sse::new(futures::stream::unfold(state, next_follow_event))
        .keep_alive(axum::response::sse::KeepAlive::new().interval(std::time::Duration::from_secs(15))))
}

struct Follow {
    backend: Arc<dyn EngineBackend>,
    id: ExecutionId,
    attempt: AttemptIndex,
    visibility: TailVisibility,
    after: StreamCursor,
    pending: Option<StreamFrames>,
    done: bool,
}

fn frame_event(f: &StreamFrame) -> Event {
    Event::default().event("frame").id(f.id.clone()).json_data(f).unwrap_or_else(|_| Event::default().event("error"))
}

async fn next_follow_event(mut s: Follow) -> Option<(Result<Event, Infallible>, Follow)> {
    if s.done {
        return None;
    }
    loop {
        if let Some(batch) = s.pending.as_mut() {
            if !batch.frames.is_empty() {
                let f = batch.frames.remove(0);
                s.after = StreamCursor::At { ms: f.appended_at.0, seq: f.seq };
                return Some((Ok(frame_event(&f)), s));
            }
            if let Some(at) = batch.closed_at {
                s.done = true;
                let body = json!({"closed_at": at, "closed_reason": batch.closed_reason});
                return Some((Ok(Event::default().event("closed").data(body.to_string())), s));
            }
            s.pending = None;
        }
        match s.backend.tail_stream(&s.id, s.attempt, s.after, FOLLOW_BLOCK_MS, FOLLOW_BATCH, s.visibility).await {
            Ok(frames) => s.pending = Some(frames),
            Err(e) => {
                s.done = true;
                let (_, body) = ApiError::Engine(e).parts();
                let event = Event::default()
                    .event("error")
                    .json_data(&body)
                    .unwrap_or_else(|_| Event::default().event("error"));
                return Some((Ok(event), s));
            }
        }
    }
}

async fn read_summary(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt): AttemptPath,
) -> Result<Json<SummaryDocument>, ApiError> {
    let summary = state.backend().read_summary(&id, attempt).await?;
    Ok(Json(summary.ok_or(ApiError::not_found("summary"))?))
}
