//! Quota policies: a concurrency cap admits exactly N, a release admits the next waiter
//! however the holder ended, one key's backlog never holds back another key, rate-limited
//! work waits for its window with a retry time, admissions outside the claim path share the
//! same slots, and 16 concurrent claimers never run more than the cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ff_core::backend::ExpirePhase;
use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Creates a quota policy with the given limits and returns its id.
pub async fn quota_policy<H: ConformanceHarness>(
    fx: &Fixture<H>,
    f: impl FnOnce(&mut CreateQuotaPolicyArgs),
) -> QuotaPolicyId {
    let mut args = CreateQuotaPolicyArgs::new(QuotaPolicyId::new());
    f(&mut args);
    assert_eq!(fx.backend.create_quota_policy(args.clone()).await.unwrap(), CreateQuotaPolicyResult::Created);
    args.quota_policy_id
}

/// Attaches `policy` (and `key`) to an execution being created.
pub fn under(policy: QuotaPolicyId, key: Option<&str>) -> impl FnOnce(&mut CreateExecutionArgs) {
    let key = key.map(str::to_owned);
    move |a| {
        a.policy = Some(ExecutionPolicy { quota_policy_id: Some(policy), concurrency_key: key, ..Default::default() })
    }
}

async fn waiting_for_quota<H: ConformanceHarness>(fx: &Fixture<H>, id: &ExecutionId) -> bool {
    let v = fx.vector(id).await;
    v.eligibility_state == EligibilityState::BlockedByQuota && v.blocking_reason == BlockingReason::WaitingForQuota
}

fn blocked(v: &StateVector) -> StateVector {
    state::apply(state::Transition::BlockForAdmission { block: AdmissionBlock::Quota }, Some(v)).unwrap()
}

/// A cap of 2 admits two of four executions; the other two wait outside the claimable set
/// (`rate_limited`, `waiting_for_quota`), and completing one admits the oldest waiter.
pub async fn a_concurrency_cap_admits_n_and_a_release_admits_the_next<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent = Some(2)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(fx.create_with("quota", under(q, None)).await);
    }
    let created = state::apply(state::Transition::Create { delayed: false }, None).unwrap();
    assert_eq!(fx.vector(&ids[0]).await, created);
    assert_eq!(fx.vector(&ids[1]).await, created);
    assert_eq!(fx.vector(&ids[2]).await, blocked(&created));
    assert_eq!(fx.state(&ids[3]).await, PublicState::RateLimited);

    let a = fx.claim("quota", "w1").await;
    let b = fx.claim("quota", "w2").await;
    assert_eq!([payload(&a).execution_id, payload(&b).execution_id], [ids[0], ids[1]]);
    assert!(fx.try_claim("quota", "w3").await.is_none(), "the cap is reached");
    let status = fx.backend.get_quota_policy_status(&q).await.unwrap();
    assert_eq!((status.active, status.waiting), (2, 2));

    fx.backend.complete(&a, None).await.unwrap();
    assert_eq!(fx.vector(&ids[2]).await, created, "the oldest waiter is admitted by the release");
    assert!(waiting_for_quota(&fx, &ids[3]).await);
    assert_eq!(payload(&fx.claim("quota", "w3").await).execution_id, ids[2]);
    assert!(fx.try_claim("quota", "w4").await.is_none());
}

