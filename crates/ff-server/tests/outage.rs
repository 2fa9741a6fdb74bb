//! A database outage fails fast: while the server's PostgreSQL is stopped, every request (health,
//! reads, submit, claim, complete) answers `503 transport` promptly, `/healthz` says the
//! database is down, and the first request after the database returns succeeds.

use std::time::{Duration, Instant};

use ff_embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use ff_server::{Server, ServerConfig};
use reqwest::{Client, Method};
use serde_json::{Value, json};

/// A generous bound on one answer during the outage (the acquire timeout is 1 s).
const PROMPT: Duration = Duration::from_secs(5);

async fn call(http: &Client, server: &Server, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http.request(method, format!("{}{path}", server.url())).timeout(Duration::from_secs(60));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_stopped_database_is_a_prompt_503_and_the_first_request_after_it_returns_succeeds() {
    let dir = std::env::temp_dir().join(format!("ff-outage-{}", uuid::Uuid::new_v4().simple()));
    let opts = |port| EmbeddedOptions { data_dir: Some(dir.clone()), port, ..EmbeddedOptions::default() };
    let pg = EmbeddedPostgres::start(opts(None)).await.expect("start a private cluster");
    let port = pg.port();
    let mut cfg = ServerConfig::new(pg.url());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(cfg).await.expect("server starts");
    let http = Client::new();

    let submit = |key: &str| json!({"lane_id": "outage", "execution_kind": "k", "input": {}, "idempotency_key": key});
    let claim = json!({"lane_id": "outage", "worker_instance_id": "w", "lease_ttl_ms": 60000, "max": 1});
    let (status, created) = call(&http, &server, Method::POST, "/v1/executions", Some(submit("before"))).await;
    assert_eq!(status, 201, "{created}");
    let (status, claimed) = call(&http, &server, Method::POST, "/v1/workers/w/claim", Some(claim.clone())).await;
    assert_eq!(status, 200, "{claimed}");
    let leased = &claimed["claimed"][0];
    let complete_path = format!("/v1/executions/{}/complete", leased["execution_id"].as_str().expect("claimed one"));
    let complete = json!({"handle": leased["handle"]});

    pg.stop().await.expect("stop the database");

    let requests: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/healthz".into(), None),
        (Method::GET, "/v1/lanes".into(), None),
        (Method::POST, "/v1/executions".into(), Some(submit("during"))),
        (Method::POST, "/v1/workers/w/claim".into(), Some(claim.clone())),
        (Method::POST, complete_path.clone(), Some(complete.clone())),
        (Method::GET, "/healthz".into(), None),
    ];
    for (method, path, body) in requests {
        let started = Instant::now();
        let (status, body) = call(&http, &server, method.clone(), &path, body).await;
        let took = started.elapsed();
        assert_eq!((status, body["code"].as_str()), (503, Some("transport")), "{method} {path}: {body}");
        assert_eq!(body["retryable"], true, "{method} {path}: {body}");
        assert!(took < PROMPT, "{method} {path} took {took:?} during the outage");
        if path == "/healthz" {
            assert!(body["message"].as_str().unwrap_or_default().contains("database down"), "{body}");
        }
    }

    let pg = EmbeddedPostgres::start(opts(Some(port))).await.expect("restart the database on its port");
    let (status, body) = call(&http, &server, Method::POST, complete_path.as_str(), Some(complete)).await;
    assert_eq!(status, 204, "the first request after the database returns succeeds: {body}");
    let (status, body) = call(&http, &server, Method::GET, "/healthz", None).await;
    assert_eq!(status, 200, "{body}");

    server.shutdown().await.expect("shutdown");
    pg.stop().await.expect("stop the database");
    let _ = std::fs::remove_dir_all(&dir);
}
