//! The HTTP API over real HTTP against real Postgres: auth, the whole worker round trip, every
//! error code a request can provoke, and the OpenAPI document's agreement with the router.

use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::{ClaimResponse, handle_token, parse_handle_token};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "s3cret-token";

struct Api {
    db: TestDb,
    server: Server,
    http: Client,
}

impl Api {
    async fn start(token: Option<&str>) -> Self {
        let db = TestDb::new(&MIGRATOR).await;
        let mut cfg = ServerConfig::new(db.url());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.api_token = token.map(str::to_owned);
        cfg.pool_size = 4;
        cfg.shutdown_grace_ms = 5_000;
        let server = Server::start(cfg).await.expect("server starts");
        Self { db, server, http: Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.req(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("response");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ff_execution").fetch_one(self.db.pool()).await.unwrap()
    }
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body["message"].is_string() && body["retryable"].is_boolean(), "{body}");
}

#[tokio::test]
async fn auth_is_required_on_api_routes_and_metrics_but_not_health() {
    let api = Api::start(Some(TOKEN)).await;
    let get = |path: &str, auth: Option<&str>| {
        let mut req = api.http.get(api.url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    for (auth, ok) in [
        (None, false),
        (Some("Bearer wrong"), false),
        (Some(TOKEN), false),
        (Some("Basic s3cret-token"), false),
        (Some("Bearers3cret-token"), false),
        (Some("Bearer s3cret-token"), true),
        (Some("bearer s3cret-token"), true),
        (Some("BEARER s3cret-token"), true),
    ] {
        for path in ["/v1/lanes", "/metrics"] {
            let resp = get(path, auth).await.unwrap();
            if ok {
                assert_eq!(resp.status(), 200, "{path} {auth:?}");
            } else {
                let status = resp.status();
                let body: Value = resp.json().await.unwrap();
                assert_error(status, &body, 401, "unauthorized");
            }
        }
    }
    let health = get("/healthz", None).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");

    let metrics = get("/metrics", Some("Bearer s3cret-token")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("ff_http_requests_total{method=\"GET\",route=\"/v1/lanes\",status=\"401\"}"), "{metrics}");
    assert!(metrics.contains("ff_db_pool_connections{state=\"max\"} 4"), "{metrics}");
    assert!(metrics.contains("ff_claims_total 0"), "{metrics}");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let db = TestDb::new(&MIGRATOR).await;
    let mut cfg = ServerConfig::new(db.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.cors_origins = vec!["https://app.example".into()];
    let server = Server::start(cfg).await.unwrap();
    let preflight = |origin: &'static str| {
        Client::new()
            .request(Method::OPTIONS, format!("{}/v1/lanes", server.url()))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.headers().get("access-control-allow-origin").unwrap(), "https://app.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await.unwrap();

    let mut bad = ServerConfig::new(db.url());
    bad.cors_origins = vec![" ".into()];
    assert!(matches!(Server::start(bad).await, Err(ff_server::ServerError::Config(_))));
}

#[tokio::test]
async fn an_open_server_needs_no_token() {
    let api = Api::start(None).await;
    let resp = api.http.get(api.url("/v1/lanes")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_worker_round_trip_over_http() {
    let api = Api::start(Some(TOKEN)).await;
    let submit = json!({
        "lane_id": "media", "execution_kind": "thumbnail", "input": {"w": 64}, "priority": 5,
        "idempotency_key": "img-1", "tags": {"app.owner": "ann"},
    });
    let (status, created) = api.call(Method::POST, "/v1/executions", Some(submit.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "created");
    assert_eq!(created["public_state"], "waiting");
    let id = created["execution_id"].as_str().unwrap().to_owned();
    let (status, dup) = api.call(Method::POST, "/v1/executions", Some(submit)).await;
    assert_eq!(
        (status.as_u16(), dup["status"].as_str(), dup["execution_id"].as_str()),
        (200, Some("duplicate"), Some(id.as_str()))
    );

    let enc = id.replace('{', "%7B").replace('}', "%7D");
    let (status, state) = api.call(Method::GET, &format!("/v1/executions/{enc}/state"), None).await;
    assert_eq!((status.as_u16(), state), (200, json!("waiting")));

    let (status, claimed) = api
        .call(
            Method::POST,
            "/v1/workers/pool-a/claim",
            Some(json!({"lane_id": "media", "worker_instance_id": "w1", "lease_ttl_ms": 30000, "max": 5})),
        )
        .await;
    assert_eq!(status, 200, "{claimed}");
    let claimed: ClaimResponse = serde_json::from_value(claimed).unwrap();
    assert_eq!(claimed.claimed.len(), 1);
    let task = &claimed.claimed[0];
    assert_eq!(task.execution_id.to_string(), id);
    assert_eq!(task.execution_kind, "thumbnail");
    assert_eq!(ff_core::wire::decode_bytes("input", &task.input_base64).unwrap(), br#"{"w":64}"#);
    assert_eq!(task.tags.get("app.owner").map(String::as_str), Some("ann"));
    let handle = task.handle.clone();

    let lease = |op: &str| format!("/v1/executions/{enc}/{op}");
    let (status, renewed) = api.call(Method::POST, &lease("renew"), Some(json!({"handle": handle}))).await;
    assert_eq!(status, 200, "{renewed}");
    assert!(renewed["expires_at_ms"].as_i64().unwrap() > 0);
    let (status, _) = api
        .call(Method::POST, &lease("progress"), Some(json!({"handle": handle, "percent": 40, "message": "resizing"})))
        .await;
    assert_eq!(status, 204);
    let (status, frame) = api
        .call(Method::POST, &lease("frames"), Some(json!({"handle": handle, "frame_type": "log", "text": "hello"})))
        .await;
    assert_eq!(status, 200, "{frame}");
    assert_eq!(frame["frame_count"], 1);
    let (status, snap) = api.call(Method::GET, &format!("/v1/executions/{enc}"), None).await;
    assert_eq!((status.as_u16(), &snap["public_state"], &snap["progress_pct"]), (200, &json!("active"), &json!(40)));

    let (status, _) =
        api.call(Method::POST, &lease("complete"), Some(json!({"handle": handle, "result_base64": "b2s="}))).await;
    assert_eq!(status, 204);
    let result = api.req(Method::GET, &format!("/v1/executions/{enc}/result")).send().await.unwrap();
    assert_eq!(result.headers()["content-type"], "application/octet-stream");
    assert_eq!(result.bytes().await.unwrap().as_ref(), b"ok");

    // The same handle again: the execution has moved on.
    let (status, body) = api.call(Method::POST, &lease("complete"), Some(json!({"handle": handle}))).await;
    assert_error(status, &body, 409, "execution_not_active");

    let (status, frames) = api.call(Method::GET, &format!("/v1/executions/{enc}/attempts/0/stream"), None).await;
    assert_eq!(status, 200);
    assert_eq!(frames["frames"][0]["frame_type"], "log");
    assert_eq!(frames["closed_reason"], "success");
    // The documented cap, not a smaller one of the server's.
    let max = ff_core::MAX_STREAM_READ;
    let (status, frames) =
        api.call(Method::GET, &format!("/v1/executions/{enc}/attempts/0/stream?limit={max}"), None).await;
    assert_eq!(status, 200, "{frames}");
    for limit in [0, max + 1] {
        let (s, b) =
            api.call(Method::GET, &format!("/v1/executions/{enc}/attempts/0/stream?limit={limit}"), None).await;
        assert_error(s, &b, 400, "invalid_input");
    }

    let (status, _) =
        api.call(Method::PUT, &format!("/v1/executions/{enc}/tags/app.stage"), Some(json!({"value": "done"}))).await;
    assert_eq!(status, 204);
    let (_, tag) = api.call(Method::GET, &format!("/v1/executions/{enc}/tags/app.stage"), None).await;
    assert_eq!(tag["value"], "done");
    let (status, body) = api.call(Method::GET, &format!("/v1/executions/{enc}/tags/app.none"), None).await;
    assert_error(status, &body, 404, "not_found");

    let partition = task.execution_id.partition_index();
    let (_, page) = api.call(Method::GET, &format!("/v1/executions?partition={partition}&limit=10"), None).await;
    assert_eq!(page["executions"], json!([id]));
    let (_, lanes) = api.call(Method::GET, "/v1/lanes", None).await;
    assert_eq!(lanes["lanes"], json!(["media"]));
    let (_, info) = api.call(Method::GET, &format!("/v1/executions/{enc}/info"), None).await;
    assert_eq!(info["execution_kind"], "thumbnail");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_follow_the_retry_policy_and_batches_complete_item_by_item() {
    let api = Api::start(Some(TOKEN)).await;
    let policy = json!({"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 10}}});
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/executions/batch",
            Some(json!({"executions": [
                {"lane_id": "jobs", "execution_kind": "k", "policy": policy},
                {"lane_id": "jobs", "execution_kind": "k", "input_base64": "AAE="},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    let claim = json!({"lane_id": "jobs", "worker_instance_id": "w", "lease_ttl_ms": 30000, "max": 2});
    let (_, claimed) = api.call(Method::POST, "/v1/workers/p/claim", Some(claim.clone())).await;
    let claimed: ClaimResponse = serde_json::from_value(claimed).unwrap();
    assert_eq!(claimed.claimed.len(), 2);
    let with_policy = claimed.claimed.iter().find(|c| c.input_base64.is_empty()).unwrap();
    let other = claimed.claimed.iter().find(|c| !c.input_base64.is_empty()).unwrap();
    let enc = with_policy.execution_id.to_string().replace('{', "%7B").replace('}', "%7D");
    let (status, out) = api
        .call(
            Method::POST,
            &format!("/v1/executions/{enc}/fail"),
            Some(json!({"handle": with_policy.handle, "message": "upstream 503"})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["status"], "retry_scheduled");

    let (status, out) = api
        .call(
            Method::POST,
            "/v1/completions",
            Some(json!({"items": [{"handle": other.handle}, {"handle": with_policy.handle}]})),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["results"][0], Value::Null);
    assert!(out["results"][1]["code"].is_string(), "{out}");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_a_typed_error_and_writes_nothing() {
    let api = Api::start(Some(TOKEN)).await;
    let raw = |method: Method, path: &str, ctype: &str, body: Vec<u8>| {
        api.req(method, path).header("content-type", ctype.to_owned()).body(body).send()
    };
    let read = |resp: reqwest::Response| async move {
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap())
    };
    let submit = "/v1/executions";

    let (s, b) = read(raw(Method::POST, submit, "application/json", b"{\"lane_id\": ".to_vec()).await.unwrap()).await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = read(
        raw(Method::POST, submit, "application/json", br#"{"lane_id": 7, "execution_kind": "k"}"#.to_vec())
            .await
            .unwrap(),
    )
    .await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = read(
        raw(
            Method::POST,
            submit,
            "application/json",
            br#"{"lane_id": "l", "execution_kind": "k", "priorty": 1}"#.to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(b["message"].as_str().unwrap().contains("priorty"), "{b}");
    let (s, b) = read(raw(Method::POST, submit, "text/plain", b"{}".to_vec()).await.unwrap()).await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) =
        read(raw(Method::POST, "/v1/workers/w/claim", "application/json", vec![b' '; 70 * 1024]).await.unwrap()).await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = api.call(Method::POST, submit, Some(json!({"lane_id": "", "execution_kind": "k"}))).await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) =
        api.call(Method::POST, submit, Some(json!({"lane_id": "l", "execution_kind": "k", "priority": 99999}))).await;
    assert_error(s, &b, 400, "priority_out_of_range");
    let (s, b) = api
        .call(Method::POST, submit, Some(json!({"lane_id": "l", "execution_kind": "k", "tags": {"Bad Key": "v"}})))
        .await;
    assert_error(s, &b, 400, "invalid_tag_key");
    let big = "A".repeat(12 * 1024 * 1024);
    let (s, b) =
        api.call(Method::POST, submit, Some(json!({"lane_id": "l", "execution_kind": "k", "input_base64": big}))).await;
    assert_error(s, &b, 413, "payload_too_large");
    let (s, b) = api
        .call(
            Method::POST,
            "/v1/executions/batch",
            Some(json!({"executions": [{"lane_id": "l", "execution_kind": "k"}, {"lane_id": "l", "execution_kind": ""}]})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_input");
    assert!(b["message"].as_str().unwrap().contains("executions[1]"), "{b}");

    let (s, b) = api.call(Method::GET, "/v1/executions/not-an-id", None).await;
    assert_error(s, &b, 400, "invalid_path");
    let missing = ff_core::ExecutionId::in_partition(1).to_string().replace('{', "%7B").replace('}', "%7D");
    let (s, b) = api.call(Method::GET, &format!("/v1/executions/{missing}"), None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = api.call(Method::GET, &format!("/v1/executions/{missing}/attempts/x/stream"), None).await;
    assert_error(s, &b, 400, "invalid_path");
    let (s, b) = api.call(Method::GET, "/v1/executions?partition=99999", None).await;
    assert_error(s, &b, 400, "invalid_query");
    let (s, b) = api.call(Method::GET, "/v1/executions?partition=300", None).await;
    assert_error(s, &b, 400, "invalid_input");
    let (s, b) = api.call(Method::GET, "/v1/nothing-here", None).await;
    assert_error(s, &b, 404, "route_not_found");
    let (s, b) = api.call(Method::DELETE, "/v1/executions", None).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let bad_claims = [
        (json!({"lane_id": "l", "worker_instance_id": "w", "lease_ttl_ms": 1, "max": 1}), "invalid_input"),
        (json!({"lane_id": "l", "worker_instance_id": "w", "lease_ttl_ms": 1000, "max": 0}), "invalid_input"),
        (
            json!({"lane_id": "l", "worker_instance_id": "w", "lease_ttl_ms": 1000, "max_wait_ms": 600000}),
            "invalid_input",
        ),
        (json!({"lane_id": "l", "worker_instance_id": "", "lease_ttl_ms": 1000}), "invalid_input"),
        (
            json!({"lane_id": "l", "worker_instance_id": "w", "lease_ttl_ms": 1000, "capabilities": ["bad token"]}),
            "invalid_capabilities",
        ),
    ];
    for (body, code) in bad_claims {
        let (s, b) = api.call(Method::POST, "/v1/workers/w/claim", Some(body.clone())).await;
        assert_error(s, &b, 400, code);
    }
    assert_eq!(api.rows().await, 0, "rejected requests wrote nothing");

    // Lease-holder calls: a damaged handle, a handle for another execution, a bad frame.
    let (_, created) = api.call(Method::POST, submit, Some(json!({"lane_id": "l", "execution_kind": "k"}))).await;
    let id = created["execution_id"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    let (_, claimed) = api
        .call(
            Method::POST,
            "/v1/workers/w/claim",
            Some(json!({"lane_id": "l", "worker_instance_id": "w", "lease_ttl_ms": 30000})),
        )
        .await;
    let handle = claimed["claimed"][0]["handle"].as_str().unwrap().to_owned();
    let (s, b) = api
        .call(Method::POST, &format!("/v1/executions/{id}/renew"), Some(json!({"handle": "ffh1.postgres.fresh.AAAA"})))
        .await;
    assert_error(s, &b, 400, "invalid_handle");
    let (s, b) =
        api.call(Method::POST, &format!("/v1/executions/{missing}/renew"), Some(json!({"handle": handle}))).await;
    assert_error(s, &b, 400, "handle_mismatch");
    let (s, b) = api
        .call(
            Method::POST,
            &format!("/v1/executions/{id}/frames"),
            Some(json!({"handle": handle, "frame_type": "Not Valid"})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_frame_type");
    let (s, b) = api
        .call(Method::POST, &format!("/v1/executions/{id}/progress"), Some(json!({"handle": handle, "percent": 300})))
        .await;
    assert_error(s, &b, 400, "invalid_input");
    // A handle whose lease was superseded is fenced out.
    let mut forged = parse_handle_token(&handle).unwrap();
    let mut payload = ff_core::HandlePayload::from_handle(&forged, forged.backend).unwrap();
    payload.lease_epoch = ff_core::LeaseEpoch(payload.lease_epoch.0 + 5);
    forged = payload.into_handle(forged.backend, forged.kind);
    let (s, b) = api
        .call(Method::POST, &format!("/v1/executions/{id}/complete"), Some(json!({"handle": handle_token(&forged)})))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(api.rows().await, 1);
    let (_, state) = api.call(Method::GET, &format!("/v1/executions/{id}/state"), None).await;
    assert_eq!(state, "active", "the fenced write changed nothing");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_openapi_document_matches_the_router_and_the_committed_copy() {
    let api = Api::start(Some(TOKEN)).await;
    let (status, served) = api.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(served, ff_server::http::openapi_document());
    let paths = served["paths"].as_object().unwrap();
    assert_eq!(paths.values().map(|m| m.as_object().unwrap().len()).sum::<usize>(), ff_server::http::routes().len());
    // Every documented operation is served: no route_not_found / method_not_allowed.
    for (path, methods) in paths {
        let concrete =
            path.replace("{id}", "%7Bfp%3A1%7D%3A00000000-0000-0000-0000-000000000000").replace(['{', '}'], "");
        for method in methods.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let resp = api
                .req(method.clone(), &concrete)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = resp.status();
            // An event stream that opened is served; its body never ends.
            let streaming =
                resp.headers().get("content-type").is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
            let body = if streaming { String::new() } else { resp.text().await.unwrap() };
            assert!(!body.contains("route_not_found") && status != 405, "{method} {path}: {status} {body}");
        }
    }
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let rendered = serde_json::to_string_pretty(&served).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, &rendered).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(committed == rendered, "docs/openapi.json is stale: rerun this test with UPDATE_OPENAPI=1 and commit it");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_long_poll_finish() {
    let api = Api::start(Some(TOKEN)).await;
    let req = api
        .req(Method::POST, "/v1/workers/w/claim")
        .json(&json!({"lane_id": "idle", "worker_instance_id": "w", "lease_ttl_ms": 30000, "max_wait_ms": 1500}))
        .send();
    let pending = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.server.shutdown().await.unwrap();
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["claimed"], json!([]));
}

#[tokio::test]
async fn a_database_outage_is_a_503_without_internal_detail() {
    let api = Api::start(Some(TOKEN)).await;
    let admin = ff_test::admin_url().await.unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    let name = api.db.name().to_owned();
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).execute(&mut conn).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut conn)
        .await
        .unwrap();
    let (status, body) = api.call(Method::GET, "/healthz", None).await;
    assert_error(status, &body, 503, "transport");
    assert_eq!(body["retryable"], true);
    let message = body["message"].as_str().unwrap();
    assert!(!message.contains(&name) && !message.contains("127.0.0.1"), "{message}");
    let (status, body) = api.call(Method::GET, "/v1/lanes", None).await;
    assert_eq!(status, 503, "{body}");
    sqlx::query(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).execute(&mut conn).await.unwrap();
    let (status, _) = api.call(Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "the server recovers with the database");
    api.server.shutdown().await.unwrap();
}
