//! FlowFabric worker SDK.
//!
//! - [`Worker`]: register a handler per execution kind and start; the runtime registers the
//!   worker instance in the worker registry (heartbeating it, leaving at shutdown), claims in
//!   batches, renews leases, runs handlers under a concurrency limit and ends each execution
//!   (a handler error becomes `fail` with its class, a panic a failed attempt). It runs over
//!   [`HttpTransport`] (an `ff-server`) or [`DirectTransport`] (an in-process backend); the
//!   handler code is the same.
//! - [`Client`]: submit and inspect executions, read the worker registry, act as an operator
//!   (cancel, revoke a lease, change a priority, replay, list expired leases), and build, edit,
//!   read and cancel flows ([`Client::flow`] builds a whole DAG in one request), over HTTP or
//!   HTTPS ([`ClientConfig::with_ca_file`] trusts a private CA).
//! - A handler that spawned children ([`Client::add_children`]) waits for them by returning
//!   [`HandlerError::wait_for_children`]; its attempt runs again once they ended.
//! - A handler that waits for the outside world mints a waitpoint
//!   ([`TaskContext::create_waitpoint`]), hands its token out and returns
//!   [`HandlerError::suspend_on`]; a signal ([`Client::signal`] with the token alone, or an
//!   operator's [`Client::approve`]) runs the same attempt again, which reads it with
//!   [`TaskContext::signals`]. `examples/approval.rs` is a whole approval workflow.
//! - Admission: [`Client::budget`] and [`Client::quota_policy`] create budgets and quota
//!   policies; a submission draws on them ([`SubmitRequest::budget`],
//!   [`SubmitRequest::quota_policy`], [`SubmitRequest::concurrency_key`]); a handler charges
//!   what it used with [`TaskContext::report_usage`]. A strict budget that runs out holds its
//!   executions back (`rate_limited`, `waiting_for_budget`) until it is reset or raised.
//! - Tracing ([`telemetry`]): a submission carries the current span's W3C trace context, and
//!   the handler of every attempt runs in a span (`ff.handle`) that is its child;
//!   [`telemetry::install`] exports spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! ```no_run
//! use ff_sdk::{Client, HttpTransport, Worker, WorkerConfig, TaskContext, HandlerError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:9090")?;
//! let worker = Worker::new(HttpTransport::new(client), WorkerConfig::new("mailer", ["emails"])?, ())
//!     .handle("email.send", |_ctx: TaskContext<()>, to: String| async move {
//!         if to.is_empty() { return Err(HandlerError::permanent("no recipient")); }
//!         Ok(format!("sent to {to}"))
//!     })
//!     .start()
//!     .await?;
//! tokio::signal::ctrl_c().await?;
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod telemetry;
pub mod transport;
pub mod worker;

pub use client::{BudgetBuilder, Client, ClientConfig, FlowBuilder, FlowGraphOutcome, QuotaPolicyBuilder};
pub use error::SdkError;
pub use ff_core::wire::SubmitRequest;
pub use transport::{ClaimArgs, ClaimedTask, DirectTransport, HttpTransport, WorkerTransport};
pub use worker::{HandlerError, RunningWorker, TaskContext, Worker, WorkerConfig, WorkerReport};
