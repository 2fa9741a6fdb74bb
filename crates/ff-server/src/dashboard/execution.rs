//! One execution's page: its state vector, attempts with their leases and workers, the live
//! tail of its current attempt's frames (server-sent events), its events, its result or error,
//! its open waitpoints; and the operator actions on it (cancel, replay, change priority, revoke
//! lease), each one call of the same backend operator method the `/v1` routes use.
//!
//! The frame tail is [`frame_tail`]: it long-polls `tail_stream` after the last frame sent (woken
//! when a frame is appended, holding no connection while it waits), and ends when the attempt's
//! stream is closed.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ff_backend_postgres::PostgresBackend;
use ff_core::wire::{ChangePriorityRequest, OperatorCancelRequest, RevokeLeaseRequest};
use ff_core::{
    AttemptIndex, EngineError, ExecutionBackend, ExecutionId, ListPendingWaitpointsArgs, OperatorBackend, PublicState,
    ReplayExecutionArgs, StreamBackend, StreamCursor, StreamFrame, SuspensionBackend, TailVisibility,
};
use futures::Stream;
use minijinja::context;
use serde::Deserialize;

use super::auth::Session;
use super::{DashboardState, PageError, percent_encode, render, session_ctx};

/// How long one wait of the frame tail lasts before it asks again (the page stays open).
const TAIL_WAIT_MS: u64 = 15_000;
/// Most frames read per wait.
const TAIL_BATCH: u64 = 500;
/// Most recent events shown.
const EVENTS_SHOWN: usize = 200;
/// Longest result shown, in bytes.
const RESULT_SHOWN: usize = 64 * 1024;

#[derive(Deserialize)]
pub(super) struct Notice {
    notice: Option<String>,
}

/// `GET /dashboard/executions/{id}`.
pub(super) async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Path(raw): Path<String>,
    Query(q): Query<Notice>,
) -> Result<Html<String>, PageError> {
    let id = parse_id(&raw)?;
    let backend = state.backend();
    let Some(info) = backend.read_execution_info(&id).await? else {
        return Err(PageError::not_found(format!("no execution {id}")));
    };
    let snapshot = backend.describe_execution(&id).await?;
    let attempts = backend.list_attempts(&id).await?;
    let events = backend.list_execution_events(&id, EVENTS_SHOWN).await?;
    let result = if info.public_state == PublicState::Completed {
        backend.get_execution_result(&id).await?.map(|bytes| shown(&bytes))
    } else {
        None
    };
    let failure = attempts.iter().rev().find_map(|a| {
        a.failure_message.as_ref().map(|m| format!("{}: {m}", a.failure_class.as_deref().unwrap_or("failure")))
    });
    let waitpoints = if info.public_state == PublicState::Suspended {
        backend
            .list_pending_waitpoints(ListPendingWaitpointsArgs { execution_id: id, after: None, limit: None })
            .await?
            .entries
    } else {
        vec![]
    };
    // The current attempt's index, once an attempt was ever claimed (indices start at 0).
    let tail_attempt = snapshot.as_ref().and_then(|s| s.current_attempt.as_ref()).map(|a| a.attempt_index.0);
    let leased = snapshot.as_ref().and_then(|s| s.current_lease.as_ref()).is_some();
    render(
        "execution.html",
        context! {
            nav => "executions",
            session => session_ctx(&session),
            id => id.to_string(),
            id_path => percent_encode(&id.to_string()),
            info => info,
            terminal => info.public_state.is_terminal(),
            snapshot => snapshot,
            attempts => attempts,
            events => events,
            result => result,
            failure => failure,
            waitpoints => waitpoints,
            tail_attempt => tail_attempt,
            leased => leased,
            notice => q.notice,
        },
    )
}

#[derive(Deserialize)]
pub(super) struct TailQuery {
    attempt: u32,
}

