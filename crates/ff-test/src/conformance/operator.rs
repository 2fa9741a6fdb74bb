//! Operator controls: cancelling any non-terminal execution, revoking a lease, changing a
//! priority, replaying a terminal execution, listing expired leases, and the fence-triple peers
//! of renew, complete and fail. Every refusal has its own code and writes nothing.

use std::time::Duration;

use ff_core::event::{CompletionOutcome, EventCursor, ScannerFilter};
use ff_core::state::{Transition, apply};
use ff_core::*;
use futures::StreamExt;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

fn fence(h: &Handle) -> LeaseFence {
    let p = payload(h);
    LeaseFence { lease_id: p.lease_id, lease_epoch: p.lease_epoch, attempt_id: p.attempt_id }
}

fn cancel(id: ExecutionId, reason: &str) -> CancelExecutionArgs {
    CancelExecutionArgs::new(id, reason)
}

fn priority(id: ExecutionId, p: i32) -> ChangePriorityArgs {
    ChangePriorityArgs { execution_id: id, new_priority: p, lane_id: None }
}

fn replay(id: ExecutionId) -> ReplayExecutionArgs {
    ReplayExecutionArgs { execution_id: id }
}

/// Runs `call`, expects the error `code`, and checks that nothing about `id` changed.
async fn refused<H: ConformanceHarness, T: std::fmt::Debug>(
    fx: &Fixture<H>,
    id: &ExecutionId,
    code: &str,
    call: impl std::future::Future<Output = Result<T, EngineError>>,
) {
    let before = fx.fingerprint(id).await;
    let err = call.await.expect_err(&format!("expected {code}"));
    assert_eq!(err.code(), code, "{err}");
    assert_eq!(fx.fingerprint(id).await, before, "a refused {code} call wrote nothing");
}

/// An operator cancels waiting, delayed, leased and reclaimable executions alike: each ends
/// `cancelled` as the state machine says, with the reason recorded, and with the completion
/// event a worker's cancel writes. The former lease holder's next calls are refused.
pub async fn operator_cancel_ends_any_non_terminal_state<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let leased = fx.create("ops").await;
    let h = fx.claim("ops", "w").await;
    let expired = fx.create("ops").await;
    fx.claim("ops", "w").await;
    fx.lose_lease(&expired).await;
    let waiting = fx.create("ops").await;
    let now = fx.now().await;
    let delayed = fx.create_with("ops", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;

    for id in [leased, expired, waiting, delayed] {
        let before = fx.vector(&id).await;
        let out = fx.backend.cancel_execution(cancel(id, "runaway")).await.unwrap();
        assert_eq!(out, CancelExecutionResult::Cancelled { execution_id: id, public_state: PublicState::Cancelled });
        let after = fx.vector(&id).await;
        assert_eq!(after, apply(Transition::OperatorCancel, Some(&before)).unwrap(), "from {before:?}");
        assert_eq!(fx.snapshot(&id).await.blocking_detail.as_deref(), Some("runaway"));
        assert!(fx.snapshot(&id).await.current_lease.is_none());
    }

    let err = fx.backend.complete(&h, None).await.unwrap_err();
    assert_eq!(err.code(), "execution_not_active", "{err}");
    let err = fx.backend.renew(&h).await.unwrap_err();
    assert_eq!(err.code(), "execution_not_active", "{err}");
    refused(&fx, &leased, "terminal", fx.backend.cancel_execution(cancel(leased, "again"))).await;
    assert!(fx.try_claim("ops", "w").await.is_none(), "nothing cancelled is claimable");

    let completions = fx.harness.completions();
    let mut stream =
        completions.subscribe_completions_from(EventCursor::BEGINNING, &ScannerFilter::default()).await.unwrap();
    let mut cancelled = Vec::new();
    while cancelled.len() < 4 {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("a completion event")
            .expect("the stream is open")
            .expect("an event");
        assert_eq!(e.outcome, CompletionOutcome::Cancelled, "{e:?}");
        cancelled.push(e.execution_id);
    }
    assert_eq!(cancelled, [leased, expired, waiting, delayed]);
}

