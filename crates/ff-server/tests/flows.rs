//! Flows over HTTP against real Postgres: a whole DAG created in one request and run through
//! the worker routes to completion; the incremental build (header, members, staged and applied
//! edges, group policies); refused graph edits, which write nothing (the stored rows, flows and
//! edges included, are compared before and after); flow cancellation with its `wait`; and the
//! lease holder's wait for its children.

mod common;

use common::{Api, assert_error};
use ff_core::wire::{ClaimResponse, ClaimedExecution};
use ff_core::{ExecutionId, FlowId, PartitionConfig};
use reqwest::Method;
use serde_json::{Value, json};

impl Api {
    /// Everything the common fingerprint holds, plus every flow, edge, edge group and cancel
    /// backlog row.
    async fn flow_fingerprint(&self) -> String {
        let flows: String = sqlx::query_scalar(
            "SELECT coalesce((SELECT string_agg(f::text, '|' ORDER BY flow_id) FROM ff_flow f), '') \
             || '#' || coalesce((SELECT string_agg(e::text, '|' ORDER BY edge_id) FROM ff_edge e), '') \
             || '#' || coalesce((SELECT string_agg(g::text, '|' ORDER BY downstream_id) \
                                 FROM ff_edge_group g), '') \
             || '#' || (SELECT count(*) FROM ff_flow_cancel_member)::text",
        )
        .fetch_one(self.db.pool())
        .await
        .unwrap();
        format!("{}#{flows}", self.fingerprint().await)
    }

    /// Sends a request that must be refused with `status` and `code`, and checks it wrote
    /// nothing; returns the error body.
    async fn refused(&self, method: Method, path: &str, body: Option<Value>, status: u16, code: &str) -> Value {
        let before = self.flow_fingerprint().await;
        let (s, b) = self.call(method.clone(), path, body).await;
        assert_error(s, &b, status, code);
        assert_eq!(self.flow_fingerprint().await, before, "{method} {path} wrote although refused");
        b
    }

    /// Claims everything claimable on `lane`.
    async fn claim_all(&self, lane: &str) -> Vec<ClaimedExecution> {
        let body = json!({"lane_id": lane, "worker_instance_id": "w1", "lease_ttl_ms": 600000, "max": 100});
        let (status, claimed) = self.call(Method::POST, "/v1/workers/pool/claim", Some(body)).await;
        assert_eq!(status, 200, "{claimed}");
        serde_json::from_value::<ClaimResponse>(claimed).unwrap().claimed
    }

    async fn complete(&self, c: &ClaimedExecution) {
        let path = format!("/v1/executions/{}/complete", c.execution_id);
        let (status, body) = self.call(Method::POST, &path, Some(json!({"handle": c.handle}))).await;
        assert_eq!(status, 204, "{body}");
    }

