//! The worker runtime end to end against a real server and real Postgres, over both transports:
//! handlers by kind, typed payloads, shared state, errors and panics as failed attempts, lease
//! renewal keeping a slow handler alive, a killed worker's execution reclaimed by another,
//! shutdown releasing handlers that outlive the grace period, and the worker's presence in the
//! worker registry (registered at start, heartbeating, registering again when removed, leaving
//! at shutdown, staying after a kill until its liveness TTL lapses).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ff_backend_postgres::reconciler::{Reconciler, WorkerLivenessReconciler};
use ff_backend_postgres::{MIGRATOR, Metrics};
use ff_core::{
    EngineBackend, ExecutionId, HandleKind, ListWorkersArgs, MarkWorkerDeadArgs, MarkWorkerDeadOutcome, Namespace,
    PublicState, RegisterWorkerArgs, WorkerId, WorkerInfo, WorkerInstanceId,
};
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
    db: TestDb,
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
        Self { db, server, client }
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

    /// Live workers, read over HTTP.
    async fn workers(&self) -> Vec<WorkerInfo> {
        self.client.list_workers(&ListWorkersArgs::default()).await.expect("list workers").entries
    }

    async fn instances(&self) -> Vec<String> {
        self.workers().await.into_iter().map(|w| w.worker_instance_id.0).collect()
    }

    /// Polls until `done` holds of the live workers (heartbeats run in the background).
    async fn wait_workers(&self, what: &str, done: impl Fn(&[WorkerInfo]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let workers = self.workers().await;
            if done(&workers) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "waited in vain for {what}: {workers:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
async fn start_hanging_worker(
    transport: impl WorkerTransport,
    cfg: WorkerConfig,
    started: Arc<Notify>,
) -> RunningWorker {
    Worker::new(transport, cfg, started)
        .handle("job", |ctx: TaskContext<Arc<Notify>>, _: ()| async move {
            ctx.state().notify_one();
            std::future::pending::<()>().await;
            Ok(())
        })
        .start()
        .await
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
        .await
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

/// A worker with every permit taken claims each next execution with the completion of the
/// previous one; every execution still runs exactly once.
async fn a_busy_worker_claims_with_its_completions(http: bool) {
    let env = Env::start().await;
    let lane = "busy";
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(env.submit(lane, "count", json!(i)).await);
    }
    let state = Shared { greeting: String::new(), calls: AtomicU32::new(0) };
    let mut cfg = config(lane);
    cfg.concurrency = 2;
    let worker = Worker::new(env.transport(http)(), cfg, state)
        .handle("count", |ctx: TaskContext<Shared>, n: u32| async move {
            ctx.state().calls.fetch_add(1, Ordering::Relaxed);
            Ok(n * 2)
        })
        .start()
        .await
        .unwrap();
    for id in &ids {
        env.wait_state(id, PublicState::Completed).await;
    }
    let report = worker.shutdown().await;
    assert_eq!((report.completed, report.claimed, report.lease_lost), (30, 30, 0));
    assert!(report.claimed_on_completion > 0, "{report:?}");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(env.client.result(id).await.unwrap().unwrap(), (i * 2).to_string().as_bytes());
        let snap = env.client.describe(id).await.unwrap().unwrap();
        assert_eq!(snap.total_attempt_count, 1, "{id} ran once");
    }
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_busy_worker_claims_with_its_completions_over_http() {
    a_busy_worker_claims_with_its_completions(true).await;
}

#[tokio::test]
async fn a_busy_worker_claims_with_its_completions_directly_over_the_backend() {
    a_busy_worker_claims_with_its_completions(false).await;
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
        .await
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
    let doomed = start_hanging_worker(HttpTransport::new(env.client.clone()), doomed_cfg, started.clone()).await;
    started.notified().await;
    doomed.kill();

    let rescuer = Worker::new(HttpTransport::new(env.client.clone()), config("fragile"), ())
        .handle("job", |ctx: TaskContext<()>, _: ()| async move { Ok(ctx.claim_kind() == HandleKind::Reclaimed) })
        .start()
        .await
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
    let worker = start_hanging_worker(DirectTransport::new(env.backend()), cfg, started.clone()).await;
    started.notified().await;
    let report = worker.shutdown().await;
    assert_eq!((report.released, report.completed), (1, 0));
    // Released before the worker left the registry: waiting, not revoked.
    env.wait_state(&id, PublicState::Waiting).await;
    assert!(env.instances().await.is_empty());

    let next = Worker::new(DirectTransport::new(env.backend()), config("long"), ())
        .handle("job", |ctx: TaskContext<()>, _: ()| async move { Ok(ctx.claim_kind() == HandleKind::Resumed) })
        .start()
        .await
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
    assert!(Worker::new(transport.clone(), config("l"), ()).start().await.is_err());
    let mut cfg = config("l");
    cfg.lanes.clear();
    let w = Worker::new(transport, cfg, ()).handle("k", |_: TaskContext<()>, _: ()| async move { Ok(()) });
    assert!(w.start().await.is_err());
    assert!(WorkerConfig::new("p", [""]).is_err());
    env.server.shutdown().await.unwrap();
}

async fn registers_heartbeats_and_leaves(http: bool) {
    let env = Env::start().await;
    let mut cfg = config("reg");
    cfg.capabilities = vec!["gpu".into()];
    cfg.liveness_ttl = Duration::from_millis(1_000);
    cfg.namespace = "tenant-a".into();
    let worker = Worker::new(env.transport(http)(), cfg, ())
        .handle("job", |_: TaskContext<()>, _: ()| async move { Ok(()) })
        .start()
        .await
        .unwrap();
    let instance = worker.worker_instance_id().to_owned();
    let listed = env.workers().await;
    assert_eq!(listed.len(), 1, "registered by start: {listed:?}");
    let me = &listed[0];
    assert_eq!((me.worker_instance_id.as_str(), me.worker_id.as_str()), (instance.as_str(), "pool"));
    assert_eq!((me.namespace.as_str(), me.liveness_ttl_ms), ("tenant-a", 1_000));
    assert_eq!(me.lanes.iter().map(|l| l.as_str()).collect::<Vec<_>>(), ["reg"]);
    assert!(me.capabilities.0.contains("gpu"));
    env.wait_workers("a heartbeat", |w| w.first().is_some_and(|w| w.last_heartbeat_at_ms > w.registered_at_ms)).await;

    // Removed from the registry behind its back, it registers again on its next heartbeat.
    let dead = MarkWorkerDeadArgs {
        worker_instance_id: WorkerInstanceId::new(&instance),
        namespace: Namespace::new("tenant-a"),
        reason: "operator".into(),
    };
    let marked = env.client.mark_worker_dead(&WorkerId::new("pool"), &dead).await.unwrap();
    assert_eq!(marked, MarkWorkerDeadOutcome::Marked { revoked_leases: 0 });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while worker.report().reregistered == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the worker never registered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.instances().await, [instance.as_str()]);

    worker.shutdown().await;
    assert!(env.instances().await.is_empty(), "shutdown leaves the registry");
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_registers_heartbeats_and_leaves_over_http() {
    registers_heartbeats_and_leaves(true).await;
}

#[tokio::test]
async fn a_worker_registers_heartbeats_and_leaves_directly_over_the_backend() {
    registers_heartbeats_and_leaves(false).await;
}

async fn killed_worker_stays_until_its_ttl_lapses(http: bool) {
    let env = Env::start().await;
    let id = env.submit("crash", "job", json!(null)).await;
    let started = Arc::new(Notify::new());
    let mut cfg = config("crash");
    // A lease far longer than the test: only the lapsed registration can free the execution.
    cfg.lease_ttl = Duration::from_secs(600);
    cfg.liveness_ttl = Duration::from_secs(5);
    let doomed = start_hanging_worker(env.transport(http)(), cfg, started.clone()).await;
    let instance = doomed.worker_instance_id().to_owned();
    started.notified().await;
    doomed.kill();
    assert_eq!(env.instances().await, [instance.as_str()], "a killed worker does not deregister");

    // Its TTL lapses (moved into the past) and the liveness reconciler retires it.
    sqlx::query("UPDATE ff_worker SET expires_at_ms = ff_now_ms() - 1").execute(env.db.pool()).await.unwrap();
    WorkerLivenessReconciler::new(env.db.pool().clone(), 100, Arc::new(Metrics::default())).run_once().await.unwrap();
    assert!(env.instances().await.is_empty());

    let rescuer = Worker::new(env.transport(http)(), config("crash"), ())
        .handle("job", |ctx: TaskContext<()>, _: ()| async move { Ok(ctx.claim_kind() == HandleKind::Reclaimed) })
        .start()
        .await
        .unwrap();
    env.wait_state(&id, PublicState::Completed).await;
    rescuer.shutdown().await;
    assert_eq!(env.client.result(&id).await.unwrap().unwrap(), b"true", "reclaimed without waiting for the lease");
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_worker_stays_registered_until_its_ttl_lapses_over_http() {
    killed_worker_stays_until_its_ttl_lapses(true).await;
}

#[tokio::test]
async fn a_killed_worker_stays_registered_until_its_ttl_lapses_directly_over_the_backend() {
    killed_worker_stays_until_its_ttl_lapses(false).await;
}

async fn refused_registration_fails_start(http: bool) {
    let env = Env::start().await;
    let cfg = config("taken");
    let taken = RegisterWorkerArgs { worker_id: WorkerId::new("other-pool"), ..cfg.registration() };
    env.client.register_worker(&taken).await.unwrap();
    let err = Worker::new(env.transport(http)(), cfg, ())
        .handle("job", |_: TaskContext<()>, _: ()| async move { Ok(()) })
        .start()
        .await
        .err()
        .expect("start fails");
    assert_eq!(err.code(), Some("worker_instance_reassigned"), "{err}");
    let workers = env.workers().await;
    assert_eq!(workers.iter().map(|w| w.worker_id.as_str()).collect::<Vec<_>>(), ["other-pool"]);

    let mut bad_ttl = config("taken");
    bad_ttl.liveness_ttl = Duration::from_millis(10);
    let err = Worker::new(env.transport(http)(), bad_ttl, ())
        .handle("job", |_: TaskContext<()>, _: ()| async move { Ok(()) })
        .start()
        .await
        .err()
        .expect("start fails");
    assert!(matches!(err, ff_sdk::SdkError::Config(_)), "{err}");
    env.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_registration_fails_start_over_http() {
    refused_registration_fails_start(true).await;
}

#[tokio::test]
async fn a_refused_registration_fails_start_directly_over_the_backend() {
    refused_registration_fails_start(false).await;
}
