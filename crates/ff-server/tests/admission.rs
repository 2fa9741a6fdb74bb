//! Admission over HTTP, through the router (`oneshot`) over real Postgres: budgets (create,
//! read, usage by an administrator and by the lease holder, limits, reset, spend and release),
//! quota policies (create, read, admissions outside the claim path), claim grants (a lane's
//! best execution or a chosen one reserved for one worker, claimed once with the grant's key,
//! the operator's immediate claim), the eligible scan, and blocking and unblocking. Every
//! refusal is checked to write nothing (a fingerprint of the stored rows, the admission tables
//! included, is compared before and after), and every route requires the bearer token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ff_backend_postgres::{MIGRATOR, PostgresBackend};
use ff_core::wire::{ClaimResponse, ClaimedExecution};
use ff_core::{BudgetId, ExecutionId, LaneId, PartitionConfig, QuotaPolicyId};
use ff_server::{AppState, Telemetry, router};
use ff_test::TestDb;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "admission-token";

/// The API's router over a fresh database; no reconcilers run, so nothing changes between
/// two requests but the requests.
struct App {
    db: TestDb,
    router: Router,
}

impl App {
    async fn start() -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let backend = PostgresBackend::from_pool(db.pool().clone(), PartitionConfig::default());
        let telemetry = Arc::new(Telemetry::new(backend.metrics().clone(), None));
        let state = AppState::new(backend, PartitionConfig::default(), Some(TOKEN.to_owned()), telemetry);
        Self { db, router: router(state, &[]).expect("router") }
    }

    /// Sends `body` (as JSON, when given) with `authorization`; returns the status and the body
    /// (`Null` when empty).
    async fn send(
        &self,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }

    /// A request with the bearer token.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(Some(&format!("Bearer {TOKEN}")), method, path, body).await
    }

    /// A request that must answer `status`; returns the body.
    async fn ok(&self, method: Method, path: &str, body: Option<Value>, status: u16) -> Value {
        let (s, b) = self.call(method.clone(), path, body).await;
        assert_eq!(s.as_u16(), status, "{method} {path}: {b}");
        b
    }

    /// Every stored execution, attempt, event count, grant, budget and quota row, as text.
    async fn fingerprint(&self) -> String {
        let tables = [
            "ff_execution",
            "ff_attempt",
            "ff_reclaim_grant",
            "ff_claim_grant",
            "ff_budget",
            "ff_budget_dimension",
            "ff_budget_report",
            "ff_budget_spend",
            "ff_budget_member",
            "ff_quota_policy",
            "ff_quota_key",
            "ff_quota_window",
            "ff_quota_admission",
        ];
        let mut out = String::new();
        for table in tables {
            let rows: Option<String> =
                sqlx::query_scalar(&format!("SELECT string_agg(t::text, '|' ORDER BY t::text) FROM {table} t"))
                    .fetch_one(self.db.pool())
                    .await
                    .unwrap();
            out.push_str(&format!("{table}:{}#", rows.unwrap_or_default()));
        }
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_event").fetch_one(self.db.pool()).await.unwrap();
        format!("{out}events:{events}")
    }

    /// Sends a request that must be refused with `status` and `code`, and checks it wrote
    /// nothing; returns the error body.
    async fn refused(&self, method: Method, path: &str, body: Option<Value>, status: u16, code: &str) -> Value {
        let before = self.fingerprint().await;
        let (s, b) = self.call(method.clone(), path, body).await;
        assert_error(s, &b, status, code);
        assert_eq!(self.fingerprint().await, before, "{method} {path} wrote although refused");
        b
    }

    /// Submits an execution on `lane` with `policy`; returns its id.
    async fn submit(&self, lane: &str, policy: Value) -> ExecutionId {
        let id = ExecutionId::solo(&LaneId::try_new(lane).unwrap(), &PartitionConfig::default());
        let body = json!({"execution_id": id, "lane_id": lane, "execution_kind": "k", "input": {"n": 1},
                          "policy": policy});
        self.ok(Method::POST, "/v1/executions", Some(body), 201).await;
        id
    }

    /// Claims up to `max` executions of `lane` as worker instance `worker`.
    async fn claim(&self, lane: &str, worker: &str, max: usize) -> Vec<ClaimedExecution> {
        let body = json!({"lane_id": lane, "worker_instance_id": worker, "lease_ttl_ms": 600000, "max": max});
        let claimed = self.ok(Method::POST, "/v1/workers/pool/claim", Some(body), 200).await;
        serde_json::from_value::<ClaimResponse>(claimed).unwrap().claimed
    }

    async fn complete(&self, id: ExecutionId, handle: &str) {
        self.ok(Method::POST, &format!("/v1/executions/{id}/complete"), Some(json!({"handle": handle})), 204).await;
    }

    async fn state(&self, id: ExecutionId) -> Value {
        self.ok(Method::GET, &format!("/v1/executions/{id}"), None, 200).await
    }

    /// Creates a strict budget of `tokens` with the hard limit `hard`; returns its id.
    async fn budget(&self, hard: u64) -> BudgetId {
        let id = BudgetId::new();
        let body = json!({"budget_id": id, "scope_type": "tenant", "scope_id": "acme", "enforcement_mode": "strict",
                          "dimensions": ["tokens"], "hard_limits": [hard], "soft_limits": [0]});
        assert_eq!(self.ok(Method::POST, "/v1/budgets", Some(body), 201).await, json!("created"));
        id
    }
}

