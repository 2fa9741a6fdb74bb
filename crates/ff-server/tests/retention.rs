//! The retention routes: set, read, list and remove lane and namespace overrides; refused
//! windows and malformed bodies write nothing; the server's retention settings are checked at
//! boot.

mod common;

use common::{Api, assert_error};
use ff_server::ServerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn overrides(api: &Api) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(r::text, '|' ORDER BY scope_kind, scope_id), '') FROM ff_retention_policy r",
    )
    .fetch_one(api.db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn overrides_are_set_read_listed_and_removed() {
    let api = Api::start().await;
    let (status, body) = api
        .call(
            Method::PUT,
            "/v1/retention",
            Some(json!({"scope": {"kind": "lane", "id": "emails"}, "retention_ms": 60000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["scope"].clone(), body["retention_ms"].clone()),
        (json!({"kind": "lane", "id": "emails"}), json!(60000))
    );
    let (status, _) = api
        .call(
            Method::PUT,
            "/v1/retention",
            Some(json!({"scope": {"kind": "namespace", "id": "acme"}, "retention_ms": 5000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            Method::PUT,
            "/v1/retention",
            Some(json!({"scope": {"kind": "lane", "id": "emails"}, "retention_ms": 90000})),
        )
        .await;
    assert_eq!((status, body["retention_ms"].clone()), (StatusCode::OK, json!(90000)), "a second PUT replaces");

    let (status, body) = api.call(Method::GET, "/v1/retention/lanes/emails", None).await;
    assert_eq!((status, body["retention_ms"].clone()), (StatusCode::OK, json!(90000)));
    let (status, body) = api.call(Method::GET, "/v1/retention/namespaces/acme", None).await;
    assert_eq!((status, body["retention_ms"].clone()), (StatusCode::OK, json!(5000)));
    let (status, body) = api.call(Method::GET, "/v1/retention", None).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<Value> = body["policies"].as_array().unwrap().iter().map(|p| p["scope"].clone()).collect();
    assert_eq!(listed, vec![json!({"kind": "lane", "id": "emails"}), json!({"kind": "namespace", "id": "acme"})]);

    let (status, _) = api.call(Method::DELETE, "/v1/retention/lanes/emails", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::DELETE, "/v1/retention/lanes/emails", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = api.call(Method::GET, "/v1/retention/lanes/emails", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, _) = api.call(Method::DELETE, "/v1/retention/namespaces/acme", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(overrides(&api).await, "");
}

#[tokio::test]
async fn bad_overrides_are_refused_and_write_nothing() {
    let api = Api::start().await;
    let (status, _) = api
        .call(
            Method::PUT,
            "/v1/retention",
            Some(json!({"scope": {"kind": "lane", "id": "keep"}, "retention_ms": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = (overrides(&api).await, api.fingerprint().await);
    for (body, code) in [
        (json!({"scope": {"kind": "lane", "id": "keep"}, "retention_ms": -1}), "invalid_input"),
        (json!({"scope": {"kind": "lane", "id": "keep"}, "retention_ms": 0}), "invalid_input"),
        (json!({"scope": {"kind": "namespace", "id": "a\u{0}b"}, "retention_ms": 10}), "nul_in_text"),
        (json!({"scope": {"kind": "flow", "id": "x"}, "retention_ms": 10}), "invalid_input"),
        (json!({"scope": {"kind": "lane", "id": ""}, "retention_ms": 10}), "invalid_input"),
        (json!({"scope": {"kind": "lane", "id": "keep"}, "retention_ms": 10, "extra": 1}), "invalid_input"),
    ] {
        let (status, answer) = api.call(Method::PUT, "/v1/retention", Some(body.clone())).await;
        assert_error(status, &answer, 400, code);
        assert_eq!((overrides(&api).await, api.fingerprint().await), before, "{body} wrote nothing");
    }
}

#[test]
fn retention_settings_are_checked_at_boot() {
    let ok = ServerConfig::new("postgres://u@h/db");
    ok.validate().expect("the defaults are valid");
    assert_eq!(ok.scanners().retention.default_retention.as_millis(), 7 * 24 * 3_600_000);
    for (cfg, name) in [
        (ServerConfig { retention_ms: 0, ..ok.clone() }, "FF_RETENTION_MS"),
        (ServerConfig { event_retention_ms: 0, ..ok.clone() }, "FF_EVENT_RETENTION_MS"),
        (ServerConfig { retention_batch: 0, ..ok.clone() }, "FF_RETENTION_BATCH"),
        (ServerConfig { retention_interval_ms: 0, ..ok.clone() }, "FF_RETENTION_INTERVAL_MS"),
    ] {
        let message = cfg.validate().unwrap_err().to_string();
        assert!(message.contains(name), "{message}");
    }
}
