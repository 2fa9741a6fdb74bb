//! Scheduling: claim grants reserve work for one worker who claims with the signed key (once,
//! before it lapses); an operator claims at once; the scheduler's block primitives move one
//! execution out of the claimable set and back, fenced by the expected reason.

use ff_core::state::{Transition, apply};
use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

fn for_worker(lane: &str, worker: &str) -> ClaimForWorkerArgs {
    ClaimForWorkerArgs {
        lane_id: lane_id(lane),
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        worker_capabilities: CapabilitySet::empty(),
        grant_ttl_ms: 30_000,
    }
}

fn claim_with(grant: &ClaimGrant, worker: &str) -> ClaimExecutionArgs {
    ClaimExecutionArgs {
        execution_id: grant.execution_id,
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        lane_id: grant.lane_id.clone(),
        grant_key: grant.grant_key.clone(),
        lease_ttl_ms: 30_000,
    }
}

async fn grant_for<H: ConformanceHarness>(fx: &Fixture<H>, lane: &str, worker: &str) -> ClaimGrant {
    match fx.backend.claim_for_worker(for_worker(lane, worker)).await.unwrap() {
        ClaimForWorkerOutcome::Granted(g) => g,
        ClaimForWorkerOutcome::NoWork => panic!("expected a grant"),
    }
}

/// A grant reserves the best eligible execution for one worker: other claims pass it by, the
/// scheduler does not grant it twice, and the worker claims it with the key and runs it.
pub async fn a_grant_reserves_work_for_the_worker_who_claims_with_it<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let first = fx.create("grants").await;
    let second = fx.create("grants").await;
    let g = grant_for(&fx, "grants", "w1").await;
    assert_eq!(g.execution_id, first);
    assert!(g.expires_at_ms.0 > fx.now().await);
    assert_eq!(payload(&fx.claim("grants", "w2").await).execution_id, second, "a plain claim passes it by");
    assert_eq!(fx.backend.claim_for_worker(for_worker("grants", "w3")).await.unwrap(), ClaimForWorkerOutcome::NoWork);
    assert_eq!(
        fx.backend
            .scan_eligible_executions(ScanEligibleArgs { lane_id: lane_id("grants"), partition: None, limit: 10 })
            .await
            .unwrap(),
        Vec::<ExecutionId>::new(),
        "reserved work is not offered"
    );
    let ClaimExecutionResult::Claimed(c) = fx.backend.claim_execution(claim_with(&g, "w1")).await.unwrap();
    assert_eq!((c.execution_id, c.attempt_index), (first, AttemptIndex(0)));
    assert!(c.lease_expires_at.0 > fx.now().await);
    assert_eq!(payload(&c.handle).lease_id, c.lease_id);
    fx.backend.complete(&c.handle, None).await.unwrap();
    assert_eq!(fx.state(&first).await, PublicState::Completed);
}

/// A grant presented by another worker, tampered with, replayed after use, or lapsed is
/// refused with its code, and nothing is written; a lapsed reservation frees the work.
pub async fn grant_refusals_write_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("refuse").await;
    let g = grant_for(&fx, "refuse", "w1").await;
    let print = fx.fingerprint(&id).await;
    let e = fx.backend.claim_execution(claim_with(&g, "w2")).await.unwrap_err();
    assert_eq!(e.code(), "invalid_claim_grant");
    let mut tampered = g.clone();
    let last = tampered.grant_key.pop().unwrap();
    tampered.grant_key.push(if last == '0' { '1' } else { '0' });
    assert_eq!(
        fx.backend.claim_execution(claim_with(&tampered, "w1")).await.unwrap_err().code(),
        "invalid_claim_grant"
    );
    let mut garbage = g.clone();
    garbage.grant_key = "not-a-grant".into();
    assert_eq!(fx.backend.claim_execution(claim_with(&garbage, "w1")).await.unwrap_err().code(), "invalid_claim_grant");
    assert_eq!(fx.fingerprint(&id).await, print, "refusals wrote nothing");

    fx.make_past(&id, Timer::ClaimGrant).await;
    let print = fx.fingerprint(&id).await;
    assert_eq!(fx.backend.claim_execution(claim_with(&g, "w1")).await.unwrap_err().code(), "claim_grant_expired");
    assert_eq!(fx.fingerprint(&id).await, print);
    // The lapsed reservation holds nothing back: the next grant (or claim) takes the work.
    let again = grant_for(&fx, "refuse", "w2").await;
    assert_eq!(again.execution_id, id);
    fx.backend.claim_execution(claim_with(&again, "w2")).await.unwrap();
    let e = fx.backend.claim_execution(claim_with(&again, "w2")).await.unwrap_err();
    assert_eq!(e.code(), "invalid_claim_grant", "a grant works once");
}