/// Checks an error answer: its status, its code, and the shape of its body.
fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!((status.as_u16(), body["code"].as_str()), (want_status, Some(want_code)), "{body}");
    assert!(body["message"].is_string() && body["retryable"].is_boolean(), "{body}");
}

#[tokio::test]
async fn a_budget_is_created_charged_limited_reset_and_released() {
    let app = App::start().await;
    let id = BudgetId::new();
    let definition = json!({"budget_id": id, "scope_type": "tenant", "scope_id": "acme", "enforcement_mode": "strict",
                            "on_hard_limit": "stop", "dimensions": ["tokens", "usd"], "hard_limits": [100, 0],
                            "soft_limits": [80, 5]});
    assert_eq!(app.ok(Method::POST, "/v1/budgets", Some(definition.clone()), 201).await, json!("created"));
    assert_eq!(app.ok(Method::POST, "/v1/budgets", Some(definition.clone()), 200).await, json!("already_satisfied"));
    let mut other = definition.clone();
    other["hard_limits"] = json!([200, 0]);
    app.refused(Method::POST, "/v1/budgets", Some(other), 409, "budget_already_exists").await;

    let path = format!("/v1/budgets/{id}");
    let status = app.ok(Method::GET, &path, None, 200).await;
    assert_eq!(status["budget_id"], json!(id));
    assert_eq!(status["enforcement_mode"], "strict");
    assert_eq!(status["on_hard_limit"], "stop");
    assert_eq!(status["usage"], json!({"tokens": 0, "usd": 0}));
    assert_eq!(status["hard_limits"], json!({"tokens": 100}));
    assert_eq!(status["soft_limits"], json!({"tokens": 80, "usd": 5}));
    assert_eq!(status["exhausted"], false);
    let flat = app.ok(Method::GET, &format!("{path}/usage-and-limits"), None, 200).await;
    assert_eq!(
        flat,
        json!({"limits": {"hard:tokens": 100, "soft:tokens": 80, "soft:usd": 5},
                            "usage": {"tokens": 0, "usd": 0}})
    );

    let report = |deltas: i64, dedup: Option<&str>| {
        let mut body = json!({"dimensions": ["tokens"], "deltas": [deltas]});
        if let Some(k) = dedup {
            body["dedup_key"] = json!(k);
        }
        body
    };
    let usage = format!("{path}/usage");
    assert_eq!(app.ok(Method::POST, &usage, Some(report(50, None)), 200).await, json!({"status": "ok"}));
    assert_eq!(
        app.ok(Method::POST, &usage, Some(report(35, Some("r1"))), 200).await,
        json!({"status": "soft_breach", "dimension": "tokens", "current_usage": 85, "soft_limit": 80})
    );
    // A replayed dedup key applies nothing.
    app.ok(Method::POST, &usage, Some(report(35, Some("r1"))), 200).await;
    assert_eq!(app.ok(Method::GET, &path, None, 200).await["usage"]["tokens"], 85);
    assert_eq!(
        app.ok(Method::POST, &usage, Some(report(20, None)), 200).await,
        json!({"status": "hard_breach", "dimension": "tokens", "current_usage": 85, "hard_limit": 100})
    );
    let status = app.ok(Method::GET, &path, None, 200).await;
    assert_eq!((status["usage"]["tokens"].clone(), status["exhausted"].clone()), (json!(85), json!(true)));
    assert_eq!(status["breach_count"], 1);

    // Limits: the path's budget; the body may repeat it, never name another.
    let limits = json!({"dimensions": ["tokens"], "hard_limits": [200], "soft_limits": [0]});
    let mut elsewhere = limits.clone();
    elsewhere["budget_id"] = json!(BudgetId::new());
    app.refused(Method::PUT, &format!("{path}/limits"), Some(elsewhere), 400, "budget_id_mismatch").await;
    let mut repeated = limits.clone();
    repeated["budget_id"] = json!(id);
    let changed = app.ok(Method::PUT, &format!("{path}/limits"), Some(repeated), 200).await;
    assert_eq!(changed["exhausted"], false, "{changed}");
    let status = app.ok(Method::GET, &path, None, 200).await;
    assert_eq!(status["hard_limits"], json!({"tokens": 200}));
    assert_eq!(status["soft_limits"], json!({"usd": 5}), "{status}");

    // Spend attributed to an execution, at most once per key, and given back.
    let exec = app.submit("spend", json!({"budget_ids": [id]})).await;
    let spend = json!({"execution_id": exec, "deltas": {"tokens": 10}, "idempotency_key": "s1"});
    assert_eq!(app.ok(Method::POST, &format!("{path}/spend"), Some(spend.clone()), 200).await, json!({"status": "ok"}));
    assert_eq!(
        app.ok(Method::POST, &format!("{path}/spend"), Some(spend), 200).await,
        json!({"status": "already_applied"})
    );
    assert_eq!(app.ok(Method::GET, &path, None, 200).await["usage"]["tokens"], 95);
    let release = json!({"execution_id": exec});
    assert_eq!(
        app.ok(Method::POST, &format!("{path}/release"), Some(release.clone()), 200).await,
        json!({"released": {"tokens": 10}})
    );
    assert_eq!(app.ok(Method::POST, &format!("{path}/release"), Some(release), 200).await, json!({"released": {}}));
    assert_eq!(app.ok(Method::GET, &path, None, 200).await["usage"]["tokens"], 85);

    let reset = app.ok(Method::POST, &format!("{path}/reset"), None, 200).await;
    assert_eq!(reset["exhausted"], false, "{reset}");
    assert_eq!(app.ok(Method::GET, &path, None, 200).await["usage"], json!({"tokens": 0, "usd": 0}));
}

