//! Trace context across the hop from submitter to worker, against a real server and real
//! Postgres, with spans recorded by OpenTelemetry's in-memory exporter: the handler span of
//! every attempt (a retry too) is a child of the submitter's span, whether the client's
//! `ff.submit` span (over HTTP), a span whose context a direct submission carries, or a
//! `traceparent` header; the server's request span is a child of the client's; a malformed
//! trace context is refused with `invalid_input` and nothing is written.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::{CreateExecutionArgs, EngineBackend, ExecutionId, LaneId, PublicState, TraceContext};
use ff_sdk::telemetry::{HANDLER_SPAN, SUBMIT_SPAN, current_trace_context};
use ff_sdk::{
    Client, DirectTransport, HttpTransport, SubmitRequest, TaskContext, Worker, WorkerConfig, WorkerTransport,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The in-memory exporter behind the process-wide subscriber every test in this file shares;
/// each test tells its spans apart by trace id.
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace_propagation")));
            tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
            (exporter, provider)
        })
        .0
}

/// Finished spans of trace `trace` named `name`.
fn spans(trace: TraceId, name: &str) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace && s.name == name)
        .collect()
}

/// Waits until `n` spans named `name` of `trace` have finished (a handler span ends just after
/// the end call it covers), and returns them.
async fn wait_spans(trace: TraceId, name: &str, n: usize) -> Vec<SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = spans(trace, name);
        if got.len() >= n {
            return got;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited in vain for {n} {name} spans, saw {}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|KeyValue { key: k, .. }| k.as_str() == key).map(|kv| &kv.value)
}

struct Env {
    db: TestDb,
    server: Server,
    client: Client,
}

impl Env {
    async fn start() -> Self {
        exporter();
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.pool_size = 8;
        cfg.delayed_promoter_interval_ms = 50;
        let server = Server::start(cfg).await.expect("server starts");
        let client = Client::new(server.url()).unwrap();
        Self { db, server, client }
    }

    fn backend(&self) -> Arc<dyn EngineBackend> {
        self.server.backend().clone()
    }

    fn transport(&self, http: bool) -> Arc<dyn WorkerTransport> {
        if http {
            Arc::new(HttpTransport::new(self.client.clone()))
        } else {
            Arc::new(DirectTransport::new(self.backend()))
        }
    }

