//! Flows: DAGs of executions whose edges resolve in the transaction that ends each upstream.
//! A satisfied downstream is claimable the moment its last upstream commits; an impossible one
//! is skipped and the skip cascades; any-of and quorum groups cancel their losing siblings;
//! graph edits are checked (cycles, self-edges, strangers, stale revisions) and a refusal
//! writes nothing; flows are cancelled by policy; a lease holder waits for its children.

use std::collections::HashSet;

use ff_core::backend::ExpirePhase;
use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Arguments for a member of `flow` on `lane`.
pub fn member(flow: &FlowId, lane: &str) -> CreateExecutionArgs {
    let mut a = args(lane);
    a.execution_id = ExecutionId::for_flow(flow, &PartitionConfig::default());
    a
}

/// Creates a flow of `n` members on `lane` with `edges` (indexes into the members) and
/// `policies`, in one call.
pub async fn graph<H: ConformanceHarness>(
    fx: &Fixture<H>,
    lane: &str,
    n: usize,
    edges: &[(usize, usize)],
    policies: &[(usize, EdgeDependencyPolicy)],
) -> (FlowId, Vec<ExecutionId>) {
    graph_with(fx, lane, n, edges, policies, |_, _| {}).await
}

/// [`graph`], letting `f` adjust each member's arguments.
pub async fn graph_with<H: ConformanceHarness>(
    fx: &Fixture<H>,
    lane: &str,
    n: usize,
    edges: &[(usize, usize)],
    policies: &[(usize, EdgeDependencyPolicy)],
    f: impl Fn(usize, &mut CreateExecutionArgs),
) -> (FlowId, Vec<ExecutionId>) {
    let flow = CreateFlowArgs::new("test.flow");
    let flow_id = flow.flow_id;
    let members: Vec<CreateExecutionArgs> = (0..n)
        .map(|i| {
            let mut m = member(&flow_id, lane);
            f(i, &mut m);
            m
        })
        .collect();
    let ids: Vec<ExecutionId> = members.iter().map(|m| m.execution_id).collect();
    let edges = edges
        .iter()
        .map(|&(u, d)| FlowGraphEdge {
            edge_id: None,
            upstream_execution_id: ids[u],
            downstream_execution_id: ids[d],
            data_passing_ref: None,
        })
        .collect();
    let policies =
        policies.iter().map(|&(d, policy)| FlowGraphPolicy { downstream_execution_id: ids[d], policy }).collect();
    let out =
        fx.backend.create_flow_graph(CreateFlowGraphArgs { flow, members, edges, policies }).await.expect("graph");
    assert!(matches!(out, CreateFlowGraphResult::Created { .. }), "{out:?}");
    (flow_id, ids)
}

/// Claims everything claimable on `lane` and returns the handles by execution id.
async fn claim_all<H: ConformanceHarness>(fx: &Fixture<H>, lane: &str) -> Vec<(ExecutionId, Handle)> {
    let mut out = Vec::new();
    loop {
        let batch = fx
            .backend
            .claim_batch(&lane_id(lane), &CapabilitySet::empty(), policy("w"), 100)
            .await
            .expect("claim batch");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|h| (payload(&h).execution_id, h)));
    }
}

fn claimed_ids(c: &[(ExecutionId, Handle)]) -> HashSet<ExecutionId> {
    c.iter().map(|(id, _)| *id).collect()
}

async fn flow_state<H: ConformanceHarness>(fx: &Fixture<H>, flow: &FlowId) -> FlowState {
    fx.backend.describe_flow(flow).await.expect("describe flow").expect("flow exists").public_flow_state
}

/// A fingerprint of everything observable about a flow and its members.
async fn flow_fingerprint<H: ConformanceHarness>(fx: &Fixture<H>, flow: &FlowId, members: &[ExecutionId]) -> String {
    let mut s = format!("{:?}", fx.backend.describe_flow(flow).await.expect("describe"));
    for m in members {
        s.push_str(&fx.fingerprint(m).await);
        let edges = fx.backend.list_edges(flow, EdgeDirection::Outgoing { from_node: *m }).await.expect("edges");
        s.push_str(&format!("{edges:?}"));
    }
    s
}

/// Runs `call`, expects `code`, and checks that nothing about the flow or its members changed.
async fn refused<H: ConformanceHarness, T: std::fmt::Debug>(
    fx: &Fixture<H>,
    flow: &FlowId,
    members: &[ExecutionId],
    code: &str,
    call: impl std::future::Future<Output = Result<T, EngineError>>,
) {
    let before = flow_fingerprint(fx, flow, members).await;
    let err = call.await.expect_err(&format!("expected {code}"));
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(flow_fingerprint(fx, flow, members).await, before, "a refused {code} call wrote nothing");
}

fn stage(flow: FlowId, up: ExecutionId, down: ExecutionId, rev: u64) -> StageDependencyEdgeArgs {
    StageDependencyEdgeArgs {
        flow_id: flow,
        edge_id: EdgeId::new(),
        upstream_execution_id: up,
        downstream_execution_id: down,
        dependency_kind: DependencyKind::SuccessOnly,
        data_passing_ref: None,
        expected_graph_revision: rev,
    }
}

