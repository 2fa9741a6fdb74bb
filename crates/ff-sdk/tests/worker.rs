//! The worker runtime end to end against a real server and real Postgres, over both transports:
//! handlers by kind, typed payloads, shared state, errors and panics as failed attempts, lease
//! renewal keeping a slow handler alive, a killed worker's execution reclaimed by another, and
//! shutdown releasing handlers that outlive the grace period.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::{EngineBackend, ExecutionId, HandleKind, PublicState};
use ff_sdk::{
    Client, DirectTransport, HandlerError, HttpTransport, RunningWorker, SubmitRequest, TaskContext, Worker,
    WorkerConfig, WorkerTransport,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;

struct Env {
    _db: TestDb,
    server: Server,
    client: Client,
}

impl Env {
    async fn start() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.pool_size = 8;
        cfg.lease_expiry_interval_ms = 50;
        cfg.delayed_promoter_interval_ms = 50;
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        let client = Client::new(server.url()).unwrap();
        Self { _db: db, server, client }
    }

    fn backend(&self) -> Arc<dyn EngineBackend> {
        self.server.backend().clone()
    }

    fn transport(&self, http: bool) -> Box<dyn FnOnce() -> Arc<dyn WorkerTransport>> {
        let client = self.client.clone();
        let backend = self.backend();
        Box::new(
            move || {
                if http { Arc::new(HttpTransport::new(client)) } else { Arc::new(DirectTransport::new(backend)) }
            },
        )
    }

    async fn submit(&self, lane: &str, kind: &str, input: serde_json::Value) -> ExecutionId {
        self.submit_with(SubmitRequest::json(lane, kind, input)).await
    }

    async fn submit_with(&self, req: SubmitRequest) -> ExecutionId {
        self.client.submit(&req).await.expect("submit").execution_id()
    }

    /// Polls until the execution reaches `want` (the runtime works asynchronously).
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
}

struct Shared {
    greeting: String,
    calls: AtomicU32,
}

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeted {
    text: String,
}

/// Starts a worker whose `job` handler signals `started` and then never returns.
fn start_hanging_worker(transport: impl WorkerTransport, cfg: WorkerConfig, started: Arc<Notify>) -> RunningWorker {
    Worker::new(transport, cfg, started)
        .handle("job", |ctx: TaskContext<Arc<Notify>>, _: ()| async move {
            ctx.state().notify_one();
            std::future::pending::<()>().await;
            Ok(())
        })
        .start()
        .unwrap()
}

fn config(lane: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("pool", [lane]).unwrap();
    cfg.claim_max_wait = Duration::from_millis(200);
    cfg.concurrency = 4;
    cfg
}