/// With a cap of 1, each way an execution stops running hands the slot to the next waiter:
/// completion, terminal failure, a retry's backoff, the holder's cancel and delay, an
/// operator's cancel, a deadline. A lost lease keeps the slot for the reclaim.
pub async fn a_slot_is_released_however_the_holder_ends<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent = Some(1)).await;
    let mut ids = Vec::new();
    let far = TimestampMs(fx.now().await + 3_600_000);
    for i in 0..9 {
        ids.push(
            fx.create_with("ends", |a| {
                under(q, None)(a);
                if i == 2
                    && let Some(p) = a.policy.as_mut()
                {
                    p.retry_policy = retry_policy(1, 60_000).retry_policy;
                }
                if i == 7 {
                    a.execution_deadline_at = Some(far);
                }
            })
            .await,
        );
    }
    for (i, id) in ids.iter().enumerate().take(8) {
        let h = fx.claim("ends", "w").await;
        assert_eq!(payload(&h).execution_id, *id, "step {i}");
        assert!(waiting_for_quota(&fx, &ids[i + 1]).await, "step {i}: the next waits while the slot is held");
        match i {
            0 => fx.backend.complete(&h, None).await.map(|_| ()).unwrap(),
            1 => fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Permanent).await.map(|_| ()).unwrap(),
            2 => fx.backend.fail(&h, FailureReason::new("again"), FailureClass::Transient).await.map(|_| ()).unwrap(),
            3 => fx.backend.cancel(&h, "stop").await.map(|_| ()).unwrap(),
            4 => fx.backend.delay(&h, TimestampMs(fx.now().await + 3_600_000)).await.map(|_| ()).unwrap(),
            5 => {
                fx.backend.cancel_execution(CancelExecutionArgs::new(*id, "operator")).await.map(|_| ()).unwrap();
            }
            6 => {
                // A lost lease keeps the slot: the waiter stays, the reclaim takes it over.
                fx.lose_lease(id).await;
                assert!(waiting_for_quota(&fx, &ids[i + 1]).await, "a lost lease keeps its slot");
                let again = fx.claim("ends", "w2").await;
                assert_eq!(payload(&again).execution_id, *id);
                fx.backend.complete(&again, None).await.unwrap();
            }
            _ => {
                fx.make_past(id, Timer::Deadline).await;
                fx.backend.expire_execution(partition(id), id, ExpirePhase::ExecutionDeadline).await.unwrap();
            }
        }
        assert!(!waiting_for_quota(&fx, &ids[i + 1]).await, "step {i}: the release admits the next waiter");
    }
    assert_eq!(fx.backend.get_quota_policy_status(&q).await.unwrap().active, 1);
}

/// Suspension gives the slot back; the resumed execution asks for one again and waits for it
/// like any other, then resumes the same attempt.
pub async fn suspension_gives_back_its_slot_and_resumption_asks_again<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent = Some(1)).await;
    let first = fx.create_with("susp-quota", under(q, None)).await;
    let second = fx.create_with("susp-quota", under(q, None)).await;
    let h = fx.claim("susp-quota", "w1").await;
    let out = fx.backend.suspend(&h, SuspendArgs::for_signal("approval", "approved")).await.unwrap();
    assert!(matches!(out, SuspendOutcome::Suspended { .. }), "{out:?}");
    assert!(!waiting_for_quota(&fx, &second).await, "the suspended execution gave its slot back");
    let running = fx.claim("susp-quota", "w2").await;
    assert_eq!(payload(&running).execution_id, second);
    fx.backend
        .resume_execution(ResumeExecutionArgs {
            execution_id: first,
            trigger_type: "operator".into(),
            resume_delay_ms: 0,
        })
        .await
        .unwrap();
    assert!(waiting_for_quota(&fx, &first).await, "resumed, it waits for a slot");
    fx.backend.complete(&running, None).await.unwrap();
    let resumed = fx.claim("susp-quota", "w3").await;
    assert_eq!(resumed.kind, HandleKind::Resumed);
    assert_eq!(payload(&resumed).attempt_index, payload(&h).attempt_index, "the same attempt resumes");
}

/// A flow member released by its upstream's completion passes its policy like any other
/// execution: it waits for a slot the policy has not got, and the release of one admits it.
pub async fn a_flow_member_released_by_its_upstream_is_admitted_by_its_policy<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent = Some(1)).await;
    let holder = fx.create_with("fq-solo", under(q, None)).await;
    let (_, ids) = super::flow::graph_with(&fx, "fq", 2, &[(0, 1)], &[], |i, a| {
        if i == 1 {
            under(q, None)(a);
        }
    })
    .await;
    assert_eq!(fx.state(&ids[1]).await, PublicState::WaitingChildren);
    let up = fx.claim("fq", "w").await;
    fx.backend.complete(&up, None).await.unwrap();
    assert!(waiting_for_quota(&fx, &ids[1]).await, "released by its upstream, it waits for the slot");
    let h = fx.claim("fq-solo", "w").await;
    assert_eq!(payload(&h).execution_id, holder);
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(payload(&fx.claim("fq", "w").await).execution_id, ids[1]);
}

