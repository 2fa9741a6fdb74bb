//! Suspension: an execution waits on waitpoints for signals without holding a lease, and the
//! signal that satisfies its condition makes it claimable in the same transaction, resuming the
//! same attempt. Signals are verified by HMAC tokens (with key rotation and grace),
//! deduplicated, bounded, buffered on pending waitpoints; timeouts act by their behaviour. Every
//! refusal has its code and writes nothing.

use std::time::Duration;

use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Runs `call`, expects `code`, and checks that nothing about `id` changed.
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

fn details(o: &SuspendOutcome) -> &SuspendOutcomeDetails {
    match o {
        SuspendOutcome::Suspended { details } | SuspendOutcome::AlreadySatisfied { details } => details,
    }
}

fn signal(id: ExecutionId, w: &WaitpointTokenInfo, name: &str, who: &str) -> DeliverSignalArgs {
    let mut s = DeliverSignalArgs::new(id, w.waitpoint_id, name, "user", who);
    s.waitpoint_token = Some(w.waitpoint_token.clone());
    s
}

async fn accepted<H: ConformanceHarness>(fx: &Fixture<H>, s: DeliverSignalArgs) -> SignalEffect {
    match fx.backend.deliver_signal(s).await.expect("deliver") {
        DeliverSignalResult::Accepted { effect, .. } => effect,
        other => panic!("expected Accepted, got {other:?}"),
    }
}

/// Claims, then suspends for one signal named `approved` on waitpoint `approval`.
async fn suspended<H: ConformanceHarness>(
    fx: &Fixture<H>,
    lane: &str,
    f: impl FnOnce(&mut SuspendArgs),
) -> (ExecutionId, Handle, SuspendOutcomeDetails) {
    let id = fx.create(lane).await;
    let h = fx.claim(lane, "w").await;
    let mut args = SuspendArgs::for_signal("approval", "approved");
    f(&mut args);
    let out = fx.backend.suspend(&h, args).await.expect("suspend");
    assert!(matches!(out, SuspendOutcome::Suspended { .. }), "{out:?}");
    (id, h, details(&out).clone())
}

/// A suspended execution holds no lease; the approving signal makes it claimable at once, the
/// claim resumes the same attempt, and the handler reads the signal that woke it.
pub async fn a_signal_resumes_the_same_attempt<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (id, h, d) = suspended(&fx, "susp", |_| {}).await;
    assert_eq!(fx.state(&id).await, PublicState::Suspended);
    assert_eq!(fx.vector(&id).await.blocking_reason, BlockingReason::WaitingForSignal);
    assert_eq!(fx.backend.renew(&h).await.unwrap_err().code(), "execution_not_active", "the lease is released");
    assert!(fx.try_claim("susp", "w").await.is_none(), "nothing is claimable while it waits");
    let w = &d.waitpoints[0];
    assert_eq!(w.waitpoint_key, "approval");
    let mut s = signal(id, w, "approved", "ann");
    s.payload = Some(b"{\"ok\":true}".to_vec());
    assert_eq!(accepted(&fx, s).await, SignalEffect::ResumeConditionSatisfied);
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
    let resumed = fx.claim("susp", "w").await;
    assert_eq!(resumed.kind, HandleKind::Resumed);
    assert_eq!(payload(&resumed).attempt_index, payload(&h).attempt_index);
    let seen = fx.backend.observe_signals(&resumed).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].signal_name.as_str(), seen[0].payload.as_deref()), ("approved", Some(&b"{\"ok\":true}"[..])));
    // The waitpoint closed on resume: a late signal is refused.
    refused(&fx, &id, "waitpoint_closed", fx.backend.deliver_signal(signal(id, w, "approved", "bob"))).await;
    fx.backend.complete(&resumed, None).await.unwrap();
}