/// A cancellation from a source other than an operator override needs the current lease while
/// one is held: none is `fence_required`, another one is `stale_lease`; the right one cancels.
pub async fn non_operator_cancel_needs_the_current_fence<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("ops").await;
    let h = fx.claim("ops", "w").await;
    let holder = |fence| CancelExecutionArgs { source: CancelSource::LeaseHolder, fence, ..cancel(id, "done") };
    refused(&fx, &id, "fence_required", fx.backend.cancel_execution(holder(None))).await;
    let mut stale = fence(&h);
    stale.lease_epoch = LeaseEpoch(stale.lease_epoch.0 + 1);
    refused(&fx, &id, "stale_lease", fx.backend.cancel_execution(holder(Some(stale)))).await;
    let mut other_attempt = fence(&h);
    other_attempt.attempt_id = AttemptId::new();
    refused(&fx, &id, "stale_lease", fx.backend.cancel_execution(holder(Some(other_attempt)))).await;
    fx.backend.cancel_execution(holder(Some(fence(&h)))).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Cancelled);

    // A superseded fence is stale in any state, not only while the execution is active.
    let retrying = fx.create_with("ops-retry", |a| a.policy = Some(retry_policy(3, 60_000))).await;
    let old = fx.claim("ops-retry", "w").await;
    fx.backend.fail(&old, FailureReason::new("flaky"), FailureClass::Transient).await.unwrap();
    fx.make_due(&retrying).await;
    let new = fx.claim("ops-retry", "w").await;
    fx.backend.delay(&new, TimestampMs(fx.now().await + 60_000)).await.unwrap();
    let stale =
        CancelExecutionArgs { source: CancelSource::LeaseHolder, fence: Some(fence(&old)), ..cancel(retrying, "x") };
    refused(&fx, &retrying, "stale_lease", fx.backend.cancel_execution(stale)).await;
}

/// Revoking a lease makes the execution reclaimable at once, as the state machine says; the
/// holder's next call is `lease_revoked` and the next claim reclaims it. An expected lease or
/// holder other than the current one is `stale_lease`; nothing to revoke is `AlreadySatisfied`.
pub async fn revoke_lease_makes_the_execution_reclaimable_at_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("ops").await;
    let h = fx.claim("ops", "w-1").await;
    let before = fx.vector(&id).await;
    let p = payload(&h);

    let mut wrong_holder = RevokeLeaseArgs::new(id, "hung");
    wrong_holder.worker_instance_id = Some(WorkerInstanceId::new("w-9"));
    refused(&fx, &id, "stale_lease", fx.backend.revoke_lease(wrong_holder)).await;
    let mut wrong_lease = RevokeLeaseArgs::new(id, "hung");
    wrong_lease.expected_lease_id = Some(LeaseId::new());
    refused(&fx, &id, "stale_lease", fx.backend.revoke_lease(wrong_lease)).await;

    let mut args = RevokeLeaseArgs::new(id, "hung");
    args.expected_lease_id = Some(p.lease_id);
    args.worker_instance_id = Some(WorkerInstanceId::new("w-1"));
    let out = fx.backend.revoke_lease(args).await.unwrap();
    assert_eq!(out, RevokeLeaseResult::Revoked { lease_id: p.lease_id, lease_epoch: p.lease_epoch });
    assert_eq!(fx.vector(&id).await, apply(Transition::RevokeLease, Some(&before)).unwrap());
    assert_eq!(fx.backend.renew(&h).await.unwrap_err().code(), "lease_revoked");

    let again = fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "hung")).await.unwrap();
    assert_eq!(again, RevokeLeaseResult::AlreadySatisfied { reason: RevokeNoopReason::AlreadyRevoked });
    let taken = fx.claim("ops", "w-2").await;
    assert_eq!(taken.kind, HandleKind::Reclaimed);
    let mut old = RevokeLeaseArgs::new(id, "hung");
    old.expected_lease_id = Some(p.lease_id);
    refused(&fx, &id, "stale_lease", fx.backend.revoke_lease(old)).await;

    fx.lose_lease(&id).await;
    let expired = fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "hung")).await.unwrap();
    assert_eq!(expired, RevokeLeaseResult::AlreadySatisfied { reason: RevokeNoopReason::AlreadyExpired });

    let waiting = fx.create("ops-2").await;
    let none = fx.backend.revoke_lease(RevokeLeaseArgs::new(waiting, "hung")).await.unwrap();
    assert_eq!(none, RevokeLeaseResult::AlreadySatisfied { reason: RevokeNoopReason::NoActiveLease });
    fx.backend.cancel_execution(cancel(waiting, "x")).await.unwrap();
    refused(&fx, &waiting, "terminal", fx.backend.revoke_lease(RevokeLeaseArgs::new(waiting, "hung"))).await;
}

