//! Admission from the SDK against a real server and real Postgres: handlers charging a strict
//! budget until it runs out, after which the remaining executions wait (`rate_limited`,
//! `waiting_for_budget`) until a reset lets them run, over both transports; a quota policy with
//! one slot per concurrency key never running two executions of one key at once; and the
//! budget, quota and scheduling calls decoding into the backend traits' result types, a
//! refusal being an `SdkError::Api` with the server's code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::{
    BlockExecutionForAdmissionArgs, BlockOutcome, BlockRouteArgs, BlockingReason, BudgetId, CheckAdmissionArgs,
    CheckAdmissionResult, ClaimExecutionArgs, ClaimForWorkerArgs, ClaimForWorkerOutcome, CreateBudgetResult,
    CreateQuotaPolicyResult, EligibilityState, EnforcementMode, EngineBackend, ExecutionId, IssueClaimGrantArgs,
    IssueClaimGrantOutcome, IssueGrantAndClaimArgs, LaneId, PublicState, QuotaPolicyId, RecordSpendArgs,
    ReleaseAdmissionArgs, ReleaseAdmissionResult, ReleaseBudgetArgs, ReportUsageAdminArgs, ReportUsageResult,
    ResetBudgetArgs, ScanEligibleArgs, SetBudgetLimitsArgs, UnblockExecutionArgs, WorkerId, WorkerInstanceId,
};
use ff_sdk::{
    Client, DirectTransport, HttpTransport, SdkError, SubmitRequest, TaskContext, Worker, WorkerConfig, WorkerTransport,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::json;

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
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        let client = Client::new(server.url()).unwrap();
        Self { _db: db, server, client }
    }

    fn backend(&self) -> Arc<dyn EngineBackend> {
        self.server.backend().clone()
    }

    /// Polls until `done` holds of the executions' snapshots (the worker runs in the background).
    async fn wait_until(&self, ids: &[ExecutionId], what: &str, done: impl Fn(&[ff_core::ExecutionSnapshot]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut snaps = Vec::new();
            for id in ids {
                snaps.push(self.client.describe(id).await.unwrap().expect("the execution exists"));
            }
            if done(&snaps) {
                return;
            }
            let states: Vec<_> =
                snaps.iter().map(|s| (s.public_state, s.blocking_reason.clone().unwrap_or_default())).collect();
            assert!(tokio::time::Instant::now() < deadline, "never {what}: {states:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn config(lane: &str, concurrency: usize) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("pool", [lane]).unwrap();
    cfg.concurrency = concurrency;
    cfg.claim_batch = concurrency;
    cfg.claim_max_wait = Duration::from_millis(200);
    cfg.shutdown_grace = Duration::from_secs(5);
    cfg
}

fn code(e: SdkError) -> (u16, String) {
    match e {
        SdkError::Api { status, code, .. } => (status, code),
        other => panic!("not an API error: {other}"),
    }
}

fn count(snaps: &[ff_core::ExecutionSnapshot], state: PublicState) -> usize {
    snaps.iter().filter(|s| s.public_state == state).count()
}

#[tokio::test]
async fn handlers_exhaust_a_strict_budget_and_the_rest_wait_until_it_is_reset() {
    let env = Env::start().await;
    let c = &env.client;
    for http in [true, false] {
        let lane = if http { "llm-http" } else { "llm-direct" };
        let budget = BudgetId::new();
        let created = c.budget(budget).scope("tenant", "acme").dimension("tokens", 300, 250).strict().create().await;
        assert_eq!(created.unwrap(), CreateBudgetResult::Created);
        let mut ids = Vec::new();
        for _ in 0..6 {
            let req = SubmitRequest::json(lane, "llm.call", json!(100)).budget(budget);
            ids.push(c.submit(&req).await.unwrap().execution_id());
        }
        let transport: Arc<dyn WorkerTransport> =
            if http { Arc::new(HttpTransport::new(c.clone())) } else { Arc::new(DirectTransport::new(env.backend())) };
        // One handler at a time, so the budget runs out between two executions.
        let worker = Worker::new(transport, config(lane, 1), budget)
            .handle("llm.call", |ctx: TaskContext<BudgetId>, tokens: i64| async move {
                match ctx.report_usage(*ctx.state(), [("tokens", tokens)]).await? {
                    ReportUsageResult::HardBreach { dimension, .. } => {
                        Err(ff_sdk::HandlerError::permanent(format!("no {dimension} left")))
                    }
                    other => Ok(serde_json::to_value(other)?),
                }
            })
            .start()
            .await
            .unwrap();

        env.wait_until(&ids, "three completed and three waiting for the budget", |snaps| {
            count(snaps, PublicState::Completed) == 3 && count(snaps, PublicState::RateLimited) == 3
        })
        .await;
        for id in &ids {
            let s = c.describe(id).await.unwrap().expect("the execution exists");
            if s.public_state == PublicState::RateLimited {
                assert_eq!(s.blocking_reason.as_deref(), Some("waiting_for_budget"), "{lane}: {s:?}");
                assert_eq!(s.state.eligibility_state, EligibilityState::BlockedByBudget, "{lane}");
            }
        }
        let status = c.get_budget_status(&budget).await.unwrap();
        assert_eq!((status.exhausted, status.blocked_executions), (true, 3), "{lane}: {status:?}");
        assert_eq!(status.usage.get("tokens"), Some(&300), "{lane}");
        assert_eq!(status.soft_breach_count, 1, "{lane}: {status:?}");

        let reset = c.reset_budget(&ResetBudgetArgs { budget_id: budget }).await.unwrap();
        assert_eq!(reset.unblocked, 3, "{lane}: {reset:?}");
        env.wait_until(&ids, "all completed", |snaps| count(snaps, PublicState::Completed) == 6).await;
        let report = worker.shutdown().await;
        assert_eq!((report.completed, report.failed), (6, 0), "{lane}: {report:?}");
    }
}

/// What the handlers of the per-key test saw.
#[derive(Default)]
struct Tracker {
    running: BTreeMap<String, u32>,
    most_at_once: BTreeMap<String, u32>,
    keys_overlapped: bool,
}

#[tokio::test]
async fn a_quota_policy_never_runs_two_executions_of_one_key_at_once() {
    let env = Env::start().await;
    let c = &env.client;
    let policy = QuotaPolicyId::new();
    assert_eq!(
        c.quota_policy(policy).max_concurrent_per_key(1).create().await.unwrap(),
        CreateQuotaPolicyResult::Created
    );
    let mut ids = Vec::new();
    for key in ["acme", "globex"] {
        for _ in 0..3 {
            let req = SubmitRequest::json("keyed", "job", json!(key)).quota_policy(policy).concurrency_key(key);
            ids.push(c.submit(&req).await.unwrap().execution_id());
        }
    }
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let worker = Worker::new(HttpTransport::new(c.clone()), config("keyed", 4), tracker.clone())
        .handle("job", |ctx: TaskContext<Arc<Mutex<Tracker>>>, key: String| async move {
            {
                let mut t = ctx.state().lock().unwrap();
                let n = t.running.entry(key.clone()).or_default();
                *n += 1;
                let n = *n;
                let most = t.most_at_once.entry(key.clone()).or_default();
                *most = (*most).max(n);
                if t.running.values().filter(|n| **n > 0).count() > 1 {
                    t.keys_overlapped = true;
                }
            }
            // Each key has its own slot, so the other key's executions run meanwhile: wait to see
            // one (bounded, so a missing overlap fails the assertion below, not the test's clock).
            for _ in 0..500 {
                if ctx.state().lock().unwrap().keys_overlapped {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            *ctx.state().lock().unwrap().running.get_mut(&key).unwrap() -= 1;
            Ok(key)
        })
        .start()
        .await
        .unwrap();
    env.wait_until(&ids, "all completed", |snaps| count(snaps, PublicState::Completed) == 6).await;
    let report = worker.shutdown().await;
    assert_eq!(report.completed, 6, "{report:?}");
    {
        let t = tracker.lock().unwrap();
        assert_eq!(t.most_at_once, BTreeMap::from([("acme".into(), 1), ("globex".into(), 1)]));
        assert!(t.keys_overlapped, "the two keys never ran at the same time");
    }
    let status = c.get_quota_policy_status(&policy).await.unwrap();
    assert_eq!((status.active, status.waiting), (0, 0), "{status:?}");
}

#[tokio::test]
async fn the_admission_calls_round_trip_and_refusals_carry_the_servers_code() {
    let env = Env::start().await;
    let c = &env.client;

    // Budgets.
    let budget = BudgetId::new();
    let builder =
        c.budget(budget).scope("tenant", "acme").dimension("usd", 10, 0).warn().reset_every(Duration::from_secs(3600));
    assert_eq!(builder.args().enforcement_mode, EnforcementMode::Warn);
    assert_eq!(builder.args().reset_interval_ms, 3_600_000);
    assert_eq!(builder.create().await.unwrap(), CreateBudgetResult::Created);
    let again =
        c.budget(budget).scope("tenant", "acme").dimension("usd", 10, 0).warn().reset_every(Duration::from_secs(3600));
    assert_eq!(again.create().await.unwrap(), CreateBudgetResult::AlreadySatisfied);
    let other = c.budget(budget).scope("tenant", "acme").dimension("usd", 20, 0).create().await.unwrap_err();
    assert_eq!(code(other), (409, "budget_already_exists".into()));
    let unscoped = c.budget(BudgetId::new()).dimension("usd", 1, 0).create().await.unwrap_err();
    assert_eq!(code(unscoped).0, 400);
    let mismatched = SetBudgetLimitsArgs {
        budget_id: budget,
        dimensions: vec!["usd".into()],
        hard_limits: vec![1, 2],
        soft_limits: vec![0],
    };
    assert_eq!(code(c.set_budget_limits(&mismatched).await.unwrap_err()), (400, "invalid_budget_spec".into()));
    let report = ReportUsageAdminArgs { dimensions: vec!["usd".into()], deltas: vec![12], dedup_key: None };
    // Warn mode: a hard breach is reported, nothing is applied, nothing is stopped.
    let breach = c.report_usage_admin(&budget, &report).await.unwrap();
    assert!(matches!(breach, ReportUsageResult::HardBreach { ref dimension, .. } if dimension == "usd"), "{breach:?}");
    let raised = SetBudgetLimitsArgs { hard_limits: vec![20], ..mismatched };
    assert!(!c.set_budget_limits(&raised).await.unwrap().exhausted);
    assert_eq!(c.report_usage_admin(&budget, &report).await.unwrap(), ReportUsageResult::Ok);
    let exec = c.submit(&SubmitRequest::json("sched", "k", json!(1)).budget(budget)).await.unwrap().execution_id();
    let spend = RecordSpendArgs {
        budget_id: budget,
        execution_id: exec,
        deltas: [("usd".to_owned(), 3)].into(),
        idempotency_key: "invoice-1".into(),
    };
    assert_eq!(c.record_spend(&spend).await.unwrap(), ReportUsageResult::Ok);
    assert_eq!(c.record_spend(&spend).await.unwrap(), ReportUsageResult::AlreadyApplied);
    let flat = c.read_budget_usage_and_limits(&budget).await.unwrap();
    assert_eq!((flat.usage.get("usd"), flat.limits.get("hard:usd")), (Some(&15), Some(&20)));
    let released = c.release_budget(&ReleaseBudgetArgs { budget_id: budget, execution_id: exec }).await.unwrap();
    assert_eq!(released.released, BTreeMap::from([("usd".to_owned(), 3)]));
    let status = c.get_budget_status(&budget).await.unwrap();
    assert_eq!(
        (status.usage.get("usd"), status.enforcement_mode, status.exhausted),
        (Some(&12), EnforcementMode::Warn, false)
    );
    assert!(status.next_reset_at.is_some(), "{status:?}");
    let ghost = BudgetId::new();
    assert!(c.read_budget_usage_and_limits(&ghost).await.unwrap().usage.is_empty());
    assert_eq!(code(c.get_budget_status(&ghost).await.unwrap_err()), (404, "not_found".into()));
    let orphan = c.submit(&SubmitRequest::json("sched", "k", json!(1)).budget(ghost)).await.unwrap_err();
    assert_eq!(code(orphan), (404, "not_found".into()));

    // Quota policies.
    let policy = QuotaPolicyId::new();
    let builder =
        c.quota_policy(policy).max_concurrent(1).rate(10, Duration::from_millis(1500)).jitter(Duration::from_millis(5));
    assert_eq!((builder.args().window_seconds, builder.args().jitter_ms), (Some(2), 5));
    assert_eq!(builder.create().await.unwrap(), CreateQuotaPolicyResult::Created);
    let limits = c.read_quota_policy_limits(&policy).await.unwrap().expect("the policy exists");
    assert_eq!(
        (limits.active_concurrency_cap, limits.max_requests_per_window, limits.requests_per_window_seconds),
        (1, 10, 2)
    );
    assert_eq!(c.read_quota_policy_limits(&QuotaPolicyId::new()).await.unwrap(), None);
    let empty = c.quota_policy(QuotaPolicyId::new()).create().await.unwrap_err();
    assert_eq!(code(empty), (400, "invalid_quota_spec".into()));
    let zero = c.quota_policy(QuotaPolicyId::new()).max_concurrent(0).create().await.unwrap_err();
    assert_eq!(code(zero), (400, "invalid_quota_spec".into()));
    let admit = |e: ExecutionId| CheckAdmissionArgs {
        execution_id: e,
        window_seconds: None,
        rate_limit: None,
        concurrency_cap: None,
        jitter_ms: None,
    };
    let (a, b) = (ExecutionId::in_partition(1), ExecutionId::in_partition(2));
    assert_eq!(c.check_admission(&policy, "calls", &admit(a)).await.unwrap(), CheckAdmissionResult::Admitted);
    assert_eq!(
        c.check_admission(&policy, "calls", &admit(b)).await.unwrap(),
        CheckAdmissionResult::ConcurrencyExceeded
    );
    assert_eq!(c.get_quota_policy_status(&policy).await.unwrap().active, 1);
    let release = ReleaseAdmissionArgs { quota_policy_id: policy, execution_id: a };
    assert_eq!(c.release_admission(&release).await.unwrap(), ReleaseAdmissionResult::Released);
    assert_eq!(c.release_admission(&release).await.unwrap(), ReleaseAdmissionResult::NotHeld);

    // Grants, the eligible scan, blocks.
    let lane = LaneId::try_new("sched").unwrap();
    let scan = ScanEligibleArgs { lane_id: lane.clone(), partition: None, limit: 10 };
    assert_eq!(c.scan_eligible_executions(&scan).await.unwrap(), vec![exec]);
    let want = ClaimForWorkerArgs {
        lane_id: lane.clone(),
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("w1"),
        worker_capabilities: Default::default(),
        grant_ttl_ms: 30_000,
    };
    let ClaimForWorkerOutcome::Granted(grant) = c.claim_for_worker(&want).await.unwrap() else { panic!("no grant") };
    assert_eq!(grant.execution_id, exec);
    assert_eq!(c.claim_for_worker(&want).await.unwrap(), ClaimForWorkerOutcome::NoWork);
    let claim = |worker: &str| ClaimExecutionArgs {
        execution_id: exec,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: lane.clone(),
        grant_key: grant.grant_key.clone(),
        lease_ttl_ms: 30_000,
    };
    assert_eq!(code(c.claim_execution(&claim("w2")).await.unwrap_err()), (409, "invalid_claim_grant".into()));
    let task = c.claim_execution(&claim("w1")).await.unwrap();
    assert_eq!((task.execution_id, task.execution_kind.as_str(), task.input.as_slice()), (exec, "k", b"1".as_slice()));
    assert_eq!(code(c.claim_execution(&claim("w1")).await.unwrap_err()), (409, "invalid_claim_grant".into()));
    let http = HttpTransport::new(c.clone());
    http.complete(&task, None).await.unwrap();
    assert_eq!(c.state(&exec).await.unwrap(), Some(PublicState::Completed));

    let chosen = c.submit(&SubmitRequest::json("sched", "k", json!(2))).await.unwrap().execution_id();
    let issue = IssueClaimGrantArgs {
        execution_id: chosen,
        lane_id: lane.clone(),
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("w1"),
        worker_capabilities: Default::default(),
        grant_ttl_ms: 30_000,
    };
    let IssueClaimGrantOutcome::Granted(granted) = c.issue_claim_grant(&issue).await.unwrap();
    assert_eq!(granted.execution_id, chosen);
    let to_other = IssueClaimGrantArgs { worker_instance_id: WorkerInstanceId::new("w2"), ..issue };
    assert_eq!(code(c.issue_claim_grant(&to_other).await.unwrap_err()), (409, "execution_not_eligible".into()));
    let operator = IssueGrantAndClaimArgs { execution_id: chosen, lane_id: lane.clone(), lease_duration_ms: 30_000 };
    let claimed = c.issue_grant_and_claim(&operator).await.unwrap();
    assert_eq!(claimed.handle.execution_id().unwrap(), chosen);

    let parked = c.submit(&SubmitRequest::json("sched", "k", json!(3))).await.unwrap().execution_id();
    let block = BlockExecutionForAdmissionArgs {
        execution_id: parked,
        lane_id: lane.clone(),
        reason: BlockingReason::WaitingForQuota,
        reason_detail: None,
    };
    assert_eq!(
        c.block_execution_for_admission(&block).await.unwrap(),
        BlockOutcome::Blocked { execution_id: parked, reason: BlockingReason::WaitingForQuota }
    );
    let unblock = UnblockExecutionArgs {
        execution_id: parked,
        lane_id: lane.clone(),
        expected_blocking_reason: BlockingReason::WaitingForBudget,
    };
    assert_eq!(code(c.unblock_execution(&unblock).await.unwrap_err()), (409, "not_blocked".into()));
    let unblock = UnblockExecutionArgs { expected_blocking_reason: BlockingReason::WaitingForQuota, ..unblock };
    assert_eq!(c.unblock_execution(&unblock).await.unwrap().eligibility, EligibilityState::EligibleNow);
    let route =
        BlockRouteArgs { execution_id: parked, lane_id: lane, reason_code: "no_gpu".into(), reason_detail: None };
    assert_eq!(
        c.block_route(&route).await.unwrap(),
        BlockOutcome::Blocked { execution_id: parked, reason: BlockingReason::WaitingForCapableWorker }
    );
}
