//! Suspension over HTTP against real Postgres, on a server that requires the bearer token: the
//! lease holder suspends through the worker route and an outsider holding only the waitpoint
//! token resumes it; tampered tokens and missing credentials are refused and write nothing
//! (the stored rows, waitpoints, suspensions and signals included, are compared before and
//! after); operators approve, reject, resume, list and rotate; pending waitpoints buffer
//! signals; the signing key configured at boot signs the tokens.

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::{ClaimResponse, ClaimedExecution};
use ff_core::{ExecutionId, HandleKind};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token";

/// A secret for the boot seeding tests.
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Api {
    db: TestDb,
    server: Server,
    http: Client,
}

/// Who a request presents itself as.
#[derive(Clone, Copy)]
enum As<'a> {
    /// The bearer token.
    Operator,
    /// Nothing.
    Anonymous,
    /// Only a waitpoint token, in the `X-Waitpoint-Token` header.
    Waitpoint(&'a str),
}

impl Api {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(f: impl FnOnce(&mut ServerConfig)) -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.api_token = Some(TOKEN.into());
        cfg.pool_size = 4;
        cfg.shutdown_grace_ms = 5_000;
        f(&mut cfg);
        let server = Server::start(cfg).await.expect("server starts");
        Self { db, server, http: Client::new() }
    }

    async fn send(&self, who: As<'_>, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.server.url()));
        req = match who {
            As::Operator => req.bearer_auth(TOKEN),
            As::Anonymous => req,
            As::Waitpoint(t) => req.header("X-Waitpoint-Token", t),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("response");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.send(As::Operator, method, path, body).await
    }

    /// Executions, attempts, events, waitpoints, suspensions and signals, as text.
    async fn fingerprint(&self) -> String {
        sqlx::query_scalar(
            "SELECT coalesce((SELECT string_agg(e::text, '|' ORDER BY execution_id) FROM ff_execution e), '') \
             || '#' || coalesce((SELECT string_agg(a::text, '|' ORDER BY execution_id, attempt_index) \
                                 FROM ff_attempt a), '') \
             || '#' || (SELECT count(*) FROM ff_event)::text \
             || '#' || coalesce((SELECT string_agg(w::text, '|' ORDER BY waitpoint_id) FROM ff_waitpoint w), '') \
             || '#' || coalesce((SELECT string_agg(s::text, '|' ORDER BY suspension_id) FROM ff_suspension s), '') \
             || '#' || coalesce((SELECT string_agg(g::text, '|' ORDER BY signal_id) FROM ff_signal g), '') \
             || '#' || coalesce((SELECT string_agg(k.kid, '|' ORDER BY kid) FROM ff_waitpoint_hmac_key k), '')",
        )
        .fetch_one(self.db.pool())
        .await
        .unwrap()
    }

    /// Sends a request that must be refused with `status` and `code`, and checks it wrote
    /// nothing.
    async fn refused(&self, who: As<'_>, path: &str, body: Value, status: u16, code: &str) {
        let before = self.fingerprint().await;
        let (s, b) = self.send(who, Method::POST, path, Some(body)).await;
        assert_eq!((s.as_u16(), b["code"].as_str()), (status, Some(code)), "{b}");
        assert_eq!(self.fingerprint().await, before, "POST {path} wrote although refused");
    }

    async fn submit(&self, lane: &str) -> ExecutionId {
        let body = json!({"lane_id": lane, "execution_kind": "k", "input": {"n": 1}});
        let (status, created) = self.call(Method::POST, "/v1/executions", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        serde_json::from_value(created["execution_id"].clone()).unwrap()
    }

    async fn claim(&self, lane: &str) -> Vec<ClaimedExecution> {
        let body = json!({"lane_id": lane, "worker_instance_id": "w1", "lease_ttl_ms": 600000, "max": 10});
        let (status, claimed) = self.call(Method::POST, "/v1/workers/pool/claim", Some(body)).await;
        assert_eq!(status, 200, "{claimed}");
        serde_json::from_value::<ClaimResponse>(claimed).unwrap().claimed
    }

    async fn claim_one(&self, lane: &str) -> ClaimedExecution {
        let mut claimed = self.claim(lane).await;
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        claimed.remove(0)
    }

    /// Submits, claims and suspends on one fresh waitpoint `approval` for a signal named
    /// `approved`; returns the claim and the waitpoint's id and token.
    async fn suspended(&self, lane: &str) -> (ClaimedExecution, String, String) {
        self.submit(lane).await;
        let c = self.claim_one(lane).await;
        let suspension = json!({
            "waitpoints": [{"fresh": {"waitpoint_id": uuid(), "waitpoint_key": "approval"}}],
            "resume_condition": {"single": {"waitpoint_key": "approval", "matcher": {"by_name": "approved"}}},
            "reason_code": "waiting_for_approval",
        });
        let (status, out) = self
            .call(
                Method::POST,
                &attempt_path(&c, "suspend"),
                Some(json!({"handle": c.handle, "suspension": suspension})),
            )
            .await;
        assert_eq!(status, 200, "{out}");
        let w = &out["Suspended"]["details"]["waitpoints"][0];
        (c, w["waitpoint_id"].as_str().unwrap().to_owned(), w["waitpoint_token"].as_str().unwrap().to_owned())
    }

    async fn state(&self, id: ExecutionId) -> Value {
        self.call(Method::GET, &format!("/v1/executions/{id}/state"), None).await.1
    }
}

fn uuid() -> String {
    ff_core::WaitpointId::new().to_string()
}

fn attempt_path(c: &ClaimedExecution, op: &str) -> String {
    format!("/v1/executions/{}/attempts/{}/{op}", c.execution_id, c.attempt_index.0)
}

fn waitpoint_path(id: ExecutionId, waitpoint: &str, op: &str) -> String {
    format!("/v1/executions/{id}/waitpoints/{waitpoint}/{op}")
}

#[tokio::test]
async fn a_waitpoint_token_alone_resumes_the_same_attempt() {
    let api = Api::start().await;
    let (c, wp, token) = api.suspended("susp").await;
    let id = c.execution_id;
    assert_eq!(api.state(id).await, "suspended");
    assert!(api.claim("susp").await.is_empty(), "nothing is claimable while it waits");
    let signals = waitpoint_path(id, &wp, "signals");
    let approved = json!({"signal_name": "approved", "source_type": "user", "source_identity": "ann",
                          "payload": {"decision": "yes"}});
    api.refused(As::Anonymous, &signals, approved.clone(), 401, "unauthorized").await;

    let (status, out) = api.send(As::Waitpoint(&token), Method::POST, &signals, Some(approved)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["Accepted"]["effect"], "resume_condition_satisfied", "{out}");
    assert_eq!(api.state(id).await, "waiting");

    let resumed = api.claim_one("susp").await;
    assert_eq!((resumed.claim_kind, resumed.attempt_index), (HandleKind::Resumed, c.attempt_index));
    let (status, seen) =
        api.call(Method::POST, &attempt_path(&resumed, "signals"), Some(json!({"handle": resumed.handle}))).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen.as_array().map(Vec::len), Some(1), "{seen}");
    assert_eq!((&seen[0]["signal_name"], &seen[0]["source_identity"]), (&json!("approved"), &json!("ann")));
    assert_eq!(seen[0]["payload"], json!({"decision": "yes"}));
    assert_eq!(seen[0]["payload_encoding"], "json");
    assert!(seen[0]["payload_base64"].is_string(), "{seen}");

    // The waitpoint closed on resume; a late signal, its token in the body this time, is refused.
    let late = json!({"signal_name": "approved", "waitpoint_token": token});
    api.refused(As::Anonymous, &signals, late, 409, "waitpoint_closed").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tampered_tokens_and_missing_credentials_are_refused_and_write_nothing() {
    let api = Api::start().await;
    let (c, wp, token) = api.suspended("tamper").await;
    let (_, other_wp, other_token) = api.suspended("tamper").await;
    let id = c.execution_id;
    let signals = waitpoint_path(id, &wp, "signals");
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let body = json!({"signal_name": "approved"});
    for bad in [tampered.as_str(), other_token.as_str(), "garbage"] {
        api.refused(As::Waitpoint(bad), &signals, body.clone(), 400, "invalid_token").await;
        let in_body = json!({"signal_name": "approved", "waitpoint_token": bad});
        api.refused(As::Anonymous, &signals, in_body, 400, "invalid_token").await;
    }
    // Another execution's waitpoint is not this execution's, whatever the token; to a caller
    // with only a waitpoint token it reads as an invalid token (it learns nothing about ids).
    api.refused(
        As::Waitpoint(&other_token),
        &waitpoint_path(id, &other_wp, "signals"),
        body.clone(),
        400,
        "invalid_token",
    )
    .await;
    let disagreeing = json!({"signal_name": "approved", "waitpoint_token": tampered});
    api.refused(As::Waitpoint(&token), &signals, disagreeing, 400, "invalid_input").await;
    let big =
        json!({"signal_name": "approved", "payload_base64": ff_core::wire::encode_bytes(&vec![0; 64 * 1024 + 1])});
    api.refused(As::Waitpoint(&token), &signals, big, 413, "payload_too_large").await;
    let capped = json!({"signal_name": "noise", "max_signals_per_execution": 1});
    let (status, out) = api.call(Method::POST, &signals, Some(capped.clone())).await;
    assert_eq!((status.as_u16(), &out["Accepted"]["effect"]), (200, &json!("signal_ignored_matcher_failed")), "{out}");
    api.refused(As::Waitpoint(&token), &signals, capped, 409, "signal_limit_exceeded").await;
    // Every other suspension route needs the bearer token.
    for path in [waitpoint_path(id, &wp, "approve"), format!("/v1/executions/{id}/resume")] {
        api.refused(As::Waitpoint(&token), &path, json!({}), 401, "unauthorized").await;
    }
    let (status, _) = api.send(As::Waitpoint(&token), Method::GET, &waitpoint_path(id, &wp, "token"), None).await;
    assert_eq!(status, 401);
    assert_eq!(api.state(id).await, "suspended");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn operators_approve_reject_and_resume() {
    let api = Api::start().await;
    let (c, wp, _) = api.suspended("decide").await;
    let id = c.execution_id;
    let (status, out) = api.call(Method::POST, &waitpoint_path(id, &wp, "reject"), None).await;
    assert_eq!((status.as_u16(), &out["Accepted"]["effect"]), (200, &json!("signal_ignored_matcher_failed")), "{out}");
    assert_eq!(api.state(id).await, "suspended", "a rejection does not satisfy a wait for approval");
    let first = out["Accepted"]["signal_id"].clone();
    let (status, again) = api.call(Method::POST, &waitpoint_path(id, &wp, "reject"), Some(json!({}))).await;
    assert_eq!(
        (status.as_u16(), again),
        (200, json!({"Duplicate": {"existing_signal_id": first}})),
        "one decision per waitpoint"
    );
    let (status, out) =
        api.call(Method::POST, &waitpoint_path(id, &wp, "approve"), Some(json!({"operator_identity": "ann"}))).await;
    assert_eq!((status.as_u16(), &out["Accepted"]["effect"]), (200, &json!("resume_condition_satisfied")), "{out}");
    let resumed = api.claim_one("decide").await;
    let (_, seen) =
        api.call(Method::POST, &attempt_path(&resumed, "signals"), Some(json!({"handle": resumed.handle}))).await;
    let names: Vec<_> =
        seen.as_array().unwrap().iter().map(|s| (s["signal_name"].clone(), s["source_identity"].clone())).collect();
    assert_eq!(names, vec![(json!("rejected"), json!("operator")), (json!("approved"), json!("ann"))]);

    // A wrong lane is refused; an operator resume ignores the condition.
    let (c, wp, _) = api.suspended("decide").await;
    let id = c.execution_id;
    api.refused(
        As::Operator,
        &waitpoint_path(id, &wp, "approve"),
        json!({"lane_id": "elsewhere"}),
        400,
        "invalid_input",
    )
    .await;
    let (status, out) = api.call(Method::POST, &format!("/v1/executions/{id}/resume"), None).await;
    assert_eq!((status.as_u16(), out), (200, json!({"Resumed": {"public_state": "waiting"}})));
    api.refused(As::Operator, &format!("/v1/executions/{id}/resume"), json!({}), 409, "execution_not_suspended").await;
    let (c, _, _) = api.suspended("decide-later").await;
    let path = format!("/v1/executions/{}/resume", c.execution_id);
    let (status, out) =
        api.call(Method::POST, &path, Some(json!({"trigger_type": "automation", "resume_delay_ms": 60000}))).await;
    assert_eq!((status.as_u16(), out), (200, json!({"Resumed": {"public_state": "delayed"}})));
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn listings_show_what_waits_and_the_token_route_serves_trusted_callers() {
    let api = Api::start().await;
    let (a, wp, token) = api.suspended("lists").await;
    let (b, _, _) = api.suspended("lists").await;
    let (status, page) = api.call(Method::GET, &format!("/v1/executions/{}/waitpoints", a.execution_id), None).await;
    assert_eq!(status, 200, "{page}");
    let entry = &page["entries"][0];
    assert_eq!(
        (&entry["waitpoint_id"], &entry["state"], &entry["waitpoint_key"]),
        (&json!(wp), &json!("active"), &json!("approval"))
    );
    assert_eq!(entry["required_signal_names"], json!(["approved"]));
    assert!(!page.to_string().contains(&token[3..]), "listings never show the token");
    let (status, read) = api.call(Method::GET, &waitpoint_path(a.execution_id, &wp, "token"), None).await;
    assert_eq!((status.as_u16(), read), (200, json!({"waitpoint_token": token})));
    let (status, body) = api.call(Method::GET, &waitpoint_path(a.execution_id, &uuid(), "token"), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("not_found")));

    let (status, first) = api.call(Method::GET, "/v1/suspended?limit=1", None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["entries"].as_array().map(Vec::len), Some(1));
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let (_, second) = api.call(Method::GET, &format!("/v1/suspended?limit=10&cursor={}", enc(cursor)), None).await;
    assert_eq!(second["next_cursor"], Value::Null);
    let mut seen: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|p| p["entries"].as_array().unwrap().iter().map(|e| e["execution_id"].as_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    let mut want = vec![a.execution_id.to_string(), b.execution_id.to_string()];
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(first["entries"][0]["reason"], "waiting_for_approval");
    let p = a.execution_id.partition_index();
    let (_, one) = api.call(Method::GET, &format!("/v1/suspended?partition={p}"), None).await;
    assert!(one["entries"].as_array().unwrap().iter().any(|e| e["execution_id"] == json!(a.execution_id)), "{one}");
    let (status, body) = api.call(Method::GET, "/v1/suspended?partition=65535", None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (400, Some("invalid_input")), "{body}");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pending_waitpoint_buffers_signals_until_the_holder_suspends_on_it() {
    let api = Api::start().await;
    let id = api.submit("pending").await;
    let c = api.claim_one("pending").await;
    let create = json!({"handle": c.handle, "waitpoint_key": "callback", "expires_in_ms": 600000});
    let (status, wp) = api.call(Method::POST, &attempt_path(&c, "waitpoints"), Some(create.clone())).await;
    assert_eq!(status, 201, "{wp}");
    api.refused(As::Operator, &attempt_path(&c, "waitpoints"), create, 409, "waitpoint_already_exists").await;
    let (wp_id, token) = (wp["waitpoint_id"].as_str().unwrap(), wp["hmac_token"].as_str().unwrap());
    let done = json!({"signal_name": "done", "payload_base64": "AAE=", "payload_encoding": "bin"});
    let (status, out) =
        api.send(As::Waitpoint(token), Method::POST, &waitpoint_path(id, wp_id, "signals"), Some(done)).await;
    assert_eq!((status.as_u16(), &out["Accepted"]["effect"]), (200, &json!("buffered_for_pending_waitpoint")), "{out}");
    let (_, seen) = api.call(Method::POST, &attempt_path(&c, "signals"), Some(json!({"handle": c.handle}))).await;
    assert_eq!((&seen[0]["payload_base64"], seen[0].get("payload")), (&json!("AAE="), None), "{seen}");
    let suspension = json!({
        "waitpoints": [{"use_pending": {"waitpoint_id": wp_id}}],
        "resume_condition": {"single": {"waitpoint_key": "callback", "matcher": {"by_name": "done"}}},
    });
    let (status, out) = api
        .call(Method::POST, &attempt_path(&c, "suspend"), Some(json!({"handle": c.handle, "suspension": suspension})))
        .await;
    assert_eq!(status, 200, "{out}");
    assert!(out["AlreadySatisfied"].is_object(), "{out}");
    assert_eq!(api.state(id).await, "active", "the lease is kept");
    // A handle for another attempt does not fit the path.
    let wrong = format!("/v1/executions/{id}/attempts/7/signals");
    api.refused(As::Operator, &wrong, json!({"handle": c.handle}), 400, "handle_mismatch").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn rotation_needs_the_api_token_and_new_tokens_use_the_new_key() {
    let api = Api::start_with(|cfg| cfg.waitpoint_secret = Some(SECRET.into())).await;
    let (_, _, token) = api.suspended("rotate").await;
    assert!(token.starts_with("k1:"), "the key configured at boot signs: {token}");
    let rotate = json!({"new_kid": "k2", "new_secret_hex": "22".repeat(32), "grace_ms": 60000});
    api.refused(As::Anonymous, "/v1/admin/waitpoint-keys/rotate", rotate.clone(), 401, "unauthorized").await;
    api.refused(As::Waitpoint(&token), "/v1/admin/waitpoint-keys/rotate", rotate.clone(), 401, "unauthorized").await;
    let bad = json!({"new_kid": "k3", "new_secret_hex": "zz", "grace_ms": 0});
    api.refused(As::Operator, "/v1/admin/waitpoint-keys/rotate", bad, 400, "invalid_input").await;
    let (status, out) = api.call(Method::POST, "/v1/admin/waitpoint-keys/rotate", Some(rotate.clone())).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["entries"], json!([{"Rotated": {"previous_kid": "k1", "new_kid": "k2", "gc_count": 0}}]));
    let (_, again) = api.call(Method::POST, "/v1/admin/waitpoint-keys/rotate", Some(rotate)).await;
    assert_eq!(again["entries"], json!([{"Noop": {"kid": "k2"}}]));
    let (_, _, token) = api.suspended("rotate").await;
    assert!(token.starts_with("k2:"), "{token}");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_configured_key_is_seeded_once_and_a_bad_secret_stops_boot() {
    let api = Api::start_with(|cfg| {
        cfg.waitpoint_secret = Some(SECRET.into());
        cfg.waitpoint_kid = "boot".into();
    })
    .await;
    let keys = || async {
        sqlx::query_scalar::<_, String>("SELECT kid FROM ff_waitpoint_hmac_key ORDER BY kid")
            .fetch_all(api.db.pool())
            .await
            .unwrap()
    };
    assert_eq!(keys().await, vec!["boot".to_owned()]);
    // A second server with another key keeps the installed one.
    let mut cfg = ServerConfig::new(api.db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.waitpoint_secret = Some("ab".repeat(32));
    cfg.waitpoint_kid = "other".into();
    let second = Server::start(cfg.clone()).await.expect("a different configured key does not stop boot");
    assert_eq!(keys().await, vec!["boot".to_owned()]);
    second.shutdown().await.unwrap();
    for (secret, kid) in [("abc", "k1"), (SECRET, "not a kid")] {
        cfg.waitpoint_secret = Some(secret.into());
        cfg.waitpoint_kid = kid.into();
        let err = Server::start(cfg.clone()).await.err().expect("boot refuses");
        let message = err.to_string();
        assert!(message.contains("FF_WAITPOINT_"), "{message}");
        assert!(!message.contains(SECRET), "the error never shows the secret: {message}");
    }
    api.server.shutdown().await.unwrap();
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
