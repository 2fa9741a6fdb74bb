//! Fencing: a handle with an old epoch, an expired lease, another worker's lease or another
//! backend's stamp gets a typed error and writes nothing; a stalled worker never overwrites the
//! attempt that replaced it.

use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// Every handle write with a superseded lease is `StaleLease`, writes nothing, and leaves the new
/// attempt untouched.
pub async fn stale_epoch_after_reclaim_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("fence").await;
    let first = fx.claim("fence", "w1").await;
    // The lease is lost and the execution reclaimed by another worker: the epoch moves on.
    fx.lose_lease(&id).await;
    let second = fx.claim("fence", "w2").await;
    assert_eq!(second.kind, HandleKind::Reclaimed);
    assert!(payload(&second).lease_epoch > payload(&first).lease_epoch);

    let before = fx.fingerprint(&id).await;
    let b = &fx.backend;
    let errs = vec![
        b.complete(&first, Some(b"stale".to_vec())).await.unwrap_err(),
        b.renew(&first).await.unwrap_err(),
        b.progress(&first, Some(50), Some("x".into())).await.unwrap_err(),
        b.fail(&first, FailureReason::new("x"), FailureClass::Transient).await.unwrap_err(),
        b.cancel(&first, "x").await.unwrap_err(),
        b.delay(&first, TimestampMs(0)).await.unwrap_err(),
        b.append_frame(&first, frame(&[1], FrameKind::Stdout)).await.unwrap_err(),
    ];
    for e in errs {
        assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    }
    assert_eq!(fx.fingerprint(&id).await, before, "a rejected call must write nothing");

    fx.backend.complete(&second, Some(b"ok".to_vec())).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"ok".to_vec()));
}

/// A lease past its expiry is `LeaseExpired` (before and after the expiry hook ran) and a
/// rejected call writes nothing.
pub async fn expired_lease_is_rejected_and_writes_nothing<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("fence").await;
    let h = fx.claim("fence", "w1").await;
    fx.make_past(&id, Timer::LeaseExpiry).await;
    let before = fx.fingerprint(&id).await;
    let e = fx.backend.complete(&h, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
    let e = fx.backend.renew(&h).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
    // Once marked reclaimable the error stays the same.
    fx.backend.mark_lease_expired_if_due(partition(&id), &id).await.unwrap();
    let marked = fx.fingerprint(&id).await;
    let e = fx.backend.fail(&h, FailureReason::new("late"), FailureClass::Transient).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, marked);
}

/// A forged handle (one worker's lease presented against another's execution) is `StaleLease`
/// and touches neither execution.
pub async fn forged_handle_of_another_worker_is_rejected<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let a = fx.create("fence").await;
    let b = fx.create("fence").await;
    let ha = fx.claim("fence", "w1").await;
    let hb = fx.claim("fence", "w2").await;
    assert_ne!(payload(&ha).execution_id, payload(&hb).execution_id);
    let mut forged = payload(&hb);
    forged.execution_id = payload(&ha).execution_id;
    forged.attempt_index = payload(&ha).attempt_index;
    let forged = forged.into_handle(hb.backend, HandleKind::Fresh);
    let (fa, fb) = (fx.fingerprint(&a).await, fx.fingerprint(&b).await);
    let e = fx.backend.complete(&forged, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    assert_eq!((fx.fingerprint(&a).await, fx.fingerprint(&b).await), (fa, fb));
}

/// A handle stamped by another backend family is `HandleFromOtherBackend`; a damaged one is
/// `InvalidHandle` (the caller's error, not stored-data corruption); neither writes anything.
pub async fn handle_from_another_backend_or_damaged_is_rejected<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("tag").await;
    let h = fx.claim("tag", "w").await;
    let before = fx.fingerprint(&id).await;
    let mut other = h.clone();
    other.backend = other_backend(h.backend);
    let e = fx.backend.complete(&other, None).await.unwrap_err();
    assert!(matches!(e, EngineError::Validation { kind: ValidationKind::HandleFromOtherBackend, .. }), "{e:?}");
    assert_eq!(e.code(), "handle_from_other_backend");
    let mut damaged = h.clone();
    damaged.opaque = HandleOpaque(Box::new([1, 2, 3]));
    let e = fx.backend.renew(&damaged).await.unwrap_err();
    assert!(matches!(e, EngineError::Validation { kind: ValidationKind::InvalidHandle, .. }), "{e:?}");
    assert_eq!(e.code(), "invalid_handle");
    assert_eq!(fx.fingerprint(&id).await, before);
}

/// A worker that stalled past its lease cannot complete over the attempt that reclaimed the
/// execution; the new attempt's result is the one stored.
pub async fn stalled_worker_never_overwrites_the_newer_attempt<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("stall").await;
    let stalled = fx.claim("stall", "slow").await;
    fx.lose_lease(&id).await;
    let fresh = fx.claim("stall", "fast").await;
    assert_eq!(payload(&fresh).attempt_index, AttemptIndex(1));
    let before = fx.fingerprint(&id).await;
    let e = fx.backend.complete(&stalled, Some(b"late".to_vec())).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
    assert_eq!(fx.state(&id).await, PublicState::Active);
    fx.backend.complete(&fresh, Some(b"winner".to_vec())).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"winner".to_vec()));
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(2));
}

/// Replaying a call with the lease that already completed the execution reports the terminal
/// state (`ExecutionNotActive` with the outcome), and changes nothing.
pub async fn replay_after_completion_is_reported_as_not_active<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("replay").await;
    let h = fx.claim("replay", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    let before = fx.fingerprint(&id).await;
    match fx.backend.complete(&h, None).await.unwrap_err() {
        EngineError::State(StateKind::ExecutionNotActive(d)) => {
            assert_eq!(d.terminal_outcome, TerminalOutcome::Success);
            assert_eq!(d.lifecycle_phase, LifecyclePhase::Terminal);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.state(&id).await, PublicState::Completed);
    assert_eq!(fx.fingerprint(&id).await, before);
}

/// The harness's fingerprint sees writes to the execution, its attempt's stream and its tags,
/// so the equalities above prove something.
pub async fn fingerprint_changes_with_every_kind_of_write<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("print").await;
    let mut seen = vec![fx.fingerprint(&id).await];
    fx.backend.set_execution_tag(&id, "app.k", "v").await.unwrap();
    seen.push(fx.fingerprint(&id).await);
    let h = fx.claim("print", "w").await;
    seen.push(fx.fingerprint(&id).await);
    fx.backend.progress(&h, Some(10), None).await.unwrap();
    seen.push(fx.fingerprint(&id).await);
    fx.backend.append_frame(&h, frame(b"x", FrameKind::Stdout)).await.unwrap();
    seen.push(fx.fingerprint(&id).await);
    fx.backend.complete(&h, None).await.unwrap();
    seen.push(fx.fingerprint(&id).await);
    for (i, pair) in seen.windows(2).enumerate() {
        assert_ne!(pair[0], pair[1], "write {i} left the fingerprint unchanged");
    }
}