async fn revision<H: ConformanceHarness>(fx: &Fixture<H>, flow: &FlowId) -> u64 {
    fx.backend.describe_flow(flow).await.unwrap().unwrap().graph_revision
}

const CANCEL_REMAINING_QUORUM_2: EdgeDependencyPolicy =
    EdgeDependencyPolicy::Quorum { k: 2, on_satisfied: OnSatisfied::CancelRemaining };

/// A 4-node chain: only the head is claimable; each completion makes the next claimable at
/// once (no reconciler runs), and the flow goes open -> running -> completed.
pub async fn chain_releases_each_hop_in_the_completing_transaction<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (flow, ids) = graph(&fx, "chain", 4, &[(0, 1), (1, 2), (2, 3)], &[]).await;
    assert_eq!(flow_state(&fx, &flow).await, FlowState::Open);
    for (i, id) in ids.iter().enumerate().skip(1) {
        assert_eq!(fx.state(id).await, PublicState::WaitingChildren, "member {i} waits");
    }
    for (i, id) in ids.iter().enumerate() {
        let claimed = claim_all(&fx, "chain").await;
        assert_eq!(claimed_ids(&claimed), HashSet::from([*id]), "hop {i}: exactly the next member is claimable");
        assert_eq!(flow_state(&fx, &flow).await, FlowState::Running);
        fx.backend.complete(&claimed[0].1, None).await.unwrap();
    }
    let snapshot = fx.backend.describe_flow(&flow).await.unwrap().unwrap();
    assert_eq!(snapshot.public_flow_state, FlowState::Completed);
    assert_eq!((snapshot.node_count, snapshot.edge_count), (4, 3));
    assert_eq!(snapshot.members.completed, 4);
    assert_eq!(snapshot.edge_groups.len(), 3);
    for g in &snapshot.edge_groups {
        assert_eq!((g.total_deps, g.satisfied_count, g.running_count), (1, 1, 0));
        assert_eq!(g.group_state, EdgeGroupState::Satisfied);
    }
}

/// Building a flow edit by edit: members join, an edge is staged at the current revision (a
/// stale one is refused, the same edge again is idempotent), applying it holds the child back,
/// and completing the parent releases it.
pub async fn incremental_build_holds_children_until_their_parents_end<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let flow = CreateFlowArgs::new("test.flow");
    let flow_id = flow.flow_id;
    assert_eq!(fx.backend.create_flow(flow.clone()).await.unwrap(), CreateFlowResult::Created { flow_id });
    assert_eq!(fx.backend.create_flow(flow).await.unwrap(), CreateFlowResult::AlreadySatisfied { flow_id });
    let parent = fx.create_with("inc", |a| *a = member(&flow_id, "inc")).await;
    let child = fx.create_with("inc", |a| *a = member(&flow_id, "inc")).await;
    for (i, id) in [parent, child].into_iter().enumerate() {
        let added = fx.backend.add_execution_to_flow(AddExecutionToFlowArgs { flow_id, execution_id: id }).await;
        assert_eq!(added.unwrap(), AddExecutionToFlowResult::Added { execution_id: id, new_node_count: i as u32 + 1 });
    }
    let again = fx.backend.add_execution_to_flow(AddExecutionToFlowArgs { flow_id, execution_id: child }).await;
    assert_eq!(again.unwrap(), AddExecutionToFlowResult::AlreadyMember { execution_id: child, node_count: 2 });
    assert_eq!(fx.backend.resolve_execution_flow_id(&child).await.unwrap(), Some(flow_id));

    let rev = revision(&fx, &flow_id).await;
    let edge = stage(flow_id, parent, child, rev);
    refused(
        &fx,
        &flow_id,
        &[parent, child],
        "stale_graph_revision",
        fx.backend.stage_dependency_edge(StageDependencyEdgeArgs { expected_graph_revision: rev + 7, ..edge.clone() }),
    )
    .await;
    let staged = fx.backend.stage_dependency_edge(edge.clone()).await.unwrap();
    assert_eq!(staged, StageDependencyEdgeResult::Staged { edge_id: edge.edge_id, new_graph_revision: rev + 1 });
    // A retry of the same staging (with the revision it was sent with) is idempotent.
    assert_eq!(fx.backend.stage_dependency_edge(edge.clone()).await.unwrap(), staged);
    let described = fx.backend.describe_edge(&flow_id, &edge.edge_id).await.unwrap().unwrap();
    assert_eq!(described.edge_state, EdgeState::Pending);
    assert_eq!(fx.state(&child).await, PublicState::Waiting, "a staged edge does not hold the child yet");

    let apply = ApplyDependencyToChildArgs {
        flow_id,
        edge_id: edge.edge_id,
        upstream_execution_id: parent,
        downstream_execution_id: child,
    };
    let applied = fx.backend.apply_dependency_to_child(apply.clone()).await.unwrap();
    assert_eq!(
        applied,
        ApplyDependencyToChildResult::Applied { unsatisfied_count: 1, group_state: EdgeGroupState::Pending }
    );
    assert_eq!(
        fx.backend.apply_dependency_to_child(apply).await.unwrap(),
        ApplyDependencyToChildResult::AlreadyApplied
    );
    assert_eq!(fx.state(&child).await, PublicState::WaitingChildren);
    let status = fx.backend.evaluate_flow_eligibility(EvaluateFlowEligibilityArgs { execution_id: child }).await;
    assert_eq!(
        status.unwrap(),
        EvaluateFlowEligibilityResult::Status { status: FlowEligibility::BlockedByDependencies }
    );

    let h = fx.claim("inc", "w").await;
    assert_eq!(payload(&h).execution_id, parent, "only the parent is claimable");
    assert!(fx.try_claim("inc", "w").await.is_none());
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(fx.state(&child).await, PublicState::Waiting);
    let status = fx.backend.evaluate_flow_eligibility(EvaluateFlowEligibilityArgs { execution_id: child }).await;
    assert_eq!(status.unwrap(), EvaluateFlowEligibilityResult::Status { status: FlowEligibility::Eligible });
    let e = fx.backend.describe_edge(&flow_id, &edge.edge_id).await.unwrap().unwrap();
    assert_eq!((e.edge_state, e.resolution), (EdgeState::Applied, Some(EdgeResolution::Success)));
    assert_eq!(payload(&fx.claim("inc", "w").await).execution_id, child);
}

