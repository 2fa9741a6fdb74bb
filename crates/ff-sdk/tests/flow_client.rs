//! Flows from the SDK against a real server and real Postgres: a fan-out/fan-in flow built with
//! [`Client::flow`] in one request and run to completion by a worker; the flow calls
//! (members, staged and applied edges, policies, reads, cancellation) decoding into the backend
//! trait's result types, a refusal being an `SdkError::Api` with the server's code; and a
//! handler that spawns two children, waits for them, and completes on its second run with
//! their results, over both transports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::{
    AddExecutionToFlowArgs, AddExecutionToFlowResult, ApplyDependencyToChildArgs, ApplyDependencyToChildResult,
    CancelFlowArgs, CancelFlowPolicy, CancelFlowResult, CancelFlowWait, CreateFlowArgs, CreateFlowGraphResult,
    CreateFlowResult, DependencyKind, EdgeDependencyPolicy, EdgeDirection, EdgeId, EngineBackend, ExecutionId, FlowId,
    FlowState, HandleKind, ListFlowsArgs, Namespace, OnSatisfied, PartitionConfig, PublicState, SetEdgeGroupPolicyArgs,
    SetEdgeGroupPolicyResult, StageDependencyEdgeArgs, StageDependencyEdgeResult,
};
use ff_sdk::{
    Client, DirectTransport, HandlerError, HttpTransport, SdkError, SubmitRequest, TaskContext, Worker, WorkerConfig,
    WorkerTransport,
};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::{Value, json};

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

    /// Polls until the flow reaches `want` (the worker runs in the background).
    async fn wait_flow(&self, flow: &FlowId, want: FlowState) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let state = self.client.describe_flow(flow).await.unwrap().expect("the flow exists").public_flow_state;
            if state == want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "flow {flow} stuck in {state:?}, wanted {want:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn result(&self, id: &ExecutionId) -> Value {
        serde_json::from_slice(&self.client.result(id).await.unwrap().expect("a result")).unwrap()
    }
}