/// Every delivery reports its effect; a repeated idempotency key is a duplicate naming the first
/// signal; two distinct approvers satisfy a count of distinct sources.
pub async fn signal_effects_dedup_and_distinct_sources<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (id, _, d) = suspended(&fx, "effects", |a| {
        a.waitpoints = vec![WaitpointBinding::fresh("approval"), WaitpointBinding::fresh("audit")];
        a.resume_condition = ResumeCondition::Composite(CompositeCondition::Count {
            n: 2,
            count_kind: CountKind::DistinctSources,
            matcher: Some(SignalMatcher::ByName("approved".into())),
            waitpoints: vec!["approval".into()],
        });
    })
    .await;
    let (approval, audit) = (&d.waitpoints[0], &d.waitpoints[1]);
    let mut first = signal(id, approval, "approved", "ann");
    first.idempotency_key = Some("ann-1".into());
    let first_id = match fx.backend.deliver_signal(first.clone()).await.unwrap() {
        DeliverSignalResult::Accepted { signal_id, effect } => {
            assert_eq!(effect, SignalEffect::AppendedToWaitpoint);
            signal_id
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        fx.backend.deliver_signal(first).await.unwrap(),
        DeliverSignalResult::Duplicate { existing_signal_id: first_id }
    );
    assert_eq!(accepted(&fx, signal(id, approval, "approved", "ann")).await, SignalEffect::AppendedToWaitpoint);
    assert_eq!(accepted(&fx, signal(id, approval, "rejected", "bob")).await, SignalEffect::SignalIgnoredMatcherFailed);
    assert_eq!(accepted(&fx, signal(id, audit, "approved", "bob")).await, SignalEffect::SignalIgnoredNotInCondition);
    assert_eq!(fx.state(&id).await, PublicState::Suspended);
    let mut deciding = signal(id, approval, "approved", "bob");
    deciding.idempotency_key = Some("bob-1".into());
    assert_eq!(accepted(&fx, deciding.clone()).await, SignalEffect::ResumeConditionSatisfied);
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
    assert!(
        matches!(fx.backend.deliver_signal(deciding).await.unwrap(), DeliverSignalResult::Duplicate { .. }),
        "a retry of the deciding delivery is a duplicate, though the waitpoint closed"
    );
}

/// A pending waitpoint minted before suspending buffers signals; suspending on it with the
/// condition already met is `AlreadySatisfied` and keeps the lease; otherwise the buffered
/// signals count once the suspension activates it.
pub async fn pending_waitpoints_buffer_signals<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("pending").await;
    let h = fx.claim("pending", "w").await;
    let wp = fx.backend.create_waitpoint(&h, "callback", Duration::from_secs(600)).await.unwrap();
    let err = fx.backend.create_waitpoint(&h, "callback", Duration::from_secs(600)).await.unwrap_err();
    assert_eq!(err.code(), "waitpoint_already_exists");
    let info = WaitpointTokenInfo {
        waitpoint_id: wp.waitpoint_id,
        waitpoint_key: wp.waitpoint_key.clone(),
        waitpoint_token: wp.hmac_token.clone(),
    };
    assert_eq!(accepted(&fx, signal(id, &info, "done", "svc")).await, SignalEffect::BufferedForPendingWaitpoint);
    assert_eq!(
        fx.backend.read_waitpoint_token(&wp.waitpoint_id).await.unwrap().as_deref(),
        Some(wp.hmac_token.as_str())
    );
    let listed = fx
        .backend
        .list_pending_waitpoints(ListPendingWaitpointsArgs { execution_id: id, after: None, limit: None })
        .await
        .unwrap();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].state, WaitpointState::Pending);
    assert!(!format!("{listed:?}").contains(&wp.hmac_token[3..]), "listings never show the token");
    let mut args = SuspendArgs::for_signal("callback", "done");
    args.waitpoints = vec![WaitpointBinding::UsePending { waitpoint_id: wp.waitpoint_id }];
    let out = fx.backend.suspend(&h, args).await.unwrap();
    assert!(matches!(out, SuspendOutcome::AlreadySatisfied { .. }), "{out:?}");
    assert_eq!(fx.state(&id).await, PublicState::Active, "the lease is kept");
    assert_eq!(fx.backend.observe_signals(&h).await.unwrap().len(), 1, "the handler reads the buffered signal");
    fx.backend.complete(&h, None).await.unwrap();

    // Not yet satisfied: the suspension activates the waitpoint and the next signal resumes it.
    let id = fx.create("pending").await;
    let h = fx.claim("pending", "w").await;
    let wp = fx.backend.create_waitpoint(&h, "callback", Duration::from_secs(600)).await.unwrap();
    let info = WaitpointTokenInfo {
        waitpoint_id: wp.waitpoint_id,
        waitpoint_key: wp.waitpoint_key.clone(),
        waitpoint_token: wp.hmac_token.clone(),
    };
    assert_eq!(accepted(&fx, signal(id, &info, "progress", "svc")).await, SignalEffect::BufferedForPendingWaitpoint);
    let mut args = SuspendArgs::for_signal("callback", "done");
    args.waitpoints = vec![WaitpointBinding::UsePending { waitpoint_id: wp.waitpoint_id }];
    let out = fx.backend.suspend(&h, args).await.unwrap();
    assert_eq!(details(&out).waitpoints[0].waitpoint_token, wp.hmac_token, "the pending token stays valid");
    assert_eq!(accepted(&fx, signal(id, &info, "done", "svc")).await, SignalEffect::ResumeConditionSatisfied);
    let resumed = fx.claim("pending", "w").await;
    assert_eq!(fx.backend.observe_signals(&resumed).await.unwrap().len(), 2);
}