    async fn wait_state(&self, id: &ExecutionId, want: PublicState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.client.state(id).await.unwrap().expect("exists");
            if state == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} stuck in {state:?}, wanted {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn executions(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ff_execution").fetch_one(self.db.pool()).await.unwrap()
    }

    /// A raw POST, for headers and bodies the client would not send.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: serde_json::Value) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new().post(format!("{}{path}", self.server.url())).json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// A submission whose first attempt fails and is retried once.
fn retried(lane: &str) -> SubmitRequest {
    let mut req = SubmitRequest::json(lane, "flaky", json!(null));
    req.policy = Some(
        serde_json::from_value(json!({
            "retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 10}}
        }))
        .unwrap(),
    );
    req
}

/// A worker whose `flaky` handler fails its first attempt and completes the second.
async fn start_worker(transport: Arc<dyn WorkerTransport>, lane: &str) -> ff_sdk::RunningWorker {
    let mut cfg = WorkerConfig::new("tracing", [lane]).unwrap();
    cfg.claim_max_wait = Duration::from_millis(200);
    Worker::new(transport, cfg, ())
        .handle("flaky", |ctx: TaskContext<()>, _: ()| async move {
            if ctx.attempt_index().0 == 0 {
                return Err(std::io::Error::other("first attempt fails").into());
            }
            Ok(())
        })
        .start()
        .await
        .unwrap()
}

/// The handler spans of both attempts of `id` are children of span `parent` of `trace`.
async fn assert_attempts_under(trace: TraceId, parent: SpanId, id: &ExecutionId) {
    let mut handled = wait_spans(trace, HANDLER_SPAN, 2).await;
    handled.sort_by_key(|s| match attribute(s, "ff.attempt_index") {
        Some(Value::I64(i)) => *i,
        other => panic!("attempt index attribute: {other:?}"),
    });
    assert_eq!(handled.len(), 2, "one handler span per attempt");
    for (attempt, span) in handled.iter().enumerate() {
        assert_eq!(span.parent_span_id, parent, "attempt {attempt}'s handler span is the submitter's child");
        assert!(span.parent_span_is_remote, "the parent comes from the stored context");
        assert_eq!(attribute(span, "ff.attempt_index"), Some(&Value::I64(attempt as i64)));
        assert_eq!(attribute(span, "ff.execution_id"), Some(&Value::from(id.to_string())));
    }
    assert_eq!(attribute(&handled[0], "ff.outcome"), Some(&Value::from("error")));
    assert_eq!(attribute(&handled[1], "ff.outcome"), Some(&Value::from("completed")));
}

/// Over HTTP: the client's `ff.submit` span is the parent of both attempts' handler spans,
/// and of the server's request span for the submission.
async fn client_submit_span_parents_every_attempt(http_worker: bool) {
    let env = Env::start().await;
    let lane = "traced";
    let root = tracing::info_span!("caller");
    let (trace, id) = async {
        let trace = current_trace_context().expect("the caller's span is traced");
        let id = env.client.submit(&retried(lane)).await.unwrap().execution_id();
        (TraceId::from_hex(trace.trace_id()).unwrap(), id)
    }
    .instrument(root)
    .await;
    let worker = start_worker(env.transport(http_worker), lane).await;
    env.wait_state(&id, PublicState::Completed).await;

    let submit = wait_spans(trace, SUBMIT_SPAN, 1).await.remove(0);
    let stored = env.backend().read_execution_context(&id).await.unwrap().trace_context.expect("stored");
    assert_eq!(stored.parent_id(), submit.span_context.span_id().to_string(), "the ff.submit span is stored");
    assert_attempts_under(trace, submit.span_context.span_id(), &id).await;
    // The server names its request spans `<method> <route>`.
    let posted = wait_spans(trace, "POST /v1/executions", 1).await.remove(0);
    assert_eq!(attribute(&posted, "http.response.status_code"), Some(&Value::I64(201)));
    assert_eq!(posted.parent_span_id, submit.span_context.span_id(), "the server's span is the client's child");
    worker.shutdown().await;
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_client_submit_span_parents_every_attempts_handler_span_with_an_http_worker() {
    client_submit_span_parents_every_attempt(true).await;
}

#[tokio::test]
async fn the_client_submit_span_parents_every_attempts_handler_span_with_a_direct_worker() {
    client_submit_span_parents_every_attempt(false).await;
}

/// Directly over the backend: the submitter puts its span's context on the arguments.
#[tokio::test]
async fn a_direct_submission_carries_its_span_to_every_attempt() {
    let env = Env::start().await;
    let lane = "traced-direct";
    let submit = tracing::info_span!("direct.submit");
    let backend = env.backend();
    let (trace, id) = async {
        let trace = current_trace_context().expect("traced");
        let req = retried(lane);
        let mut args = CreateExecutionArgs::new(
            ExecutionId::solo(&LaneId::try_new(lane).unwrap(), &Default::default()),
            LaneId::try_new(lane).unwrap(),
            "flaky",
            b"null".to_vec(),
        );
        args.policy = req.policy;
        args.trace_context = Some(trace.clone());
        (trace, backend.create_execution(args).await.unwrap().execution_id())
    }
    .instrument(submit)
    .await;
    let worker = start_worker(env.transport(false), lane).await;
    env.wait_state(&id, PublicState::Completed).await;
    let trace_id = TraceId::from_hex(trace.trace_id()).unwrap();
    let submitted = wait_spans(trace_id, "direct.submit", 1).await.remove(0);
    assert_eq!(submitted.span_context.span_id().to_string(), trace.parent_id());
    assert_attempts_under(trace_id, submitted.span_context.span_id(), &id).await;
    worker.shutdown().await;
    env.server.shutdown().await.unwrap();
}

/// A `traceparent` header on the submission routes: the handler spans' parent is the
/// header's span; on the batch route the header goes to executions whose body has none.
#[tokio::test]
async fn a_traceparent_header_parents_the_handler_spans() {
    let env = Env::start().await;
    let lane = "traced-header";
    let trace = TraceId::from(0x5eed_0001_u128 << 64 | u128::from(std::process::id()));
    let parent = SpanId::from(0x00f0_67aa_0ba9_02b7_u64);
    let header = format!("00-{trace}-{parent}-01");
    let body = serde_json::to_value(retried(lane)).unwrap();
    let (status, out) =
        env.post("/v1/executions", &[("traceparent", header.as_str()), ("tracestate", "k=v")], body).await;
    assert_eq!(status, 201, "{out}");
    let id = ExecutionId::parse(out["execution_id"].as_str().unwrap()).unwrap();
    let stored = env.backend().read_execution_context(&id).await.unwrap().trace_context.expect("stored");
    assert_eq!((stored.traceparent(), stored.tracestate()), (header.as_str(), Some("k=v")));
    let worker = start_worker(env.transport(true), lane).await;
    env.wait_state(&id, PublicState::Completed).await;
    assert_attempts_under(trace, parent, &id).await;
    worker.shutdown().await;

    let own = TraceContext::new("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None).unwrap();
    let with_own = SubmitRequest { trace_context: Some(own.clone()), ..SubmitRequest::json("idle", "k", json!(1)) };
    let batch = json!({"executions": [SubmitRequest::json("idle", "k", json!(1)), with_own]});
    let (status, out) = env.post("/v1/executions/batch", &[("traceparent", header.as_str())], batch).await;
    assert_eq!(status, 200, "{out}");
    let ids: Vec<ExecutionId> = out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ExecutionId::parse(r["execution_id"].as_str().unwrap()).unwrap())
        .collect();
    let context = |i: usize| {
        let backend = env.backend();
        let id = ids[i];
        async move { backend.read_execution_context(&id).await.unwrap().trace_context }
    };
    assert_eq!(context(0).await.map(|t| t.traceparent().to_owned()), Some(header.clone()));
    assert_eq!(context(1).await, Some(own), "a body's own context wins over the header");
    env.server.shutdown().await.unwrap();
}

/// Request headers as name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// A malformed trace context, in a header or a body, on either route, is `400 invalid_input`
/// and writes nothing.
#[tokio::test]
async fn a_malformed_trace_context_is_refused_and_nothing_is_written() {
    let env = Env::start().await;
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let submission = serde_json::to_value(SubmitRequest::json("l", "k", json!(1))).unwrap();
    let mut bad_body = submission.clone();
    bad_body["trace_context"] = json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"});
    let cases: Vec<(&str, Headers, serde_json::Value)> = vec![
        ("/v1/executions", vec![("traceparent", "garbage")], submission.clone()),
        ("/v1/executions", vec![("traceparent", &good[..54])], submission.clone()),
        ("/v1/executions", vec![("tracestate", "k=v")], submission.clone()),
        ("/v1/executions", vec![("traceparent", good), ("tracestate", "NOT A STATE")], submission.clone()),
        ("/v1/executions", vec![], bad_body.clone()),
        ("/v1/executions/batch", vec![("traceparent", "ff-zz")], json!({"executions": [submission.clone()]})),
        ("/v1/executions/batch", vec![], json!({"executions": [submission.clone(), bad_body]})),
    ];
    for (path, headers, body) in cases {
        let (status, out) = env.post(path, &headers, body).await;
        assert_eq!(status, 400, "{path} {headers:?}: {out}");
        assert_eq!(out["code"], "invalid_input", "{path} {headers:?}: {out}");
    }
    assert_eq!(env.executions().await, 0, "a refused submission writes nothing");
    let args: Result<CreateExecutionArgs, _> = serde_json::from_value(json!({
        "execution_id": ExecutionId::solo(&LaneId::try_new("l").unwrap(), &Default::default()),
        "lane_id": "l",
        "execution_kind": "k",
        "trace_context": {"traceparent": "garbage"},
    }));
    assert!(args.unwrap_err().to_string().contains("malformed traceparent"));
    env.server.shutdown().await.unwrap();
}