fn config(lane: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("pool", [lane]).unwrap();
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

#[tokio::test]
async fn a_fan_out_fan_in_flow_built_with_the_builder_runs_to_completion() {
    let env = Env::start().await;
    let c = &env.client;
    let step = |name: &str| SubmitRequest::json("etl", "step", json!(name));
    let created = c
        .flow("etl.nightly")
        .namespace("tenant-a")
        .member("split", step("split"))
        .member("a", step("a"))
        .member("b", step("b"))
        .member("c", step("c"))
        .member("join", step("join"))
        .edge("split", "a")
        .edge("split", "b")
        .edge("split", "c")
        .edge("a", "join")
        .edge("b", "join")
        .edge_with_ref("c", "join", "s3://bucket/c")
        .policy("join", EdgeDependencyPolicy::AllOf)
        .create()
        .await
        .unwrap();
    let flow = created.flow_id;
    let CreateFlowGraphResult::Created { member_execution_ids, edge_ids, .. } = &created.result else {
        panic!("{:?}", created.result);
    };
    assert_eq!((member_execution_ids.len(), edge_ids.len()), (5, 6));
    let partition = flow.partition(&c.partitions().await.unwrap());
    assert!(
        created.members.values().all(|id| id.partition_index() == partition),
        "members live in the flow's partition"
    );
    let join = created.member("join").unwrap();

    // Keys are checked before anything is sent.
    let err = c.flow("etl.bad").member("x", step("x")).edge("x", "nobody").create().await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_input"), "{err}");
    let err = c.flow("etl.bad").member("x", step("x")).member("x", step("y")).create().await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_input"), "{err}");
    let again =
        c.flow("etl.nightly").flow_id(flow).namespace("tenant-a").member("x", step("x")).create().await.unwrap();
    assert_eq!(again.result, CreateFlowGraphResult::AlreadySatisfied { flow_id: flow });

    let ran = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut cfg = config("etl");
    cfg.namespace = "tenant-a".into();
    let worker = Worker::new(HttpTransport::new(c.clone()), cfg, ran.clone())
        .handle("step", |ctx: TaskContext<Arc<Mutex<Vec<String>>>>, name: String| async move {
            ctx.state().lock().unwrap().push(name.clone());
            Ok(format!("{name} done"))
        })
        .start()
        .await
        .unwrap();
    env.wait_flow(&flow, FlowState::Completed).await;
    let report = worker.shutdown().await;
    assert_eq!(report.completed, 5, "{report:?}");
    let ran = ran.lock().unwrap().clone();
    assert_eq!(
        (ran.first().map(String::as_str), ran.last().map(String::as_str)),
        (Some("split"), Some("join")),
        "{ran:?}"
    );
    assert_eq!(env.result(&join).await, json!("join done"));

    let snapshot = c.describe_flow(&flow).await.unwrap().unwrap();
    assert_eq!((snapshot.node_count, snapshot.edge_count, snapshot.members.completed), (5, 6, 5));
    assert_eq!(snapshot.namespace.as_str(), "tenant-a");
    let page = c
        .list_flows(&ListFlowsArgs {
            namespace: Some(Namespace::new("tenant-a")),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.flows.iter().map(|f| f.flow_id).collect::<Vec<_>>(), vec![flow]);
    let into_join = c.list_edges(&flow, EdgeDirection::Incoming { to_node: join }).await.unwrap();
    assert_eq!(into_join.len(), 3);
    let from_c =
        c.list_edges(&flow, EdgeDirection::Outgoing { from_node: created.member("c").unwrap() }).await.unwrap();
    assert_eq!(from_c[0].data_passing_ref.as_deref(), Some("s3://bucket/c"));
    assert_eq!(c.describe_edge(&flow, &from_c[0].edge_id).await.unwrap().as_ref(), Some(&from_c[0]));
    assert_eq!(c.describe_edge(&flow, &EdgeId::new()).await.unwrap(), None);
    assert_eq!(c.describe_flow(&FlowId::new()).await.unwrap(), None);
}

#[tokio::test]
async fn the_flow_calls_round_trip_and_refusals_carry_the_servers_code() {
    let env = Env::start().await;
    let c = &env.client;
    let header = CreateFlowArgs::new("etl.incremental");
    let flow = header.flow_id;
    assert_eq!(c.create_flow(&header).await.unwrap(), CreateFlowResult::Created { flow_id: flow });
    assert_eq!(c.create_flow(&header).await.unwrap(), CreateFlowResult::AlreadySatisfied { flow_id: flow });
    let partitions = c.partitions().await.unwrap();
    assert_eq!(partitions, PartitionConfig::default());
    let mut ids = Vec::new();
    for n in 0..3 {
        let mut req = SubmitRequest::json("inc", "step", json!(n));
        req.execution_id = Some(ExecutionId::for_flow(&flow, &partitions));
        let id = c.submit(&req).await.unwrap().execution_id();
        let added = c.add_execution_to_flow(&AddExecutionToFlowArgs { flow_id: flow, execution_id: id }).await.unwrap();
        assert!(matches!(added, AddExecutionToFlowResult::Added { new_node_count, .. } if new_node_count == n + 1));
        ids.push(id);
    }
    let revision = c.describe_flow(&flow).await.unwrap().unwrap().graph_revision;
    let stage = |up: usize, down: usize, rev: u64| StageDependencyEdgeArgs {
        flow_id: flow,
        edge_id: EdgeId::new(),
        upstream_execution_id: ids[up],
        downstream_execution_id: ids[down],
        dependency_kind: DependencyKind::SuccessOnly,
        data_passing_ref: None,
        expected_graph_revision: rev,
    };
    let first = stage(0, 2, revision);
    let StageDependencyEdgeResult::Staged { new_graph_revision, .. } = c.stage_dependency_edge(&first).await.unwrap();
    assert!(new_graph_revision > revision);
    assert_eq!(
        code(c.stage_dependency_edge(&stage(2, 0, new_graph_revision)).await.unwrap_err()),
        (409, "cycle_detected".into())
    );
    let stale = c.stage_dependency_edge(&stage(1, 2, revision)).await.unwrap_err();
    assert!(stale.is_retryable(), "{stale}");
    assert_eq!(code(stale), (409, "stale_graph_revision".into()));
    let second = stage(1, 2, new_graph_revision);
    c.stage_dependency_edge(&second).await.unwrap();
    let policy = SetEdgeGroupPolicyArgs {
        flow_id: flow,
        downstream_execution_id: ids[2],
        policy: EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun },
    };
    assert_eq!(c.set_edge_group_policy(&policy).await.unwrap(), SetEdgeGroupPolicyResult::Set);
    assert_eq!(c.set_edge_group_policy(&policy).await.unwrap(), SetEdgeGroupPolicyResult::AlreadySet);
    for edge in [&first, &second] {
        let apply = ApplyDependencyToChildArgs {
            flow_id: flow,
            edge_id: edge.edge_id,
            upstream_execution_id: edge.upstream_execution_id,
            downstream_execution_id: edge.downstream_execution_id,
        };
        assert!(matches!(
            c.apply_dependency_to_child(&apply).await.unwrap(),
            ApplyDependencyToChildResult::Applied { .. }
        ));
        assert_eq!(c.apply_dependency_to_child(&apply).await.unwrap(), ApplyDependencyToChildResult::AlreadyApplied);
    }
    assert_eq!(c.state(&ids[2]).await.unwrap(), Some(PublicState::WaitingChildren));

    let cancel =
        CancelFlowArgs { flow_id: flow, reason: "stop".into(), cancellation_policy: CancelFlowPolicy::CancelPending };
    let out = c.cancel_flow(&cancel, CancelFlowWait::WaitTimeout(Duration::from_secs(5))).await.unwrap();
    let CancelFlowResult::Cancelled { cancellation_policy, member_execution_ids } = out else { panic!("{out:?}") };
    let mut all = ids.clone();
    all.sort();
    assert_eq!((cancellation_policy, member_execution_ids), (CancelFlowPolicy::CancelPending, all));
    let snapshot = c.describe_flow(&flow).await.unwrap().unwrap();
    assert_eq!(snapshot.public_flow_state, FlowState::Cancelled);
    let late = c.add_execution_to_flow(&AddExecutionToFlowArgs { flow_id: flow, execution_id: ids[0] }).await;
    assert_eq!(code(late.unwrap_err()), (409, "flow_already_terminal".into()));
    let ghost = CancelFlowArgs { flow_id: FlowId::new(), ..cancel };
    assert_eq!(code(c.cancel_flow(&ghost, CancelFlowWait::NoWait).await.unwrap_err()), (404, "not_found".into()));
}

/// What the parent handler reports on the run that completes it.
fn parent_result(children: &[Value], ctx_kind: HandleKind, attempt: u32) -> Value {
    let sum: i64 = children.iter().filter_map(Value::as_i64).sum();
    json!({"sum": sum, "claim_kind": ctx_kind.as_str(), "attempt": attempt})
}

#[tokio::test]
async fn a_handler_spawns_two_children_waits_for_them_and_completes_with_their_results() {
    let env = Env::start().await;
    for http in [true, false] {
        let lane = if http { "tree-http" } else { "tree-direct" };
        let created = env
            .client
            .flow("tree")
            .member("parent", SubmitRequest::json(lane, "parent", json!(null)))
            .create()
            .await
            .unwrap();
        let parent = created.member("parent").unwrap();
        let transport: Arc<dyn WorkerTransport> = if http {
            Arc::new(HttpTransport::new(env.client.clone()))
        } else {
            Arc::new(DirectTransport::new(env.backend()))
        };
        let spawn_lane = lane.to_owned();
        let worker = Worker::new(transport, config(lane), env.client.clone())
            .handle("child", |_ctx: TaskContext<Client>, n: i64| async move { Ok(n * 10) })
            .handle("parent", move |ctx: TaskContext<Client>, _: Value| {
                let lane = spawn_lane.clone();
                async move {
                    let client = ctx.state();
                    let me = ctx.execution_id();
                    let flow = client.describe(&me).await?.and_then(|s| s.flow_id).ok_or("the parent is in a flow")?;
                    // Children spawned by an earlier run are the upstreams of this member's edges.
                    let spawned = client.list_edges(&flow, EdgeDirection::Incoming { to_node: me }).await?;
                    if spawned.is_empty() {
                        let children = vec![
                            SubmitRequest::json(lane.as_str(), "child", json!(2)),
                            SubmitRequest::json(lane.as_str(), "child", json!(3)),
                        ];
                        client.add_children(&flow, &me, children).await?;
                        return Err(HandlerError::wait_for_children());
                    }
                    let mut results = Vec::new();
                    for edge in &spawned {
                        let bytes = client.result(&edge.upstream_execution_id).await?.ok_or("a child's result")?;
                        results.push(serde_json::from_slice::<Value>(&bytes)?);
                    }
                    Ok(parent_result(&results, ctx.claim_kind(), ctx.attempt_index().0))
                }
            })
            .start()
            .await
            .unwrap();
        env.wait_flow(&created.flow_id, FlowState::Completed).await;
        let report = worker.shutdown().await;
        assert_eq!((report.waiting_children, report.completed, report.failed), (1, 3, 0), "{lane}: {report:?}");
        assert_eq!(env.result(&parent).await, json!({"sum": 50, "claim_kind": "resumed", "attempt": 0}), "{lane}");
        let snapshot = env.client.describe_flow(&created.flow_id).await.unwrap().unwrap();
        assert_eq!((snapshot.node_count, snapshot.edge_count), (3, 2), "{lane}");
    }
}