/// A failed head skips everything downstream of it, hop after hop, in its own transaction; the
/// flow ends failed and every skip is a completion event.
pub async fn a_failure_skips_its_downstreams_transitively<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (flow, ids) = graph(&fx, "skip", 4, &[(0, 1), (1, 2), (0, 3)], &[]).await;
    let h = fx.claim("skip", "w").await;
    fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Permanent).await.unwrap();
    for id in &ids[1..] {
        assert_eq!(fx.state(id).await, PublicState::Skipped);
        let before = fx.vector(id).await;
        assert_eq!(before.terminal_outcome, TerminalOutcome::Skipped);
    }
    assert!(fx.try_claim("skip", "w").await.is_none());
    let snapshot = fx.backend.describe_flow(&flow).await.unwrap().unwrap();
    assert_eq!(snapshot.public_flow_state, FlowState::Failed);
    assert_eq!((snapshot.members.failed, snapshot.members.skipped), (1, 3));
    let status = fx.backend.evaluate_flow_eligibility(EvaluateFlowEligibilityArgs { execution_id: ids[2] }).await;
    assert_eq!(status.unwrap(), EvaluateFlowEligibilityResult::Status { status: FlowEligibility::Terminal });
}

/// Cancelled and expired upstreams count as failures: an all-of child of a cancelled upstream is
/// skipped, and an any-of child whose other upstreams expired still runs on the one success.
pub async fn cancelled_and_expired_upstreams_count_as_failures<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let any = EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun };
    // 0 -> 1 (all-of); 2, 3, 4 -> 5 (any-of)
    let far = TimestampMs(fx.now().await + 3_600_000);
    let (_, ids) = graph_with(&fx, "mix", 6, &[(0, 1), (2, 5), (3, 5), (4, 5)], &[(5, any)], |i, a| {
        if i == 3 {
            a.execution_deadline_at = Some(far);
        }
    })
    .await;
    fx.backend.cancel_execution(CancelExecutionArgs::new(ids[0], "no")).await.unwrap();
    assert_eq!(fx.state(&ids[1]).await, PublicState::Skipped);

    fx.backend.cancel_execution(CancelExecutionArgs::new(ids[2], "no")).await.unwrap();
    fx.harness.make_past(&ids[3], Timer::Deadline).await;
    fx.backend.expire_execution(partition(&ids[3]), &ids[3], ExpirePhase::ExecutionDeadline).await.unwrap();
    assert_eq!(fx.state(&ids[3]).await, PublicState::Expired);
    assert_eq!(fx.state(&ids[5]).await, PublicState::WaitingChildren, "one upstream may still succeed");
    let h = fx.claim("mix", "w").await;
    assert_eq!(payload(&h).execution_id, ids[4]);
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(fx.state(&ids[5]).await, PublicState::Waiting);
}