/// Per-key caps: a key with a long backlog holds only its own slots; another key's work is
/// claimable at once, and a release of one key admits that key's next waiter.
pub async fn one_keys_backlog_does_not_hold_back_another_key<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent_per_key = Some(1)).await;
    let mut big = Vec::new();
    for _ in 0..20 {
        big.push(fx.create_with("keys", under(q, Some("big"))).await);
    }
    let small =
        [fx.create_with("keys", under(q, Some("small"))).await, fx.create_with("keys", under(q, Some("small"))).await];
    let first = fx.claim("keys", "w1").await;
    let second = fx.claim("keys", "w2").await;
    assert_eq!(payload(&first).execution_id, big[0]);
    assert_eq!(payload(&second).execution_id, small[0], "the small key is not behind the big key's backlog");
    assert!(fx.try_claim("keys", "w3").await.is_none());
    assert_eq!(fx.backend.get_quota_policy_status(&q).await.unwrap().busiest_key_active, 1);

    fx.backend.complete(&second, None).await.unwrap();
    assert_eq!(payload(&fx.claim("keys", "w3").await).execution_id, small[1], "its own key's waiter is admitted");
    assert!(waiting_for_quota(&fx, &big[1]).await);
    fx.backend.complete(&first, None).await.unwrap();
    assert_eq!(payload(&fx.claim("keys", "w4").await).execution_id, big[1]);
}

/// A lane's policy applies to executions created on the lane without one of their own: "at
/// most one running per customer" on the lane; an execution's own policy wins; unknown
/// policies are refused.
pub async fn a_lanes_policy_applies_to_work_created_on_it<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent_per_key = Some(1)).await;
    let set = |p| SetLaneQuotaPolicyArgs { lane_id: lane_id("per-customer"), quota_policy_id: p };
    assert_eq!(fx.backend.set_lane_quota_policy(set(Some(q))).await.unwrap().previous, None);
    assert_eq!(fx.backend.read_lane_quota_policy(&lane_id("per-customer")).await.unwrap(), Some(q));
    let keyed = |k: &'static str| {
        move |a: &mut CreateExecutionArgs| {
            a.policy = Some(ExecutionPolicy { concurrency_key: Some(k.into()), ..Default::default() })
        }
    };
    let acme =
        [fx.create_with("per-customer", keyed("acme")).await, fx.create_with("per-customer", keyed("acme")).await];
    let globex = fx.create_with("per-customer", keyed("globex")).await;
    assert!(waiting_for_quota(&fx, &acme[1]).await, "one per customer");
    assert!(!waiting_for_quota(&fx, &globex).await);
    let own = quota_policy(&fx, |a| a.max_concurrent = Some(10)).await;
    let mine = fx.create_with("per-customer", under(own, Some("acme"))).await;
    assert!(!waiting_for_quota(&fx, &mine).await, "its own policy wins over the lane's");
    let e = fx.backend.set_lane_quota_policy(set(Some(QuotaPolicyId::new()))).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert_eq!(fx.backend.set_lane_quota_policy(set(None)).await.unwrap().previous, Some(q));
    let e = fx.create_with_result("per-customer", keyed("acme")).await.unwrap_err();
    assert_eq!(e.code(), "invalid_policy", "a key needs a policy, its own or its lane's");
}

/// A rate of 2 per window admits two; the third waits with a retry time in its detail and in
/// the policy's status, and is admitted once the window has moved past the first two.
pub async fn rate_limited_work_waits_for_its_window<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| {
        a.window_seconds = Some(3600);
        a.max_requests_per_window = Some(2);
    })
    .await;
    let ids = [
        fx.create_with("rate", under(q, None)).await,
        fx.create_with("rate", under(q, None)).await,
        fx.create_with("rate", under(q, None)).await,
    ];
    assert!(waiting_for_quota(&fx, &ids[2]).await);
    let detail = fx.snapshot(&ids[2]).await.blocking_detail.unwrap_or_default();
    assert!(detail.contains("rate limit") && detail.contains("retry after"), "{detail}");
    let status = fx.backend.get_quota_policy_status(&q).await.unwrap();
    assert_eq!(status.requests_in_window, 2);
    let now = fx.now().await;
    assert!(status.next_admission_at.is_some_and(|t| t.0 > now), "{status:?}");
    // Completing does not free rate: the window counts admissions, not running work.
    let h = fx.claim("rate", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    assert!(waiting_for_quota(&fx, &ids[2]).await);

    fx.make_past(&ids[0], Timer::QuotaWindow).await;
    let counts = fx.backend.reconcile_quota_counters(PartitionConfig::default().quota_partition(&q)).await.unwrap();
    assert!(counts.examined >= 1);
    assert!(!waiting_for_quota(&fx, &ids[2]).await, "the window has room again");
}

