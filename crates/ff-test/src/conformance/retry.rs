//! Retries: the stored retry policy decides; backoff delays the next attempt; exhausted or
//! non-retryable failures are terminal.

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Each transient failure schedules a retry after the backoff, not claimable before it; once the
/// retries are spent the next failure is terminal.
pub async fn backoff_schedules_a_retry_and_exhausting_retries_fails<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create_with("retry", |a| a.policy = Some(retry_policy(2, 60_000))).await;
    for attempt in 0..2u32 {
        let h = fx.claim("retry", "w").await;
        assert_eq!(payload(&h).attempt_index, AttemptIndex(attempt));
        assert_eq!(h.kind, HandleKind::Fresh);
        let now = fx.now().await;
        match fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap() {
            FailOutcome::RetryScheduled { delay_until, next_attempt_index } => {
                assert!(delay_until.0 >= now + 59_000 && delay_until.0 <= now + 61_000, "{delay_until:?} vs {now}");
                assert_eq!(next_attempt_index, AttemptIndex(attempt + 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.state(&id).await, PublicState::Delayed);
        assert!(fx.try_claim("retry", "w").await.is_none(), "the backoff holds it back");
        fx.make_due(&id).await;
    }
    let h = fx.claim("retry", "w").await;
    assert_eq!(h.kind, HandleKind::Fresh);
    assert_eq!(payload(&h).attempt_index, AttemptIndex(2));
    let out = fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.state(&id).await, PublicState::Failed);
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(3));
    let snap = fx.snapshot(&id).await;
    assert_eq!(snap.retry_count, 2);
    assert_eq!(snap.blocking_detail.as_deref(), Some("boom"));
    assert!(fx.try_claim("retry", "w").await.is_none());
}

/// A permanent failure is terminal even with retries left.
pub async fn permanent_failure_is_terminal_despite_retries_left<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create_with("retry", |a| a.policy = Some(retry_policy(5, 10))).await;
    let h = fx.claim("retry", "w").await;
    let out = fx.backend.fail(&h, FailureReason::new("bad input"), FailureClass::Permanent).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.state(&id).await, PublicState::Failed);
}

/// Without a retry policy the first failure is terminal.
pub async fn no_retry_policy_means_first_failure_is_terminal<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let id = fx.create("retry").await;
    let h = fx.claim("retry", "w").await;
    let out = fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Transient).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::FailTerminal, Some(&ACTIVE)).unwrap());
}

/// Exponential backoff doubles and is capped (no jitter).
pub async fn exponential_backoff_grows_and_is_capped<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let policy = ExecutionPolicy {
        retry_policy: Some(RetryPolicy {
            max_retries: 10,
            backoff: BackoffPolicy::Exponential {
                initial_delay_ms: 1000,
                max_delay_ms: 4000,
                multiplier: 2.0,
                jitter: false,
            },
        }),
        ..Default::default()
    };
    let id = fx.create_with("exp", |a| a.policy = Some(policy)).await;
    let mut delays = Vec::new();
    for _ in 0..4 {
        let h = fx.claim("exp", "w").await;
        let now = fx.now().await;
        match fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Timeout).await.unwrap() {
            FailOutcome::RetryScheduled { delay_until, .. } => {
                delays.push(((delay_until.0 - now) as f64 / 1000.0).round() as i64)
            }
            other => panic!("{other:?}"),
        }
        fx.make_due(&id).await;
    }
    assert_eq!(delays, vec![1, 2, 4, 4]);
}