/// Quorum 2 of 4 with cancel_remaining: the second success releases the downstream and cancels
/// the two siblings still running; their holders' next calls are refused with a typed error.
pub async fn quorum_cancels_its_remaining_siblings<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let edges = [(0, 4), (1, 4), (2, 4), (3, 4)];
    let (flow, ids) = graph(&fx, "quorum", 5, &edges, &[(4, CANCEL_REMAINING_QUORUM_2)]).await;
    let claimed = claim_all(&fx, "quorum").await;
    assert_eq!(claimed.len(), 4);
    fx.backend.complete(&claimed[0].1, None).await.unwrap();
    assert_eq!(fx.state(&ids[4]).await, PublicState::WaitingChildren);
    fx.backend.complete(&claimed[1].1, None).await.unwrap();
    assert_eq!(fx.state(&ids[4]).await, PublicState::Waiting);
    for (id, h) in &claimed[2..] {
        assert_eq!(fx.state(id).await, PublicState::Cancelled, "a losing sibling is cancelled");
        let err = fx.backend.complete(h, None).await.unwrap_err();
        assert_eq!(err.code(), "execution_not_active", "{err}");
        assert_eq!(fx.snapshot(id).await.blocking_detail.as_deref(), Some("sibling_quorum_satisfied"));
    }
    let g = fx.backend.describe_flow(&flow).await.unwrap().unwrap().edge_groups.remove(0);
    assert_eq!((g.satisfied_count, g.failed_count, g.running_count), (2, 2, 0));
    assert_eq!(g.group_state, EdgeGroupState::Satisfied);
    let h = fx.claim("quorum", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    // The cancelled losers are not sinks: the flow completed.
    assert_eq!(flow_state(&fx, &flow).await, FlowState::Completed);
}

/// An any-of group whose every upstream failed is impossible: the downstream is skipped.
pub async fn an_impossible_any_of_group_skips_its_downstream<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let any = EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun };
    let (_, ids) = graph(&fx, "anyfail", 3, &[(0, 2), (1, 2)], &[(2, any)]).await;
    for (_, h) in claim_all(&fx, "anyfail").await {
        fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Permanent).await.unwrap();
    }
    assert_eq!(fx.state(&ids[2]).await, PublicState::Skipped);
}

/// Graph edits that would break the graph are refused with their own codes and write nothing.
pub async fn bad_graph_edits_are_refused_and_write_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (flow, ids) = graph(&fx, "bad", 3, &[(0, 1), (1, 2)], &[]).await;
    let (other_flow, other) = graph(&fx, "bad", 2, &[], &[]).await;
    let rev = revision(&fx, &flow).await;
    let b = &fx.backend;
    refused(&fx, &flow, &ids, "self_referencing_edge", b.stage_dependency_edge(stage(flow, ids[0], ids[0], rev))).await;
    refused(&fx, &flow, &ids, "cycle_detected", b.stage_dependency_edge(stage(flow, ids[2], ids[0], rev))).await;
    refused(&fx, &flow, &ids, "dependency_already_exists", b.stage_dependency_edge(stage(flow, ids[0], ids[1], rev)))
        .await;
    // An edge to a member of another flow.
    refused(&fx, &flow, &ids, "not_found", b.stage_dependency_edge(stage(flow, ids[0], other[0], rev))).await;
    refused(&fx, &flow, &ids, "not_found", b.stage_dependency_edge(stage(FlowId::new(), ids[0], ids[2], rev))).await;
    // An execution already in another flow.
    refused(
        &fx,
        &flow,
        &ids,
        "execution_already_in_flow",
        b.add_execution_to_flow(AddExecutionToFlowArgs { flow_id: flow, execution_id: other[0] }),
    )
    .await;
    let stranger = fx.create("bad").await;
    refused(
        &fx,
        &flow,
        &ids,
        "invalid_input",
        b.add_execution_to_flow(AddExecutionToFlowArgs { flow_id: flow, execution_id: stranger }),
    )
    .await;
    refused(
        &fx,
        &flow,
        &ids,
        "not_found",
        b.add_execution_to_flow(AddExecutionToFlowArgs {
            flow_id: flow,
            execution_id: ExecutionId::for_flow(&flow, &PartitionConfig::default()),
        }),
    )
    .await;
    let quorum = |k| SetEdgeGroupPolicyArgs {
        flow_id: flow,
        downstream_execution_id: ids[2],
        policy: EdgeDependencyPolicy::Quorum { k, on_satisfied: OnSatisfied::LetRun },
    };
    refused(&fx, &flow, &ids, "invalid_input", b.set_edge_group_policy(quorum(0))).await;
    refused(&fx, &flow, &ids, "invalid_input", b.set_edge_group_policy(quorum(3))).await;
    assert_eq!(b.set_edge_group_policy(quorum(1)).await.unwrap(), SetEdgeGroupPolicyResult::Set);
    assert_eq!(b.set_edge_group_policy(quorum(1)).await.unwrap(), SetEdgeGroupPolicyResult::AlreadySet);
    // Once an inbound edge of member 1 is resolved, its policy is fixed.
    let claimed = claim_all(&fx, "bad").await;
    let head = claimed.iter().find(|(id, _)| *id == ids[0]).map(|(_, h)| h.clone()).expect("the head is claimable");
    fx.backend.complete(&head, None).await.unwrap();
    let fixed = SetEdgeGroupPolicyArgs {
        flow_id: flow,
        downstream_execution_id: ids[1],
        policy: EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun },
    };
    refused(&fx, &flow, &ids, "edge_group_policy_already_fixed", b.set_edge_group_policy(fixed)).await;
    // A whole graph with a cycle or a bad quorum is refused before anything is written.
    let cyclic = CreateFlowArgs::new("test.flow");
    let m: Vec<_> = (0..2).map(|_| member(&cyclic.flow_id, "bad")).collect();
    let edge = |u: usize, d: usize| FlowGraphEdge {
        edge_id: None,
        upstream_execution_id: m[u].execution_id,
        downstream_execution_id: m[d].execution_id,
        data_passing_ref: None,
    };
    let args = CreateFlowGraphArgs {
        flow: cyclic.clone(),
        members: m.clone(),
        edges: vec![edge(0, 1), edge(1, 0)],
        policies: vec![],
    };
    assert_eq!(b.create_flow_graph(args).await.unwrap_err().code(), "cycle_detected");
    assert!(b.describe_flow(&cyclic.flow_id).await.unwrap().is_none());
    assert!(b.describe_execution(&m[0].execution_id).await.unwrap().is_none());
    let args = CreateFlowGraphArgs {
        flow: cyclic.clone(),
        members: m.clone(),
        edges: vec![edge(0, 1)],
        policies: vec![FlowGraphPolicy {
            downstream_execution_id: m[1].execution_id,
            policy: CANCEL_REMAINING_QUORUM_2,
        }],
    };
    assert_eq!(b.create_flow_graph(args).await.unwrap_err().code(), "invalid_input");
    assert!(b.describe_flow(&cyclic.flow_id).await.unwrap().is_none());
    let members = b.describe_flow(&other_flow).await.unwrap().unwrap().node_count;
    assert_eq!(members, 2, "the other flow is untouched");
}

