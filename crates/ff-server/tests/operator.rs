//! The operator controls over HTTP against real Postgres: cancel (beside the lease holder's
//! cancel on the same route), revoke a lease, change a priority, replay, list expired leases,
//! the fence-triple calls (renew, complete, fail by the lease fence) and reclaim grants. Each
//! route's success, and each refusal with its status and code; a refused call writes nothing
//! (the stored rows are compared before and after).

mod common;

use common::{Api, assert_error};
use ff_core::wire::ClaimResponse;
use reqwest::Method;
use serde_json::{Value, json};

impl Api {
    /// Submits an execution on `lane` (with `policy` when given); returns its id.
    async fn submit(&self, lane: &str, policy: Option<Value>) -> String {
        let mut body = json!({"lane_id": lane, "execution_kind": "k", "input": {"n": 1}});
        if let Some(p) = policy {
            body["policy"] = p;
        }
        let (status, created) = self.call(Method::POST, "/v1/executions", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        created["execution_id"].as_str().unwrap().to_owned()
    }

    /// Claims one execution of `lane` as `instance`; returns its handle token.
    async fn claim(&self, lane: &str, instance: &str) -> String {
        let body = json!({"lane_id": lane, "worker_instance_id": instance, "lease_ttl_ms": 600000});
        let (status, claimed) = self.call(Method::POST, "/v1/workers/pool/claim", Some(body)).await;
        assert_eq!(status, 200, "{claimed}");
        let claimed: ClaimResponse = serde_json::from_value(claimed).unwrap();
        assert_eq!(claimed.claimed.len(), 1, "one execution to claim on {lane}");
        claimed.claimed[0].handle.clone()
    }

    async fn snapshot(&self, id: &str) -> Value {
        let (status, snap) = self.call(Method::GET, &format!("/v1/executions/{id}"), None).await;
        assert_eq!(status, 200, "{snap}");
        snap
    }

    /// The current lease's fence, as the fence-triple routes take it.
    async fn fence(&self, id: &str) -> Value {
        let snap = self.snapshot(id).await;
        json!({
            "lease_id": snap["current_lease"]["lease_id"],
            "lease_epoch": snap["current_lease"]["lease_epoch"],
            "attempt_id": snap["current_attempt"]["attempt_id"],
        })
    }

    /// Sends a request that must be refused with `status` and `code`, and checks it wrote
    /// nothing.
    async fn refused(&self, method: Method, path: &str, body: Option<Value>, status: u16, code: &str) {
        let before = self.fingerprint().await;
        let (s, b) = self.call(method.clone(), path, body).await;
        assert_error(s, &b, status, code);
        assert_eq!(self.fingerprint().await, before, "{method} {path} wrote although refused");
    }
}

/// A well-formed id of an execution that does not exist.
const GHOST: &str = "{fp:1}:00000000-0000-0000-0000-000000000001";

#[tokio::test]
async fn an_operator_cancel_ends_any_live_execution_and_fences_out_its_holder() {
    let api = Api::start().await;
    let running = api.submit("media", None).await;
    let handle = api.claim("media", "w1").await;
    let cancel = |id: &str| format!("/v1/executions/{id}/cancel");

    let (status, body) = api.call(Method::POST, &cancel(&running), Some(json!({"reason": "customer asked"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"status": "cancelled", "execution_id": running, "public_state": "cancelled"}));
    let snap = api.snapshot(&running).await;
    assert_eq!((&snap["public_state"], &snap["blocking_detail"]), (&json!("cancelled"), &json!("customer asked")));
    // The holder's next call finds the execution ended.
    let complete = format!("/v1/executions/{running}/complete");
    api.refused(Method::POST, &complete, Some(json!({"handle": handle})), 409, "execution_not_active").await;
    // A terminal execution cannot be cancelled again.
    api.refused(Method::POST, &cancel(&running), Some(json!({"reason": "again"})), 409, "terminal").await;

    // A waiting execution is cancelled too; nothing holds it.
    let waiting = api.submit("media", None).await;
    let (status, body) = api.call(Method::POST, &cancel(&waiting), Some(json!({"reason": "not needed"}))).await;
    assert_eq!((status.as_u16(), &body["public_state"]), (200, &json!("cancelled")), "{body}");

    // The lease holder's cancel keeps its shape on the same route: a body with a handle, 204.
    let held = api.submit("media", None).await;
    let handle = api.claim("media", "w1").await;
    let (status, body) =
        api.call(Method::POST, &cancel(&held), Some(json!({"handle": handle, "reason": "from inside"}))).await;
    assert_eq!((status.as_u16(), &body), (204, &Value::Null));
    assert_eq!(api.snapshot(&held).await["public_state"], "cancelled");

    // A source other than the operator must present the current lease while one is held.
    let leased = api.submit("media", None).await;
    api.claim("media", "w1").await;
    let fence = api.fence(&leased).await;
    let mut stale = fence.clone();
    stale["lease_epoch"] = json!(fence["lease_epoch"].as_u64().unwrap() + 1);
    let by_holder = |fence: Option<&Value>| {
        let mut body = json!({"reason": "r", "source": "lease_holder"});
        if let Some(f) = fence {
            body["fence"] = f.clone();
        }
        body
    };
    api.refused(Method::POST, &cancel(&leased), Some(by_holder(None)), 400, "fence_required").await;
    api.refused(Method::POST, &cancel(&leased), Some(by_holder(Some(&stale))), 409, "stale_lease").await;
    let (status, body) = api.call(Method::POST, &cancel(&leased), Some(by_holder(Some(&fence)))).await;
    assert_eq!(status, 200, "{body}");

    // Bad requests.
    let waiting = api.submit("media", None).await;
    api.refused(Method::POST, &cancel(GHOST), Some(json!({"reason": "r"})), 404, "not_found").await;
    api.refused(Method::POST, &cancel(&waiting), Some(json!({"reason": "a\u{0}b"})), 400, "nul_in_text").await;
    api.refused(Method::POST, &cancel(&waiting), Some(json!({})), 400, "invalid_input").await;
    api.refused(Method::POST, &cancel(&waiting), Some(json!({"reason": "r", "why": 1})), 400, "invalid_input").await;
    api.refused(
        Method::POST,
        &cancel(&waiting),
        Some(json!({"reason": "r", "source": "nobody"})),
        400,
        "invalid_input",
    )
    .await;
    api.refused(Method::POST, &cancel(&waiting), Some(json!({"handle": "nope", "reason": "r"})), 400, "invalid_handle")
        .await;
    api.refused(Method::POST, &cancel("not-an-id"), Some(json!({"reason": "r"})), 400, "invalid_path").await;
    api.refused(
        Method::POST,
        &cancel("{fp:99999}:00000000-0000-0000-0000-000000000001"),
        Some(json!({"reason": "r"})),
        400,
        "invalid_path",
    )
    .await;
    assert_eq!(api.snapshot(&waiting).await["public_state"], "waiting");
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_revoked_lease_fences_out_its_holder_and_its_execution_can_be_reclaimed() {
    let api = Api::start().await;
    let id = api.submit("media", None).await;
    let handle = api.claim("media", "w1").await;
    let fence = api.fence(&id).await;
    let revoke = format!("/v1/executions/{id}/revoke-lease");

    let other_lease = json!({"expected_lease_id": "00000000-0000-0000-0000-000000000009"});
    api.refused(Method::POST, &revoke, Some(other_lease), 409, "stale_lease").await;
    api.refused(Method::POST, &revoke, Some(json!({"worker_instance_id": "w2"})), 409, "stale_lease").await;
    api.refused(Method::POST, &revoke, Some(json!({"reason": "a\u{0}b"})), 400, "nul_in_text").await;
    api.refused(Method::POST, &revoke, Some(json!({"worker_instance_id": ""})), 400, "invalid_input").await;
    api.refused(Method::POST, &revoke, Some(json!({"lease": 1})), 400, "invalid_input").await;

    let body = json!({"expected_lease_id": fence["lease_id"], "worker_instance_id": "w1", "reason": "hung"});
    let (status, revoked) = api.call(Method::POST, &revoke, Some(body)).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(
        revoked,
        json!({"status": "revoked", "lease_id": fence["lease_id"], "lease_epoch": fence["lease_epoch"]})
    );
    let snap = api.snapshot(&id).await;
    assert_eq!(snap["state"]["ownership_state"], "lease_revoked", "{snap}");
    assert_eq!(snap["blocking_detail"], "hung");
    let renew = format!("/v1/executions/{id}/renew");
    api.refused(Method::POST, &renew, Some(json!({"handle": handle})), 409, "lease_revoked").await;
    // No live lease is left: nothing to do, nothing written (no body at all).
    let before = api.fingerprint().await;
    let (status, again) = api.call(Method::POST, &revoke, None).await;
    assert_eq!((status.as_u16(), again), (200, json!({"status": "already_satisfied", "reason": "already_revoked"})));
    assert_eq!(api.fingerprint().await, before);

    // A reclaim grant for another worker.
    let reclaim = format!("/v1/executions/{id}/reclaim");
    let grant =
        |lane: &str| json!({"worker_id": "pool", "worker_instance_id": "w2", "lane_id": lane, "grant_ttl_ms": 5000});
    api.refused(Method::POST, &reclaim, Some(grant("other")), 400, "invalid_input").await;
    let mut zero_ttl = grant("media");
    zero_ttl["grant_ttl_ms"] = json!(0);
    api.refused(Method::POST, &reclaim, Some(zero_ttl), 400, "invalid_input").await;
    api.refused(Method::POST, &format!("/v1/executions/{GHOST}/reclaim"), Some(grant("media")), 404, "not_found").await;
    let (status, granted) = api.call(Method::POST, &reclaim, Some(grant("media"))).await;
    assert_eq!((status.as_u16(), &granted["status"]), (200, &json!("granted")), "{granted}");
    assert_eq!(granted["execution_id"], json!(id));
    assert!(granted["grant_key"].as_str().is_some_and(|k| !k.is_empty()), "{granted}");

    // A waiting execution holds no lease; a terminal one cannot be revoked; an unknown one is 404.
    let waiting = api.submit("media", None).await;
    let (status, noop) = api.call(Method::POST, &format!("/v1/executions/{waiting}/revoke-lease"), None).await;
    assert_eq!((status.as_u16(), noop), (200, json!({"status": "already_satisfied", "reason": "no_active_lease"})));
    let (_, live) = api.call(Method::POST, &format!("/v1/executions/{waiting}/reclaim"), Some(grant("media"))).await;
    assert_eq!(live["status"], "not_reclaimable", "{live}");
    let (status, _) =
        api.call(Method::POST, &format!("/v1/executions/{waiting}/cancel"), Some(json!({"reason": "r"}))).await;
    assert_eq!(status, 200);
    let terminal = format!("/v1/executions/{waiting}/revoke-lease");
    api.refused(Method::POST, &terminal, None, 409, "terminal").await;
    api.refused(Method::POST, &format!("/v1/executions/{GHOST}/revoke-lease"), None, 404, "not_found").await;
    api.refused(Method::POST, "/v1/executions/nope/revoke-lease", None, 400, "invalid_path").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_priority_changes_within_its_bounds() {
    let api = Api::start().await;
    let id = api.submit("media", None).await;
    let priority = format!("/v1/executions/{id}/priority");
    let (status, changed) = api.call(Method::PUT, &priority, Some(json!({"new_priority": 700}))).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed, json!({"status": "changed", "execution_id": id, "old_priority": 0, "new_priority": 700}));
    let (_, info) = api.call(Method::GET, &format!("/v1/executions/{id}/info"), None).await;
    assert_eq!(info["priority"], 700);
    let (status, changed) =
        api.call(Method::PUT, &priority, Some(json!({"new_priority": 9000, "lane_id": "media"}))).await;
    assert_eq!((status.as_u16(), &changed["old_priority"]), (200, &json!(700)), "{changed}");

    for bad in [9001, -1] {
        api.refused(Method::PUT, &priority, Some(json!({"new_priority": bad})), 400, "priority_out_of_range").await;
    }
    let other_lane = json!({"new_priority": 1, "lane_id": "email"});
    api.refused(Method::PUT, &priority, Some(other_lane), 400, "invalid_input").await;
    api.refused(Method::PUT, &priority, Some(json!({"priority": 1})), 400, "invalid_input").await;
    api.refused(Method::PUT, &priority, Some(json!({"new_priority": "high"})), 400, "invalid_input").await;
    let ghost = format!("/v1/executions/{GHOST}/priority");
    api.refused(Method::PUT, &ghost, Some(json!({"new_priority": 1})), 404, "not_found").await;
    api.refused(Method::PUT, "/v1/executions/42/priority", Some(json!({"new_priority": 1})), 400, "invalid_path").await;
    let (status, _) =
        api.call(Method::POST, &format!("/v1/executions/{id}/cancel"), Some(json!({"reason": "r"}))).await;
    assert_eq!(status, 200);
    api.refused(Method::PUT, &priority, Some(json!({"new_priority": 1})), 409, "terminal").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_replay_runs_a_terminal_execution_again_up_to_its_cap() {
    let api = Api::start().await;
    let id = api.submit("media", Some(json!({"max_replay_count": 1}))).await;
    let replay = format!("/v1/executions/{id}/replay");
    api.refused(Method::POST, &replay, None, 409, "execution_not_terminal").await;
    let handle = api.claim("media", "w1").await;
    api.refused(Method::POST, &replay, Some(json!({})), 409, "execution_not_terminal").await;
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/executions/{id}/complete"),
            Some(json!({"handle": handle, "result_base64": "b2s="})),
        )
        .await;
    assert_eq!(status, 204);

    api.refused(Method::POST, &replay, Some(json!({"again": true})), 400, "invalid_input").await;
    let (status, replayed) = api.call(Method::POST, &replay, None).await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed, json!({"status": "replayed", "public_state": "waiting", "replay_count": 1}));
    let snap = api.snapshot(&id).await;
    assert_eq!((&snap["public_state"], &snap["replay_count"]), (&json!("waiting"), &json!(1)), "{snap}");
    let (status, _) = api.call(Method::GET, &format!("/v1/executions/{id}/result"), None).await;
    assert_eq!(status, 404, "a replay clears the result");

    // The replay runs as a new attempt and ends; the cap (1) is then reached.
    api.claim("media", "w2").await;
    let snap = api.snapshot(&id).await;
    assert_eq!(snap["current_attempt"]["attempt_index"], 1, "{snap}");
    let fence = api.fence(&id).await;
    let (status, body) = api
        .call(Method::POST, &format!("/v1/executions/{id}/attempts/1/complete"), Some(json!({"fence": fence})))
        .await;
    assert_eq!(status, 200, "{body}");
    api.refused(Method::POST, &replay, Some(json!({})), 409, "max_replays_exhausted").await;
    api.refused(Method::POST, &format!("/v1/executions/{GHOST}/replay"), None, 404, "not_found").await;
    api.refused(Method::POST, "/v1/executions/%7Bfp:1%7D:xyz/replay", None, 400, "invalid_path").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_fence_triple_renews_completes_and_fails_an_attempt() {
    let api = Api::start().await;
    let retry = json!({"retry_policy": {"max_retries": 1, "backoff": {"type": "fixed", "delay_ms": 0}}});
    let id = api.submit("media", Some(retry)).await;
    api.claim("media", "w1").await;
    let fence = api.fence(&id).await;
    let at = |index: u32, op: &str| format!("/v1/executions/{id}/attempts/{index}/{op}");

    let expires = api.snapshot(&id).await["current_lease"]["expires_at"].as_i64().unwrap();
    let (status, renewed) = api.call(Method::POST, &at(0, "renew"), Some(json!({"fence": fence}))).await;
    assert_eq!((status.as_u16(), &renewed["status"]), (200, &json!("renewed")), "{renewed}");
    assert!(renewed["expires_at_ms"].as_i64().unwrap() >= expires, "{renewed}");
    assert_eq!(renewed["lease_epoch"], fence["lease_epoch"]);
    let mut stale = fence.clone();
    stale["lease_epoch"] = json!(fence["lease_epoch"].as_u64().unwrap() + 1);
    api.refused(Method::POST, &at(0, "renew"), Some(json!({})), 400, "fence_required").await;
    api.refused(Method::POST, &at(0, "renew"), Some(json!({"fence": stale})), 409, "stale_lease").await;
    api.refused(Method::POST, &at(3, "renew"), Some(json!({"fence": fence})), 409, "stale_lease").await;
    api.refused(
        Method::POST,
        &format!("/v1/executions/{id}/attempts/x/renew"),
        Some(json!({"fence": fence})),
        400,
        "invalid_path",
    )
    .await;
    api.refused(Method::POST, &at(0, "fail"), Some(json!({"message": "m"})), 400, "fence_required").await;
    api.refused(Method::POST, &at(0, "complete"), Some(json!({"source": "lease_holder"})), 400, "fence_required").await;
    api.refused(
        Method::POST,
        &at(0, "complete"),
        Some(json!({"fence": fence, "result_base64": "%%"})),
        400,
        "invalid_input",
    )
    .await;

    // A transient failure is retried (zero backoff: claimable at once) as attempt 1.
    let (status, failed) =
        api.call(Method::POST, &at(0, "fail"), Some(json!({"fence": fence, "message": "upstream 503"}))).await;
    assert_eq!((status.as_u16(), &failed["status"]), (200, &json!("retry_scheduled")), "{failed}");
    api.claim("media", "w1").await;
    let fence = api.fence(&id).await;
    let (status, done) =
        api.call(Method::POST, &at(1, "complete"), Some(json!({"fence": fence, "result_base64": "b2s="}))).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done, json!({"status": "completed", "execution_id": id, "public_state": "completed"}));
    let result = api.http.get(format!("{}/v1/executions/{id}/result", api.server.url())).send().await.unwrap();
    assert_eq!(result.bytes().await.unwrap().as_ref(), b"ok");
    api.refused(Method::POST, &at(1, "complete"), Some(json!({"fence": fence})), 409, "execution_not_active").await;

    // An operator fails whatever lease is live, without a fence; a permanent failure is final.
    let other = api.submit("media", None).await;
    api.claim("media", "w1").await;
    let body = json!({"message": "bad input", "classification": "permanent", "source": "operator_override"});
    let (status, failed) = api.call(Method::POST, &format!("/v1/executions/{other}/attempts/0/fail"), Some(body)).await;
    assert_eq!((status.as_u16(), failed), (200, json!({"status": "terminal_failed"})));
    assert_eq!(api.snapshot(&other).await["public_state"], "failed");
    let ghost = format!("/v1/executions/{GHOST}/attempts/0/renew");
    api.refused(Method::POST, &ghost, Some(json!({"fence": fence})), 404, "not_found").await;
    api.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_leases_are_listed_in_pages() {
    let api = Api::start().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.submit("media", None).await);
    }
    let other_ns = json!({"lane_id": "media", "execution_kind": "k", "namespace": "tenant-b"});
    let (_, created) = api.call(Method::POST, "/v1/executions", Some(other_ns)).await;
    ids.push(created["execution_id"].as_str().unwrap().to_owned());
    for n in 0..4 {
        api.claim("media", &format!("w{n}")).await;
    }
    let (status, now) = api.call(Method::GET, "/v1/leases/expired", None).await;
    assert_eq!((status.as_u16(), now), (200, json!({"entries": [], "cursor": null})), "every lease is live now");

    // As of a time after every lease's expiry, all four are expired, by expiry then id.
    let mut latest = 0;
    for id in &ids {
        latest = latest.max(api.snapshot(id).await["current_lease"]["expires_at"].as_i64().unwrap());
    }
    let as_of = latest + 1;
    let (status, all) = api.call(Method::GET, &format!("/v1/leases/expired?as_of={as_of}"), None).await;
    assert_eq!(status, 200, "{all}");
    let entries = all["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{all}");
    assert!(entries.iter().all(|e| e["ownership_state"] == "leased" && e["attempt_index"] == 0), "{all}");
    let (_, first) = api.call(Method::GET, &format!("/v1/leases/expired?as_of={as_of}&limit=3"), None).await;
    assert_eq!(first["entries"].as_array().unwrap()[..], entries[..3], "{first}");
    let cursor = &first["cursor"];
    assert_eq!(cursor["execution_id"], entries[2]["execution_id"], "{first}");
    let next = format!(
        "/v1/leases/expired?as_of={as_of}&limit=3&after_expires_at_ms={}&after_execution_id={}",
        cursor["expires_at_ms"],
        cursor["execution_id"].as_str().unwrap().replace('{', "%7B").replace('}', "%7D"),
    );
    let (status, rest) = api.call(Method::GET, &next, None).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["entries"].as_array().unwrap()[..], entries[3..], "{rest}");
    assert_eq!(rest["cursor"], Value::Null);
    let (_, tenant) =
        api.call(Method::GET, &format!("/v1/leases/expired?as_of={as_of}&namespace=tenant-b"), None).await;
    assert_eq!(tenant["entries"].as_array().unwrap().len(), 1, "{tenant}");
    assert_eq!(tenant["entries"][0]["execution_id"], json!(ids[3]));

    let expired = "/v1/leases/expired";
    api.refused(Method::GET, &format!("{expired}?after_expires_at_ms=5"), None, 400, "invalid_query").await;
    api.refused(
        Method::GET,
        &format!("{expired}?after_execution_id=x&after_expires_at_ms=5"),
        None,
        400,
        "invalid_input",
    )
    .await;
    api.refused(Method::GET, &format!("{expired}?limit=0"), None, 400, "invalid_input").await;
    api.refused(Method::GET, &format!("{expired}?limit=10001"), None, 400, "invalid_input").await;
    api.refused(Method::GET, &format!("{expired}?as_of=-5"), None, 400, "invalid_input").await;
    api.refused(Method::GET, &format!("{expired}?limit=many"), None, 400, "invalid_query").await;
    api.refused(Method::GET, &format!("{expired}?cursor=1"), None, 400, "invalid_query").await;
    api.server.shutdown().await.unwrap();
}