/// Admissions outside the claim path hold the same slots: a held admission keeps attached
/// work waiting, its release admits it, and each call answers idempotently.
pub async fn explicit_admissions_share_the_policys_slots<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| a.max_concurrent = Some(1)).await;
    let outside = ExecutionId::in_partition(0);
    let check = |id| CheckAdmissionArgs {
        execution_id: id,
        window_seconds: None,
        rate_limit: None,
        concurrency_cap: None,
        jitter_ms: None,
    };
    assert_eq!(fx.backend.check_admission(&q, "calls", check(outside)).await.unwrap(), CheckAdmissionResult::Admitted);
    assert_eq!(
        fx.backend.check_admission(&q, "calls", check(outside)).await.unwrap(),
        CheckAdmissionResult::AlreadyAdmitted
    );
    assert_eq!(
        fx.backend.check_admission(&q, "calls", check(ExecutionId::in_partition(1))).await.unwrap(),
        CheckAdmissionResult::ConcurrencyExceeded
    );
    let waiting = fx.create_with("explicit", under(q, None)).await;
    assert!(waiting_for_quota(&fx, &waiting).await, "the admission holds the only slot");
    let release = ReleaseAdmissionArgs { quota_policy_id: q, execution_id: outside };
    assert_eq!(fx.backend.release_admission(release.clone()).await.unwrap(), ReleaseAdmissionResult::Released);
    assert!(!waiting_for_quota(&fx, &waiting).await, "the released slot admits the waiter");
    assert_eq!(fx.backend.release_admission(release).await.unwrap(), ReleaseAdmissionResult::NotHeld);

    let limits = fx.backend.read_quota_policy_limits(&q).await.unwrap().expect("the policy");
    assert_eq!((limits.active_concurrency_cap, limits.max_requests_per_window), (1, 0));
    assert_eq!(fx.backend.read_quota_policy_limits(&QuotaPolicyId::new()).await.unwrap(), None);
    let counts = fx.backend.reconcile_quota_counters(PartitionConfig::default().quota_partition(&q)).await.unwrap();
    assert_eq!(counts.repaired, 0, "the counters were exact: {counts:?}");
}