/// Cancelling a flow by policy: cancel_all cancels every unfinished member (a running one loses
/// its lease), cancel_pending spares running members, flow_only cancels none. A second
/// cancellation reports the stored policy, and a cancelled flow accepts no new members.
pub async fn cancel_flow_applies_its_policy<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    // 0 done, 1 running, 2 waiting for 1.
    for (policy, lane) in [
        (CancelFlowPolicy::CancelAll, "cancel-all"),
        (CancelFlowPolicy::CancelPending, "cancel-pending"),
        (CancelFlowPolicy::FlowOnly, "cancel-flow-only"),
    ] {
        let (flow, ids) = graph(&fx, lane, 3, &[(1, 2)], &[]).await;
        let claimed = claim_all(&fx, lane).await;
        let handle = |id| claimed.iter().find(|(i, _)| *i == id).map(|(_, h)| h.clone()).unwrap();
        b.complete(&handle(ids[0]), None).await.unwrap();
        let args = CancelFlowArgs { flow_id: flow, reason: "stop".into(), cancellation_policy: policy };
        let out = b.cancel_flow(args.clone(), CancelFlowWait::WaitTimeout(std::time::Duration::from_secs(5))).await;
        let want: Vec<ExecutionId> = match policy {
            CancelFlowPolicy::CancelAll => {
                let mut v = vec![ids[1], ids[2]];
                v.sort();
                v
            }
            CancelFlowPolicy::CancelPending => vec![ids[2]],
            CancelFlowPolicy::FlowOnly => vec![],
        };
        assert_eq!(
            out.unwrap(),
            CancelFlowResult::Cancelled { cancellation_policy: policy, member_execution_ids: want.clone() },
            "{policy:?}"
        );
        assert_eq!(fx.state(&ids[0]).await, PublicState::Completed, "{policy:?}: a finished member stays finished");
        for id in &want {
            assert_eq!(fx.state(id).await, PublicState::Cancelled, "{policy:?}");
        }
        match policy {
            CancelFlowPolicy::CancelAll => {
                assert_eq!(b.complete(&handle(ids[1]), None).await.unwrap_err().code(), "execution_not_active");
            }
            CancelFlowPolicy::CancelPending => {
                assert_eq!(fx.state(&ids[1]).await, PublicState::Active);
                b.complete(&handle(ids[1]), None).await.unwrap();
            }
            CancelFlowPolicy::FlowOnly => {
                b.complete(&handle(ids[1]), None).await.unwrap();
                assert_eq!(fx.state(&ids[2]).await, PublicState::Waiting, "flow_only leaves members running");
            }
        }
        let snapshot = b.describe_flow(&flow).await.unwrap().unwrap();
        assert_eq!(snapshot.public_flow_state, FlowState::Cancelled);
        assert_eq!((snapshot.cancel_reason.as_deref(), snapshot.cancellation_policy), (Some("stop"), Some(policy)));
        let again = b.cancel_flow(
            CancelFlowArgs { cancellation_policy: CancelFlowPolicy::FlowOnly, ..args },
            CancelFlowWait::NoWait,
        );
        assert!(
            matches!(again.await.unwrap(), CancelFlowResult::Cancelled { cancellation_policy, .. } if cancellation_policy == policy)
        );
        let late = fx.create_with(lane, |a| *a = member(&flow, lane)).await;
        let err =
            b.add_execution_to_flow(AddExecutionToFlowArgs { flow_id: flow, execution_id: late }).await.unwrap_err();
        assert_eq!(err.code(), "flow_already_terminal");
    }
    let err = b
        .cancel_flow(
            CancelFlowArgs {
                flow_id: FlowId::new(),
                reason: "x".into(),
                cancellation_policy: CancelFlowPolicy::CancelAll,
            },
            CancelFlowWait::NoWait,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
}