async fn runs_handlers_by_kind(http: bool) {
    let env = Env::start().await;
    let lane = "work";
    let ok = env.submit(lane, "greet", json!({"name": "ada"})).await;
    let bad_input = env.submit(lane, "greet", json!({"nom": 1})).await;
    let refused = env.submit(lane, "refuse", json!(null)).await;
    let panics = env.submit(lane, "explode", json!(null)).await;
    let cancelled = env.submit(lane, "withdraw", json!(null)).await;
    let unknown = env.submit(lane, "nobody-handles-this", json!(null)).await;
    let mut retried_req = SubmitRequest::json(lane, "flaky", json!(null));
    retried_req.policy = Some(
        serde_json::from_value(json!({
            "retry_policy": {"max_retries": 2, "backoff": {"type": "fixed", "delay_ms": 20}}
        }))
        .unwrap(),
    );
    let retried = env.submit_with(retried_req).await;

    let state = Shared { greeting: "hello".into(), calls: AtomicU32::new(0) };
    let transport = env.transport(http)();
    let worker = Worker::new(transport, config(lane), state)
        .handle("greet", |ctx: TaskContext<Shared>, input: Greet| async move {
            ctx.state().calls.fetch_add(1, Ordering::Relaxed);
            ctx.progress(Some(50), Some("greeting")).await?;
            ctx.append_frame("log", &format!("greeting {}", input.name)).await?;
            Ok(Greeted { text: format!("{} {}", ctx.state().greeting, input.name) })
        })
        .handle("refuse", |_ctx: TaskContext<Shared>, _: ()| async move {
            Err::<(), _>(HandlerError::permanent("refused by policy").with_detail("rule 7"))
        })
        .handle("explode", |_ctx: TaskContext<Shared>, _: ()| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .handle("withdraw", |_ctx: TaskContext<Shared>, _: ()| async move {
            Err::<(), _>(HandlerError::cancel("customer withdrew"))
        })
        .handle("flaky", |ctx: TaskContext<Shared>, _: ()| async move {
            if ctx.attempt_index().0 < 2 {
                return Err(std::io::Error::other("upstream timed out").into());
            }
            Ok(ctx.attempt_index().0)
        })
        .start()
        .unwrap();

    env.wait_state(&ok, PublicState::Completed).await;
    env.wait_state(&bad_input, PublicState::Failed).await;
    env.wait_state(&refused, PublicState::Failed).await;
    env.wait_state(&panics, PublicState::Failed).await;
    env.wait_state(&cancelled, PublicState::Cancelled).await;
    env.wait_state(&unknown, PublicState::Failed).await;
    env.wait_state(&retried, PublicState::Completed).await;
    let report = worker.shutdown().await;

    let result: serde_json::Value = serde_json::from_slice(&env.client.result(&ok).await.unwrap().unwrap()).unwrap();
    assert_eq!(result, json!({"text": "hello ada"}));
    assert_eq!(env.client.result(&retried).await.unwrap().unwrap(), b"2");
    let frames = env.client.read_stream(&ok, 0, "-", "+", 10).await.unwrap();
    assert_eq!(frames.frames[0].bytes, b"greeting ada");
    let snap = env.client.describe(&refused).await.unwrap().unwrap();
    assert!(snap.blocking_detail.unwrap_or_default().contains("refused by policy"));
    let snap = env.client.describe(&panics).await.unwrap().unwrap();
    assert_eq!(snap.retry_count, 0, "no retry policy: the panic fails the execution");
    let snap = env.client.describe(&retried).await.unwrap().unwrap();
    assert_eq!((snap.retry_count, snap.total_attempt_count), (2, 3));
    assert_eq!(report.completed, 2);
    assert_eq!(report.retries_scheduled, 2);
    assert_eq!(report.failed, 4);
    assert_eq!(report.cancelled, 1);
    assert_eq!(report.panicked, 1);
    assert_eq!(report.lease_lost, 0);
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn runtime_runs_handlers_by_kind_over_http() {
    runs_handlers_by_kind(true).await;
}

#[tokio::test]
async fn runtime_runs_handlers_by_kind_directly_over_the_backend() {
    runs_handlers_by_kind(false).await;
}

#[tokio::test]
async fn renewal_keeps_a_slow_handler_alive() {
    let env = Env::start().await;
    let id = env.submit("slow", "crunch", json!(null)).await;
    let mut cfg = config("slow");
    // The handler runs for five TTLs; the lease-expiry reconciler checks every 50 ms.
    cfg.lease_ttl = Duration::from_millis(300);
    let worker = Worker::new(HttpTransport::new(env.client.clone()), cfg, ())
        .handle("crunch", |ctx: TaskContext<()>, _: ()| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok(ctx.lease_healthy())
        })
        .start()
        .unwrap();
    env.wait_state(&id, PublicState::Completed).await;
    let report = worker.shutdown().await;
    assert_eq!((report.completed, report.lease_lost), (1, 0));
    assert_eq!(env.client.result(&id).await.unwrap().unwrap(), b"true", "the lease stayed healthy");
    let snap = env.client.describe(&id).await.unwrap().unwrap();
    assert_eq!((snap.lease_reclaim_count, snap.total_attempt_count), (0, 1));
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_workers_execution_is_reclaimed_by_another_worker() {
    let env = Env::start().await;
    let id = env.submit("fragile", "job", json!(null)).await;
    let started = Arc::new(Notify::new());
    let mut doomed_cfg = config("fragile");
    doomed_cfg.lease_ttl = Duration::from_millis(300);
    let doomed = start_hanging_worker(HttpTransport::new(env.client.clone()), doomed_cfg, started.clone());
    started.notified().await;
    doomed.kill();

    let rescuer = Worker::new(HttpTransport::new(env.client.clone()), config("fragile"), ())
        .handle("job", |ctx: TaskContext<()>, _: ()| async move { Ok(ctx.claim_kind() == HandleKind::Reclaimed) })
        .start()
        .unwrap();
    env.wait_state(&id, PublicState::Completed).await;
    rescuer.shutdown().await;
    assert_eq!(env.client.result(&id).await.unwrap().unwrap(), b"true", "the rescuer reclaimed it");
    let snap = env.client.describe(&id).await.unwrap().unwrap();
    assert_eq!((snap.lease_reclaim_count, snap.total_attempt_count), (1, 2));
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_releases_handlers_that_outlive_the_grace_period() {
    let env = Env::start().await;
    let id = env.submit("long", "job", json!(null)).await;
    let started = Arc::new(Notify::new());
    let mut cfg = config("long");
    cfg.shutdown_grace = Duration::from_millis(100);
    let worker = start_hanging_worker(DirectTransport::new(env.backend()), cfg, started.clone());
    started.notified().await;
    let report = worker.shutdown().await;
    assert_eq!((report.released, report.completed), (1, 0));
    env.wait_state(&id, PublicState::Waiting).await;

    let next = Worker::new(DirectTransport::new(env.backend()), config("long"), ())
        .handle("job", |ctx: TaskContext<()>, _: ()| async move { Ok(ctx.claim_kind() == HandleKind::Resumed) })
        .start()
        .unwrap();
    env.wait_state(&id, PublicState::Completed).await;
    next.shutdown().await;
    assert_eq!(env.client.result(&id).await.unwrap().unwrap(), b"true", "the same attempt resumed");
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_without_handlers_or_lanes_is_refused() {
    let env = Env::start().await;
    let transport = HttpTransport::new(env.client.clone());
    assert!(Worker::new(transport.clone(), config("l"), ()).start().is_err());
    let mut cfg = config("l");
    cfg.lanes.clear();
    let w = Worker::new(transport, cfg, ()).handle("k", |_: TaskContext<()>, _: ()| async move { Ok(()) });
    assert!(w.start().is_err());
    assert!(WorkerConfig::new("p", [""]).is_err());
    env.server.shutdown().await.unwrap();
}
