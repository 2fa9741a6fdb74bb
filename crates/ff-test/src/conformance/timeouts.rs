//! Timeouts: the execution deadline and the attempt timeout expire an execution, only once due.

use ff_core::backend::ExpirePhase;
use ff_core::*;

use super::fixture::*;
use super::harness::{ConformanceHarness, Timer};

/// A waiting execution past its deadline expires and can no longer be claimed.
pub async fn execution_deadline_expires_a_waiting_execution<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let now = fx.now().await;
    let id = fx.create_with("dl", |a| a.execution_deadline_at = Some(TimestampMs(now + 3_600_000))).await;
    let before = fx.fingerprint(&id).await;
    fx.backend.expire_execution(partition(&id), &id, ExpirePhase::ExecutionDeadline).await.unwrap();
    assert_eq!(fx.fingerprint(&id).await, before, "not due: a no-op");
    fx.make_past(&id, Timer::Deadline).await;
    fx.backend.expire_execution(partition(&id), &id, ExpirePhase::ExecutionDeadline).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Expired);
    assert!(fx.try_claim("dl", "w").await.is_none());
}

/// A running attempt past its timeout expires and its worker is fenced out.
pub async fn attempt_timeout_expires_the_running_attempt_and_fences_its_worker<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx
        .create_with("at", |a| {
            a.policy = Some(ExecutionPolicy {
                timeout_policy: Some(TimeoutPolicy {
                    attempt_timeout_ms: Some(3_600_000),
                    execution_deadline_ms: None,
                }),
                ..Default::default()
            })
        })
        .await;
    let h = fx.claim("at", "w").await;
    let before = fx.fingerprint(&id).await;
    fx.backend.expire_execution(partition(&id), &id, ExpirePhase::AttemptTimeout).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Active, "not due yet");
    assert_eq!(fx.fingerprint(&id).await, before);
    fx.make_past(&id, Timer::AttemptTimeout).await;
    fx.backend.expire_execution(partition(&id), &id, ExpirePhase::AttemptTimeout).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Expired);
    let expired = fx.fingerprint(&id).await;
    let e = fx.backend.complete(&h, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::ExecutionNotActive(_))), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, expired);
}