/// The split cancellation: the header closes the flow and lists the members; the caller cancels
/// and acknowledges each; a repeat reports the stored policy and the members not acknowledged.
pub async fn cancel_flow_header_leaves_members_to_the_caller<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (flow, ids) = graph(&fx, "header", 2, &[(0, 1)], &[]).await;
    let args = CancelFlowArgs { flow_id: flow, reason: "bye".into(), cancellation_policy: CancelFlowPolicy::CancelAll };
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        b.cancel_flow_header(args.clone()).await.unwrap(),
        CancelFlowHeader::Cancelled {
            cancellation_policy: CancelFlowPolicy::CancelAll,
            member_execution_ids: sorted.clone()
        }
    );
    assert_eq!(fx.state(&ids[0]).await, PublicState::Waiting, "the header cancels no member itself");
    let mut c = CancelExecutionArgs::new(ids[0], "bye");
    c.source = CancelSource::OperatorOverride;
    b.cancel_execution(c).await.unwrap();
    b.ack_cancel_member(&flow, &ids[0]).await.unwrap();
    b.ack_cancel_member(&flow, &ids[0]).await.unwrap();
    // The child's only upstream ended: the child is resolved at once, and as the flow's
    // cancellation targets it, it is cancelled rather than skipped.
    assert_eq!(fx.state(&ids[1]).await, PublicState::Cancelled);
    assert_eq!(
        b.cancel_flow_header(args).await.unwrap(),
        CancelFlowHeader::AlreadyTerminal {
            stored_cancellation_policy: Some(CancelFlowPolicy::CancelAll),
            stored_cancel_reason: Some("bye".into()),
            member_execution_ids: vec![ids[1]],
        }
    );
}

/// A lease holder that spawned children waits for them: the lease is released, and the same
/// attempt resumes once every child completed.
pub async fn wait_children_resumes_the_parent_when_its_children_end<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (flow, ids) = graph(&fx, "parent", 1, &[], &[]).await;
    let parent_handle = fx.claim("parent", "w").await;
    let attempt = payload(&parent_handle).attempt_index;
    let mut children = Vec::new();
    for _ in 0..2 {
        let child = fx.create_with("children", |a| *a = member(&flow, "children")).await;
        b.add_execution_to_flow(AddExecutionToFlowArgs { flow_id: flow, execution_id: child }).await.unwrap();
        let rev = revision(&fx, &flow).await;
        let edge = stage(flow, child, ids[0], rev);
        b.stage_dependency_edge(edge.clone()).await.unwrap();
        let applied = b
            .apply_dependency_to_child(ApplyDependencyToChildArgs {
                flow_id: flow,
                edge_id: edge.edge_id,
                upstream_execution_id: child,
                downstream_execution_id: ids[0],
            })
            .await
            .unwrap();
        assert!(matches!(applied, ApplyDependencyToChildResult::Applied { .. }));
        children.push(child);
    }
    assert_eq!(fx.state(&ids[0]).await, PublicState::Active, "applying edges does not interrupt a running parent");
    b.wait_children(&parent_handle).await.unwrap();
    assert_eq!(fx.state(&ids[0]).await, PublicState::WaitingChildren);
    assert_eq!(b.renew(&parent_handle).await.unwrap_err().code(), "execution_not_active");
    for (_, h) in claim_all(&fx, "children").await {
        assert!(fx.try_claim("parent", "w").await.is_none(), "the parent waits for every child");
        b.complete(&h, None).await.unwrap();
    }
    let resumed = fx.claim("parent", "w").await;
    let p = payload(&resumed);
    assert_eq!((p.execution_id, p.attempt_index, resumed.kind), (ids[0], attempt, HandleKind::Resumed));
    b.complete(&resumed, None).await.unwrap();
    assert_eq!(flow_state(&fx, &flow).await, FlowState::Completed);
    // Waiting with no children (or all done) resumes at once; a stale handle is refused.
    let err = b.wait_children(&parent_handle).await.unwrap_err();
    assert_eq!(err.code(), "stale_lease");
}

/// Two upstreams of one all-of child completing at the same moment release it exactly once.
pub async fn concurrent_upstreams_release_an_all_of_child_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    for round in 0..5 {
        let lane = format!("race-{round}");
        let (_, ids) = graph(&fx, &lane, 3, &[(0, 2), (1, 2)], &[]).await;
        let claimed = claim_all(&fx, &lane).await;
        assert_eq!(claimed.len(), 2);
        let (a, b) = tokio::join!(fx.backend.complete(&claimed[0].1, None), fx.backend.complete(&claimed[1].1, None));
        a.unwrap();
        b.unwrap();
        let child = claim_all(&fx, &lane).await;
        assert_eq!(claimed_ids(&child), HashSet::from([ids[2]]), "round {round}");
        let snapshot = fx.snapshot(&ids[2]).await;
        assert_eq!(snapshot.total_attempt_count, 1);
    }
}

