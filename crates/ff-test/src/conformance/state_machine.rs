//! The state machine against stored state: after every transition the backend performs,
//! `describe_execution(..).state` is exactly the vector `ff_core::state::apply` computes from the
//! stored vector before it, and satisfies `StateVector::check`.

use ff_core::backend::ExpirePhase;
use ff_core::state::{Transition, apply};
use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Reads the stored vector of `id` and checks it is `apply(t, before)` and valid.
async fn check<H: ConformanceHarness>(
    fx: &Fixture<H>,
    id: &ExecutionId,
    t: Transition,
    before: StateVector,
) -> StateVector {
    let after = fx.vector(id).await;
    assert_eq!(after, apply(t, Some(&before)).unwrap(), "{t:?} from {before:?}");
    after.check().unwrap_or_else(|e| panic!("{t:?} stored an invalid vector: {e}"));
    assert_eq!(fx.snapshot(id).await.public_state, after.public_state());
    after
}

/// Create, claim, delay, promote, claim (resume), fail with retry, claim, lease expiry, reclaim,
/// and lease expiry at the reclaim cap: one execution through the non-terminal transitions.
pub async fn one_execution_through_every_non_terminal_transition<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let policy = ExecutionPolicy { max_reclaim_count: Some(1), ..retry_policy(1, 60_000) };
    let id = fx.create_with("sm", |a| a.policy = Some(policy)).await;
    let created = fx.vector(&id).await;
    assert_eq!(created, apply(Transition::Create { delayed: false }, None).unwrap());

    let h = fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, created).await;

    let now = fx.now().await;
    fx.backend.delay(&h, TimestampMs(now + 60_000)).await.unwrap();
    let delayed = check(&fx, &id, Transition::Delay, active).await;
    fx.make_past(&id, Timer::Eligible).await;
    fx.backend.promote_delayed(partition(&id), &lane_id("sm"), &id).await.unwrap();
    let promoted = check(&fx, &id, Transition::PromoteDelayed, delayed).await;

    let h = fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, promoted).await;
    fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Transient).await.unwrap();
    let retrying = check(&fx, &id, Transition::FailRetry, active).await;
    fx.make_due(&id).await;
    let retry_ready = check(&fx, &id, Transition::PromoteDelayed, retrying).await;

    fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, retry_ready).await;
    fx.lose_lease(&id).await;
    let reclaimable = check(&fx, &id, Transition::ExpireLease, active).await;

    fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, reclaimable).await;
    fx.lose_lease(&id).await;
    check(&fx, &id, Transition::ReclaimCapExceeded, active).await;
}

/// Complete, cancel and terminal failure by the lease holder.
pub async fn lease_holder_terminal_transitions<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let done = fx.create("sm").await;
    let created = fx.vector(&done).await;
    let h = fx.claim("sm", "w").await;
    let active = check(&fx, &done, Transition::Claim, created).await;
    fx.backend.complete(&h, None).await.unwrap();
    check(&fx, &done, Transition::Complete, active).await;

    let cancelled = fx.create("sm").await;
    let h = fx.claim("sm", "w").await;
    assert_eq!(fx.vector(&cancelled).await, ACTIVE);
    fx.backend.cancel(&h, "stop").await.unwrap();
    check(&fx, &cancelled, Transition::Cancel, ACTIVE).await;

    let failed = fx.create("sm").await;
    let h = fx.claim("sm", "w").await;
    assert_eq!(fx.vector(&failed).await, ACTIVE);
    fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Permanent).await.unwrap();
    check(&fx, &failed, Transition::FailTerminal, ACTIVE).await;
}

/// A delayed create, and its promotion once due.
pub async fn delayed_create_and_promotion<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let now = fx.now().await;
    let id = fx.create_with("sm", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    let delayed = fx.vector(&id).await;
    assert_eq!(delayed, apply(Transition::Create { delayed: true }, None).unwrap());
    // Not due: the hook is a no-op.
    let before = fx.fingerprint(&id).await;
    fx.backend.promote_delayed(partition(&id), &lane_id("sm"), &id).await.unwrap();
    assert_eq!(fx.fingerprint(&id).await, before);
    fx.make_past(&id, Timer::Eligible).await;
    fx.backend.promote_delayed(partition(&id), &lane_id("sm"), &id).await.unwrap();
    check(&fx, &id, Transition::PromoteDelayed, delayed).await;
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
}