#[tokio::test]
async fn bad_budget_input_is_refused_and_writes_nothing() {
    let app = App::start().await;
    let id = app.budget(100).await;
    let create = |dims: Value, hard: Value, soft: Value| {
        json!({"budget_id": BudgetId::new(), "scope_type": "tenant", "scope_id": "acme",
               "enforcement_mode": "strict", "dimensions": dims, "hard_limits": hard, "soft_limits": soft})
    };
    for body in [
        create(json!(["tokens", "usd"]), json!([100]), json!([0, 0])),
        create(json!(["tokens"]), json!([100]), json!([])),
        create(json!([]), json!([]), json!([])),
        create(json!(["tokens", "tokens"]), json!([1, 1]), json!([0, 0])),
        create(json!(["tokens"]), json!([10]), json!([11])),
    ] {
        app.refused(Method::POST, "/v1/budgets", Some(body), 400, "invalid_budget_spec").await;
    }
    let usage = format!("/v1/budgets/{id}/usage");
    for body in [
        json!({"dimensions": ["tokens"], "deltas": [-1]}),
        json!({"dimensions": ["tokens"], "deltas": [1, 2]}),
        json!({"dimensions": [], "deltas": []}),
    ] {
        app.refused(Method::POST, &usage, Some(body), 400, "invalid_budget_spec").await;
    }
    let limits = format!("/v1/budgets/{id}/limits");
    let mismatched = json!({"dimensions": ["tokens"], "hard_limits": [1, 2], "soft_limits": [0]});
    app.refused(Method::PUT, &limits, Some(mismatched), 400, "invalid_budget_spec").await;
    let exec = app.submit("bad", json!({"budget_ids": [id]})).await;
    let negative = json!({"execution_id": exec, "deltas": {"tokens": -5}, "idempotency_key": "k"});
    app.refused(Method::POST, &format!("/v1/budgets/{id}/spend"), Some(negative), 400, "invalid_budget_spec").await;
    app.refused(
        Method::POST,
        &usage,
        Some(json!({"dimensions": ["tokens"], "deltas": [1], "extra": 1})),
        400,
        "invalid_input",
    )
    .await;
    app.refused(Method::GET, "/v1/budgets/not-a-uuid", None, 400, "invalid_path").await;

    let unknown = format!("/v1/budgets/{}", BudgetId::new());
    for (method, path, body) in [
        (Method::GET, unknown.clone(), None),
        (Method::GET, format!("{unknown}/usage-and-limits"), None),
        (Method::POST, format!("{unknown}/usage"), Some(json!({"dimensions": ["tokens"], "deltas": [1]}))),
        (
            Method::PUT,
            format!("{unknown}/limits"),
            Some(json!({"dimensions": ["tokens"], "hard_limits": [5], "soft_limits": [0]})),
        ),
        (Method::POST, format!("{unknown}/reset"), None),
        (
            Method::POST,
            format!("{unknown}/spend"),
            Some(json!({"execution_id": exec, "deltas": {"tokens": 1}, "idempotency_key": "k"})),
        ),
        (Method::POST, format!("{unknown}/release"), Some(json!({"execution_id": exec}))),
    ] {
        let b = app.refused(method.clone(), &path, body, 404, "not_found").await;
        assert!(b["message"].as_str().unwrap().contains("budget"), "{method} {path}: {b}");
    }

    // An execution drawing on a budget that does not exist is refused, and nothing is created.
    let lane = LaneId::try_new("bad").unwrap();
    let orphan = ExecutionId::solo(&lane, &PartitionConfig::default());
    let body = json!({"execution_id": orphan, "lane_id": "bad", "execution_kind": "k",
                      "policy": {"budget_ids": [BudgetId::new()]}});
    app.refused(Method::POST, "/v1/executions", Some(body), 404, "not_found").await;
    app.refused(Method::GET, &format!("/v1/executions/{orphan}"), None, 404, "not_found").await;
}