/// An operator cancelling a flow while one of its members completes leaves one consistent
/// outcome: the member either completed or was cancelled, and its child was released, skipped
/// or cancelled accordingly; nothing waits forever.
pub async fn a_flow_cancel_racing_a_completion_ends_consistently<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    for round in 0..5 {
        let lane = format!("cancel-race-{round}");
        let (flow, ids) = graph(&fx, &lane, 2, &[(0, 1)], &[]).await;
        let h = fx.claim(&lane, "w").await;
        let args =
            CancelFlowArgs { flow_id: flow, reason: "race".into(), cancellation_policy: CancelFlowPolicy::CancelAll };
        let (done, cancelled) = tokio::join!(
            fx.backend.complete(&h, None),
            fx.backend.cancel_flow(args, CancelFlowWait::WaitTimeout(std::time::Duration::from_secs(10)))
        );
        assert!(matches!(cancelled.unwrap(), CancelFlowResult::Cancelled { .. }), "round {round}");
        let head = fx.state(&ids[0]).await;
        let child = fx.state(&ids[1]).await;
        match done {
            Ok(()) => assert_eq!(head, PublicState::Completed),
            Err(e) => {
                assert_eq!(e.code(), "execution_not_active", "{e}");
                assert_eq!(head, PublicState::Cancelled);
            }
        }
        assert!(matches!(child, PublicState::Cancelled | PublicState::Skipped), "round {round}: child {child:?}");
        assert_eq!(flow_state(&fx, &flow).await, FlowState::Cancelled);
    }
}

/// A 1,000-way fan-out and fan-in: the root releases 1,000 members at once, and the join runs
/// after the last of them.
pub async fn thousand_way_fan_out_and_fan_in<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let n = 1000;
    let mut edges = Vec::with_capacity(2 * n);
    for i in 1..=n {
        edges.push((0, i));
        edges.push((i, n + 1));
    }
    let (flow, ids) = graph(&fx, "fan", n + 2, &edges, &[]).await;
    let root = claim_all(&fx, "fan").await;
    assert_eq!(claimed_ids(&root), HashSet::from([ids[0]]));
    fx.backend.complete(&root[0].1, None).await.unwrap();
    let middle = claim_all(&fx, "fan").await;
    assert_eq!(claimed_ids(&middle), ids[1..=n].iter().copied().collect::<HashSet<_>>());
    for chunk in middle.chunks(100) {
        let items = chunk.iter().map(|(_, h)| (h.clone(), None)).collect();
        for r in fx.backend.complete_batch(items).await.unwrap() {
            r.unwrap();
        }
    }
    let join = claim_all(&fx, "fan").await;
    assert_eq!(claimed_ids(&join), HashSet::from([ids[n + 1]]));
    fx.backend.complete(&join[0].1, None).await.unwrap();
    let snapshot = fx.backend.describe_flow(&flow).await.unwrap().unwrap();
    assert_eq!((snapshot.public_flow_state, snapshot.members.completed), (FlowState::Completed, n as u32 + 2));
}

