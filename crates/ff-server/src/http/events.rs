//! Following the event log over server-sent events: completions, lease history, signal
//! deliveries and tag changes, each at `/v1/events/<name>`.
//!
//! Every event's SSE `id` is its log cursor, so a client that reconnects with `Last-Event-ID`
//! resumes exactly after the last event it saw (the header wins over the `after` parameter).
//! `after` is `now` (the default: only what commits from now on), `beginning` (everything
//! retained) or a cursor. A stream that fails (the database is unreachable, a cursor fell behind
//! retention) sends one `error` event with the API's error body and ends; the client reconnects
//! with its last id.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use ff_core::event::{CompletionEvent, EventCursor, InstanceTagEvent, LeaseHistoryEvent, ScannerFilter};
use ff_core::{EngineError, Namespace, SignalDeliveryEvent};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::route::ApiRoute;
use crate::openapi::QuerySchema;

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        follow_route("/v1/events/completions", "Follow completions (SSE; event `completion`)", true)
            .to(get(completions)),
        follow_route("/v1/events/lease-history", "Follow lease changes (SSE; event `lease`)", true)
            .to(get(lease_history)),
        follow_route("/v1/events/signal-deliveries", "Follow signal deliveries (SSE; event `signal`)", false)
            .to(get(signal_deliveries)),
        follow_route("/v1/events/instance-tags", "Follow tag changes (SSE; event `tag`)", false).to(get(instance_tags)),
    ]
}

fn follow_route(path: &'static str, summary: &'static str, tag_filter: bool) -> super::route::RouteBuilder {
    let r = ApiRoute::get(path, summary)
        .query_schema(
            "after",
            false,
            "`now` (default), `beginning`, or a cursor `<tx>-<id>`; the `Last-Event-ID` header wins",
            QuerySchema::Fixed(json!({"type": "string", "pattern": "^(now|beginning|[0-9]{1,20}-[0-9]{1,19})$"})),
        )
        .query_schema("namespace", false, "Only this namespace", QuerySchema::Fixed(json!({"type": "string"})))
        .media(200, "text/event-stream", "Server-sent events; each `id` is the event's cursor");
    if tag_filter {
        r.query_schema(
            "tag",
            false,
            "Only executions carrying this tag, `key=value`",
            QuerySchema::Fixed(json!({"type": "string", "pattern": "^[^=]+=.*$"})),
        )
    } else {
        r
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowQuery {
    after: Option<String>,
    namespace: Option<String>,
    tag: Option<String>,
}

/// Where a follow starts: `Last-Event-ID`, else `after`; `None` means "now".
fn start(headers: &HeaderMap, q: &FollowQuery) -> Result<Option<EventCursor>, ApiError> {
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().map_err(|_| EngineError::invalid("Last-Event-ID is not text"))?;
        return Ok(Some(EventCursor::parse(last.trim())?));
    }
    match q.after.as_deref() {
        None | Some("now") => Ok(None),
        Some("beginning") => Ok(Some(EventCursor::BEGINNING)),
        Some(c) => Ok(Some(EventCursor::parse(c)?)),
    }
}

fn filter(q: &FollowQuery) -> Result<ScannerFilter, ApiError> {
    let instance_tag = match q.tag.as_deref() {
        None => None,
        Some(t) => {
            let (k, v) =
                t.split_once('=').ok_or_else(|| EngineError::invalid(format!("tag {t:?} is not key=value")))?;
            ff_core::tag::validate_tag_key(k)?;
            Some((k.to_owned(), v.to_owned()))
        }
    };
    Ok(ScannerFilter { namespace: q.namespace.clone().map(Namespace), instance_tag })
}

/// Turns a subscription into server-sent events named `name`, each with its cursor as `id`.
pub(super) fn sse_of<T, S>(
    events: S,
    name: &'static str,
    cursor_of: fn(&T) -> String,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, EngineError>> + Send + 'static,
{
    let body = events
        .scan(false, move |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            let event = match item {
                Ok(t) => {
                    let id = cursor_of(&t);
                    Event::default()
                        .event(name)
                        .id(id)
                        .json_data(&t)
                        .unwrap_or_else(|_| Event::default().event("error"))
                }
                Err(e) => {
                    *failed = true;
                    let (_, body) = ApiError::Engine(e).parts();
                    Event::default().event("error").json_data(&body).unwrap_or_else(|_| Event::default().event("error"))
                }
            };
            futures::future::ready(Some(Ok::<_, Infallible>(event)))
        })
        .boxed();
    Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (start, filter) = (start(&headers, &q)?, filter(&q)?);
    let events = match start {
        None => state.completions().subscribe_completions_filtered(&filter).await?,
        Some(c) => state.completions().subscribe_completions_from(c, &filter).await?,
    };
    Ok(sse_of(events, "completion", |e: &CompletionEvent| e.cursor.to_string()))
}

async fn lease_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (start, filter) = (start(&headers, &q)?, filter(&q)?);
    let from = match start {
        Some(c) => c,
        None => state.completions().event_log_head().await?,
    };
    let events = state.completions().subscribe_lease_history(from, &filter).await?;
    Ok(sse_of(events, "lease", |e: &LeaseHistoryEvent| e.cursor.to_string()))
}

async fn signal_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if q.tag.is_some() {
        return Err(EngineError::invalid("signal deliveries filter by namespace only").into());
    }
    let (start, filter) = (start(&headers, &q)?, filter(&q)?);
    let from = match start {
        Some(c) => c,
        None => state.completions().event_log_head().await?,
    };
    let events = state.backend().subscribe_signal_delivery(from, &filter).await?;
    Ok(sse_of(events, "signal", |e: &SignalDeliveryEvent| e.cursor.to_string()))
}

async fn instance_tags(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<FollowQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if q.tag.is_some() || q.namespace.is_some() {
        return Err(EngineError::invalid("tag changes take no filter").into());
    }
    let start = start(&headers, &q)?;
    let from = match start {
        Some(c) => c,
        None => state.completions().event_log_head().await?,
    };
    let events = state.completions().subscribe_instance_tags(from).await?;
    Ok(sse_of(events, "tag", |e: &InstanceTagEvent| e.cursor.to_string()))
}