/// `issue_claim_grant` reserves a chosen execution: the worker must be able to run it, and it
/// must be claimable now and not reserved for someone else.
pub async fn issue_claim_grant_checks_the_worker_and_the_execution<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let gpu_worker = RegisterWorkerArgs {
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("gpu-1"),
        lanes: vec![lane_id("issue")],
        capabilities: CapabilitySet::from_iter(["gpu"]),
        liveness_ttl_ms: 30_000,
        namespace: Namespace::default(),
    };
    fx.backend.register_worker(gpu_worker).await.unwrap();
    let gpu = fx
        .create_with("issue", |a| {
            a.policy = Some(ExecutionPolicy {
                routing_requirements: Some(RoutingRequirements {
                    required_capabilities: ["gpu".to_owned()].into_iter().collect(),
                }),
                ..Default::default()
            })
        })
        .await;
    let issue = |id: ExecutionId, worker: &str, caps: &[&str]| IssueClaimGrantArgs {
        execution_id: id,
        lane_id: lane_id("issue"),
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new(worker),
        worker_capabilities: CapabilitySet::from_iter(caps.iter().copied()),
        grant_ttl_ms: 10_000,
    };
    let e = fx.backend.issue_claim_grant(issue(gpu, "cpu-1", &["cpu"])).await.unwrap_err();
    assert_eq!(e.code(), "capability_mismatch");
    let IssueClaimGrantOutcome::Granted(g) = fx.backend.issue_claim_grant(issue(gpu, "gpu-1", &["gpu"])).await.unwrap();
    let e = fx.backend.issue_claim_grant(issue(gpu, "gpu-2", &["gpu"])).await.unwrap_err();
    assert_eq!(e.code(), "execution_not_eligible", "reserved for another worker");
    fx.backend.claim_execution(claim_with(&g, "gpu-1")).await.unwrap();
    let e = fx.backend.issue_claim_grant(issue(gpu, "gpu-1", &["gpu"])).await.unwrap_err();
    assert_eq!(e.code(), "execution_not_eligible", "running already");
    let hour_later = TimestampMs(fx.now().await + 3_600_000);
    let later = fx.create_with("issue", |a| a.delay_until = Some(hour_later)).await;
    assert_eq!(
        fx.backend.issue_claim_grant(issue(later, "w", &[])).await.unwrap_err().code(),
        "execution_not_eligible"
    );
    let e = fx.backend.issue_claim_grant(issue(ExecutionId::in_partition(0), "w", &[])).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
}

/// An operator claims an eligible execution at once (even one reserved for a worker, whose
/// grant then no longer works) and can end it with the handle.
pub async fn an_operator_claims_at_once<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("operator").await;
    let g = grant_for(&fx, "operator", "w1").await;
    let args = IssueGrantAndClaimArgs { execution_id: id, lane_id: lane_id("operator"), lease_duration_ms: 30_000 };
    let out = fx.backend.issue_grant_and_claim(args.clone()).await.unwrap();
    assert_eq!(out.attempt_index, AttemptIndex(0));
    assert_eq!(payload(&out.handle).worker_instance_id.as_str(), "operator");
    assert_eq!(fx.backend.claim_execution(claim_with(&g, "w1")).await.unwrap_err().code(), "invalid_claim_grant");
    assert_eq!(fx.backend.issue_grant_and_claim(args).await.unwrap_err().code(), "execution_not_eligible");
    fx.backend.complete(&out.handle, None).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);
}