#[tokio::test]
async fn the_lease_holder_reports_usage_for_its_own_attempt() {
    let app = App::start().await;
    let budget = app.budget(100).await;
    let exec = app.submit("usage", json!({"budget_ids": [budget]})).await;
    let other = app.submit("usage", json!({"budget_ids": [budget]})).await;
    let claimed = app.claim("usage", "w1", 2).await;
    let mine = claimed.iter().find(|c| c.execution_id == exec).expect("claimed");
    let theirs = claimed.iter().find(|c| c.execution_id == other).expect("claimed");
    let report =
        |handle: &str, tokens: i64| json!({"handle": handle, "budget_id": budget, "deltas": {"tokens": tokens}});

    let path = format!("/v1/executions/{exec}/attempts/0/usage");
    assert_eq!(app.ok(Method::POST, &path, Some(report(&mine.handle, 40)), 200).await, json!({"status": "ok"}));
    let dedup = json!({"handle": mine.handle, "budget_id": budget, "deltas": {"tokens": 5}, "dedup_key": "tick-1"});
    app.ok(Method::POST, &path, Some(dedup.clone()), 200).await;
    app.ok(Method::POST, &path, Some(dedup), 200).await;
    assert_eq!(app.ok(Method::GET, &format!("/v1/budgets/{budget}"), None, 200).await["usage"]["tokens"], 45);

    app.refused(
        Method::POST,
        &format!("/v1/executions/{exec}/attempts/1/usage"),
        Some(report(&mine.handle, 1)),
        400,
        "handle_mismatch",
    )
    .await;
    app.refused(Method::POST, &path, Some(report(&theirs.handle, 1)), 400, "handle_mismatch").await;
    app.refused(Method::POST, &path, Some(report(&mine.handle, -1)), 400, "invalid_budget_spec").await;
    app.refused(Method::POST, &path, Some(report("ffh1.postgres.fresh.AAAA", 1)), 400, "invalid_handle").await;
    let unknown = json!({"handle": mine.handle, "budget_id": BudgetId::new(), "deltas": {"tokens": 1}});
    app.refused(Method::POST, &path, Some(unknown), 404, "not_found").await;

    app.complete(exec, &mine.handle).await;
    app.refused(Method::POST, &path, Some(report(&mine.handle, 1)), 409, "execution_not_active").await;
}