/// Suspending twice is refused; an idempotency key returns the first outcome verbatim.
pub async fn suspend_twice_and_idempotent_suspend<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("twice").await;
    let h = fx.claim("twice", "w").await;
    let mut args = SuspendArgs::for_signal("approval", "approved");
    args.idempotency_key = Some("step-1".into());
    let first = fx.backend.suspend(&h, args.clone()).await.unwrap();
    assert_eq!(fx.backend.suspend(&h, args.clone()).await.unwrap(), first, "the first outcome, tokens included");
    refused(&fx, &id, "already_suspended", fx.backend.suspend(&h, SuspendArgs::for_signal("other", "x"))).await;
}

/// Tokens: tampered, for another waitpoint or execution, malformed or of an unknown key are
/// `invalid_token`; after a rotation the old key verifies within its grace and is
/// `token_expired` after it. Nothing is written by a refused delivery.
pub async fn tokens_are_verified_with_rotation_and_grace<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let seeded = b
        .seed_waitpoint_hmac_secret(SeedWaitpointHmacSecretArgs { kid: "k1".into(), secret_hex: "11".repeat(32) })
        .await
        .unwrap();
    assert_eq!(seeded, SeedOutcome::Seeded { kid: "k1".into() });
    let again = b
        .seed_waitpoint_hmac_secret(SeedWaitpointHmacSecretArgs { kid: "k1".into(), secret_hex: "11".repeat(32) })
        .await
        .unwrap();
    assert_eq!(again, SeedOutcome::AlreadySeeded { kid: "k1".into(), same_secret: true });
    let (id, _, d) = suspended(&fx, "tokens", |a| {
        a.waitpoints = vec![WaitpointBinding::fresh("approval"), WaitpointBinding::fresh("other")];
    })
    .await;
    let (id2, _, d2) = suspended(&fx, "tokens", |_| {}).await;
    let w = &d.waitpoints[0];
    assert!(w.waitpoint_token.starts_with("k1:"));
    let with_token = |t: &str| {
        let mut s = signal(id, w, "approved", "ann");
        s.waitpoint_token = Some(t.to_owned());
        s
    };
    let mut tampered = w.waitpoint_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'a' { 'b' } else { 'a' });
    for bad in [
        tampered.as_str(),
        d.waitpoints[1].waitpoint_token.as_str(),
        d2.waitpoints[0].waitpoint_token.as_str(),
        "k1:nothex",
        "garbage",
        &format!("k9:{}", &w.waitpoint_token[3..]),
    ] {
        refused(&fx, &id, "invalid_token", b.deliver_signal(with_token(bad))).await;
    }
    let _ = id2;
    // Rotate with a long grace: the old token still verifies.
    let rotated = b
        .rotate_waitpoint_hmac_secret_all(RotateWaitpointHmacSecretAllArgs {
            new_kid: "k2".into(),
            new_secret_hex: "22".repeat(32),
            grace_ms: 3_600_000,
        })
        .await
        .unwrap();
    assert_eq!(
        rotated.entries,
        vec![RotationOutcome::Rotated { previous_kid: Some("k1".into()), new_kid: "k2".into(), gc_count: 0 }]
    );
    let conflict = b
        .rotate_waitpoint_hmac_secret_all(RotateWaitpointHmacSecretAllArgs {
            new_kid: "k2".into(),
            new_secret_hex: "33".repeat(32),
            grace_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), "rotation_conflict");
    let noop = b
        .rotate_waitpoint_hmac_secret_all(RotateWaitpointHmacSecretAllArgs {
            new_kid: "k2".into(),
            new_secret_hex: "22".repeat(32),
            grace_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(noop.entries, vec![RotationOutcome::Noop { kid: "k2".into() }]);
    let (id3, _, d3) = suspended(&fx, "tokens", |_| {}).await;
    assert!(d3.waitpoints[0].waitpoint_token.starts_with("k2:"), "new waitpoints are signed by the new key");
    let mut s = signal(id, w, "rejected", "ann");
    s.waitpoint_token = Some(w.waitpoint_token.clone());
    assert_eq!(
        accepted(&fx, s).await,
        SignalEffect::SignalIgnoredMatcherFailed,
        "within its grace the old key verifies"
    );
    // Rotate again with no grace for k2; k1's grace still runs. Then k3 with no grace for k2:
    // k2's tokens are expired at once.
    b.rotate_waitpoint_hmac_secret_all(RotateWaitpointHmacSecretAllArgs {
        new_kid: "k3".into(),
        new_secret_hex: "44".repeat(32),
        grace_ms: 0,
    })
    .await
    .unwrap();
    let expired = signal(id3, &d3.waitpoints[0], "approved", "ann");
    refused(&fx, &id3, "token_expired", b.deliver_signal(expired)).await;
}

/// Refusals of deliveries: a pending waitpoint of an ended execution, a closed waitpoint, the
/// per-execution cap, an oversized payload; and of suspends: bad conditions and bindings.
pub async fn bad_signals_and_suspends_are_refused_and_write_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (id, _, d) = suspended(&fx, "bad-signal", |_| {}).await;
    let w = &d.waitpoints[0];
    let mut capped = signal(id, w, "noise", "x");
    capped.max_signals_per_execution = Some(1);
    assert_eq!(accepted(&fx, capped.clone()).await, SignalEffect::SignalIgnoredMatcherFailed);
    refused(&fx, &id, "signal_limit_exceeded", b.deliver_signal(capped)).await;
    let mut big = signal(id, w, "approved", "x");
    big.payload = Some(vec![0; MAX_SIGNAL_PAYLOAD_BYTES + 1]);
    refused(&fx, &id, "payload_too_large", b.deliver_signal(big)).await;
    // An unknown waitpoint: `not_found` to a trusted caller, `invalid_token` to one presenting a
    // token (which learns nothing about which ids exist).
    let unknown = WaitpointTokenInfo { waitpoint_id: WaitpointId::new(), ..w.clone() };
    refused(&fx, &id, "invalid_token", b.deliver_signal(signal(id, &unknown, "approved", "x"))).await;
    let mut trusted = signal(id, &unknown, "approved", "x");
    trusted.waitpoint_token = None;
    refused(&fx, &id, "not_found", b.deliver_signal(trusted)).await;
    // An operator cancel ends the suspension and closes its waitpoints.
    b.cancel_execution(CancelExecutionArgs::new(id, "no longer needed")).await.unwrap();
    refused(&fx, &id, "waitpoint_closed", b.deliver_signal(signal(id, w, "approved", "x"))).await;

    // A pending waitpoint of an execution that ended.
    let done = fx.create("bad-signal").await;
    let h = fx.claim("bad-signal", "w").await;
    let wp = b.create_waitpoint(&h, "cb", Duration::from_secs(60)).await.unwrap();
    b.complete(&h, None).await.unwrap();
    let info = WaitpointTokenInfo {
        waitpoint_id: wp.waitpoint_id,
        waitpoint_key: "cb".into(),
        waitpoint_token: wp.hmac_token,
    };
    refused(&fx, &done, "target_not_signalable", b.deliver_signal(signal(done, &info, "x", "y"))).await;

    // Bad suspends.
    let id = fx.create("bad-suspend").await;
    let h = fx.claim("bad-suspend", "w").await;
    let empty_all_of = SuspendArgs {
        resume_condition: ResumeCondition::Composite(CompositeCondition::AllOf { members: vec![] }),
        ..SuspendArgs::for_signal("a", "x")
    };
    let unbound =
        SuspendArgs { resume_condition: ResumeCondition::single("nowhere", "x"), ..SuspendArgs::for_signal("a", "x") };
    let no_timeout =
        SuspendArgs { resume_condition: ResumeCondition::TimeoutOnly, ..SuspendArgs::for_signal("a", "x") };
    let count_too_many = SuspendArgs {
        resume_condition: ResumeCondition::Composite(CompositeCondition::Count {
            n: 2,
            count_kind: CountKind::DistinctWaitpoints,
            matcher: None,
            waitpoints: vec!["a".into()],
        }),
        ..SuspendArgs::for_signal("a", "x")
    };
    let unknown_pending = SuspendArgs {
        waitpoints: vec![WaitpointBinding::UsePending { waitpoint_id: WaitpointId::new() }],
        resume_condition: ResumeCondition::OperatorOnly,
        ..SuspendArgs::for_signal("a", "x")
    };
    for (args, code) in [
        (empty_all_of, "invalid_input"),
        (unbound, "invalid_input"),
        (no_timeout, "invalid_input"),
        (count_too_many, "invalid_input"),
        (unknown_pending, "not_found"),
    ] {
        refused(&fx, &id, code, b.suspend(&h, args)).await;
    }
    assert_eq!(fx.state(&id).await, PublicState::Active);
}

