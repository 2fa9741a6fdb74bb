//! The HTTP API: one route table ([`routes`]) that builds the router and the OpenAPI document
//! alike, so the two cannot drift; thin handlers per resource (extract, call the backend, map);
//! bearer-token auth, per-route body limits, request metrics and CORS as layers.

mod error;
mod executions;
mod extract;
mod leases;
mod ops;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use ff_core::wire;
use ff_core::{
    AppendFrameOutcome, CreateExecutionResult, EngineBackend, EngineError, ExecutionInfo, ExecutionSnapshot,
    FailOutcome, LeaseRenewal, ListExecutionsPage, ListLanesPage, PartitionConfig, PublicState, StreamFrames,
};
use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

pub use error::ApiError;

use crate::metrics::Telemetry;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    backend: Arc<dyn EngineBackend>,
    partitions: PartitionConfig,
    /// SHA-256 of the required bearer token.
    token_digest: Option<[u8; 32]>,
    telemetry: Arc<Telemetry>,
}

impl AppState {
    /// State over `backend`; `token` = the required bearer token (None = open).
    pub fn new(
        backend: Arc<dyn EngineBackend>,
        partitions: PartitionConfig,
        token: Option<String>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let token_digest = token.filter(|t| !t.is_empty()).map(|t| digest(&t));
        Self(Arc::new(Inner { backend, partitions, token_digest, telemetry }))
    }

    fn backend(&self) -> &dyn EngineBackend {
        self.0.backend.as_ref()
    }
}

/// Body limits: large enough for an 8 MiB payload in base64 on submit and complete, a batch of
/// submissions, and a 64 KiB frame; small for everything else.
const SUBMIT_LIMIT: usize = 12 * 1024 * 1024;
const BATCH_LIMIT: usize = 64 * 1024 * 1024;
const FRAME_LIMIT: usize = 256 * 1024;
const SMALL_LIMIT: usize = 64 * 1024;

/// One route: what the router serves and what the OpenAPI document describes.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template (`{name}` parameters).
    pub path: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Largest accepted body, for routes that take one.
    pub body_limit: Option<usize>,
    /// Whether the bearer token is required (when one is configured).
    pub auth: bool,
    /// Query parameters: name, whether required, description.
    pub query: &'static [(&'static str, bool, &'static str)],
    /// Schema of the JSON request body.
    pub request: Option<SchemaFn>,
    /// Success status.
    pub success: u16,
    /// Schema of the JSON success body (`None`: empty, bytes or text).
    pub response: Option<SchemaFn>,
}

