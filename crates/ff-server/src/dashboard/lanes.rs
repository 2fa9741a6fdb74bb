//! The lanes page: every lane's executions by public state, its successful completions in the
//! last minute and its oldest wait; the table refreshes live over server-sent events. One
//! reading of the overview serves every viewer for [`SHARED_FOR`], so the database answers one
//! overview query per period however many pages are open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use ff_backend_postgres::dashboard::LaneOverview;
use ff_core::{EngineBackend, EngineError};
use futures::Stream;
use minijinja::context;

use super::auth::Session;
use super::{DashboardState, PageError, render, session_ctx};

/// How often the live table is refreshed.
const REFRESH: Duration = Duration::from_secs(2);
/// How long one reading of the overview is shown to every viewer.
const SHARED_FOR: Duration = Duration::from_millis(1800);

/// One reading of the overview: the lanes, and the database time in ms it was read at.
type Reading = Arc<(Vec<LaneOverview>, i64)>;

/// The last reading of the overview and when it was taken, shared by every viewer.
#[derive(Default)]
pub(super) struct OverviewCache(tokio::sync::Mutex<Option<(Instant, Reading)>>);

/// The lane overview and the database time it was read at: the shared reading when it is
/// fresh, else a new one (concurrent callers wait for that one reading).
async fn overview(state: &DashboardState) -> Result<Reading, EngineError> {
    let mut cached = state.lane_cache().0.lock().await;
    if let Some((at, reading)) = cached.as_ref()
        && at.elapsed() < SHARED_FOR
    {
        return Ok(reading.clone());
    }
    let lanes = state.backend().lane_overview().await?;
    let now = state.backend().server_time_ms().await? as i64;
    let reading = Arc::new((lanes, now));
    *cached = Some((Instant::now(), reading.clone()));
    Ok(reading)
}

/// The public states shown as columns, in lifecycle order.
const COLUMNS: [&str; 11] = [
    "waiting",
    "delayed",
    "rate_limited",
    "waiting_children",
    "active",
    "suspended",
    "completed",
    "failed",
    "cancelled",
    "expired",
    "skipped",
];

/// `GET /dashboard/lanes`.
pub(super) async fn page(State(state): State<DashboardState>, session: Session) -> Result<Html<String>, PageError> {
    let reading = overview(&state).await?;
    let (lanes, now) = (&reading.0, reading.1);
    render(
        "lanes.html",
        context! { nav => "lanes", session => session_ctx(&session), columns => COLUMNS, rows => rows(lanes, now) },
    )
}

/// `GET /dashboard/lanes/live`: the table's rows, re-rendered every [`REFRESH`], as `lanes`
/// events.
pub(super) async fn live(State(state): State<DashboardState>, _session: Session) -> Response {
    Sse::new(lane_events(state)).keep_alive(KeepAlive::default()).into_response()
}

fn lane_events(state: DashboardState) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(state, |state| async move {
        tokio::time::sleep(REFRESH).await;
        let html = match overview(&state).await {
            Ok(reading) => {
                render("lane_rows.html", context! { columns => COLUMNS, rows => rows(&reading.0, reading.1) })
                    .map(|h| h.0)
                    .unwrap_or_default()
            }
            Err(e) => {
                tracing::warn!(error = %e, "dashboard lane refresh failed");
                return Some((Ok(Event::default().comment("refresh failed")), state));
            }
        };
        Some((Ok(Event::default().event("lanes").data(html)), state))
    })
}

/// One table row per lane: counts in [`COLUMNS`] order, throughput, and the oldest wait.
fn rows(lanes: &[LaneOverview], now_ms: i64) -> Vec<minijinja::Value> {
    lanes
        .iter()
        .map(|lane| {
            let counts: Vec<u64> = COLUMNS.iter().map(|c| lane.counts.get(*c).copied().unwrap_or(0)).collect();
            let total: u64 = lane.counts.values().sum();
            let oldest_wait_s =
                lane.oldest_waiting_since.map(|t| ((now_ms - t.0).max(0) as f64 / 1000.0).round() as i64);
            context! {
                lane_id => lane.lane_id,
                counts => counts,
                total => total,
                completed_last_minute => lane.completed_last_minute,
                oldest_wait_s => oldest_wait_s,
            }
        })
        .collect()
}
