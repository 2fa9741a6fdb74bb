//! Tracing across the hop from a submitter to a worker, with OpenTelemetry.
//!
//! - [`install`] sets up a binary's `tracing` subscriber: log lines on stderr filtered by
//!   `RUST_LOG`, and, only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, an OpenTelemetry layer exporting spans over
//!   OTLP (HTTP, protobuf) in batches. Without an endpoint no exporter exists and spans cost
//!   what `tracing` spans without a listener cost.
//! - [`current_trace_context`] is the W3C trace context of the current span, which
//!   [`crate::Client`] attaches to a submission that carries none of its own.
//! - [`handler_span`] is the span a worker runs a handler in: `ff.handle`, a child of the trace
//!   context stored with the execution (the submitter's span), on every attempt, with the
//!   attempt index as an attribute.
//!
//! Invariant: nothing here reads the trace context from anywhere but a [`TraceContext`], so the
//! format is checked once, in `ff-core`.

use ff_core::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::SdkError;
use crate::transport::ClaimedTask;

/// The variables naming an OTLP endpoint; either one turns the exporter on.
pub const OTLP_ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Name of the span a client submits in.
pub const SUBMIT_SPAN: &str = "ff.submit";

/// Name of the span a handler runs in.
pub const HANDLER_SPAN: &str = "ff.handle";

/// What [`install`] sets up.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// `service.name` of the exported spans (`OTEL_SERVICE_NAME` wins when set).
    pub service_name: String,
    /// The log filter when `RUST_LOG` is unset, e.g. `info`.
    pub default_filter: String,
    /// The OTLP endpoint; `None` reads [`OTLP_ENDPOINT_VARS`], and no endpoint there means no
    /// exporter.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// A configuration for `service_name` logging at `info`, the endpoint from the environment.
    pub fn new(service_name: impl Into<String>) -> Self {
        Self { service_name: service_name.into(), default_filter: "info".into(), otlp_endpoint: None }
    }

    /// The configured endpoint, when one is given.
    fn explicit_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty())
    }

    /// Whether spans are to be exported: an endpoint is configured or in the environment.
    pub fn exports(&self) -> bool {
        self.explicit_endpoint().is_some()
            || OTLP_ENDPOINT_VARS.iter().any(|v| std::env::var(v).is_ok_and(|e| !e.trim().is_empty()))
    }
}

/// The installed pipeline; [`Telemetry::shutdown`] (or dropping it) flushes the spans still
/// queued for export.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (blocking up to its export timeout).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: the OTLP exporter did not shut down cleanly: {e}");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the process-wide `tracing` subscriber: stderr logs under `RUST_LOG` (else
/// `default_filter`), plus OTLP export, under the same filter, when an endpoint is configured. Call once, early in
/// `main`, and keep the returned value until exit.
pub fn install(config: &TelemetryConfig) -> Result<Telemetry, SdkError> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter());
    let provider =
        if config.exports() { Some(otlp_provider(&config.service_name, config.explicit_endpoint())?) } else { None };
    // The same filter keeps dependencies' debug spans out of the export.
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("flowfabric")).with_filter(filter()));
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|e| SdkError::Config(format!("a tracing subscriber is installed already: {e}")))?;
    Ok(Telemetry { provider })
}

/// A tracer provider exporting over OTLP/HTTP (protobuf), batching on its own thread, to
/// `endpoint` when given, else where the standard variables say (the exporter reads them, with
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TIMEOUT`).
fn otlp_provider(service_name: &str, endpoint: Option<&str>) -> Result<SdkTracerProvider, SdkError> {
    use opentelemetry_otlp::WithExportConfig;
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(traces_url(endpoint));
    }
    let exporter = builder.build().map_err(|e| SdkError::Config(format!("OTLP exporter: {e}")))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// The traces URL of a configured OTLP/HTTP endpoint: a base URL gets `/v1/traces`, as the
/// OTLP specification says of `OTEL_EXPORTER_OTLP_ENDPOINT`; one naming the path is kept.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") }
}

/// The W3C trace context of the current `tracing` span, when an OpenTelemetry layer records it
/// (`None` otherwise, and for a span that is not part of a valid trace).
pub fn current_trace_context() -> Option<TraceContext> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    to_trace_context(span.span_context())
}

/// The [`TraceContext`] naming `sc` as the parent; `None` for an invalid span context.
pub fn to_trace_context(sc: &SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    let parent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    let state = sc.trace_state().header();
    TraceContext::new(parent, Some(state)).ok()
}

/// The remote OpenTelemetry context a stored [`TraceContext`] names, for
/// [`OpenTelemetrySpanExt::set_parent`].
pub fn parent_context(tc: &TraceContext) -> opentelemetry::Context {
    let trace_id = TraceId::from_hex(tc.trace_id()).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(tc.parent_id()).unwrap_or(SpanId::INVALID);
    let flags = if tc.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let state = tc.tracestate().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(trace_id, span_id, flags, true, state))
}

/// The span [`crate::Client::submit`] and [`crate::Client::submit_batch`] run in: `ff.submit`,
/// whose trace context a submission carries when it has none of its own.
pub fn submit_span(lane_id: &str, execution_kind: &str, executions: usize) -> tracing::Span {
    tracing::info_span!(
        SUBMIT_SPAN,
        otel.kind = "producer",
        ff.lane_id = %lane_id,
        ff.execution_kind = %execution_kind,
        ff.executions = executions,
    )
}

/// The span a worker runs `task`'s handler and its end call in: `ff.handle`, with the execution,
/// attempt, kind, lane, claim kind and outcome (`completed`, `error`, `released`) as
/// attributes, and, when the execution carries a trace context, that
/// context as its parent.
pub fn handler_span(task: &ClaimedTask) -> tracing::Span {
    let span = tracing::info_span!(
        HANDLER_SPAN,
        otel.kind = "consumer",
        ff.execution_id = %task.execution_id,
        ff.attempt_index = i64::from(task.attempt_index.0),
        ff.execution_kind = %task.execution_kind,
        ff.lane_id = %task.lane_id.as_str(),
        ff.claim_kind = task.claim_kind.as_str(),
        ff.outcome = tracing::field::Empty,
    );
    if let Some(tc) = &task.trace_context {
        // Refused only when no OpenTelemetry layer records the span: nothing to link then.
        let _ = span.set_parent(parent_context(tc));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_urls() {
        for (given, want) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
        ] {
            assert_eq!(traces_url(given), want);
        }
    }

    #[test]
    fn context_round_trip() {
        let tc = TraceContext::new(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into()),
        )
        .unwrap();
        let cx = parent_context(&tc);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(to_trace_context(sc), Some(tc));
        assert_eq!(to_trace_context(&SpanContext::empty_context()), None);
    }
}