/// The deadline expires a waiting execution; the attempt timeout expires a running one.
pub async fn timeout_and_deadline_expiry<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let now = fx.now().await;
    let waiting = fx.create_with("sm", |a| a.execution_deadline_at = Some(TimestampMs(now + 3_600_000))).await;
    let before = fx.vector(&waiting).await;
    fx.make_past(&waiting, Timer::Deadline).await;
    fx.backend.expire_execution(partition(&waiting), &waiting, ExpirePhase::ExecutionDeadline).await.unwrap();
    check(&fx, &waiting, Transition::Expire, before).await;

    let running = fx
        .create_with("sm-at", |a| {
            a.policy = Some(ExecutionPolicy {
                timeout_policy: Some(TimeoutPolicy {
                    attempt_timeout_ms: Some(3_600_000),
                    execution_deadline_ms: None,
                }),
                ..Default::default()
            })
        })
        .await;
    fx.claim("sm-at", "w").await;
    fx.make_past(&running, Timer::AttemptTimeout).await;
    fx.backend.expire_execution(partition(&running), &running, ExpirePhase::AttemptTimeout).await.unwrap();
    check(&fx, &running, Transition::Expire, ACTIVE).await;
}

/// The operator transitions: revoking a lease, cancelling from any state, and replaying a
/// terminal execution store what `apply` computes.
pub async fn operator_transitions<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("sm-op").await;
    let created = fx.vector(&id).await;
    fx.claim("sm-op", "w").await;
    let active = check(&fx, &id, Transition::Claim, created).await;
    fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "hung")).await.unwrap();
    let revoked = check(&fx, &id, Transition::RevokeLease, active).await;
    fx.backend.cancel_execution(CancelExecutionArgs::new(id, "stop")).await.unwrap();
    let cancelled = check(&fx, &id, Transition::OperatorCancel, revoked).await;
    fx.backend.replay_execution(ReplayExecutionArgs { execution_id: id }).await.unwrap();
    let replayed = check(&fx, &id, Transition::Replay, cancelled).await;
    fx.claim("sm-op", "w").await;
    check(&fx, &id, Transition::Claim, replayed).await;
}

/// Flow transitions: held back by an applied edge, released when satisfied, skipped when
/// impossible, and a lease holder waiting for its children then resumed.
pub async fn flow_transitions<H: ConformanceHarness>() {
    use super::flow::{graph, member};
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    // 0 -> 1 -> 2: complete 0 releases 1; failing 1 skips 2.
    let (flow, ids) = graph(&fx, "sm-flow", 3, &[], &[]).await;
    let mut rev = b.describe_flow(&flow).await.unwrap().unwrap().graph_revision;
    for (up, down) in [(0, 1), (1, 2)] {
        let before = fx.vector(&ids[down]).await;
        let edge = StageDependencyEdgeArgs {
            flow_id: flow,
            edge_id: EdgeId::new(),
            upstream_execution_id: ids[up],
            downstream_execution_id: ids[down],
            dependency_kind: DependencyKind::SuccessOnly,
            data_passing_ref: None,
            expected_graph_revision: rev,
        };
        rev += 1;
        b.stage_dependency_edge(edge.clone()).await.unwrap();
        b.apply_dependency_to_child(ApplyDependencyToChildArgs {
            flow_id: flow,
            edge_id: edge.edge_id,
            upstream_execution_id: ids[up],
            downstream_execution_id: ids[down],
        })
        .await
        .unwrap();
        check(&fx, &ids[down], Transition::BlockOnDependencies, before).await;
    }
    let blocked = fx.vector(&ids[1]).await;
    let h = fx.claim("sm-flow", "w").await;
    b.complete(&h, None).await.unwrap();
    let released = check(&fx, &ids[1], Transition::DependenciesSatisfied { delayed: false }, blocked).await;
    let blocked2 = fx.vector(&ids[2]).await;
    let h = fx.claim("sm-flow", "w").await;
    check(&fx, &ids[1], Transition::Claim, released).await;
    b.fail(&h, FailureReason::new("x"), FailureClass::Permanent).await.unwrap();
    check(&fx, &ids[2], Transition::SkipForDependencies, blocked2).await;

    // A parent waits for a child it adds while running, then resumes.
    let parent = fx.create_with("sm-parent", |a| *a = member(&flow, "sm-parent")).await;
    let child = fx.create_with("sm-child", |a| *a = member(&flow, "sm-child")).await;
    for id in [parent, child] {
        b.add_execution_to_flow(AddExecutionToFlowArgs { flow_id: flow, execution_id: id }).await.unwrap();
    }
    let ph = fx.claim("sm-parent", "w").await;
    let rev = b.describe_flow(&flow).await.unwrap().unwrap().graph_revision;
    let edge = StageDependencyEdgeArgs {
        flow_id: flow,
        edge_id: EdgeId::new(),
        upstream_execution_id: child,
        downstream_execution_id: parent,
        dependency_kind: DependencyKind::SuccessOnly,
        data_passing_ref: None,
        expected_graph_revision: rev,
    };
    b.stage_dependency_edge(edge.clone()).await.unwrap();
    b.apply_dependency_to_child(ApplyDependencyToChildArgs {
        flow_id: flow,
        edge_id: edge.edge_id,
        upstream_execution_id: child,
        downstream_execution_id: parent,
    })
    .await
    .unwrap();
    let active = fx.vector(&parent).await;
    b.wait_children(&ph).await.unwrap();
    let waiting = check(&fx, &parent, Transition::WaitChildren { pending: true }, active).await;
    let ch = fx.claim("sm-child", "w").await;
    b.complete(&ch, None).await.unwrap();
    let resumable = check(&fx, &parent, Transition::DependenciesSatisfied { delayed: false }, waiting).await;
    let again = fx.claim("sm-parent", "w").await;
    assert_eq!(again.kind, HandleKind::Resumed);
    check(&fx, &parent, Transition::Claim, resumable).await;
}