/// A changed priority reorders waiting work at once, even ahead of where claims have already
/// reached; out of range, terminal, another lane and unknown executions are refused.
pub async fn change_priority_reorders_waiting_work<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let first = fx.create_with("prio", |a| a.priority = 10).await;
    let second = fx.create_with("prio", |a| a.priority = 5).await;
    let third = fx.create_with("prio", |a| a.priority = 5).await;
    assert_eq!(payload(&fx.claim("prio", "w").await).execution_id, first);

    let out = fx.backend.change_priority(priority(third, 20)).await.unwrap();
    assert_eq!(out, ChangePriorityResult::Changed { execution_id: third, old_priority: 5, new_priority: 20 });
    assert_eq!(fx.backend.read_execution_info(&third).await.unwrap().unwrap().priority, 20);
    assert_eq!(payload(&fx.claim("prio", "w").await).execution_id, third, "the raised execution goes first");
    assert_eq!(payload(&fx.claim("prio", "w").await).execution_id, second);

    let waiting = fx.create_with("prio", |a| a.priority = 1).await;
    refused(&fx, &waiting, "priority_out_of_range", fx.backend.change_priority(priority(waiting, 9001))).await;
    refused(&fx, &waiting, "priority_out_of_range", fx.backend.change_priority(priority(waiting, -1))).await;
    let other_lane = ChangePriorityArgs { lane_id: Some(lane_id("elsewhere")), ..priority(waiting, 3) };
    refused(&fx, &waiting, "invalid_input", fx.backend.change_priority(other_lane)).await;
    fx.backend.cancel_execution(cancel(waiting, "x")).await.unwrap();
    refused(&fx, &waiting, "terminal", fx.backend.change_priority(priority(waiting, 3))).await;
    let unknown = ExecutionId::solo(&lane_id("prio"), &PartitionConfig::default());
    assert_eq!(fx.backend.change_priority(priority(unknown, 3)).await.unwrap_err().code(), "not_found");
}

/// A terminal execution replays as the state machine says: runnable with a pending replay
/// attempt, counters reset and result cleared; its next claim starts a new attempt. The policy's
/// cap ends replays; a non-terminal execution is refused.
pub async fn replay_runs_a_terminal_execution_again_up_to_its_cap<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let policy = ExecutionPolicy { max_replay_count: Some(2), ..retry_policy(1, 60_000) };
    let id = fx.create_with("replay", |a| a.policy = Some(policy)).await;
    refused(&fx, &id, "execution_not_terminal", fx.backend.replay_execution(replay(id))).await;

    let h = fx.claim("replay", "w").await;
    fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
    fx.make_due(&id).await;
    let h = fx.claim("replay", "w").await;
    fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Failed);

    let before = fx.vector(&id).await;
    let out = fx.backend.replay_execution(replay(id)).await.unwrap();
    assert_eq!(out, ReplayExecutionResult::Replayed { public_state: PublicState::Waiting, replay_count: 1 });
    assert_eq!(fx.vector(&id).await, apply(Transition::Replay, Some(&before)).unwrap());
    let snap = fx.snapshot(&id).await;
    assert_eq!((snap.retry_count, snap.replay_count, snap.lease_reclaim_count), (0, 1, 0));
    assert_eq!(snap.blocking_detail, None);

    let h = fx.claim("replay", "w").await;
    assert_eq!(h.kind, HandleKind::Fresh);
    assert_eq!(payload(&h).attempt_index, AttemptIndex(2), "a replay starts a new attempt");
    fx.backend.complete(&h, Some(b"second time".to_vec())).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap().as_deref(), Some(&b"second time"[..]));

    fx.backend.replay_execution(replay(id)).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), None, "a replay clears the result");
    let h = fx.claim("replay", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    refused(&fx, &id, "max_replays_exhausted", fx.backend.replay_execution(replay(id))).await;
    let unknown = ExecutionId::solo(&lane_id("replay"), &PartitionConfig::default());
    assert_eq!(fx.backend.replay_execution(replay(unknown)).await.unwrap_err().code(), "not_found");
}