/// 16 claimers racing over 120 executions under a cap of 3 (and 2 per key): at no moment do
/// more than 3 run, or more than 2 of one key; every execution runs exactly once and every
/// slot is given back.
pub async fn sixteen_concurrent_claimers_never_exceed_the_cap<H: ConformanceHarness>() {
    const CAP: usize = 3;
    const PER_KEY: usize = 2;
    let fx = Fixture::<H>::new().await;
    let q = quota_policy(&fx, |a| {
        a.max_concurrent = Some(CAP as u32);
        a.max_concurrent_per_key = Some(PER_KEY as u32);
    })
    .await;
    let keys = ["a", "b", "c", "d"];
    let batch: Vec<CreateExecutionArgs> = (0..120)
        .map(|i| {
            let mut a = args("race");
            under(q, Some(keys[i % keys.len()]))(&mut a);
            a.tags.insert("race.key".into(), keys[i % keys.len()].into());
            a
        })
        .collect();
    let created = fx.backend.create_executions(batch).await.unwrap();
    assert!(created.iter().all(|c| matches!(c, CreateExecutionResult::Created { .. })));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let per_key: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let key_peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let backend = fx.backend.clone();
        let (running, peak, per_key, key_peak, done) =
            (running.clone(), peak.clone(), per_key.clone(), key_peak.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut idle = 0;
            while done.load(Ordering::SeqCst) < 120 && idle < 2_000 {
                let claimed = backend
                    .claim_with_context(&lane_id("race"), &CapabilitySet::empty(), policy(&format!("w{w}")), 1)
                    .await
                    .unwrap();
                let Some(leased) = claimed.into_iter().next() else {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                let key = leased.context.tags["race.key"].clone();
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                {
                    let mut m = per_key.lock().unwrap();
                    let n = m.entry(key.clone()).or_default();
                    *n += 1;
                    key_peak.fetch_max(*n, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(u64::from(rand_byte() % 4))).await;
                *per_key.lock().unwrap().get_mut(&key).unwrap() -= 1;
                running.fetch_sub(1, Ordering::SeqCst);
                backend.complete(&leased.handle, None).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 120, "every execution ran exactly once");
    assert!(peak.load(Ordering::SeqCst) <= CAP, "peak {} over the cap", peak.load(Ordering::SeqCst));
    assert!(key_peak.load(Ordering::SeqCst) <= PER_KEY, "a key ran {} at once", key_peak.load(Ordering::SeqCst));
    let status = fx.backend.get_quota_policy_status(&q).await.unwrap();
    assert_eq!((status.active, status.waiting, status.busiest_key_active), (0, 0, 0), "{status:?}");
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// Bad input: a cap of 0, a rate without its window, a policy re-created with other limits,
/// work naming an unknown policy, a key without a policy. Each gets its code; nothing is
/// written.
pub async fn quota_bad_input_is_refused<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let mut zero = CreateQuotaPolicyArgs::new(QuotaPolicyId::new());
    zero.max_concurrent = Some(0);
    assert_eq!(fx.backend.create_quota_policy(zero.clone()).await.unwrap_err().code(), "invalid_quota_spec");
    assert_eq!(fx.backend.read_quota_policy_limits(&zero.quota_policy_id).await.unwrap(), None);
    let mut rate = CreateQuotaPolicyArgs::new(QuotaPolicyId::new());
    rate.max_requests_per_window = Some(5);
    assert_eq!(fx.backend.create_quota_policy(rate).await.unwrap_err().code(), "invalid_quota_spec");

    let q = quota_policy(&fx, |a| a.max_concurrent = Some(2)).await;
    let mut same = CreateQuotaPolicyArgs::new(q);
    same.max_concurrent = Some(2);
    assert_eq!(fx.backend.create_quota_policy(same.clone()).await.unwrap(), CreateQuotaPolicyResult::AlreadySatisfied);
    same.max_concurrent = Some(3);
    assert_eq!(fx.backend.create_quota_policy(same).await.unwrap_err().code(), "quota_policy_already_exists");
    assert_eq!(fx.backend.read_quota_policy_limits(&q).await.unwrap().unwrap().active_concurrency_cap, 2);

    let mut unknown = args("bad");
    under(QuotaPolicyId::new(), None)(&mut unknown);
    let id = unknown.execution_id;
    let e = fx.backend.create_execution(unknown).await.unwrap_err();
    assert_eq!(e.code(), "not_found", "{e}");
    assert_eq!(fx.backend.read_execution_state(&id).await.unwrap(), None, "nothing was created");
    let mut keyed = args("bad");
    keyed.policy = Some(ExecutionPolicy { concurrency_key: Some("k".into()), ..Default::default() });
    assert_eq!(fx.backend.create_execution(keyed).await.unwrap_err().code(), "invalid_policy");
    let check = CheckAdmissionArgs {
        execution_id: id,
        window_seconds: None,
        rate_limit: Some(0),
        concurrency_cap: None,
        jitter_ms: None,
    };
    assert_eq!(fx.backend.check_admission(&q, "d", check).await.unwrap_err().code(), "invalid_quota_spec");
    let check = CheckAdmissionArgs {
        execution_id: id,
        window_seconds: None,
        rate_limit: None,
        concurrency_cap: None,
        jitter_ms: None,
    };
    assert_eq!(fx.backend.check_admission(&QuotaPolicyId::new(), "d", check).await.unwrap_err().code(), "not_found");
    assert_eq!(fx.backend.get_quota_policy_status(&q).await.unwrap().active, 0);
}