/// Suspension transitions: suspend, resume by signal, claim the resumed attempt, suspend again
/// and resume by an operator after a delay; a timeout that escalates, then one that fails.
pub async fn suspension_transitions<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let id = fx.create("sm-susp").await;
    let h = fx.claim("sm-susp", "w").await;
    let active = fx.vector(&id).await;
    let mut args = SuspendArgs::for_signal("approval", "approved");
    args.reason_code = SuspensionReasonCode::WaitingForApproval;
    let out = b.suspend(&h, args).await.unwrap();
    let suspended = check(&fx, &id, Transition::Suspend { reason: BlockingReason::WaitingForApproval }, active).await;
    let SuspendOutcome::Suspended { details } = out else { panic!("expected Suspended") };
    let w = &details.waitpoints[0];
    let mut s = DeliverSignalArgs::new(id, w.waitpoint_id, "approved", "user", "ann");
    s.waitpoint_token = Some(w.waitpoint_token.clone());
    b.deliver_signal(s).await.unwrap();
    let resumed = check(&fx, &id, Transition::Resume { delayed: false }, suspended).await;
    let h = fx.claim("sm-susp", "w").await;
    let active = check(&fx, &id, Transition::Claim, resumed).await;
    let later = TimestampMs(fx.now().await + 3_600_000);
    let mut args = SuspendArgs::for_signal("again", "go");
    args.timeout_at = Some(later);
    args.timeout_behavior = TimeoutBehavior::Escalate;
    b.suspend(&h, args).await.unwrap();
    let suspended = check(&fx, &id, Transition::Suspend { reason: BlockingReason::WaitingForSignal }, active).await;
    fx.harness.make_past(&id, Timer::SuspensionTimeout).await;
    b.expire_suspension(partition(&id), &id).await.unwrap();
    let escalated = check(&fx, &id, Transition::Escalate, suspended).await;
    b.resume_execution(ResumeExecutionArgs {
        execution_id: id,
        trigger_type: "operator".into(),
        resume_delay_ms: 60_000,
    })
    .await
    .unwrap();
    check(&fx, &id, Transition::Resume { delayed: true }, escalated).await;

    let id = fx.create("sm-susp-fail").await;
    let h = fx.claim("sm-susp-fail", "w").await;
    let active = fx.vector(&id).await;
    let mut args = SuspendArgs::for_signal("x", "y");
    args.timeout_at = Some(later);
    b.suspend(&h, args).await.unwrap();
    let suspended = check(&fx, &id, Transition::Suspend { reason: BlockingReason::WaitingForSignal }, active).await;
    fx.harness.make_past(&id, Timer::SuspensionTimeout).await;
    b.expire_suspension(partition(&id), &id).await.unwrap();
    check(&fx, &id, Transition::SuspensionTimeout { outcome: TerminalOutcome::Failed }, suspended).await;
}
