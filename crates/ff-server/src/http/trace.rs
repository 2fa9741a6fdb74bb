//! Tracing of requests: every request runs in an `http.request` span (method, matched route,
//! status), a child of the caller's span when the request carries a W3C `traceparent` header;
//! and [`TraceHeaders`], the trace context a submission route stores with the executions that
//! carry none in their body.
//!
//! Invariant: a malformed `traceparent` or `tracestate` never fails a request by itself: the
//! span just has no remote parent. Only a submission, which would store the context, refuses it
//! (`400 invalid_input`, nothing written).

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ff_core::{EngineError, TraceContext};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::error::ApiError;

/// Name of the span each request runs in.
pub const REQUEST_SPAN: &str = "http.request";

/// The trace context of a request's `traceparent` / `tracestate` headers (`None` without a
/// `traceparent`). Malformed headers are `400 invalid_input`.
pub(super) struct TraceHeaders(pub Option<TraceContext>);

impl<S: Send + Sync> FromRequestParts<S> for TraceHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(from_headers(&parts.headers)?))
    }
}

fn from_headers(headers: &HeaderMap) -> Result<Option<TraceContext>, EngineError> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| EngineError::invalid(format!("the {name} header is not printable ASCII"))))
            .transpose()
    };
    TraceContext::from_headers(text("traceparent")?, text("tracestate")?)
}

/// Runs the request in an `http.request` span whose parent is the caller's span when the
/// request names one.
pub(super) async fn request_span(req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        REQUEST_SPAN,
        otel.kind = "server",
        otel.name = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
        span.record("http.route", route);
        span.record("otel.name", format!("{} {route}", req.method()).as_str());
        if let Ok(Some(parent)) = from_headers(req.headers()) {
            // Refused only when no OpenTelemetry layer records the span: nothing to link then.
            let _ = span.set_parent(remote_parent(&parent));
        }
    }
    let response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    response
}

/// The remote OpenTelemetry context a [`TraceContext`] names.
fn remote_parent(tc: &TraceContext) -> opentelemetry::Context {
    let trace_id = TraceId::from_hex(tc.trace_id()).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(tc.parent_id()).unwrap_or(SpanId::INVALID);
    let flags = if tc.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let state = tc.tracestate().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
}
