//! The HTTP API: each resource module (`executions`, `streams`, `events`, `tags`, `lanes`, `leases`,
//! `flows`, `suspension`, `operator`, `workers`, `budgets`, `quotas`, `grants`, `ops`) exports its routes as a table of [`ApiRoute`]s (handler plus description), merged by
//! [`routes`]. [`router`] builds the router and the OpenAPI document from that one table, so the
//! two cannot drift; the document is built once and served from [`AppState`]. Handlers are thin
//! (extract, call the backend, map). Bearer-token auth (`/v1/*` and `/metrics`), per-route body
//! limits, the server-wide budget of request-body bytes in flight ([`BodyBudget`], checked after
//! auth and before any body is read), request metrics, request spans (`trace`) and CORS are
//! layers. One route is open to the outside world: a
//! signal to a waitpoint may be authorised by the waitpoint's own token instead of the bearer
//! token; its handler reads who is calling with the [`Caller`] extractor, and the backend
//! verifies the waitpoint token.

mod budgets;
mod error;
mod events;
mod executions;
mod extract;
mod flows;
mod grants;
mod inflight;
mod lanes;
mod leases;
mod operator;
mod ops;
mod quotas;
mod retention;
mod route;
mod streams;
mod suspension;
mod tags;
mod trace;
mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ff_core::{CompletionBackend, EngineBackend, EngineError, PartitionConfig};
use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use error::ApiError;
pub use inflight::BodyBudget;
pub use route::{ApiRoute, RouteBuilder};

use crate::metrics::Telemetry;
use crate::openapi::{self, Auth};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    backend: Arc<dyn EngineBackend>,
    completions: Arc<dyn CompletionBackend>,
    partitions: PartitionConfig,
    /// SHA-256 of the required bearer token.
    token_digest: Option<[u8; 32]>,
    telemetry: Arc<Telemetry>,
    /// The OpenAPI document of the router serving this state, as JSON (set by [`router`]).
    openapi: Bytes,
    /// The budget of request-body bytes in flight, shared by every route.
    body_budget: BodyBudget,
    /// Every route's body limit is lowered to this, when set.
    max_body_bytes: Option<usize>,
}

impl AppState {
    /// State over `backend`; `token` = the required bearer token (None = open). Request bodies
    /// share the default budget ([`DEFAULT_INFLIGHT_BODY_BYTES`], waiting at most
    /// [`DEFAULT_INFLIGHT_WAIT`]); [`AppState::with_body_budget`] sets another.
    pub fn new<B: EngineBackend + CompletionBackend>(
        backend: Arc<B>,
        partitions: PartitionConfig,
        token: Option<String>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let token_digest = token.filter(|t| !t.is_empty()).map(|t| digest(&t));
        let body_budget = BodyBudget::new(DEFAULT_INFLIGHT_BODY_BYTES, DEFAULT_INFLIGHT_WAIT, telemetry.clone());
        Self(Arc::new(Inner {
            backend: backend.clone(),
            completions: backend,
            partitions,
            token_digest,
            telemetry,
            openapi: Bytes::new(),
            body_budget,
            max_body_bytes: None,
        }))
    }

    /// The same state reading request bodies within `budget`, every route's body limit lowered
    /// to `max_body_bytes` when given. The budget should be at least
    /// [`largest_body_limit`]`(max_body_bytes)`; a body larger than the budget is refused with
    /// `413`.
    pub fn with_body_budget(self, budget: BodyBudget, max_body_bytes: Option<usize>) -> Self {
        self.rebuild(|inner| {
            inner.body_budget = budget;
            inner.max_body_bytes = max_body_bytes;
        })
    }

    /// The budget of request-body bytes in flight.
    pub fn body_budget(&self) -> &BodyBudget {
        &self.0.body_budget
    }

    fn backend(&self) -> &dyn EngineBackend {
        self.0.backend.as_ref()
    }

    /// The backend, owned (for responses that outlive the handler, such as event streams).
    fn shared_backend(&self) -> Arc<dyn EngineBackend> {
        self.0.backend.clone()
    }

    /// The backend's event-log subscriptions.
    fn completions(&self) -> &dyn CompletionBackend {
        self.0.completions.as_ref()
    }