/// Produces a JSON Schema (a `$ref` into the generator's definitions).
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn schema<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// Every route of the API, with its handler.
pub fn routes() -> Vec<(Route, MethodRouter<AppState>)> {
    use executions as e;
    use leases as l;
    use wire::*;
    let route =
        |method: Method, path: &'static str, summary, body_limit: Option<usize>, request, success, response| Route {
            method,
            path,
            summary,
            body_limit,
            auth: path.starts_with("/v1/") || path == "/metrics",
            query: &[],
            request,
            success,
            response,
        };
    let get_ = |path, summary, response| route(Method::GET, path, summary, None, None, 200, response);
    let post_ = |path, summary, limit, request, success, response| {
        route(Method::POST, path, summary, Some(limit), Some(request), success, response)
    };
    vec![
        (get_("/healthz", "Liveness and database reachability", Some(schema::<HealthResponse>)), get(ops::healthz)),
        (get_("/metrics", "Prometheus metrics (text format)", None), get(ops::metrics)),
        (get_("/openapi.json", "This document", None), get(ops::openapi)),
        (
            post_(
                "/v1/executions",
                "Submit an execution (201 created, 200 duplicate)",
                SUBMIT_LIMIT,
                schema::<SubmitRequest>,
                201,
                Some(schema::<CreateExecutionResult>),
            ),
            post(e::submit),
        ),
        (
            Route {
                query: &[
                    ("partition", true, "Execution partition index"),
                    ("cursor", false, "Exclusive execution id to continue after"),
                    ("limit", false, "Page size, 1..=1000 (default 50)"),
                ],
                ..get_("/v1/executions", "List one partition's executions", Some(schema::<ListExecutionsPage>))
            },
            get(e::list),
        ),
        (
            post_(
                "/v1/executions/batch",
                "Submit many executions atomically",
                BATCH_LIMIT,
                schema::<SubmitBatchRequest>,
                200,
                Some(schema::<SubmitBatchResponse>),
            ),
            post(e::submit_batch),
        ),
        (get_("/v1/executions/{id}", "Snapshot of an execution", Some(schema::<ExecutionSnapshot>)), get(e::describe)),
        (get_("/v1/executions/{id}/info", "Full execution record", Some(schema::<ExecutionInfo>)), get(e::info)),
        (get_("/v1/executions/{id}/state", "Public state only", Some(schema::<PublicState>)), get(e::state)),
        (get_("/v1/executions/{id}/result", "Result payload (application/octet-stream)", None), get(e::result)),
        (
            Route {
                query: &[
                    ("from", false, "First frame: `-` (start, default) or `<ms>-<seq>`"),
                    ("to", false, "Last frame: `+` (end, default) or `<ms>-<seq>`"),
                    ("limit", false, "At most this many frames, 1..=1000 (default 100)"),
                ],
                ..get_(
                    "/v1/executions/{id}/attempts/{index}/stream",
                    "Read an attempt's frames",
                    Some(schema::<StreamFrames>),
                )
            },
            get(e::read_stream),
        ),
        (get_("/v1/executions/{id}/tags/{key}", "Read one tag", Some(schema::<TagValue>)), get(e::get_tag)),
        (
            route(
                Method::PUT,
                "/v1/executions/{id}/tags/{key}",
                "Set one tag",
                Some(SMALL_LIMIT),
                Some(schema::<TagValue>),
                204,
                None,
            ),
            put(e::set_tag),
        ),
        (
            Route {
                query: &[
                    ("cursor", false, "Exclusive lane name to continue after"),
                    ("limit", false, "Page size, 1..=1000 (default 100)"),
                ],
                ..get_("/v1/lanes", "List lanes", Some(schema::<ListLanesPage>))
            },
            get(e::list_lanes),
        ),
        (
            post_(
                "/v1/workers/{worker_id}/claim",
                "Lease up to N executions of a lane, with their input",
                SMALL_LIMIT,
                schema::<ClaimRequest>,
                200,
                Some(schema::<ClaimResponse>),
            ),
            post(l::claim),
        ),
        (
            post_(
                "/v1/executions/{id}/renew",
                "Extend the lease",
                SMALL_LIMIT,
                schema::<HandleRequest>,
                200,
                Some(schema::<LeaseRenewal>),
            ),
            post(l::renew),
        ),
        (
            post_("/v1/executions/{id}/progress", "Report progress", SMALL_LIMIT, schema::<ProgressRequest>, 204, None),
            post(l::progress),
        ),
        (
            post_(
                "/v1/executions/{id}/frames",
                "Append a stream frame",
                FRAME_LIMIT,
                schema::<AppendFrameRequest>,
                200,
                Some(schema::<AppendFrameOutcome>),
            ),
            post(l::append_frame),
        ),
        (
            post_(
                "/v1/executions/{id}/complete",
                "Complete with an optional result",
                SUBMIT_LIMIT,
                schema::<CompleteRequest>,
                204,
                None,
            ),
            post(l::complete),
        ),
        (
            post_(
                "/v1/completions",
                "Complete many executions, each fenced alone",
                BATCH_LIMIT,
                schema::<CompleteBatchRequest>,
                200,
                Some(schema::<CompleteBatchResponse>),
            ),
            post(l::complete_batch),
        ),
        (
            post_(
                "/v1/executions/{id}/fail",
                "Fail the attempt (retried per the stored policy)",
                SMALL_LIMIT,
                schema::<FailRequest>,
                200,
                Some(schema::<FailOutcome>),
            ),
            post(l::fail),
        ),
        (
            post_(
                "/v1/executions/{id}/cancel",
                "Cancel as the lease holder",
                SMALL_LIMIT,
                schema::<CancelRequest>,
                204,
                None,
            ),
            post(l::cancel),
        ),
        (
            post_(
                "/v1/executions/{id}/delay",
                "Release and park until a time (same attempt resumes)",
                SMALL_LIMIT,
                schema::<DelayRequest>,
                204,
                None,
            ),
            post(l::delay),
        ),
    ]
}

/// Builds the application: every route, its body limit and auth, request metrics, CORS, and
/// JSON answers for unknown routes and wrong methods.
pub fn router(state: AppState, cors_origins: &[String]) -> Result<Router, EngineError> {
    let mut app = Router::new();
    for (route, handler) in routes() {
        let mut handler = handler.layer(DefaultBodyLimit::max(route.body_limit.unwrap_or(SMALL_LIMIT)));
        if route.auth {
            handler = handler.layer(middleware::from_fn_with_state(state.clone(), require_token));
        }
        app = app.route(route.path, handler);
    }
    let app = app
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), record_request))
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
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION]);
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
    if let Some(expected) = &state.0.token_digest {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Digests have one length and are compared in constant time, so the response time
        // reveals neither the token's content nor its length.
        if !bool::from(digest(presented).ct_eq(expected)) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
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
