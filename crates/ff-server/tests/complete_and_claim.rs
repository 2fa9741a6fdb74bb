//! `POST /v1/workers/{worker_id}/complete-and-claim`: a worker completes one execution and leases
//! the next in one request; a bad claim writes nothing (not even the completion), and a refused
//! completion claims nothing.

mod common;

use common::{Api, assert_error};
use ff_core::wire::ClaimResponse;
use reqwest::Method;
use serde_json::{Value, json};

async fn submit(api: &Api, n: usize) {
    let executions: Vec<Value> = (0..n)
        .map(|i| json!({"lane_id": "jobs", "execution_kind": "k", "input_base64": "AAE=", "priority": i}))
        .collect();
    let (status, body) = api.call(Method::POST, "/v1/executions/batch", Some(json!({"executions": executions}))).await;
    assert_eq!(status, 200, "{body}");
}

fn claim_body(max: usize) -> Value {
    json!({"lane_id": "jobs", "worker_instance_id": "w-1", "lease_ttl_ms": 30000, "max": max})
}

async fn claim(api: &Api) -> ClaimResponse {
    let (status, body) = api.call(Method::POST, "/v1/workers/pool/claim", Some(claim_body(1))).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).unwrap()
}

async fn phase(api: &Api, id: &ff_core::ExecutionId) -> String {
    sqlx::query_scalar("SELECT lifecycle_phase::text FROM ff_execution WHERE execution_id = $1")
        .bind(id.uuid())
        .fetch_one(api.db.pool())
        .await
        .unwrap()
}

async fn runnable(api: &Api) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ff_execution WHERE lifecycle_phase = 'runnable'")
        .fetch_one(api.db.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_runs_a_lane_dry_with_one_request_per_execution() {
    let api = Api::start().await;
    submit(&api, 3).await;
    let mut held = claim(&api).await.claimed;
    let mut done = Vec::new();
    while let Some(current) = held.pop() {
        let body = json!({"complete": {"handle": current.handle, "result_base64": "b2s="}, "claim": claim_body(1)});
        let (status, out) = api.call(Method::POST, "/v1/workers/pool/complete-and-claim", Some(body)).await;
        assert_eq!(status, 200, "{out}");
        let next: ClaimResponse = serde_json::from_value(out).unwrap();
        assert!(next.claimed.len() <= 1);
        assert!(next.claimed.iter().all(|c| c.input_base64 == "AAE=" && c.execution_kind == "k"));
        done.push(current.execution_id);
        held = next.claimed;
    }
    assert_eq!(done.len(), 3, "every execution was leased once, the last answer was empty");
    done.sort_by_key(|id| id.to_string());
    done.dedup();
    assert_eq!(done.len(), 3);
    for id in &done {
        assert_eq!(phase(&api, id).await, "terminal");
    }
    let (completed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM ff_execution WHERE terminal_outcome = 'success' AND result = 'ok'")
            .fetch_one(api.db.pool())
            .await
            .unwrap();
    assert_eq!(completed, 3);
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_claim_is_refused_before_the_completion_is_written() {
    let api = Api::start().await;
    submit(&api, 2).await;
    let current = claim(&api).await.claimed.pop().unwrap();
    let before = api.fingerprint().await;
    let bad_claims = [
        json!({"lane_id": "jobs", "worker_instance_id": "w-1", "lease_ttl_ms": 0}),
        json!({"lane_id": "jobs", "worker_instance_id": "w-1", "lease_ttl_ms": 30000, "max": 0}),
        json!({"lane_id": "", "worker_instance_id": "w-1", "lease_ttl_ms": 30000}),
        json!({"lane_id": "jobs", "worker_instance_id": "w-1", "lease_ttl_ms": 30000, "capabilities": ["a b"]}),
    ];
    for bad in bad_claims {
        let body = json!({"complete": {"handle": current.handle}, "claim": bad});
        let (status, out) = api.call(Method::POST, "/v1/workers/pool/complete-and-claim", Some(body)).await;
        assert_eq!(status.as_u16(), 400, "{out}");
        assert!(out["code"].is_string() && out["message"].is_string(), "{out}");
        assert_eq!(api.fingerprint().await, before, "nothing written for {out}");
    }
    assert_eq!(phase(&api, &current.execution_id).await, "active");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_completion_claims_nothing() {
    let api = Api::start().await;
    submit(&api, 2).await;
    let current = claim(&api).await.claimed.pop().unwrap();
    // The holder cancels: its handle can no longer complete.
    let id = current.execution_id.to_string().replace('{', "%7B").replace('}', "%7D");
    let cancel = json!({"handle": current.handle, "reason": "not needed"});
    let (status, out) = api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), Some(cancel)).await;
    assert_eq!(status, 204, "{out}");
    let before = api.fingerprint().await;
    let body = json!({"complete": {"handle": current.handle}, "claim": claim_body(1)});
    let (status, out) = api.call(Method::POST, "/v1/workers/pool/complete-and-claim", Some(body)).await;
    assert_eq!(status.as_u16(), 409, "{out}");
    assert!(out["code"].is_string(), "{out}");
    assert_eq!(api.fingerprint().await, before, "nothing completed, nothing claimed");
    assert_eq!(runnable(&api).await, 1);
    // A handle that does not decode.
    let body = json!({"complete": {"handle": "ff1.nope"}, "claim": claim_body(1)});
    let (status, out) = api.call(Method::POST, "/v1/workers/pool/complete-and-claim", Some(body)).await;
    assert_error(status, &out, 400, "invalid_handle");
    assert_eq!(api.fingerprint().await, before);
    api.server.shutdown().await.unwrap();
}