/// A suspension's timeout acts by its behaviour: fail, cancel and expire end the execution;
/// auto-resume resumes it with a `timeout` signal it can read; escalate leaves it suspended,
/// paused for an operator, who resumes it (after a resume delay, the execution is delayed).
pub async fn suspension_timeouts_act_by_behaviour<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let later = TimestampMs(fx.now().await + 3_600_000);
    for (behavior, want) in [
        (TimeoutBehavior::Fail, PublicState::Failed),
        (TimeoutBehavior::Cancel, PublicState::Cancelled),
        (TimeoutBehavior::Expire, PublicState::Expired),
        (TimeoutBehavior::AutoResumeWithTimeoutSignal, PublicState::Waiting),
        (TimeoutBehavior::Escalate, PublicState::Suspended),
    ] {
        let lane = format!("timeout-{}", behavior.as_str());
        let (id, _, _) = suspended(&fx, &lane, |a| {
            a.timeout_at = Some(later);
            a.timeout_behavior = behavior;
        })
        .await;
        b.expire_suspension(partition(&id), &id).await.unwrap();
        assert_eq!(fx.state(&id).await, PublicState::Suspended, "{behavior:?}: not due yet, nothing happens");
        fx.harness.make_past(&id, Timer::SuspensionTimeout).await;
        b.expire_suspension(partition(&id), &id).await.unwrap();
        assert_eq!(fx.state(&id).await, want, "{behavior:?}");
        match behavior {
            TimeoutBehavior::AutoResumeWithTimeoutSignal => {
                let h = fx.claim(&lane, "w").await;
                let seen = b.observe_signals(&h).await.unwrap();
                assert_eq!(seen.last().map(|s| s.signal_name.as_str()), Some("timeout"));
            }
            TimeoutBehavior::Escalate => {
                assert_eq!(fx.vector(&id).await.blocking_reason, BlockingReason::PausedByOperator);
                let out = b
                    .resume_execution(ResumeExecutionArgs {
                        execution_id: id,
                        trigger_type: "operator".into(),
                        resume_delay_ms: 60_000,
                    })
                    .await
                    .unwrap();
                assert_eq!(out, ResumeExecutionResult::Resumed { public_state: PublicState::Delayed });
                let err = b
                    .resume_execution(ResumeExecutionArgs {
                        execution_id: id,
                        trigger_type: "operator".into(),
                        resume_delay_ms: 0,
                    })
                    .await
                    .unwrap_err();
                assert_eq!(err.code(), "execution_not_suspended");
            }
            _ => {}
        }
    }
}