/// The block primitives: an eligible execution blocked for a reason leaves the claimable set
/// with that reason; an unblock naming another reason is `not_blocked` and changes nothing; the
/// right one makes it claimable again. Only admission reasons are accepted.
pub async fn blocks_and_unblocks_are_fenced_by_reason<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let ids = [fx.create("blocks").await, fx.create("blocks").await, fx.create("blocks").await];
    let scan = ScanEligibleArgs { lane_id: lane_id("blocks"), partition: None, limit: 10 };
    assert_eq!(fx.backend.scan_eligible_executions(scan.clone()).await.unwrap(), ids.to_vec());
    let created = fx.vector(&ids[0]).await;
    let block = |id, reason| BlockExecutionForAdmissionArgs {
        execution_id: id,
        lane_id: lane_id("blocks"),
        reason,
        reason_detail: Some("scheduler says so".into()),
    };
    let out = fx.backend.block_execution_for_admission(block(ids[0], BlockingReason::WaitingForQuota)).await.unwrap();
    assert_eq!(out, BlockOutcome::Blocked { execution_id: ids[0], reason: BlockingReason::WaitingForQuota });
    assert_eq!(
        fx.vector(&ids[0]).await,
        apply(Transition::BlockForAdmission { block: AdmissionBlock::Quota }, Some(&created)).unwrap()
    );
    fx.backend.block_execution_for_admission(block(ids[1], BlockingReason::WaitingForBudget)).await.unwrap();
    let route = BlockRouteArgs {
        execution_id: ids[2],
        lane_id: lane_id("blocks"),
        reason_code: "no_gpu".into(),
        reason_detail: None,
    };
    assert_eq!(
        fx.backend.block_route(route.clone()).await.unwrap(),
        BlockOutcome::Blocked { execution_id: ids[2], reason: BlockingReason::WaitingForCapableWorker }
    );
    assert_eq!(
        fx.backend.block_route(route).await.unwrap(),
        BlockOutcome::NotEligible { execution_id: ids[2], eligibility: EligibilityState::BlockedByRoute }
    );
    assert!(fx.try_claim("blocks", "w").await.is_none());
    assert!(fx.backend.scan_eligible_executions(scan).await.unwrap().is_empty());

    let print = fx.fingerprint(&ids[0]).await;
    let unblock = |id, reason| UnblockExecutionArgs {
        execution_id: id,
        lane_id: lane_id("blocks"),
        expected_blocking_reason: reason,
    };
    let e = fx.backend.unblock_execution(unblock(ids[0], BlockingReason::WaitingForBudget)).await.unwrap_err();
    assert_eq!(e.code(), "not_blocked");
    assert_eq!(fx.fingerprint(&ids[0]).await, print);
    let e = fx.backend.unblock_execution(unblock(ids[0], BlockingReason::WaitingForSignal)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_blocking_reason");
    let e =
        fx.backend.block_execution_for_admission(block(ids[0], BlockingReason::PausedByOperator)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_blocking_reason");
    let out = fx.backend.unblock_execution(unblock(ids[0], BlockingReason::WaitingForQuota)).await.unwrap();
    assert_eq!(
        (out.eligibility, out.blocking_reason),
        (EligibilityState::EligibleNow, BlockingReason::WaitingForWorker)
    );
    assert_eq!(fx.vector(&ids[0]).await, created);
    fx.backend.unblock_execution(unblock(ids[2], BlockingReason::WaitingForCapableWorker)).await.unwrap();
    assert_eq!(payload(&fx.claim("blocks", "w").await).execution_id, ids[0]);
    assert_eq!(payload(&fx.claim("blocks", "w").await).execution_id, ids[2]);
    assert!(fx.try_claim("blocks", "w").await.is_none(), "the budget block stays");
}