    /// The same state serving `document` at `/openapi.json`.
    fn with_openapi(self, document: &serde_json::Value) -> Self {
        self.rebuild(|inner| inner.openapi = Bytes::from(document.to_string()))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> Self {
        let Inner { backend, completions, partitions, token_digest, telemetry, openapi, body_budget, max_body_bytes } =
            &*self.0;
        let mut inner = Inner {
            backend: backend.clone(),
            completions: completions.clone(),
            partitions: *partitions,
            token_digest: *token_digest,
            telemetry: telemetry.clone(),
            openapi: openapi.clone(),
            body_budget: body_budget.clone(),
            max_body_bytes: *max_body_bytes,
        };
        change(&mut inner);
        Self(Arc::new(inner))
    }
}

/// Body limits: large enough for an 8 MiB payload in base64 on submit and complete, a batch of
/// submissions, and a 64 KiB frame; small for everything else (and for routes without a body).
const SUBMIT_LIMIT: usize = 12 * 1024 * 1024;
const BATCH_LIMIT: usize = 64 * 1024 * 1024;
const FRAME_LIMIT: usize = 256 * 1024;
const SMALL_LIMIT: usize = 64 * 1024;

/// The default budget of request-body bytes in flight: the largest route limit (a batch of
/// submissions), so one request of any route can always be admitted.
pub const DEFAULT_INFLIGHT_BODY_BYTES: usize = BATCH_LIMIT;
/// The default longest wait of a request for its share of the budget.
pub const DEFAULT_INFLIGHT_WAIT: Duration = Duration::from_millis(1000);
/// The smallest accepted cap on route body limits (every route's small bodies must fit).
pub const MIN_BODY_LIMIT: usize = SMALL_LIMIT;

/// The largest body limit of any route, each lowered to `max_body_bytes` when given: the least
/// budget of bytes in flight that admits one request of every route.
pub fn largest_body_limit(max_body_bytes: Option<usize>) -> usize {
    let largest = routes().iter().filter_map(|r| r.operation().request.map(|b| b.limit)).max().unwrap_or(SMALL_LIMIT);
    max_body_bytes.map_or(largest, |cap| largest.min(cap))
}

/// Every route of the API, resource by resource.
pub fn routes() -> Vec<ApiRoute> {
    [
        ops::routes(),
        executions::routes(),
        streams::routes(),
        events::routes(),
        tags::routes(),
        lanes::routes(),
        leases::routes(),
        flows::routes(),
        suspension::routes(),
        operator::routes(),
        workers::routes(),
        budgets::routes(),
        quotas::routes(),
        grants::routes(),
        retention::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The OpenAPI document of [`routes`] for a deployment with the default partitions.
pub fn openapi_document() -> serde_json::Value {
    openapi::document(routes().iter().map(ApiRoute::operation), &PartitionConfig::default())
}

/// Builds the application: every route, its body limit and auth, request metrics, CORS, and
/// JSON answers for unknown routes and wrong methods.
pub fn router(state: AppState, cors_origins: &[String]) -> Result<Router, EngineError> {
    let routes = routes();
    let document = openapi::document(routes.iter().map(ApiRoute::operation), &state.0.partitions);
    let state = state.with_openapi(&document);
    let mut app = Router::new();
    for route in routes {
        let (operation, handler) = route.into_parts();
        let mut limit = operation.request.map_or(SMALL_LIMIT, |body| body.limit);
        if let Some(cap) = state.0.max_body_bytes {
            limit = limit.min(cap);
        }
        let budget = inflight::RouteBudget { budget: state.0.body_budget.clone(), limit };
        let mut handler =
            handler.layer(DefaultBodyLimit::max(limit)).layer(middleware::from_fn_with_state(budget, inflight::admit));
        if operation.auth == Auth::Bearer {
            handler = handler.layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
        app = app.route(operation.path, handler);
    }
    let app = app
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
        .layer(middleware::from_fn(trace::request_span))
        .layer(CatchPanicLayer::custom(panicked))
        .with_state(state);
    Ok(match cors(cors_origins)? {
        Some(layer) => app.layer(layer),
        None => app,
    })
}

fn cors(origins: &[String]) -> Result<Option<CorsLayer>, EngineError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let layer = CorsLayer::new().allow_methods([Method::GET, Method::POST, Method::PUT]).allow_headers([
        header::CONTENT_TYPE,
        header::AUTHORIZATION,
        header::HeaderName::from_static(ff_core::wire::WAITPOINT_TOKEN_HEADER),
        header::HeaderName::from_static("traceparent"),
        header::HeaderName::from_static("tracestate"),
    ]);
    if origins.iter().any(|o| o.trim() == "*") {
        return Ok(Some(layer.allow_origin(Any)));
    }
    let parsed = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim()).map_err(|_| EngineError::invalid(format!("invalid CORS origin {o:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(layer.allow_origin(AllowOrigin::list(parsed))))
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.presents_token(req.headers()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(req).await
}

impl AppState {
    /// Whether the request carries the bearer token (always, when none is configured).
    fn presents_token(&self, headers: &axum::http::HeaderMap) -> bool {
        let Some(expected) = &self.0.token_digest else { return true };
        let presented =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token).unwrap_or_default();
        // Digests have one length and are compared in constant time, so the response time
        // reveals neither the token's content nor its length.
        bool::from(digest(presented).ct_eq(expected))
    }
}

/// Who calls a route open to waitpoint-token holders (see
/// [`RouteBuilder::waitpoint_token_auth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Presented the bearer token (or none is configured): trusted, as every other route's
    /// caller is.
    Trusted,
    /// Presented no valid bearer token: admitted only with the waitpoint's token, which the
    /// backend verifies.
    Outside,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(if state.presents_token(&parts.headers) { Caller::Trusted } else { Caller::Outside })
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is matched in any case
/// (RFC 7235 makes auth schemes case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start_matches(' '))
}

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

async fn record_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    let method = match method {
        Method::GET | Method::POST | Method::PUT | Method::DELETE | Method::OPTIONS | Method::HEAD => method.as_str(),
        _ => "OTHER",
    };
    let route = route.as_deref().unwrap_or("unmatched");
    state.0.telemetry.observe_request(method, route, response.status().as_u16(), started.elapsed());
    response
}

/// A bug in a handler answers 500 without detail; the server keeps serving.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Engine(EngineError::Internal("handler panicked".into())).into_response()
}

async fn unknown_route() -> ApiError {
    ApiError::Request { status: StatusCode::NOT_FOUND, code: "route_not_found", message: "no such route".into() }
}

async fn wrong_method() -> ApiError {
    ApiError::Request {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this route does not accept that method".into(),
    }
}