/// `GET /dashboard/executions/{id}/frames?attempt=N`: the attempt's frames as `frame` events
/// (each with its sequence number as event id, so a reconnecting browser resumes after the
/// last one it saw), then one `end` event once the stream is closed.
pub(super) async fn frames(
    State(state): State<DashboardState>,
    _session: Session,
    Path(raw): Path<String>,
    Query(q): Query<TailQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let id = parse_id(&raw)?;
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let events =
        futures::StreamExt::map(frame_tail(state.backend().clone(), id, AttemptIndex(q.attempt), after), |item| {
            Ok::<_, Infallible>(match item {
                TailItem::Frame(f) => Event::default().event("frame").id(f.seq.to_string()).data(
                    serde_json::json!({
                        "seq": f.seq,
                        "kind": f.kind.as_str(),
                        "frame_type": f.frame_type,
                        "text": String::from_utf8_lossy(&f.bytes),
                        "appended_at": super::utc(f.appended_at),
                    })
                    .to_string(),
                ),
                TailItem::Closed(reason) => Event::default().event("end").data(reason),
                TailItem::Failed(message) => Event::default().event("failed").data(message),
            })
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// What the frame tail yields.
pub(super) enum TailItem {
    /// The next frame.
    Frame(StreamFrame),
    /// The stream is closed (the attempt ended), with why; nothing follows.
    Closed(String),
    /// Reading failed; nothing follows.
    Failed(String),
}

/// The frames of one attempt after sequence number `after`, as they are appended, until the
/// attempt's stream closes. The one place that decides how new frames are noticed: here, by
/// `tail_stream`, which returns as soon as one is appended.
pub(super) fn frame_tail(
    backend: Arc<PostgresBackend>,
    id: ExecutionId,
    attempt: AttemptIndex,
    after: u64,
) -> impl Stream<Item = TailItem> {
    struct Tail {
        backend: Arc<PostgresBackend>,
        id: ExecutionId,
        attempt: AttemptIndex,
        last: u64,
        pending: VecDeque<StreamFrame>,
        done: bool,
    }
    let tail = Tail { backend, id, attempt, last: after, pending: VecDeque::new(), done: false };
    futures::stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(frame) = t.pending.pop_front() {
                return Some((TailItem::Frame(frame), t));
            }
            if t.done {
                return None;
            }
            let after = StreamCursor::At { ms: 0, seq: t.last };
            let read = t.backend.tail_stream(&t.id, t.attempt, after, TAIL_WAIT_MS, TAIL_BATCH, TailVisibility::All);
            match read.await {
                Ok(read) if !read.frames.is_empty() => {
                    t.last = read.frames.last().map_or(t.last, |f| f.seq);
                    t.pending.extend(read.frames);
                }
                Ok(read) => {
                    if read.closed_at.is_some() {
                        t.done = true;
                        return Some((TailItem::Closed(read.closed_reason.unwrap_or_else(|| "closed".into())), t));
                    }
                }
                Err(e) => {
                    t.done = true;
                    return Some((TailItem::Failed(e.to_string()), t));
                }
            }
        }
    })
}

/// The fields of an action form; only the CSRF token is always required.
#[derive(Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    priority: String,
}

/// `POST /dashboard/executions/{id}/cancel`.
pub(super) async fn cancel(
    State(state): State<DashboardState>,
    Action { id, form }: Action,
) -> Result<Response, PageError> {
    let reason =
        Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty()).unwrap_or("cancelled from the dashboard".into());
    let req = OperatorCancelRequest { reason, source: Default::default(), fence: None };
    let done = state.backend().cancel_execution(req.into_args(id)).await?;
    Ok(back(&id, &format!("Cancel: {}", status_of(&done))))
}

/// `POST /dashboard/executions/{id}/replay`.
pub(super) async fn replay(
    State(state): State<DashboardState>,
    Action { id, .. }: Action,
) -> Result<Response, PageError> {
    let done = state.backend().replay_execution(ReplayExecutionArgs { execution_id: id }).await?;
    Ok(back(&id, &format!("Replay: {}", status_of(&done))))
}

/// `POST /dashboard/executions/{id}/priority`.
pub(super) async fn change_priority(
    State(state): State<DashboardState>,
    Action { id, form }: Action,
) -> Result<Response, PageError> {
    let new_priority: i32 = form.priority.trim().parse().map_err(|_| {
        PageError::status(StatusCode::BAD_REQUEST, format!("priority {:?} is not a whole number", form.priority))
    })?;
    let req = ChangePriorityRequest { new_priority, lane_id: None };
    let done = state.backend().change_priority(req.into_args(id)).await?;
    Ok(back(&id, &format!("Priority: {}", status_of(&done))))
}

/// `POST /dashboard/executions/{id}/revoke-lease`.
pub(super) async fn revoke_lease(
    State(state): State<DashboardState>,
    Action { id, form }: Action,
) -> Result<Response, PageError> {
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let req = RevokeLeaseRequest {
        expected_lease_id: None,
        worker_instance_id: None,
        reason: reason.or(Some("revoked from the dashboard".into())),
    };
    let done = state.backend().revoke_lease(req.into_args(id)).await?;
    Ok(back(&id, &format!("Revoke lease: {}", status_of(&done))))
}

/// The execution an action names, once its CSRF token and origin are checked.
/// An operator action on one execution: a signed-in session, the execution named by the path,
/// and the action's form, whose CSRF token the session has checked.
pub(super) struct Action {
    id: ExecutionId,
    form: ActionForm,
}

impl FromRequest<DashboardState> for Action {
    type Rejection = Response;

    async fn from_request(req: Request, state: &DashboardState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let Path(raw) =
            Path::<String>::from_request_parts(&mut parts, state).await.map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let Form(form) = Form::<ActionForm>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        session.check_action(&headers, &form.csrf).map_err(IntoResponse::into_response)?;
        let id = parse_id(&raw).map_err(IntoResponse::into_response)?;
        Ok(Self { id, form })
    }
}

fn parse_id(raw: &str) -> Result<ExecutionId, PageError> {
    ExecutionId::parse(raw).map_err(|e: EngineError| PageError::status(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Back to the execution's page, with what happened.
fn back(id: &ExecutionId, notice: &str) -> Response {
    let target = format!("/dashboard/executions/{}?notice={}", percent_encode(&id.to_string()), percent_encode(notice));
    Redirect::to(&target).into_response()
}

/// The `status` field of an operator result, as the API reports it.
fn status_of(result: &impl serde::Serialize) -> String {
    serde_json::to_value(result)
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "done".into())
}

/// Bytes for display: UTF-8 (lossy), cut at [`RESULT_SHOWN`].
fn shown(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(RESULT_SHOWN)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > RESULT_SHOWN {
        text.push_str(&format!("\n… ({} bytes in all)", bytes.len()));
    }
    text
}
