//! The operator dashboard, served under `/dashboard`: server-rendered pages (lanes,
//! executions, one execution, workers, flows, suspensions) with live updates over server-sent
//! events, and the operator actions (cancel, replay, change priority, revoke lease) through the
//! same backend operator methods as the `/v1` routes.
//!
//! Pages are minijinja templates compiled into the binary, as are the stylesheet and the small
//! script (`assets/`): no build step, nothing read from disk at run time. Every page but the
//! login form requires a session (see [`auth`]); every action requires the session's CSRF
//! token and a same-origin request. The dashboard reads through the Postgres backend directly
//! (its read-only queries live in `ff_backend_postgres::dashboard`), so it is mounted by
//! [`crate::Server`] beside the API rather than through the API's route table.

mod auth;
mod execution;
mod executions;
mod flows;
mod lanes;
mod suspensions;
mod workers;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use ff_backend_postgres::PostgresBackend;
use ff_core::{EngineError, TimestampMs};
use minijinja::{Environment, Value, context};
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::SESSION_COOKIE;

/// Shared state of the dashboard's handlers.
#[derive(Clone)]
pub struct DashboardState(Arc<Inner>);

struct Inner {
    backend: Arc<PostgresBackend>,
    auth: auth::Auth,
    lane_cache: lanes::OverviewCache,
}

impl DashboardState {
    /// State over `backend`, behind `token` (the API's bearer token; `None`: open, like the API).
    /// `secure` marks the session cookie `Secure` (set it when serving HTTPS).
    pub fn new(backend: Arc<PostgresBackend>, token: Option<&str>, secure: bool) -> Self {
        Self(Arc::new(Inner { backend, auth: auth::Auth::new(token, secure), lane_cache: Default::default() }))
    }

    fn backend(&self) -> &Arc<PostgresBackend> {
        &self.0.backend
    }

    fn auth(&self) -> &auth::Auth {
        &self.0.auth
    }

    fn lane_cache(&self) -> &lanes::OverviewCache {
        &self.0.lane_cache
    }
}

/// The dashboard's routes, every one under `/dashboard`.
pub fn router(state: DashboardState) -> Router {
    Router::new()
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/lanes") }))
        .route("/dashboard/", get(|| async { Redirect::to("/dashboard/lanes") }))
        .route("/dashboard/login", get(auth::login_form).post(auth::login))
        .route("/dashboard/logout", post(auth::logout))
        .route("/dashboard/assets/{name}", get(asset))
        .route("/dashboard/lanes", get(lanes::page))
        .route("/dashboard/lanes/live", get(lanes::live))
        .route("/dashboard/executions", get(executions::page))
        .route("/dashboard/executions/{id}", get(execution::page))
        .route("/dashboard/executions/{id}/frames", get(execution::frames))
        .route("/dashboard/executions/{id}/cancel", post(execution::cancel))
        .route("/dashboard/executions/{id}/replay", post(execution::replay))
        .route("/dashboard/executions/{id}/priority", post(execution::change_priority))
        .route("/dashboard/executions/{id}/revoke-lease", post(execution::revoke_lease))
        .route("/dashboard/workers", get(workers::page))
        .route("/dashboard/flows", get(flows::list))
        .route("/dashboard/flows/{id}", get(flows::page))
        .route("/dashboard/suspensions", get(suspensions::page))
        .layer(middleware::from_fn(security_headers))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send + 'static>| {
            tracing::error!("a dashboard handler panicked");
            PageError::status(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }))
        .with_state(state)
}

/// Headers on every dashboard answer: scripts, styles and everything else only from this
/// origin (no inline script), never framed (no clickjacking of the action buttons), no
/// referrer to other sites, and pages not kept in shared caches.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
             form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The templates, compiled into the binary and parsed once.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("lanes.html", include_str!("templates/lanes.html")),
        ("lane_rows.html", include_str!("templates/lane_rows.html")),
        ("executions.html", include_str!("templates/executions.html")),
        ("execution.html", include_str!("templates/execution.html")),
        ("workers.html", include_str!("templates/workers.html")),
        ("flows.html", include_str!("templates/flows.html")),
        ("flow.html", include_str!("templates/flow.html")),
        ("suspensions.html", include_str!("templates/suspensions.html")),
    ] {
        // The sources are part of the binary; a syntax error is a bug caught by every test.
        env.add_template(name, source).expect("dashboard template parses");
    }
    env.add_filter("ts", format_timestamp);
    env.add_filter("pct", |s: String| percent_encode(&s));
    env
});

/// Renders `name` with `ctx` as an HTML page.
fn render(name: &str, ctx: Value) -> Result<Html<String>, PageError> {
    let template = TEMPLATES.get_template(name).map_err(|e| PageError::internal(e.to_string()))?;
    template.render(ctx).map(Html).map_err(|e| PageError::internal(e.to_string()))
}

/// What every page's layout needs of the session.
fn session_ctx(session: &auth::Session) -> Value {
    context! { csrf => session.csrf, open => session.open }
}

/// A page that could not be shown: rendered as an error page with its status.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn status(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn internal(detail: String) -> Self {
        tracing::error!(%detail, "dashboard page failed");
        Self::status(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::status(StatusCode::NOT_FOUND, what)
    }
}

impl From<EngineError> for PageError {
    fn from(e: EngineError) -> Self {
        let (status, body) = crate::http::ApiError::Engine(e).parts();
        Self::status(status, format!("{} ({})", body.message, body.code))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = TEMPLATES
            .get_template("error.html")
            .and_then(|t| t.render(context! { status => self.status.as_u16(), message => self.message }))
            .unwrap_or_else(|_| "error".to_owned());
        (self.status, Html(body)).into_response()
    }
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type) = match name.as_str() {
        "dashboard.css" => (include_str!("assets/dashboard.css"), "text/css; charset=utf-8"),
        "dashboard.js" => (include_str!("assets/dashboard.js"), "text/javascript; charset=utf-8"),
        _ => return PageError::not_found("no such asset").into_response(),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=3600")], body).into_response()
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn format_timestamp(ms: Option<i64>) -> String {
    ms.map(|ms| utc(TimestampMs(ms))).unwrap_or_default()
}

fn utc(t: TimestampMs) -> String {
    let (secs, millis) = (t.0.div_euclid(1000), t.0.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Percent-encodes everything but unreserved characters (for ids in paths and queries).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_utc() {
        for (ms, want) in [
            (0, "1970-01-01 00:00:00.000"),
            (951_782_400_123, "2000-02-29 00:00:00.123"),
            (1_767_225_599_999, "2025-12-31 23:59:59.999"),
            (-1, "1969-12-31 23:59:59.999"),
        ] {
            assert_eq!(utc(TimestampMs(ms)), want, "{ms}");
        }
    }

    #[test]
    fn ids_are_percent_encoded() {
        assert_eq!(percent_encode("{fp:3}:ab-c"), "%7Bfp%3A3%7D%3Aab-c");
    }

    #[test]
    fn every_template_parses() {
        for name in TEMPLATES.templates().map(|(name, _)| name) {
            assert!(TEMPLATES.get_template(name).is_ok(), "{name}");
        }
        assert_eq!(TEMPLATES.templates().count(), 11);
    }
}