    async fn flow(&self, flow: FlowId) -> Value {
        let (status, body) = self.call(Method::GET, &format!("/v1/flows/{flow}"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn public_state(&self, id: ExecutionId) -> Value {
        let (status, body) = self.call(Method::GET, &format!("/v1/executions/{id}/state"), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Submits an execution minted for `flow` on `lane` (not yet a member); returns its id.
    async fn submit_for(&self, flow: FlowId, lane: &str) -> ExecutionId {
        let id = ExecutionId::for_flow(&flow, &PartitionConfig::default());
        let body = json!({"execution_id": id, "lane_id": lane, "execution_kind": "k", "input": {"n": 1}});
        let (status, created) = self.call(Method::POST, "/v1/executions", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        id
    }

    /// Stages and applies the edge `up -> down`; returns the edge id.
    async fn link(&self, flow: FlowId, up: ExecutionId, down: ExecutionId) -> String {
        let revision = self.flow(flow).await["graph_revision"].clone();
        let edge = json!({"upstream_execution_id": up, "downstream_execution_id": down,
                          "expected_graph_revision": revision});
        let (status, staged) = self.call(Method::POST, &format!("/v1/flows/{flow}/edges"), Some(edge)).await;
        assert_eq!(status, 201, "{staged}");
        let edge_id = staged["Staged"]["edge_id"].as_str().unwrap().to_owned();
        let apply = json!({"edge_id": edge_id, "upstream_execution_id": up, "downstream_execution_id": down});
        let (status, applied) = self.call(Method::POST, &format!("/v1/flows/{flow}/edges/apply"), Some(apply)).await;
        assert_eq!(status, 200, "{applied}");
        assert!(applied["Applied"].is_object(), "{applied}");
        edge_id
    }
}

/// A graph request: `n` members on `lane` with `edges` (indexes into the members).
fn graph(flow: FlowId, lane: &str, n: usize, edges: &[(usize, usize)]) -> (Value, Vec<ExecutionId>) {
    let ids: Vec<ExecutionId> = (0..n).map(|_| ExecutionId::for_flow(&flow, &PartitionConfig::default())).collect();
    let members: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"execution_id": id, "lane_id": lane, "execution_kind": "step", "input": {"i": i}}))
        .collect();
    let edges: Vec<Value> = edges
        .iter()
        .map(|&(u, d)| json!({"upstream_execution_id": ids[u], "downstream_execution_id": ids[d]}))
        .collect();
    let body = json!({"flow": {"flow_id": flow, "flow_kind": "etl.nightly"}, "members": members, "edges": edges});
    (body, ids)
}

fn claimed_ids(c: &[ClaimedExecution]) -> Vec<ExecutionId> {
    let mut ids: Vec<ExecutionId> = c.iter().map(|c| c.execution_id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<ExecutionId>) -> Vec<ExecutionId> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_diamond_created_in_one_request_runs_to_completion_through_the_worker_routes() {
    let api = Api::start().await;
    let flow = FlowId::new();
    // 0 fans out to 1 and 2, which fan in to 3.
    let (body, ids) = graph(flow, "diamond", 4, &[(0, 1), (0, 2), (1, 3), (2, 3)]);
    let (status, created) = api.call(Method::POST, "/v1/flows/graph", Some(body.clone())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["Created"]["flow_id"], json!(flow));
    assert_eq!(created["Created"]["member_execution_ids"], json!(ids));
    assert_eq!(created["Created"]["edge_ids"].as_array().map(Vec::len), Some(4));
    let (status, again) = api.call(Method::POST, "/v1/flows/graph", Some(body)).await;
    assert_eq!((status.as_u16(), again), (200, json!({"AlreadySatisfied": {"flow_id": flow}})));
    assert_eq!(api.flow(flow).await["public_flow_state"], "open");

    let head = api.claim_all("diamond").await;
    assert_eq!(claimed_ids(&head), vec![ids[0]], "only the head is claimable");
    assert_eq!(head[0].execution_kind, "step");
    api.complete(&head[0]).await;
    let middle = api.claim_all("diamond").await;
    assert_eq!(claimed_ids(&middle), sorted(vec![ids[1], ids[2]]), "both branches are released together");
    assert_eq!(api.flow(flow).await["public_flow_state"], "running");
    api.complete(&middle[0]).await;
    assert!(api.claim_all("diamond").await.is_empty(), "the sink waits for both branches");
    api.complete(&middle[1]).await;
    let sink = api.claim_all("diamond").await;
    assert_eq!(claimed_ids(&sink), vec![ids[3]]);
    api.complete(&sink[0]).await;

    let snapshot = api.flow(flow).await;
    assert_eq!(snapshot["public_flow_state"], "completed", "{snapshot}");
    assert_eq!((&snapshot["node_count"], &snapshot["edge_count"]), (&json!(4), &json!(4)));
    assert_eq!(snapshot["members"]["completed"], 4);
    let group =
        snapshot["edge_groups"].as_array().unwrap().iter().find(|g| g["downstream_execution_id"] == json!(ids[3]));
    assert_eq!(group.map(|g| (&g["total_deps"], &g["satisfied_count"])), Some((&json!(2), &json!(2))));

    let (status, page) = api.call(Method::GET, "/v1/flows?limit=10", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["flows"][0]["flow_id"], json!(flow));
    assert_eq!(page["flows"][0]["public_flow_state"], "completed");
    let partition = flow.partition(&PartitionConfig::default());
    let (_, here) = api.call(Method::GET, &format!("/v1/flows?partition={partition}&namespace="), None).await;
    assert_eq!(here["flows"].as_array().map(Vec::len), Some(1), "{here}");
    let (_, elsewhere) = api.call(Method::GET, "/v1/flows?namespace=other", None).await;
    assert_eq!(elsewhere["flows"], json!([]));

    let (status, out) = api.call(Method::GET, &format!("/v1/flows/{flow}/edges?from={}", ids[0]), None).await;
    assert_eq!(status, 200, "{out}");
    let edges = out["edges"].as_array().unwrap();
    let mut downstreams: Vec<ExecutionId> =
        edges.iter().map(|e| serde_json::from_value(e["downstream_execution_id"].clone()).unwrap()).collect();
    downstreams.sort();
    assert_eq!(downstreams, sorted(vec![ids[1], ids[2]]));
    assert!(edges.iter().all(|e| e["edge_state"] == "applied" && e["resolution"] == "success"), "{out}");
    let (_, into) = api.call(Method::GET, &format!("/v1/flows/{flow}/edges?to={}", ids[3]), None).await;
    assert_eq!(into["edges"].as_array().map(Vec::len), Some(2));
    let edge_id = edges[0]["edge_id"].as_str().unwrap();
    let (status, edge) = api.call(Method::GET, &format!("/v1/flows/{flow}/edges/{edge_id}"), None).await;
    assert_eq!((status.as_u16(), &edge), (200, &edges[0]));

    let ghost = FlowId::new();
    api.refused(Method::GET, &format!("/v1/flows/{ghost}"), None, 404, "not_found").await;
    api.refused(Method::GET, &format!("/v1/flows/{flow}/edges/{}", FlowId::new()), None, 404, "not_found").await;
    api.refused(Method::GET, "/v1/flows/not-a-uuid", None, 400, "invalid_path").await;
    api.refused(Method::GET, &format!("/v1/flows/{flow}/edges"), None, 400, "invalid_query").await;
    let both = format!("/v1/flows/{flow}/edges?from={}&to={}", ids[0], ids[3]);
    api.refused(Method::GET, &both, None, 400, "invalid_query").await;
    api.refused(Method::GET, "/v1/flows?limit=0", None, 400, "invalid_input").await;
    api.refused(Method::GET, "/v1/flows?partition=256", None, 400, "invalid_input").await;
}

#[tokio::test]
async fn a_bad_graph_is_refused_whole_and_writes_nothing() {
    let api = Api::start().await;
    let flow = FlowId::new();
    let (cyclic, _) = graph(flow, "bad", 3, &[(0, 1), (1, 2), (2, 0)]);
    api.refused(Method::POST, "/v1/flows/graph", Some(cyclic), 409, "cycle_detected").await;
    let (self_edge, _) = graph(flow, "bad", 2, &[(1, 1)]);
    api.refused(Method::POST, "/v1/flows/graph", Some(self_edge), 409, "self_referencing_edge").await;
    let (mut anonymous, _) = graph(flow, "bad", 2, &[]);
    anonymous["members"][1].as_object_mut().unwrap().remove("execution_id");
    let body = api.refused(Method::POST, "/v1/flows/graph", Some(anonymous), 400, "invalid_input").await;
    assert!(body["message"].as_str().unwrap().contains("members[1]"), "{body}");
    // A member minted outside the flow's partition.
    let (mut astray, _) = graph(flow, "bad", 1, &[]);
    let elsewhere = (flow.partition(&PartitionConfig::default()) + 1) % 256;
    astray["members"][0]["execution_id"] = json!(ExecutionId::in_partition(elsewhere));
    api.refused(Method::POST, "/v1/flows/graph", Some(astray), 400, "invalid_input").await;
    let (status, _) = api.call(Method::GET, &format!("/v1/flows/{flow}"), None).await;
    assert_eq!(status, 404, "nothing of the flow was written");
}

#[tokio::test]
async fn a_flow_built_edge_by_edge_refuses_cycles_stale_revisions_and_other_flows() {
    let api = Api::start().await;
    let flow = FlowId::new();
    let header = json!({"flow_id": flow, "flow_kind": "etl.incremental"});
    let (status, created) = api.call(Method::POST, "/v1/flows", Some(header.clone())).await;
    assert_eq!((status.as_u16(), created), (201, json!({"Created": {"flow_id": flow}})));
    let (status, again) = api.call(Method::POST, "/v1/flows", Some(header)).await;
    assert_eq!((status.as_u16(), again), (200, json!({"AlreadySatisfied": {"flow_id": flow}})));

    let ids = [api.submit_for(flow, "inc").await, api.submit_for(flow, "inc").await, api.submit_for(flow, "inc").await];
    let members = format!("/v1/flows/{flow}/members");
    for (n, id) in ids.iter().enumerate() {
        let (status, added) = api.call(Method::POST, &members, Some(json!({"execution_id": id}))).await;
        assert_eq!(status, 201, "{added}");
        assert_eq!(added["Added"]["new_node_count"], n + 1);
    }
    let (status, member) = api.call(Method::POST, &members, Some(json!({"execution_id": ids[0]}))).await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["AlreadyMember"]["node_count"], 3);

    api.link(flow, ids[0], ids[1]).await;
    api.link(flow, ids[1], ids[2]).await;
    assert_eq!(claimed_ids(&api.claim_all("inc").await), vec![ids[0]], "applied edges hold the others back");

    let edges = format!("/v1/flows/{flow}/edges");
    let revision = api.flow(flow).await["graph_revision"].as_u64().unwrap();
    let edge = |up: ExecutionId, down: ExecutionId, rev: u64| json!({"upstream_execution_id": up, "downstream_execution_id": down, "expected_graph_revision": rev});
    let body = api.refused(Method::POST, &edges, Some(edge(ids[2], ids[0], revision)), 409, "cycle_detected").await;
    assert_eq!(body["retryable"], false);
    api.refused(Method::POST, &edges, Some(edge(ids[1], ids[1], revision)), 409, "self_referencing_edge").await;
    api.refused(Method::POST, &edges, Some(edge(ids[0], ids[1], revision)), 409, "dependency_already_exists").await;
    let body =
        api.refused(Method::POST, &edges, Some(edge(ids[0], ids[2], revision - 1)), 409, "stale_graph_revision").await;
    assert_eq!(body["retryable"], true, "a stale revision is worth a re-read and a retry");
    let mut other = edge(ids[0], ids[2], revision);
    other["flow_id"] = json!(FlowId::new());
    api.refused(Method::POST, &edges, Some(other), 400, "flow_id_mismatch").await;
    let ghost = FlowId::new();
    api.refused(Method::POST, &format!("/v1/flows/{ghost}/edges"), Some(edge(ids[0], ids[2], 0)), 404, "not_found")
        .await;
    let mut named = edge(ids[0], ids[2], revision);
    named["flow_id"] = json!(flow);
    let (status, staged) = api.call(Method::POST, &edges, Some(named)).await;
    assert_eq!(status, 201, "a body repeating the path's flow is accepted: {staged}");
    let edge_id = staged["Staged"]["edge_id"].clone();
    let apply = format!("/v1/flows/{flow}/edges/apply");
    let apply_body = json!({"edge_id": edge_id, "upstream_execution_id": ids[0], "downstream_execution_id": ids[2]});
    let mut elsewhere = apply_body.clone();
    elsewhere["flow_id"] = json!(FlowId::new());
    api.refused(Method::POST, &apply, Some(elsewhere), 400, "flow_id_mismatch").await;

    // The sink's group: a quorum of 1 over its two inbound edges, set before any is resolved.
    let policy = format!("/v1/flows/{flow}/groups/{}/policy", ids[2]);
    api.refused(
        Method::PUT,
        &policy,
        Some(json!({"kind": "quorum", "k": 0, "on_satisfied": "let_run"})),
        400,
        "invalid_input",
    )
    .await;
    let quorum = json!({"kind": "quorum", "k": 1, "on_satisfied": "let_run"});
    let (status, set) = api.call(Method::PUT, &policy, Some(quorum.clone())).await;
    assert_eq!((status.as_u16(), set), (200, json!("Set")));
    let (status, set) = api.call(Method::PUT, &policy, Some(quorum)).await;
    assert_eq!((status.as_u16(), set), (200, json!("AlreadySet")));
    let (status, applied) = api.call(Method::POST, &apply, Some(apply_body.clone())).await;
    assert_eq!(status, 200, "{applied}");
    let (status, applied) = api.call(Method::POST, &apply, Some(apply_body)).await;
    assert_eq!((status.as_u16(), applied), (200, json!("AlreadyApplied")));
    let head = api.claim_all("inc").await;
    assert!(head.is_empty(), "nothing else is claimable while the head runs");
}

#[tokio::test]
async fn cancelling_a_flow_cancels_its_members_and_closes_it() {
    let api = Api::start().await;
    let flow = FlowId::new();
    let (body, ids) = graph(flow, "cancel", 3, &[(1, 2)]);
    let (status, _) = api.call(Method::POST, "/v1/flows/graph", Some(body)).await;
    assert_eq!(status, 201);
    let claimed = api.claim_all("cancel").await;
    let first = claimed.iter().find(|c| c.execution_id == ids[0]).unwrap();
    api.complete(first).await;
    let running = claimed.iter().find(|c| c.execution_id == ids[1]).unwrap();

    let cancel = format!("/v1/flows/{flow}/cancel");
    let reason = json!({"reason": "operator stop", "cancellation_policy": "cancel_all"});
    api.refused(Method::POST, &format!("{cancel}?wait=soon"), Some(reason.clone()), 400, "invalid_input").await;
    api.refused(Method::POST, &format!("{cancel}?wait=300001"), Some(reason.clone()), 400, "invalid_input").await;
    let ghost = format!("/v1/flows/{}/cancel", FlowId::new());
    api.refused(Method::POST, &ghost, Some(reason.clone()), 404, "not_found").await;

    let (status, out) = api.call(Method::POST, &format!("{cancel}?wait=5000"), Some(reason)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out,
        json!({"Cancelled": {"cancellation_policy": "cancel_all", "member_execution_ids": sorted(vec![ids[1], ids[2]])}})
    );
    assert_eq!(api.public_state(ids[0]).await, "completed", "a finished member stays finished");
    assert_eq!(
        (api.public_state(ids[1]).await, api.public_state(ids[2]).await),
        (json!("cancelled"), json!("cancelled"))
    );
    let complete = format!("/v1/executions/{}/complete", ids[1]);
    api.refused(Method::POST, &complete, Some(json!({"handle": running.handle})), 409, "execution_not_active").await;
    let snapshot = api.flow(flow).await;
    assert_eq!(
        (&snapshot["public_flow_state"], &snapshot["cancel_reason"], &snapshot["cancellation_policy"]),
        (&json!("cancelled"), &json!("operator stop"), &json!("cancel_all"))
    );

    // A repeat reports the stored policy; the closed flow takes no new member.
    let (status, again) = api
        .call(
            Method::POST,
            &format!("{cancel}?wait=none"),
            Some(json!({"reason": "again", "cancellation_policy": "flow_only"})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["Cancelled"]["cancellation_policy"], "cancel_all");
    let late = api.submit_for(flow, "cancel").await;
    let members = format!("/v1/flows/{flow}/members");
    api.refused(Method::POST, &members, Some(json!({"execution_id": late})), 409, "flow_already_terminal").await;
}

#[tokio::test]
async fn a_parent_waits_for_the_children_it_spawned_and_resumes_its_attempt() {
    let api = Api::start().await;
    let flow = FlowId::new();
    let (body, ids) = graph(flow, "parent", 1, &[]);
    let (status, _) = api.call(Method::POST, "/v1/flows/graph", Some(body)).await;
    assert_eq!(status, 201);
    let parent = api.claim_all("parent").await.pop().expect("the parent is claimable");
    let members = format!("/v1/flows/{flow}/members");
    let mut children = Vec::new();
    for _ in 0..2 {
        let child = api.submit_for(flow, "kids").await;
        let (status, _) = api.call(Method::POST, &members, Some(json!({"execution_id": child}))).await;
        assert_eq!(status, 201);
        api.link(flow, child, ids[0]).await;
        children.push(child);
    }
    assert_eq!(api.public_state(ids[0]).await, "active", "applying edges does not interrupt a running parent");

    let wait = |attempt: u32| format!("/v1/executions/{}/attempts/{attempt}/wait-children", ids[0]);
    let handle = json!({"handle": parent.handle});
    api.refused(Method::POST, &wait(parent.attempt_index.0 + 1), Some(handle.clone()), 400, "handle_mismatch").await;
    let other = format!("/v1/executions/{}/attempts/0/wait-children", children[0]);
    api.refused(Method::POST, &other, Some(handle.clone()), 400, "handle_mismatch").await;
    api.refused(Method::POST, &wait(0), Some(json!({"handle": "ffh1.postgres.fresh.AAAA"})), 400, "invalid_handle")
        .await;

    let (status, body) = api.call(Method::POST, &wait(parent.attempt_index.0), Some(handle.clone())).await;
    assert_eq!((status.as_u16(), body), (204, Value::Null));
    assert_eq!(api.public_state(ids[0]).await, "waiting_children");
    let renew = format!("/v1/executions/{}/renew", ids[0]);
    api.refused(Method::POST, &renew, Some(handle), 409, "execution_not_active").await;

    for child in api.claim_all("kids").await {
        assert!(api.claim_all("parent").await.is_empty(), "the parent waits for every child");
        api.complete(&child).await;
    }
    let resumed = api.claim_all("parent").await.pop().expect("the parent resumes once its children ended");
    assert_eq!(
        (resumed.execution_id, resumed.attempt_index, resumed.claim_kind),
        (ids[0], parent.attempt_index, ff_core::HandleKind::Resumed)
    );
    api.complete(&resumed).await;
    assert_eq!(api.flow(flow).await["public_flow_state"], "completed");
}

#[tokio::test]
async fn the_partition_counts_are_served_for_clients_that_mint_flow_member_ids() {
    let api = Api::start().await;
    let (status, body) = api.call(Method::GET, "/v1/partitions", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_value::<PartitionConfig>(body).unwrap(), PartitionConfig::default());
}