/// Expired leases are listed whether or not their expiry was recorded yet, by expiry then id,
/// page by page, filtered by namespace; live leases are not.
pub async fn list_expired_leases_pages_through_expired_leases<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let live = fx.create("exp").await;
    let recorded = fx.create("exp").await;
    let unrecorded = fx.create_with("exp", |a| a.namespace = Namespace::new("team-b")).await;
    let mut handles = Vec::new();
    for _ in 0..3 {
        handles.push(fx.claim("exp", "w").await);
    }
    let h = handles.iter().find(|h| payload(h).execution_id == unrecorded).expect("claimed").clone();
    fx.lose_lease(&recorded).await;
    fx.make_past(&unrecorded, Timer::LeaseExpiry).await;

    let all = fx.backend.list_expired_leases(ListExpiredLeasesArgs::default()).await.unwrap();
    let ids: Vec<ExecutionId> = all.entries.iter().map(|e| e.execution_id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&recorded) && ids.contains(&unrecorded) && !ids.contains(&live));
    assert!(all.entries.windows(2).all(|w| w[0].expires_at_ms <= w[1].expires_at_ms));
    assert_eq!(all.cursor, None);
    let entry = all.entries.iter().find(|e| e.execution_id == unrecorded).unwrap();
    assert_eq!(
        (entry.lease_id, entry.ownership_state, entry.worker_instance_id.as_str()),
        (payload(&h).lease_id, OwnershipState::Leased, "w")
    );
    let entry = all.entries.iter().find(|e| e.execution_id == recorded).unwrap();
    assert_eq!(entry.ownership_state, OwnershipState::LeaseExpiredReclaimable);

    let page = |after| ListExpiredLeasesArgs { limit: Some(1), after, ..Default::default() };
    let first = fx.backend.list_expired_leases(page(None)).await.unwrap();
    assert_eq!(first.entries.len(), 1);
    let second = fx.backend.list_expired_leases(page(first.cursor.clone())).await.unwrap();
    assert_eq!(second.entries.len(), 1);
    assert_eq!(second.cursor, None);
    assert_eq!([first.entries[0].execution_id, second.entries[0].execution_id], [ids[0], ids[1]]);

    let team_b = ListExpiredLeasesArgs { namespace: Some(Namespace::new("team-b")), ..Default::default() };
    let only = fx.backend.list_expired_leases(team_b).await.unwrap();
    assert_eq!(only.entries.iter().map(|e| e.execution_id).collect::<Vec<_>>(), [unrecorded]);
    let past = ListExpiredLeasesArgs { as_of: Some(TimestampMs(1)), ..Default::default() };
    assert!(fx.backend.list_expired_leases(past).await.unwrap().entries.is_empty());
    let too_big = ListExpiredLeasesArgs { limit: Some(MAX_EXPIRED_LEASES_PAGE + 1), ..Default::default() };
    assert_eq!(fx.backend.list_expired_leases(too_big).await.unwrap_err().code(), "invalid_input");
}