/// A resume delay holds the satisfied execution back until its time, through the delay timer.
pub async fn resume_delay_is_honoured<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let (id, _, d) = suspended(&fx, "resume-delay", |a| a.resume_policy.resume_delay_ms = 3_600_000).await;
    assert_eq!(
        accepted(&fx, signal(id, &d.waitpoints[0], "approved", "ann")).await,
        SignalEffect::ResumeConditionSatisfied
    );
    assert_eq!(fx.state(&id).await, PublicState::Delayed);
    assert_eq!(fx.vector(&id).await.blocking_reason, BlockingReason::WaitingForResumeDelay);
    assert!(fx.try_claim("resume-delay", "w").await.is_none());
    fx.make_due(&id).await;
    let h = fx.claim("resume-delay", "w").await;
    assert_eq!(h.kind, HandleKind::Resumed);
}

/// Listings: suspended executions by suspension time, pending waitpoints expire.
pub async fn listings_and_waitpoint_expiry<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (a, _, _) = suspended(&fx, "list-susp", |a| a.reason_code = SuspensionReasonCode::WaitingForApproval).await;
    let (c, _, _) = suspended(&fx, "list-susp", |_| {}).await;
    let page = b.list_suspended(None, None, 1).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    let next = b.list_suspended(None, page.next_cursor, 10).await.unwrap();
    assert_eq!(next.next_cursor, None);
    let mut seen: Vec<_> = page.entries.iter().chain(&next.entries).map(|e| (e.execution_id, e.reason)).collect();
    seen.sort_by_key(|(id, _)| *id);
    let mut want = vec![(a, SuspensionReasonCode::WaitingForApproval), (c, SuspensionReasonCode::WaitingForSignal)];
    want.sort_by_key(|(id, _)| *id);
    assert_eq!(seen, want);
    assert_eq!(fx.vector(&a).await.blocking_reason, BlockingReason::WaitingForApproval);

    let id = fx.create("expiry").await;
    let h = fx.claim("expiry", "w").await;
    let wp = b.create_waitpoint(&h, "cb", Duration::from_secs(600)).await.unwrap();
    b.close_waitpoint(&id, &wp.waitpoint_id).await.unwrap();
    assert_eq!(
        b.list_pending_waitpoints(ListPendingWaitpointsArgs { execution_id: id, after: None, limit: None })
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
    fx.harness.make_past(&id, Timer::WaitpointExpiry).await;
    b.close_waitpoint(&id, &wp.waitpoint_id).await.unwrap();
    assert!(
        b.list_pending_waitpoints(ListPendingWaitpointsArgs { execution_id: id, after: None, limit: None })
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(b.read_waitpoint_token(&wp.waitpoint_id).await.unwrap(), None);
}

/// Signal deliveries can be followed from a cursor: each recorded delivery once, in commit
/// order, with its effect; duplicates are not deliveries; a resumed subscription repeats
/// nothing.
pub async fn signal_deliveries_are_followed_from_a_cursor<H: ConformanceHarness>() {
    use futures::StreamExt;
    let fx = Fixture::<H>::new().await;
    let (id, _, d) = suspended(&fx, "follow", |a| {
        a.resume_condition = ResumeCondition::Composite(CompositeCondition::Count {
            n: 2,
            count_kind: CountKind::DistinctSignals,
            matcher: None,
            waitpoints: vec!["approval".into()],
        });
    })
    .await;
    let w = &d.waitpoints[0];
    let mut first = signal(id, w, "a", "ann");
    first.idempotency_key = Some("once".into());
    fx.backend.deliver_signal(first.clone()).await.unwrap();
    fx.backend.deliver_signal(first).await.unwrap();
    fx.backend.deliver_signal(signal(id, w, "b", "bob")).await.unwrap();
    let mut stream = fx
        .backend
        .subscribe_signal_delivery(ff_core::event::EventCursor::BEGINNING, &Default::default())
        .await
        .unwrap();
    let one = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    let two = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((one.signal_name.as_str(), one.effect), ("a", SignalEffect::AppendedToWaitpoint));
    assert_eq!((two.signal_name.as_str(), two.effect), ("b", SignalEffect::ResumeConditionSatisfied));
    assert_eq!(two.execution_id, id);
    let mut resumed = fx.backend.subscribe_signal_delivery(one.cursor, &Default::default()).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(10), resumed.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(again.signal_id, two.signal_id, "resuming after the first repeats nothing");
}

/// A resumed attempt can be claimed by id, or through a grant naming the attempt; neither takes
/// an execution that is still suspended or an attempt that moved on.
pub async fn resumed_attempts_are_claimed_by_id_or_grant<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = &fx.backend;
    let (id, h, d) = suspended(&fx, "by-id", |_| {}).await;
    let claim = |id| ClaimResumedExecutionArgs { execution_id: id, policy: policy("w2") };
    assert_eq!(b.claim_resumed_execution(claim(id)).await.unwrap_err().code(), "not_a_resumed_execution");
    accepted(&fx, signal(id, &d.waitpoints[0], "approved", "ann")).await;
    let ClaimResumedExecutionResult::Claimed { handle } = b.claim_resumed_execution(claim(id)).await.unwrap();
    assert_eq!(handle.kind, HandleKind::Resumed);
    assert_eq!(payload(&handle).attempt_index, payload(&h).attempt_index);
    assert_eq!(b.claim_resumed_execution(claim(id)).await.unwrap_err().code(), "not_a_resumed_execution");
    b.complete(&handle, None).await.unwrap();

    let (id, h, d) = suspended(&fx, "by-grant", |_| {}).await;
    accepted(&fx, signal(id, &d.waitpoints[0], "approved", "ann")).await;
    let attempt = payload(&h).attempt_index;
    let stale = ResumeToken { execution_id: id, attempt_index: AttemptIndex(attempt.0 + 1), policy: policy("w3") };
    assert!(b.claim_from_resume_grant(stale).await.unwrap().is_none());
    let grant = ResumeToken { execution_id: id, attempt_index: attempt, policy: policy("w3") };
    let handle = b.claim_from_resume_grant(grant.clone()).await.unwrap().expect("the grant claims it");
    assert_eq!((handle.kind, payload(&handle).attempt_index), (HandleKind::Resumed, attempt));
    assert!(b.claim_from_resume_grant(grant).await.unwrap().is_none(), "a grant is good once");
}
