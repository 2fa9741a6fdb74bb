//! The worker registry over HTTP against real Postgres: registering, listing, heartbeats, and
//! marking an instance dead, which revokes its lease so another worker claims the execution at
//! once and the dead worker's late complete is refused; every bad request answers a typed error
//! and writes nothing.

mod common;

use common::{Api, assert_error};
use ff_core::wire::ClaimResponse;
use reqwest::Method;
use serde_json::{Value, json};

fn registration(instance: &str) -> Value {
    json!({"worker_instance_id": instance, "lanes": ["media"], "capabilities": ["gpu"], "liveness_ttl_ms": 30000})
}

#[tokio::test]
async fn marking_a_worker_dead_revokes_its_lease_at_once() {
    let api = Api::start().await;
    let (status, body) = api.call(Method::POST, "/v1/workers/pool-a/instances", Some(registration("w1"))).await;
    assert_eq!((status.as_u16(), &body["status"]), (201, &json!("registered")), "{body}");
    assert!(body["expires_at_ms"].as_i64().unwrap() > 0);
    let (status, body) = api.call(Method::POST, "/v1/workers/pool-a/instances", Some(registration("w1"))).await;
    assert_eq!((status.as_u16(), &body["status"]), (200, &json!("refreshed")), "{body}");
    let other = json!({"worker_instance_id": "w2", "liveness_ttl_ms": 30000, "namespace": "tenant-b"});
    let (status, _) = api.call(Method::POST, "/v1/workers/pool-b/instances", Some(other)).await;
    assert_eq!(status, 201);

    let (status, list) = api.call(Method::GET, "/v1/workers", None).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> =
        list["entries"].as_array().unwrap().iter().map(|w| w["worker_instance_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["w1", "w2"]);
    let w1 = &list["entries"][0];
    assert_eq!(
        (&w1["worker_id"], &w1["lanes"], &w1["capabilities"]),
        (&json!("pool-a"), &json!(["media"]), &json!(["gpu"]))
    );
    assert_eq!(list["cursor"], Value::Null);
    let (_, page) = api.call(Method::GET, "/v1/workers?limit=1", None).await;
    assert_eq!((&page["entries"][0]["worker_instance_id"], &page["cursor"]), (&json!("w1"), &json!("w1")));
    let (_, page) = api.call(Method::GET, "/v1/workers?limit=1&after=w1", None).await;
    assert_eq!(page["entries"][0]["worker_instance_id"], "w2");
    let (_, page) = api.call(Method::GET, "/v1/workers?namespace=tenant-b", None).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["worker_instance_id"], "w2");

    let (status, beat) = api.call(Method::POST, "/v1/workers/pool-a/instances/w1/heartbeat", Some(json!({}))).await;
    assert_eq!(status, 200, "{beat}");
    assert!(beat["next_expiry_ms"].as_i64().unwrap() >= w1["expires_at_ms"].as_i64().unwrap());

    // w1 holds a lease with a long TTL; marking it dead revokes it at once.
    let (_, created) =
        api.call(Method::POST, "/v1/executions", Some(json!({"lane_id": "media", "execution_kind": "k"}))).await;
    let id = created["execution_id"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D");
    let claim = |instance: &str| json!({"lane_id": "media", "worker_instance_id": instance, "lease_ttl_ms": 600000});
    let (_, claimed) = api.call(Method::POST, "/v1/workers/pool-a/claim", Some(claim("w1"))).await;
    let claimed: ClaimResponse = serde_json::from_value(claimed).unwrap();
    let handle = claimed.claimed[0].handle.clone();
    let (_, nothing) = api.call(Method::POST, "/v1/workers/pool-a/claim", Some(claim("w3"))).await;
    assert_eq!(nothing["claimed"], json!([]), "the lease is held");

    let (status, dead) =
        api.call(Method::POST, "/v1/workers/pool-a/instances/w1/dead", Some(json!({"reason": "host lost"}))).await;
    assert_eq!(status, 200, "{dead}");
    assert_eq!(dead, json!({"revoked_leases": 1}));
    let (_, list) = api.call(Method::GET, "/v1/workers", None).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 1, "only w2 is left: {list}");
    let (status, body) =
        api.call(Method::POST, &format!("/v1/executions/{id}/complete"), Some(json!({"handle": handle}))).await;
    assert_error(status, &body, 409, "lease_revoked");
    let (_, reclaimed) = api.call(Method::POST, "/v1/workers/pool-a/claim", Some(claim("w3"))).await;
    assert_eq!(reclaimed["claimed"][0]["claim_kind"], "reclaimed", "{reclaimed}");
    // Once reclaimed, the dead worker's handle names a superseded lease.
    let (status, body) =
        api.call(Method::POST, &format!("/v1/executions/{id}/complete"), Some(json!({"handle": handle}))).await;
    assert_error(status, &body, 409, "stale_lease");

    let (status, body) = api.call(Method::POST, "/v1/workers/pool-a/instances/w1/heartbeat", Some(json!({}))).await;
    assert_error(status, &body, 404, "worker_not_registered");
    let (status, body) = api.call(Method::POST, "/v1/workers/pool-a/instances", Some(registration("w1"))).await;
    assert_eq!((status.as_u16(), &body["status"]), (201, &json!("registered")), "a dead instance registers anew");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_registry_requests_get_a_typed_error_and_write_nothing() {
    let api = Api::start().await;
    let (status, _) = api.call(Method::POST, "/v1/workers/pool-a/instances", Some(registration("w1"))).await;
    assert_eq!(status, 201);
    let register = "/v1/workers/pool-a/instances";
    let with = |field: &str, value: Value| {
        let mut body = registration("w9");
        body[field] = value;
        body
    };
    let long_pool = "p".repeat(300);
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/v1/workers/pool-a/instances/ghost/heartbeat".into(),
            Some(json!({})),
            404,
            "worker_not_registered",
        ),
        (
            Method::POST,
            "/v1/workers/pool-a/instances/w1/heartbeat".into(),
            Some(json!({"namespace": "elsewhere"})),
            404,
            "worker_not_registered",
        ),
        (
            Method::POST,
            "/v1/workers/pool-a/instances/ghost/dead".into(),
            Some(json!({"reason": "gone"})),
            404,
            "worker_not_registered",
        ),
        (
            Method::POST,
            "/v1/workers/pool-b/instances".into(),
            Some(registration("w1")),
            409,
            "worker_instance_reassigned",
        ),
        (Method::POST, register.into(), Some(with("liveness_ttl_ms", json!(10))), 400, "invalid_input"),
        (Method::POST, register.into(), Some(with("liveness_ttl_ms", json!(100_000_000_000u64))), 400, "invalid_input"),
        (Method::POST, register.into(), Some(with("capabilities", json!(["bad token"]))), 400, "invalid_capabilities"),
        (Method::POST, register.into(), Some(with("worker_instance_id", json!("w\u{0}9"))), 400, "nul_in_text"),
        (Method::POST, register.into(), Some(with("worker_instance_id", json!(""))), 400, "invalid_input"),
        (Method::POST, register.into(), Some(with("lanes", json!([""]))), 400, "invalid_input"),
        (Method::POST, register.into(), Some(with("lifetime", json!(1))), 400, "invalid_input"),
        (Method::POST, format!("/v1/workers/{long_pool}/instances"), Some(registration("w9")), 400, "invalid_input"),
        (Method::POST, "/v1/workers/pool-a/instances/w%001/heartbeat".into(), Some(json!({})), 400, "nul_in_text"),
        (
            Method::POST,
            format!("/v1/workers/{long_pool}/instances/w1/heartbeat"),
            Some(json!({})),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/workers/pool-a/instances/w1/heartbeat".into(),
            Some(json!({"ns": ""})),
            400,
            "invalid_input",
        ),
        (
            Method::POST,
            "/v1/workers/pool-a/instances/w1/dead".into(),
            Some(json!({"reason": ""})),
            400,
            "invalid_input",
        ),
        (Method::POST, "/v1/workers/pool-a/instances/w1/dead".into(), Some(json!({})), 400, "invalid_input"),
        (
            Method::POST,
            "/v1/workers/pool-a/instances/w1/dead".into(),
            Some(json!({"reason": "r".repeat(300)})),
            400,
            "invalid_input",
        ),
        (Method::GET, "/v1/workers?limit=0".into(), None, 400, "invalid_input"),
        (Method::GET, "/v1/workers?limit=1001".into(), None, 400, "invalid_input"),
        (Method::GET, "/v1/workers?limit=many".into(), None, 400, "invalid_query"),
        (Method::GET, "/v1/workers?after=w%001".into(), None, 400, "nul_in_text"),
        (Method::GET, "/v1/workers?page=2".into(), None, 400, "invalid_query"),
    ];
    let before = api.fingerprint().await;
    for (method, path, body, status, code) in cases {
        let (s, b) = api.call(method.clone(), &path, body).await;
        assert_eq!(s.as_u16(), status, "{method} {path}: {b}");
        assert_eq!(b["code"], code, "{method} {path}: {b}");
        assert_eq!(api.fingerprint().await, before, "{method} {path} wrote something");
    }
    let (_, list) = api.call(Method::GET, "/v1/workers", None).await;
    assert_eq!(list["entries"][0]["worker_id"], "pool-a", "w1 still belongs to its pool");
    api.server.shutdown().await.unwrap();
}
