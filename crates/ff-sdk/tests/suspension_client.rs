//! Suspension from the SDK against a real server (which requires the API token) and real
//! Postgres: a handler mints a waitpoint, hands its token out and suspends; a client holding
//! only that token signals it; the same attempt runs again, reads the signal and completes with
//! its payload, over both transports. The simple wait is approved by an operator who finds the
//! waitpoint by listing; the operator calls decode into the backend's result types and a
//! refusal is an `SdkError::Api` with the server's code.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::{
    DeliverSignalArgs, DeliverSignalResult, EngineBackend, ExecutionId, HandleKind, ListPendingWaitpointsArgs,
    PendingWaitpoint, PublicState, ResumeExecutionArgs, RotateWaitpointHmacSecretAllArgs, RotationOutcome,
    SignalEffect, SuspensionReasonCode, WaitpointState,
};
use ff_sdk::{
    Client, DirectTransport, HandlerError, HttpTransport, SdkError, SubmitRequest, TaskContext, Worker, WorkerConfig,
    WorkerTransport,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::{Value, json};

const TOKEN: &str = "sdk-token";

struct Env {
    _db: TestDb,
    server: Server,
    /// Holds the API token.
    client: Client,
}

impl Env {
    async fn start() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.api_token = Some(TOKEN.into());
        cfg.pool_size = 8;
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        let client = Client::new(server.url()).unwrap().with_token(TOKEN);
        Self { _db: db, server, client }
    }

    fn backend(&self) -> Arc<dyn EngineBackend> {
        self.server.backend().clone()
    }

    /// A client without the API token, as an approver's would be.
    fn outsider(&self) -> Client {
        Client::new(self.server.url()).unwrap()
    }

    /// Polls until the execution reaches `want` (the worker runs in the background).
    async fn wait_state(&self, id: &ExecutionId, want: PublicState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.client.state(id).await.unwrap().expect("the execution exists");
            if state == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} stuck in {state:?}, wanted {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn submit(&self, lane: &str, kind: &str) -> ExecutionId {
        self.client.submit(&SubmitRequest::json(lane, kind, json!("contract.pdf"))).await.unwrap().execution_id()
    }

    async fn result(&self, id: &ExecutionId) -> Value {
        serde_json::from_slice(&self.client.result(id).await.unwrap().expect("a result")).unwrap()
    }
}

fn config(lane: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("pool", [lane]).unwrap();
    cfg.claim_max_wait = Duration::from_millis(200);
    cfg.shutdown_grace = Duration::from_secs(5);
    cfg
}

fn transport(env: &Env, http: bool) -> Arc<dyn WorkerTransport> {
    if http { Arc::new(HttpTransport::new(env.client.clone())) } else { Arc::new(DirectTransport::new(env.backend())) }
}

/// The waitpoint a handler handed out.
type Outbox = Arc<Mutex<Option<PendingWaitpoint>>>;

/// Asks for approval on its first run; completes with the decision's payload on the run the
/// signal wakes.
async fn review(ctx: TaskContext<Outbox>, doc: String) -> Result<Value, HandlerError> {
    if let Some(decision) = ctx.signals().await?.into_iter().find(|s| s.signal_name == "decision") {
        let payload: Value = serde_json::from_slice(&decision.payload.unwrap_or_default())?;
        let run = json!({"claim_kind": ctx.claim_kind().as_str(), "attempt": ctx.attempt_index().0});
        return Ok(json!({"doc": doc, "decision": payload, "by": decision.source_identity, "run": run}));
    }
    let wp = ctx.create_waitpoint("approval", Duration::from_secs(3600)).await?;
    *ctx.state().lock().unwrap() = Some(wp.clone());
    Err(HandlerError::suspend_on(&wp, "decision").because(SuspensionReasonCode::WaitingForApproval))
}

#[tokio::test]
async fn a_handler_suspends_and_a_signal_with_its_token_alone_resumes_it() {
    let env = Env::start().await;
    for http in [true, false] {
        let lane = if http { "review-http" } else { "review-direct" };
        let outbox = Outbox::default();
        let worker = Worker::new(transport(&env, http), config(lane), outbox.clone())
            .handle("review", review)
            .start()
            .await
            .unwrap();
        let id = env.submit(lane, "review").await;
        env.wait_state(&id, PublicState::Suspended).await;
        let wp = outbox.lock().unwrap().clone().expect("the handler handed its waitpoint out");

        let mut tampered = DeliverSignalArgs::new(id, wp.waitpoint_id, "decision", "user", "mallory");
        // The last digit changed to another one.
        let last = if wp.hmac_token.ends_with('0') { '1' } else { '0' };
        tampered.waitpoint_token = Some(format!("{}{last}", &wp.hmac_token[..wp.hmac_token.len() - 1]));
        let refused = env.outsider().signal(&tampered).await.unwrap_err();
        assert!(matches!(&refused, SdkError::Api { status: 400, code, .. } if code == "invalid_token"), "{refused}");

        let mut signal = DeliverSignalArgs::new(id, wp.waitpoint_id, "decision", "user", "ann");
        signal.waitpoint_token = Some(wp.hmac_token.clone());
        signal.payload = Some(br#"{"approved":true}"#.to_vec());
        signal.payload_encoding = Some("json".into());
        let delivered = env.outsider().signal(&signal).await.unwrap();
        assert!(
            matches!(delivered, DeliverSignalResult::Accepted { effect: SignalEffect::ResumeConditionSatisfied, .. }),
            "{lane}: {delivered:?}"
        );
        env.wait_state(&id, PublicState::Completed).await;
        let report = worker.shutdown().await;
        assert_eq!((report.suspended, report.completed, report.failed), (1, 1, 0), "{lane}: {report:?}");
        assert_eq!(
            env.result(&id).await,
            json!({"doc": "contract.pdf", "decision": {"approved": true}, "by": "ann",
                   "run": {"claim_kind": HandleKind::Resumed.as_str(), "attempt": 0}}),
            "{lane}"
        );
    }
}

#[tokio::test]
async fn an_operator_finds_the_simple_wait_and_approves_it() {
    let env = Env::start().await;
    let worker = Worker::new(HttpTransport::new(env.client.clone()), config("simple"), ())
        .handle("wait", |ctx: TaskContext<()>, _: Value| async move {
            match ctx.signals().await?.first() {
                Some(s) => Ok(json!({"woken_by": s.signal_name, "from": s.source_type})),
                None => Err(ctx.wait_for_signal("approved", Duration::from_secs(3600)).await),
            }
        })
        .start()
        .await
        .unwrap();
    let id = env.submit("simple", "wait").await;
    env.wait_state(&id, PublicState::Suspended).await;
    let c = &env.client;
    let suspended = c.list_suspended(Some(id.partition_index()), None, 10).await.unwrap();
    assert_eq!(suspended.entries.iter().map(|e| e.execution_id).collect::<Vec<_>>(), vec![id]);
    let args = ListPendingWaitpointsArgs { execution_id: id, after: None, limit: None };
    let listed = c.list_pending_waitpoints(&args).await.unwrap().entries;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].waitpoint_key.as_str(), listed[0].state), ("approved", WaitpointState::Active));
    let token = c.read_waitpoint_token(&id, &listed[0].waitpoint_id).await.unwrap().expect("an open waitpoint's token");
    assert!(token.starts_with(&format!("{}:", listed[0].token_kid)), "{token}");
    let refused = env.outsider().approve(&id, &listed[0].waitpoint_id).await.unwrap_err();
    assert!(matches!(&refused, SdkError::Api { status: 401, .. }), "operators need the API token: {refused}");

    let approved = c.approve(&id, &listed[0].waitpoint_id).await.unwrap();
    assert!(matches!(approved, DeliverSignalResult::Accepted { effect: SignalEffect::ResumeConditionSatisfied, .. }));
    env.wait_state(&id, PublicState::Completed).await;
    assert_eq!(env.result(&id).await, json!({"woken_by": "approved", "from": "operator"}));
    assert_eq!(c.read_waitpoint_token(&id, &listed[0].waitpoint_id).await.unwrap(), None, "closed on resume");
    worker.shutdown().await;

    let resume = ResumeExecutionArgs { execution_id: id, trigger_type: "operator".into(), resume_delay_ms: 0 };
    let err = c.resume_execution(&resume).await.unwrap_err();
    assert!(matches!(&err, SdkError::Api { status: 409, code, .. } if code == "terminal"), "{err}");

    let rotate =
        RotateWaitpointHmacSecretAllArgs { new_kid: "k9".into(), new_secret_hex: "9a".repeat(32), grace_ms: 1000 };
    let err = env.outsider().rotate_waitpoint_hmac_secret_all(&rotate).await.unwrap_err();
    assert!(matches!(&err, SdkError::Api { status: 401, .. }), "{err}");
    let rotated = c.rotate_waitpoint_hmac_secret_all(&rotate).await.unwrap();
    assert!(
        matches!(&rotated.entries[..], [RotationOutcome::Rotated { new_kid, .. }] if new_kid == "k9"),
        "{rotated:?}"
    );
}