/// Reads and repairs: listings page in id order, edges list by direction, tags round-trip,
/// resolution entry points are idempotent, and the summary projection is written.
pub async fn flow_reads_listings_tags_and_repairs<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (flow, ids) = graph(&fx, "reads", 3, &[(0, 1), (0, 2)], &[]).await;
    let (flow2, _) = graph(&fx, "reads", 1, &[], &[]).await;
    let out = b.list_edges(&flow, EdgeDirection::Outgoing { from_node: ids[0] }).await.unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|e| e.upstream_execution_id == ids[0] && e.edge_state == EdgeState::Applied));
    let inc = b.list_edges(&flow, EdgeDirection::Incoming { to_node: ids[1] }).await.unwrap();
    assert_eq!(inc.len(), 1);
    assert_eq!(b.describe_edge(&flow, &inc[0].edge_id).await.unwrap().as_ref(), Some(&inc[0]));
    assert!(b.describe_edge(&flow2, &inc[0].edge_id).await.unwrap().is_none());

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.list_flows(ListFlowsArgs { cursor, limit: Some(1), ..Default::default() }).await.unwrap();
        seen.extend(page.flows.iter().map(|f| f.flow_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want = vec![flow, flow2];
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(
        b.list_flows(ListFlowsArgs { limit: Some(0), ..Default::default() }).await.unwrap_err().code(),
        "invalid_input"
    );

    b.set_flow_tag(&flow, "app.owner", "team-a").await.unwrap();
    assert_eq!(b.get_flow_tag(&flow, "app.owner").await.unwrap().as_deref(), Some("team-a"));
    assert_eq!(b.get_flow_tag(&FlowId::new(), "app.owner").await.unwrap(), None);
    assert_eq!(b.set_flow_tag(&FlowId::new(), "app.owner", "x").await.unwrap_err().code(), "not_found");
    assert_eq!(b.set_flow_tag(&flow, "Bad Key", "x").await.unwrap_err().code(), "invalid_tag_key");

    let h = fx.claim("reads", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    let cascade = b.cascade_completion(CascadeCompletionArgs { execution_id: ids[0] }).await.unwrap();
    assert_eq!(cascade, CascadeOutcome { resolved: 0, cascaded_children: 0, synchronous: true });
    let edge = ResolveDependencyArgs {
        flow_id: flow,
        edge_id: inc[0].edge_id,
        upstream_outcome: Some(TerminalOutcome::Success),
    };
    assert_eq!(b.resolve_dependency(edge).await.unwrap(), ResolveDependencyResult::AlreadyResolved);
    assert_eq!(
        b.cascade_completion(CascadeCompletionArgs { execution_id: ids[1] }).await.unwrap_err().code(),
        "execution_not_terminal"
    );
    assert!(b.project_flow_summary(&flow).await.unwrap());
    // A flow whose only unfinished member waits for its delay is blocked.
    let later = TimestampMs(fx.now().await + 3_600_000);
    let (blocked, _) = graph_with(&fx, "reads-blocked", 2, &[], &[], |i, a| {
        if i == 1 {
            a.delay_until = Some(later);
        }
    })
    .await;
    let h = fx.claim("reads-blocked", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(flow_state(&fx, &blocked).await, FlowState::Blocked);
    assert!(!b.project_flow_summary(&FlowId::new()).await.unwrap());
    assert_eq!(b.drain_sibling_cancel_group(&flow, &ids[1]).await.unwrap(), SiblingCancelDrainResult::default());
    assert_eq!(b.reconcile_sibling_cancel_group(&flow, &ids[1]).await.unwrap(), SiblingCancelReconcileAction::NoOp);
}

/// Two batches completing members of the same two flows in opposite orders, at the same time,
/// both succeed (neither deadlocks on the other's groups), and every join is released once.
pub async fn concurrent_batches_across_flows_both_succeed<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    for round in 0..10 {
        let lane = format!("cross-{round}");
        let (_, a) = graph(&fx, &lane, 3, &[(0, 2), (1, 2)], &[]).await;
        let (_, b) = graph(&fx, &lane, 3, &[(0, 2), (1, 2)], &[]).await;
        let claimed = claim_all(&fx, &lane).await;
        let handle = |id: ExecutionId| claimed.iter().find(|(i, _)| *i == id).map(|(_, h)| (h.clone(), None)).unwrap();
        let first = vec![handle(a[0]), handle(b[0])];
        let second = vec![handle(b[1]), handle(a[1])];
        let (x, y) = tokio::join!(fx.backend.complete_batch(first), fx.backend.complete_batch(second));
        for r in x.unwrap().into_iter().chain(y.unwrap()) {
            r.unwrap();
        }
        let joins = claim_all(&fx, &lane).await;
        assert_eq!(claimed_ids(&joins), HashSet::from([a[2], b[2]]), "round {round}");
    }
}

/// Replaying a failed branch: the skipped downstream, replayed after its failed upstream, waits
/// for the upstream's new run and runs when it succeeds; the flow then completes.
pub async fn replaying_a_failed_branch_runs_its_downstream_again<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (flow, ids) = graph(&fx, "replay-branch", 2, &[(0, 1)], &[]).await;
    let h = fx.claim("replay-branch", "w").await;
    b.fail(&h, FailureReason::new("bad input"), FailureClass::Permanent).await.unwrap();
    assert_eq!(fx.state(&ids[1]).await, PublicState::Skipped);
    assert_eq!(flow_state(&fx, &flow).await, FlowState::Failed);
    b.replay_execution(ReplayExecutionArgs { execution_id: ids[0] }).await.unwrap();
    let replayed = b.replay_execution(ReplayExecutionArgs { execution_id: ids[1] }).await.unwrap();
    assert!(matches!(replayed, ReplayExecutionResult::Replayed { public_state: PublicState::WaitingChildren, .. }));
    assert_eq!(fx.state(&ids[1]).await, PublicState::WaitingChildren, "it waits for the upstream's new run");
    let again = claim_all(&fx, "replay-branch").await;
    assert_eq!(claimed_ids(&again), HashSet::from([ids[0]]));
    b.complete(&again[0].1, None).await.unwrap();
    let down = claim_all(&fx, "replay-branch").await;
    assert_eq!(claimed_ids(&down), HashSet::from([ids[1]]));
    b.complete(&down[0].1, None).await.unwrap();
    assert_eq!(flow_state(&fx, &flow).await, FlowState::Completed);
    let g = b.describe_flow(&flow).await.unwrap().unwrap().edge_groups.remove(0);
    assert_eq!((g.satisfied_count, g.failed_count, g.group_state), (1, 0, EdgeGroupState::Satisfied));
}
