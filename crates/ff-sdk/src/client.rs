//! [`Client`]: the HTTP API from Rust. Submitting and inspecting executions, the worker
//! registry, and the lease-holder calls a worker makes (used by the worker runtime's HTTP
//! transport). The operator controls and the fence-triple calls are in `client/operator.rs`;
//! flows (the graph builder, edits, reads, cancellation) in `client/flow.rs`; suspension
//! (signals, approvals, listings, resume, key rotation, the lease holder's suspend) in
//! `client/suspension.rs`; admission in `client/budget.rs` (budgets, usage reports),
//! `client/quota.rs` (quota policies, admissions) and `client/grant.rs` (claim grants, the
//! eligible scan, blocks).
//!
//! The client learns the server's partition counts once, on first need
//! ([`Client::partitions`]), to mint flow member ids the server accepts.

mod budget;
mod flow;
mod grant;
mod operator;
mod quota;
mod suspension;

pub use budget::BudgetBuilder;
pub use flow::{FlowBuilder, FlowGraphOutcome};
pub use quota::QuotaPolicyBuilder;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ff_core::wire::{
    AppendFrameRequest, CancelRequest, ClaimRequest, ClaimResponse, CompleteAndClaimRequest, CompleteBatchRequest,
    CompleteBatchResponse, CompleteRequest, DelayRequest, ErrorBody, FailRequest, HandleRequest, HealthResponse,
    HeartbeatWorkerRequest, HeartbeatWorkerResponse, MarkWorkerDeadRequest, MarkWorkerDeadResponse, ProgressRequest,
    RegisterWorkerRequest, SubmitBatchRequest, SubmitBatchResponse, SubmitRequest, TagValue,
};
use ff_core::{
    AppendFrameOutcome, AttemptIndex, CreateExecutionResult, ExecutionId, ExecutionInfo, ExecutionSnapshot,
    FailOutcome, HeartbeatWorkerArgs, HeartbeatWorkerOutcome, LeaseRenewal, ListExecutionsPage, ListWorkersArgs,
    ListWorkersResult, MarkWorkerDeadArgs, MarkWorkerDeadOutcome, PartitionConfig, PublicState, RegisterWorkerArgs,
    RegisterWorkerOutcome, StreamFrames, SummaryDocument, TailVisibility, TraceContext, WorkerId, WorkerInstanceId,
};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::error::SdkError;

/// How long an ordinary request may take; long-poll claims get their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a [`Client`] reaches its server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's base URL (`http://...` or `https://...`).
    pub base_url: String,
    /// A PEM file of CA certificates trusted for `https://` besides the bundled public roots
    /// (for a server whose certificate comes from a private CA).
    pub ca_file: Option<PathBuf>,
}

impl ClientConfig {
    /// A configuration for `base_url` trusting the bundled public roots only.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self { base_url: base_url.into(), ca_file: None }
    }

    /// Also trusts the CA certificates in the PEM file `path`.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
}

/// A client of one FlowFabric server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// The server's partition counts, read once (shared by clones).
    partitions: Arc<OnceCell<PartitionConfig>>,
}

impl Client {
    /// A client of `base_url` (e.g. `http://127.0.0.1:9090`) without a token.
    pub fn new(base_url: impl Into<String>) -> Result<Self, SdkError> {
        Self::with_config(ClientConfig::new(base_url))
    }