#[tokio::test]
async fn a_quota_policy_admits_outside_the_claim_path_within_its_cap() {
    let app = App::start().await;
    let id = QuotaPolicyId::new();
    let policy =
        json!({"quota_policy_id": id, "max_concurrent": 1, "window_seconds": 60, "max_requests_per_window": 100});
    assert_eq!(app.ok(Method::POST, "/v1/quota-policies", Some(policy.clone()), 201).await, json!("created"));
    assert_eq!(app.ok(Method::POST, "/v1/quota-policies", Some(policy.clone()), 200).await, json!("already_satisfied"));
    let mut other = policy.clone();
    other["max_concurrent"] = json!(2);
    app.refused(Method::POST, "/v1/quota-policies", Some(other), 409, "quota_policy_already_exists").await;

    let path = format!("/v1/quota-policies/{id}");
    let limits = json!({"max_requests_per_window": 100, "requests_per_window_seconds": 60, "active_concurrency_cap": 1,
                        "max_concurrent_per_key": 0, "jitter_ms": 0});
    assert_eq!(app.ok(Method::GET, &format!("{path}/limits"), None, 200).await, limits);
    let status = app.ok(Method::GET, &path, None, 200).await;
    assert_eq!((status["limits"].clone(), status["active"].clone()), (limits, json!(0)), "{status}");

    let (a, b) = (ExecutionId::in_partition(1), ExecutionId::in_partition(2));
    let admit = |e: ExecutionId| json!({"dimension": "calls", "execution_id": e});
    let release = |e: ExecutionId| json!({"execution_id": e});
    let admissions = format!("{path}/admissions");
    assert_eq!(app.ok(Method::POST, &admissions, Some(admit(a)), 200).await, json!({"status": "admitted"}));
    assert_eq!(app.ok(Method::POST, &admissions, Some(admit(a)), 200).await, json!({"status": "already_admitted"}));
    assert_eq!(app.ok(Method::POST, &admissions, Some(admit(b)), 200).await, json!({"status": "concurrency_exceeded"}));
    assert_eq!(app.ok(Method::GET, &path, None, 200).await["active"], 1);
    let released = format!("{admissions}/release");
    assert_eq!(app.ok(Method::POST, &released, Some(release(a)), 200).await, json!("released"));
    assert_eq!(app.ok(Method::POST, &released, Some(release(a)), 200).await, json!("not_held"));
    assert_eq!(app.ok(Method::POST, &admissions, Some(admit(b)), 200).await, json!({"status": "admitted"}));
}

#[tokio::test]
async fn bad_quota_input_is_refused_and_writes_nothing() {
    let app = App::start().await;
    let id = QuotaPolicyId::new();
    app.ok(Method::POST, "/v1/quota-policies", Some(json!({"quota_policy_id": id, "max_concurrent": 2})), 201).await;
    for body in [
        json!({"quota_policy_id": QuotaPolicyId::new(), "max_concurrent": 0}),
        json!({"quota_policy_id": QuotaPolicyId::new(), "max_concurrent_per_key": 0}),
        json!({"quota_policy_id": QuotaPolicyId::new()}),
        json!({"quota_policy_id": QuotaPolicyId::new(), "max_requests_per_window": 5}),
        json!({"quota_policy_id": QuotaPolicyId::new(), "window_seconds": 0, "max_requests_per_window": 5}),
    ] {
        app.refused(Method::POST, "/v1/quota-policies", Some(body), 400, "invalid_quota_spec").await;
    }
    let admit = json!({"dimension": "calls", "execution_id": ExecutionId::in_partition(0), "concurrency_cap": 0});
    app.refused(Method::POST, &format!("/v1/quota-policies/{id}/admissions"), Some(admit), 400, "invalid_quota_spec")
        .await;
    app.refused(
        Method::POST,
        "/v1/quota-policies",
        Some(json!({"quota_policy_id": id, "cap": 1})),
        400,
        "invalid_input",
    )
    .await;

    let unknown = format!("/v1/quota-policies/{}", QuotaPolicyId::new());
    let exec = ExecutionId::in_partition(0);
    for (method, path, body) in [
        (Method::GET, unknown.clone(), None),
        (Method::GET, format!("{unknown}/limits"), None),
        (Method::POST, format!("{unknown}/admissions"), Some(json!({"dimension": "calls", "execution_id": exec}))),
        (Method::POST, format!("{unknown}/admissions/release"), Some(json!({"execution_id": exec}))),
    ] {
        app.refused(method, &path, body, 404, "not_found").await;
    }

    // An execution admitted by a quota policy that does not exist is refused; nothing is created.
    let orphan = ExecutionId::solo(&LaneId::try_new("q").unwrap(), &PartitionConfig::default());
    let body = json!({"execution_id": orphan, "lane_id": "q", "execution_kind": "k",
                      "policy": {"quota_policy_id": QuotaPolicyId::new(), "concurrency_key": "acme"}});
    app.refused(Method::POST, "/v1/executions", Some(body), 404, "not_found").await;
    app.refused(Method::GET, &format!("/v1/executions/{orphan}"), None, 404, "not_found").await;
}