/// The fence-triple peers act like the handle calls: renew, complete and fail under the
/// current fence; a fence naming another attempt is stale; a missing fence is
/// `fence_required` unless an operator overrides, which acts on the current lease.
pub async fn fence_triple_peers_act_like_the_handle_calls<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create_with("triple", |a| a.policy = Some(retry_policy(1, 60_000))).await;
    let h = fx.claim("triple", "w").await;
    let index = payload(&h).attempt_index;
    let renew = |fence| RenewLeaseArgs { execution_id: id, attempt_index: index, fence };
    refused(&fx, &id, "fence_required", fx.backend.renew_lease(renew(None))).await;
    let mut other_attempt = fence(&h);
    other_attempt.attempt_id = AttemptId::new();
    refused(&fx, &id, "stale_lease", fx.backend.renew_lease(renew(Some(other_attempt)))).await;
    let RenewLeaseResult::Renewed { lease_epoch, .. } = fx.backend.renew_lease(renew(Some(fence(&h)))).await.unwrap();
    assert_eq!(lease_epoch, payload(&h).lease_epoch);

    let fail = |fence, source| FailExecutionArgs {
        execution_id: id,
        attempt_index: index,
        fence,
        failure_reason: FailureReason::new("flaky"),
        failure_category: FailureClass::Transient,
        source,
    };
    refused(&fx, &id, "fence_required", fx.backend.fail_execution(fail(None, CancelSource::LeaseHolder))).await;
    let out = fx.backend.fail_execution(fail(Some(fence(&h)), CancelSource::LeaseHolder)).await.unwrap();
    assert!(matches!(out, FailOutcome::RetryScheduled { .. }), "{out:?}");

    fx.make_due(&id).await;
    let h = fx.claim("triple", "w").await;
    let complete = |fence, source| CompleteExecutionArgs {
        execution_id: id,
        attempt_index: payload(&h).attempt_index,
        fence,
        result_payload: Some(b"by the operator".to_vec()),
        source,
    };
    refused(&fx, &id, "fence_required", fx.backend.complete_execution(complete(None, CancelSource::LeaseHolder))).await;
    let stale_index = CompleteExecutionArgs { attempt_index: index, ..complete(None, CancelSource::OperatorOverride) };
    refused(&fx, &id, "stale_lease", fx.backend.complete_execution(stale_index)).await;
    let out = fx.backend.complete_execution(complete(None, CancelSource::OperatorOverride)).await.unwrap();
    assert_eq!(out, CompleteExecutionResult::Completed { execution_id: id, public_state: PublicState::Completed });
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap().as_deref(), Some(&b"by the operator"[..]));
    assert_eq!(fx.backend.complete(&h, None).await.unwrap_err().code(), "execution_not_active");
    let again = complete(Some(fence(&h)), CancelSource::LeaseHolder);
    refused(&fx, &id, "execution_not_active", fx.backend.complete_execution(again)).await;
}

/// Every control on an unknown execution is `not_found`; reasons with a NUL are refused before
/// anything is written.
pub async fn operator_bad_input_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let unknown = ExecutionId::solo(&lane_id("bad"), &PartitionConfig::default());
    assert_eq!(fx.backend.cancel_execution(cancel(unknown, "x")).await.unwrap_err().code(), "not_found");
    assert_eq!(fx.backend.revoke_lease(RevokeLeaseArgs::new(unknown, "x")).await.unwrap_err().code(), "not_found");
    let renew = RenewLeaseArgs {
        execution_id: unknown,
        attempt_index: AttemptIndex(0),
        fence: Some(LeaseFence { lease_id: LeaseId::new(), lease_epoch: LeaseEpoch(1), attempt_id: AttemptId::new() }),
    };
    assert_eq!(fx.backend.renew_lease(renew).await.unwrap_err().code(), "not_found");

    let id = fx.create("bad").await;
    fx.claim("bad", "w").await;
    refused(&fx, &id, "nul_in_text", fx.backend.cancel_execution(cancel(id, "a\0b"))).await;
    refused(&fx, &id, "nul_in_text", fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "a\0b"))).await;
    let far = ExecutionId::in_partition(u16::MAX);
    assert_eq!(fx.backend.cancel_execution(cancel(far, "x")).await.unwrap_err().code(), "invalid_input");
}