    /// A client as `config` says, without a token. HTTPS is rustls with the bundled public
    /// roots plus `config.ca_file`; an unreadable or certificate-less CA file is an error here.
    pub fn with_config(config: ClientConfig) -> Result<Self, SdkError> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(SdkError::Config(format!("base url {base:?} must start with http:// or https://")));
        }
        let mut builder = reqwest::Client::builder().use_rustls_tls().pool_max_idle_per_host(64).tcp_nodelay(true);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| SdkError::Config(format!("cannot read CA file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SdkError::Config(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(SdkError::Config(format!("CA file {} holds no PEM certificate", path.display())));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().map_err(|e| SdkError::Config(format!("http client: {e}")))?;
        Ok(Self { http, base, token: None, partitions: Arc::new(OnceCell::new()) })
    }

    /// Sends `Authorization: Bearer <token>` with every request (empty = none).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then_some(token);
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Uses `partitions` as the server's partition counts instead of asking it.
    pub fn with_partitions(mut self, partitions: PartitionConfig) -> Self {
        self.partitions = Arc::new(OnceCell::new_with(Some(partitions)));
        self
    }

    /// The server's partition counts (`GET /v1/partitions`, asked once and kept): flow member
    /// ids are minted with them.
    pub async fn partitions(&self) -> Result<PartitionConfig, SdkError> {
        self.partitions.get_or_try_init(|| Self::json(self.request(Method::GET, "/v1/partitions"))).await.copied()
    }

    /// A request to `path`, with the bearer token and, when the current span is traced, its
    /// `traceparent` / `tracestate` headers (the server's request span is its child).
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).timeout(REQUEST_TIMEOUT);
        if let Some(trace) = crate::telemetry::current_trace_context() {
            req = req.header("traceparent", trace.traceparent());
            if let Some(state) = trace.tracestate() {
                req = req.header("tracestate", state);
            }
        }
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send(req: RequestBuilder) -> Result<reqwest::Response, SdkError> {
        let resp = req.send().await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => SdkError::Api { status, code: b.code, message: b.message, retryable: b.retryable },
            Err(_) => SdkError::Api { status, code: "http_error".into(), message: text, retryable: false },
        })
    }

    async fn json<T: DeserializeOwned>(req: RequestBuilder) -> Result<T, SdkError> {
        let resp = Self::send(req).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Decode(e.to_string()))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, SdkError> {
        Self::json(self.request(Method::POST, path).json(body)).await
    }

    async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<(), SdkError> {
        Self::send(self.request(Method::POST, path).json(body)).await.map(drop)
    }

    /// `None` on 404.
    async fn get_optional<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, SdkError> {
        match Self::json(self.request(Method::GET, path)).await {
            Err(SdkError::Api { status: 404, .. }) => Ok(None),
            other => other.map(Some),
        }
    }

    // ----- health ----------------------------------------------------------------------------

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<HealthResponse, SdkError> {
        Self::json(self.request(Method::GET, "/healthz")).await
    }

    // ----- submission and reads --------------------------------------------------------------

    /// Submits one execution; `Duplicate` when its id or idempotency key already exists. Runs in
    /// an `ff.submit` span; a request without a trace context carries that span's, so the
    /// handler span of every attempt is its child.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<CreateExecutionResult, SdkError> {
        let span = crate::telemetry::submit_span(&req.lane_id, &req.execution_kind, 1);
        async {
            match (&req.trace_context, crate::telemetry::current_trace_context()) {
                (None, Some(trace)) => {
                    /// The request with a trace context added, without copying its input.
                    #[derive(Serialize)]
                    struct Traced<'a> {
                        #[serde(flatten)]
                        req: &'a SubmitRequest,
                        trace_context: TraceContext,
                    }
                    self.post("/v1/executions", &Traced { req, trace_context: trace }).await
                }
                _ => self.post("/v1/executions", req).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Submits many executions atomically; results in input order. Like [`Client::submit`], in
    /// an `ff.submit` span whose trace context goes with each execution that carries none.
    pub async fn submit_batch(
        &self,
        mut executions: Vec<SubmitRequest>,
    ) -> Result<Vec<CreateExecutionResult>, SdkError> {
        let first = executions.first().map(|e| (e.lane_id.clone(), e.execution_kind.clone())).unwrap_or_default();
        let span = crate::telemetry::submit_span(&first.0, &first.1, executions.len());
        async {
            if let Some(trace) = crate::telemetry::current_trace_context() {
                for e in executions.iter_mut().filter(|e| e.trace_context.is_none()) {
                    e.trace_context = Some(trace.clone());
                }
            }
            let resp: SubmitBatchResponse =
                self.post("/v1/executions/batch", &SubmitBatchRequest { executions }).await?;
            Ok(resp.results)
        }
        .instrument(span)
        .await
    }

    /// Snapshot; `None` when absent.
    pub async fn describe(&self, id: &ExecutionId) -> Result<Option<ExecutionSnapshot>, SdkError> {
        self.get_optional(&format!("/v1/executions/{}", enc(&id.to_string()))).await
    }

    /// Full record; `None` when absent.
    pub async fn info(&self, id: &ExecutionId) -> Result<Option<ExecutionInfo>, SdkError> {
        self.get_optional(&format!("/v1/executions/{}/info", enc(&id.to_string()))).await
    }

    /// Public state; `None` when absent.
    pub async fn state(&self, id: &ExecutionId) -> Result<Option<PublicState>, SdkError> {
        self.get_optional(&format!("/v1/executions/{}/state", enc(&id.to_string()))).await
    }

    /// Result payload; `None` when absent, not completed, or completed without one.
    pub async fn result(&self, id: &ExecutionId) -> Result<Option<Vec<u8>>, SdkError> {
        let req = self.request(Method::GET, &format!("/v1/executions/{}/result", enc(&id.to_string())));
        match Self::send(req).await {
            Ok(resp) => Ok(Some(resp.bytes().await?.to_vec())),
            Err(SdkError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Frames of one attempt (`from`/`to` are `-`, `+` or `<ms>-<seq>`).
    pub async fn read_stream(
        &self,
        id: &ExecutionId,
        attempt_index: u32,
        from: &str,
        to: &str,
        limit: u32,
    ) -> Result<StreamFrames, SdkError> {
        let path = format!(
            "/v1/executions/{}/attempts/{attempt_index}/stream?from={}&to={}&limit={limit}",
            enc(&id.to_string()),
            enc(from),
            enc(to)
        );
        Self::json(self.request(Method::GET, &path)).await
    }

    /// Frames of an attempt after `after` (`-` start, `+` only new ones, or a frame id), waiting
    /// up to `block_ms` (at most 30,000) for one to arrive or the attempt to end.
    pub async fn tail_stream(
        &self,
        id: &ExecutionId,
        attempt_index: u32,
        after: &str,
        block_ms: u64,
        limit: u32,
        visibility: TailVisibility,
    ) -> Result<StreamFrames, SdkError> {
        let visibility = match visibility {
            TailVisibility::All => "all",
            TailVisibility::ExcludeBestEffort => "exclude_best_effort",
        };
        let path = format!(
            "/v1/executions/{}/attempts/{attempt_index}/stream/tail?after={}&block_ms={block_ms}&limit={limit}&visibility={visibility}",
            enc(&id.to_string()),
            enc(after),
        );
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(block_ms);
        Self::json(self.request(Method::GET, &path).timeout(timeout)).await
    }

    /// An attempt's summary document; `None` before its first summary frame.
    pub async fn read_summary(
        &self,
        id: &ExecutionId,
        attempt_index: u32,
    ) -> Result<Option<SummaryDocument>, SdkError> {
        let path = format!("/v1/executions/{}/attempts/{attempt_index}/summary", enc(&id.to_string()));
        self.get_optional(&path).await
    }

    /// Removes a tag; `false` when it was not set.
    pub async fn clear_tag(&self, id: &ExecutionId, key: &str) -> Result<bool, SdkError> {
        let path = format!("/v1/executions/{}/tags/{}", enc(&id.to_string()), enc(key));
        match Self::send(self.request(Method::DELETE, &path)).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("not_found") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of a partition's executions.
    pub async fn list(
        &self,
        partition: u16,
        cursor: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<ListExecutionsPage, SdkError> {
        let mut path = format!("/v1/executions?partition={partition}&limit={limit}");
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={}", enc(&c.to_string())));
        }
        Self::json(self.request(Method::GET, &path)).await
    }

    /// Sets a tag.
    pub async fn set_tag(&self, id: &ExecutionId, key: &str, value: &str) -> Result<(), SdkError> {
        let path = format!("/v1/executions/{}/tags/{}", enc(&id.to_string()), enc(key));
        Self::send(self.request(Method::PUT, &path).json(&TagValue { value: value.into() })).await.map(drop)
    }

    /// Reads a tag; `None` when absent.
    pub async fn get_tag(&self, id: &ExecutionId, key: &str) -> Result<Option<String>, SdkError> {
        let path = format!("/v1/executions/{}/tags/{}", enc(&id.to_string()), enc(key));
        Ok(self.get_optional::<TagValue>(&path).await?.map(|t| t.value))
    }

    // ----- worker registry -------------------------------------------------------------------

    /// Registers a worker instance, or refreshes its live registration.
    pub async fn register_worker(&self, args: &RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, SdkError> {
        let path = format!("/v1/workers/{}/instances", enc(args.worker_id.as_str()));
        self.post(&path, &RegisterWorkerRequest::from_args(args)).await
    }

    /// Extends a live registration of an instance of `worker_id`; `NotRegistered` when it is
    /// unknown, was marked dead, or let its TTL lapse.
    pub async fn heartbeat_worker(
        &self,
        worker_id: &WorkerId,
        args: &HeartbeatWorkerArgs,
    ) -> Result<HeartbeatWorkerOutcome, SdkError> {
        let path = instance_path(worker_id, &args.worker_instance_id, "heartbeat");
        let body = HeartbeatWorkerRequest { namespace: args.namespace.clone() };
        match self.post::<_, HeartbeatWorkerResponse>(&path, &body).await {
            Ok(r) => Ok(HeartbeatWorkerOutcome::Refreshed { next_expiry_ms: r.next_expiry_ms }),
            Err(e) if is_not_registered(&e) => Ok(HeartbeatWorkerOutcome::NotRegistered),
            Err(e) => Err(e),
        }
    }

    /// Marks an instance of `worker_id` dead, revoking its leases at once; `NotRegistered` when
    /// it is not registered.
    pub async fn mark_worker_dead(
        &self,
        worker_id: &WorkerId,
        args: &MarkWorkerDeadArgs,
    ) -> Result<MarkWorkerDeadOutcome, SdkError> {
        let path = instance_path(worker_id, &args.worker_instance_id, "dead");
        let body = MarkWorkerDeadRequest { namespace: args.namespace.clone(), reason: args.reason.clone() };
        match self.post::<_, MarkWorkerDeadResponse>(&path, &body).await {
            Ok(r) => Ok(MarkWorkerDeadOutcome::Marked { revoked_leases: r.revoked_leases }),
            Err(e) if is_not_registered(&e) => Ok(MarkWorkerDeadOutcome::NotRegistered),
            Err(e) => Err(e),
        }
    }

    /// One page of live worker instances, in instance-id order.
    pub async fn list_workers(&self, args: &ListWorkersArgs) -> Result<ListWorkersResult, SdkError> {
        let mut query = Vec::new();
        if let Some(ns) = &args.namespace {
            query.push(format!("namespace={}", enc(ns.as_str())));
        }
        if let Some(after) = &args.after {
            query.push(format!("after={}", enc(after.as_str())));
        }
        if let Some(limit) = args.limit {
            query.push(format!("limit={limit}"));
        }
        let path = if query.is_empty() { "/v1/workers".to_owned() } else { format!("/v1/workers?{}", query.join("&")) };
        Self::json(self.request(Method::GET, &path)).await
    }

    // ----- worker calls ----------------------------------------------------------------------

    /// Leases up to `req.max` executions for `worker_id`, long-polling `req.max_wait_ms`.
    pub async fn claim(&self, worker_id: &str, req: &ClaimRequest) -> Result<ClaimResponse, SdkError> {
        let path = format!("/v1/workers/{}/claim", enc(worker_id));
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(req.max_wait_ms);
        Self::json(self.request(Method::POST, &path).timeout(timeout).json(req)).await
    }

    /// Completes one execution, then leases up to `req.claim.max` more, in one round trip. The
    /// claim is checked before anything is written; a refused completion claims nothing.
    pub async fn complete_and_claim(
        &self,
        worker_id: &str,
        req: &CompleteAndClaimRequest,
    ) -> Result<ClaimResponse, SdkError> {
        let path = format!("/v1/workers/{}/complete-and-claim", enc(worker_id));
        let timeout = REQUEST_TIMEOUT + Duration::from_millis(req.claim.max_wait_ms);
        Self::json(self.request(Method::POST, &path).timeout(timeout).json(req)).await
    }

    /// Extends a lease.
    pub async fn renew(&self, id: &ExecutionId, handle: &str) -> Result<LeaseRenewal, SdkError> {
        self.post(&lease_path(id, "renew"), &HandleRequest { handle: handle.into() }).await
    }

    /// Reports progress.
    pub async fn progress(&self, id: &ExecutionId, req: &ProgressRequest) -> Result<(), SdkError> {
        self.post_empty(&lease_path(id, "progress"), req).await
    }

    /// Appends a frame.
    pub async fn append_frame(
        &self,
        id: &ExecutionId,
        req: &AppendFrameRequest,
    ) -> Result<AppendFrameOutcome, SdkError> {
        self.post(&lease_path(id, "frames"), req).await
    }

    /// Completes.
    pub async fn complete(&self, id: &ExecutionId, req: &CompleteRequest) -> Result<(), SdkError> {
        self.post_empty(&lease_path(id, "complete"), req).await
    }

    /// Completes many; one entry per item, `None` = completed.
    pub async fn complete_batch(&self, items: Vec<CompleteRequest>) -> Result<Vec<Option<ErrorBody>>, SdkError> {
        let resp: CompleteBatchResponse = self.post("/v1/completions", &CompleteBatchRequest { items }).await?;
        Ok(resp.results)
    }

    /// Fails the attempt.
    pub async fn fail(&self, id: &ExecutionId, req: &FailRequest) -> Result<FailOutcome, SdkError> {
        self.post(&lease_path(id, "fail"), req).await
    }

    /// Cancels as the lease holder.
    pub async fn cancel(&self, id: &ExecutionId, req: &CancelRequest) -> Result<(), SdkError> {
        self.post_empty(&lease_path(id, "cancel"), req).await
    }

    /// Releases and parks until a time.
    pub async fn delay(&self, id: &ExecutionId, req: &DelayRequest) -> Result<(), SdkError> {
        self.post_empty(&lease_path(id, "delay"), req).await
    }

    /// Releases the lease until the execution's children (the upstreams of its edge group)
    /// end; the same attempt is claimable again then.
    pub async fn wait_children(&self, id: &ExecutionId, attempt: AttemptIndex, handle: &str) -> Result<(), SdkError> {
        let path = format!("/v1/executions/{}/attempts/{}/wait-children", enc(&id.to_string()), attempt.0);
        self.post_empty(&path, &HandleRequest { handle: handle.into() }).await
    }
}

fn instance_path(worker_id: &WorkerId, instance: &WorkerInstanceId, op: &str) -> String {
    format!("/v1/workers/{}/instances/{}/{op}", enc(worker_id.as_str()), enc(instance.as_str()))
}

/// The server's answer for a heartbeat or death of an instance it does not have registered.
fn is_not_registered(e: &SdkError) -> bool {
    matches!(e, SdkError::Api { status: 404, code, .. } if code == "worker_not_registered")
}

fn lease_path(id: &ExecutionId, op: &str) -> String {
    format!("/v1/executions/{}/{op}", enc(&id.to_string()))
}

/// Percent-encodes one path or query component.
fn enc(s: &str) -> String {
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