#[tokio::test]
async fn a_grant_reserves_work_for_one_worker_which_claims_it_once() {
    let app = App::start().await;
    let first = app.submit("g", json!({})).await;
    let second = app.submit("g", json!({})).await;
    let eligible = app.ok(Method::GET, "/v1/lanes/g/eligible", None, 200).await;
    assert_eq!(eligible, json!({"executions": [first, second]}));
    assert_eq!(app.ok(Method::GET, "/v1/lanes/g/eligible?limit=1", None, 200).await, json!({"executions": [first]}));
    app.refused(Method::GET, "/v1/lanes/g/eligible?limit=0", None, 400, "invalid_input").await;
    app.refused(Method::GET, "/v1/lanes/g/eligible?partition=65000", None, 400, "invalid_input").await;

    let want = |worker: &str, ttl: u64| json!({"worker_id": "pool", "worker_instance_id": worker, "grant_ttl_ms": ttl});
    let grant = app.ok(Method::POST, "/v1/lanes/g/grants", Some(want("w1", 60_000)), 200).await;
    assert_eq!(grant["execution_id"], json!(first), "{grant}");
    let key = grant["grant_key"].as_str().unwrap().to_owned();
    assert_eq!(app.ok(Method::GET, "/v1/lanes/g/eligible", None, 200).await, json!({"executions": [second]}));

    let claim = |worker: &str, key: &str| {
        json!({"worker_id": "pool", "worker_instance_id": worker, "lane_id": "g", "grant_key": key,
               "lease_ttl_ms": 60_000})
    };
    let path = format!("/v1/executions/{first}/claim");
    app.refused(Method::POST, &path, Some(claim("w2", &key)), 409, "invalid_claim_grant").await;
    let mut tampered = key.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    app.refused(Method::POST, &path, Some(claim("w1", &tampered)), 409, "invalid_claim_grant").await;
    app.refused(
        Method::POST,
        &format!("/v1/executions/{second}/claim"),
        Some(claim("w1", &key)),
        409,
        "invalid_claim_grant",
    )
    .await;
    // A worker's ordinary claim passes the reserved execution by.
    let other = app.claim("g", "w3", 5).await;
    assert_eq!(other.iter().map(|c| c.execution_id).collect::<Vec<_>>(), vec![second]);

    let claimed: ClaimedExecution =
        serde_json::from_value(app.ok(Method::POST, &path, Some(claim("w1", &key)), 200).await).unwrap();
    assert_eq!((claimed.execution_id, claimed.execution_kind.as_str(), claimed.lane_id.as_str()), (first, "k", "g"));
    assert_eq!(claimed.input_base64, ff_core::wire::encode_bytes(br#"{"n":1}"#));
    app.refused(Method::POST, &path, Some(claim("w1", &key)), 409, "invalid_claim_grant").await;
    app.complete(first, &claimed.handle).await;
    assert_eq!(app.state(first).await["public_state"], "completed");

    // Nothing left for this worker: no content.
    let (s, b) = app.call(Method::POST, "/v1/lanes/g/grants", Some(want("w1", 60_000))).await;
    assert_eq!((s.as_u16(), b), (204, Value::Null));
}

#[tokio::test]
async fn a_chosen_execution_is_granted_to_one_worker_and_a_lapsed_grant_is_refused() {
    let app = App::start().await;
    let exec = app.submit("c", json!({})).await;
    let grant = |worker: &str, ttl: u64| json!({"lane_id": "c", "worker_id": "pool", "worker_instance_id": worker, "grant_ttl_ms": ttl});
    let grants = format!("/v1/executions/{exec}/grants");
    let granted = app.ok(Method::POST, &grants, Some(grant("w1", 1)), 200).await;
    assert_eq!((granted["status"].as_str(), granted["execution_id"].clone()), (Some("granted"), json!(exec)));
    let key = granted["grant_key"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let claim = json!({"worker_id": "pool", "worker_instance_id": "w1", "lane_id": "c", "grant_key": key,
                       "lease_ttl_ms": 60_000});
    app.refused(Method::POST, &format!("/v1/executions/{exec}/claim"), Some(claim), 409, "claim_grant_expired").await;

    app.ok(Method::POST, &grants, Some(grant("w1", 60_000)), 200).await;
    app.refused(Method::POST, &grants, Some(grant("w2", 60_000)), 409, "execution_not_eligible").await;
    let mut wrong_lane = grant("w1", 60_000);
    wrong_lane["lane_id"] = json!("elsewhere");
    app.refused(Method::POST, &grants, Some(wrong_lane), 400, "invalid_input").await;
    app.refused(Method::POST, &grants, Some(grant("w1", 0)), 400, "invalid_input").await;
    // A worker offering gpu is registered, so an execution requiring it is eligible, not parked.
    let gpu_worker =
        json!({"worker_instance_id": "w9", "lanes": ["c"], "capabilities": ["gpu"], "liveness_ttl_ms": 60_000});
    app.ok(Method::POST, "/v1/workers/pool/instances", Some(gpu_worker), 201).await;
    let mut needs_gpu = grant("w1", 60_000);
    needs_gpu["worker_capabilities"] = json!(["cpu"]);
    let gpu = app.submit("c", json!({"routing_requirements": {"required_capabilities": ["gpu"]}})).await;
    app.refused(Method::POST, &format!("/v1/executions/{gpu}/grants"), Some(needs_gpu), 400, "capability_mismatch")
        .await;
    app.refused(
        Method::POST,
        &format!("/v1/executions/{}/grants", ExecutionId::in_partition(0)),
        Some(grant("w1", 60_000)),
        404,
        "not_found",
    )
    .await;

    // The operator claims the reserved execution now, and ends it with the handle it gets.
    let operator = json!({"lane_id": "c", "lease_duration_ms": 60_000});
    let op = app.ok(Method::POST, &format!("/v1/executions/{exec}/operator-claim"), Some(operator.clone()), 200).await;
    assert_eq!(op["attempt_index"], 0, "{op}");
    app.refused(
        Method::POST,
        &format!("/v1/executions/{exec}/operator-claim"),
        Some(operator),
        409,
        "execution_not_eligible",
    )
    .await;
    app.complete(exec, op["handle"].as_str().unwrap()).await;
    assert_eq!(app.state(exec).await["public_state"], "completed");
}

#[tokio::test]
async fn blocking_parks_an_execution_until_it_is_unblocked_for_the_same_reason() {
    let app = App::start().await;
    let exec = app.submit("b", json!({})).await;
    let block = format!("/v1/executions/{exec}/block");
    let unblock = format!("/v1/executions/{exec}/unblock");
    let blocked = app
        .ok(
            Method::POST,
            &block,
            Some(json!({"lane_id": "b", "reason": "waiting_for_budget", "reason_detail": "x"})),
            200,
        )
        .await;
    assert_eq!(blocked, json!({"status": "blocked", "execution_id": exec, "reason": "waiting_for_budget"}));
    let snap = app.state(exec).await;
    assert_eq!(
        (snap["public_state"].as_str(), snap["blocking_reason"].as_str()),
        (Some("rate_limited"), Some("waiting_for_budget"))
    );
    assert_eq!(app.ok(Method::GET, "/v1/lanes/b/eligible", None, 200).await, json!({"executions": []}));
    let again = app.ok(Method::POST, &block, Some(json!({"lane_id": "b", "reason": "waiting_for_quota"})), 200).await;
    assert_eq!(again["status"], "not_eligible", "{again}");
    app.refused(
        Method::POST,
        &block,
        Some(json!({"lane_id": "b", "reason": "waiting_for_worker"})),
        400,
        "invalid_blocking_reason",
    )
    .await;
    let expect = |reason: &str| json!({"lane_id": "b", "expected_blocking_reason": reason});
    app.refused(Method::POST, &unblock, Some(expect("waiting_for_quota")), 409, "not_blocked").await;
    app.refused(Method::POST, &unblock, Some(expect("waiting_for_children")), 400, "invalid_blocking_reason").await;
    let out = app.ok(Method::POST, &unblock, Some(expect("waiting_for_budget")), 200).await;
    assert_eq!(out["eligibility"], "eligible_now", "{out}");
    assert_eq!(app.ok(Method::GET, "/v1/lanes/b/eligible", None, 200).await, json!({"executions": [exec]}));

    let route = json!({"lane_id": "b", "reason_code": "no_gpu", "reason_detail": "none registered"});
    let parked = app.ok(Method::POST, &format!("/v1/executions/{exec}/block-route"), Some(route), 200).await;
    assert_eq!(parked["reason"], "waiting_for_capable_worker", "{parked}");
    let out = app.ok(Method::POST, &unblock, Some(expect("waiting_for_capable_worker")), 200).await;
    assert_eq!(out["eligibility"], "eligible_now", "{out}");
    let unknown = ExecutionId::in_partition(0);
    app.refused(
        Method::POST,
        &format!("/v1/executions/{unknown}/block"),
        Some(json!({"lane_id": "b", "reason": "waiting_for_budget"})),
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn every_admission_route_requires_the_token() {
    let app = App::start().await;
    let admission = [
        "/v1/budgets",
        "/v1/quota-policies",
        "/grants",
        "/eligible",
        "/claim",
        "/operator-claim",
        "/block",
        "/unblock",
        "/usage",
        "/quota-policy",
    ];
    let routes: Vec<_> = ff_server::http::routes()
        .iter()
        .map(|r| (r.operation().method.clone(), r.operation().path))
        .filter(|(_, path)| !path.starts_with("/v1/workers/") && admission.iter().any(|a| path.contains(a)))
        .collect();
    assert_eq!(routes.len(), 24, "{routes:?}");
    let id = ExecutionId::in_partition(0);
    for (method, template) in routes {
        let path = template
            .replace("{id}", &id.to_string())
            .replace("{index}", "0")
            .replace("{budget_id}", &BudgetId::new().to_string())
            .replace("{quota_policy_id}", &QuotaPolicyId::new().to_string())
            .replace("{lane_id}", "l");
        for auth in [None, Some("Bearer wrong"), Some(TOKEN)] {
            let (s, b) = app.send(auth, method.clone(), &path, Some(json!({}))).await;
            assert_error(s, &b, 401, "unauthorized");
        }
    }
}

/// `BudgetBackend::report_usage` is the report of a lease holder "on an execution drawing on
/// `budget`": charging a budget the execution does not draw on is refused and writes nothing.
#[tokio::test]
async fn a_holder_cannot_charge_a_budget_its_execution_does_not_draw_on() {
    let app = App::start().await;
    let drawn = app.budget(100).await;
    let other = app.budget(100).await;
    let exec = app.submit("elsewhere", json!({"budget_ids": [drawn]})).await;
    let claimed = app.claim("elsewhere", "w1", 1).await;
    let report = json!({"handle": claimed[0].handle, "budget_id": other, "deltas": {"tokens": 1}});
    let before = app.fingerprint().await;
    let (status, body) = app.call(Method::POST, &format!("/v1/executions/{exec}/attempts/0/usage"), Some(report)).await;
    assert!(status.is_client_error(), "charged a budget the execution does not draw on: {status} {body}");
    assert_eq!(app.fingerprint().await, before, "the refused report wrote");
}

#[tokio::test]
async fn a_lanes_quota_policy_applies_to_executions_created_on_it() {
    let app = App::start().await;
    let id = QuotaPolicyId::new();
    let policy = json!({"quota_policy_id": id, "max_concurrent_per_key": 1});
    app.ok(Method::POST, "/v1/quota-policies", Some(policy), 201).await;
    let path = "/v1/lanes/per-customer/quota-policy";
    assert_eq!(app.ok(Method::GET, path, None, 200).await, json!({"quota_policy_id": null}));
    let set = app.ok(Method::PUT, path, Some(json!({"quota_policy_id": id})), 200).await;
    assert_eq!(set, json!({"previous": null}));
    assert_eq!(app.ok(Method::GET, path, None, 200).await, json!({"quota_policy_id": id}));
    let first = app.submit("per-customer", json!({"concurrency_key": "acme"})).await;
    let second = app.submit("per-customer", json!({"concurrency_key": "acme"})).await;
    assert_eq!(app.state(first).await["public_state"], "waiting");
    assert_eq!(app.state(second).await["public_state"], "rate_limited", "one per customer on this lane");
    app.refused(Method::PUT, path, Some(json!({"quota_policy_id": QuotaPolicyId::new()})), 404, "not_found").await;
    app.refused(Method::PUT, path, Some(json!({"policy": id})), 400, "invalid_input").await;
}
