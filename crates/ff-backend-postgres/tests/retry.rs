//! Failures: the stored retry policy decides; backoff delays the next attempt; exhausted or
//! non-retryable failures are terminal.

mod common;

use common::*;
use ff_core::*;

#[tokio::test]
async fn transient_failure_retries_with_backoff_then_fails_when_exhausted() {
    let fx = Fixture::new().await;
    let id = fx.create_with("retry", |a| a.policy = Some(retry_policy(2, 60_000))).await;
    for attempt in 0..2u32 {
        let h = fx.claim("retry", "w").await;
        assert_eq!(payload(&h).attempt_index, AttemptIndex(attempt));
        let now = fx.backend.server_time_ms().await.unwrap() as i64;
        let out = fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
        match out {
            FailOutcome::RetryScheduled { delay_until, next_attempt_index } => {
                assert!(delay_until.0 >= now + 59_000 && delay_until.0 <= now + 61_000, "{delay_until:?} vs {now}");
                assert_eq!(next_attempt_index, AttemptIndex(attempt + 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fx.state(&id).await, PublicState::Delayed);
        // Backoff holds it back until due.
        assert!(fx.try_claim("retry", "w").await.is_none());
        fx.make_due(&id).await;
    }
    let h = fx.claim("retry", "w").await;
    assert_eq!(h.kind, HandleKind::Fresh);
    assert_eq!(payload(&h).attempt_index, AttemptIndex(2));
    let out = fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.state(&id).await, PublicState::Failed);
    assert_eq!(fx.backend.read_total_attempt_count(&id).await.unwrap(), AttemptIndex(3));
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT attempt_type::text, state::text FROM ff_attempt WHERE execution_id = $1 ORDER BY attempt_index",
    )
    .bind(id.uuid())
    .fetch_all(fx.pool())
    .await
    .unwrap();
    assert_eq!(
        types,
        vec![
            ("initial".into(), "ended_failure".into()),
            ("retry".into(), "ended_failure".into()),
            ("retry".into(), "ended_failure".into())
        ]
    );
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.retry_count, 2);
    assert_eq!(snap.blocking_detail.as_deref(), Some("boom"));
}

#[tokio::test]
async fn permanent_failure_is_terminal_despite_retries_left() {
    let fx = Fixture::new().await;
    let id = fx.create_with("retry", |a| a.policy = Some(retry_policy(5, 10))).await;
    let h = fx.claim("retry", "w").await;
    let out = fx.backend.fail(&h, FailureReason::new("bad input"), FailureClass::Permanent).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.state(&id).await, PublicState::Failed);
}

#[tokio::test]
async fn no_retry_policy_means_first_failure_is_terminal() {
    let fx = Fixture::new().await;
    let id = fx.create("retry").await;
    let h = fx.claim("retry", "w").await;
    let out = fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Transient).await.unwrap();
    assert_eq!(out, FailOutcome::TerminalFailed);
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::FailTerminal, Some(&ACTIVE)).unwrap());
}

#[tokio::test]
async fn exponential_backoff_grows_and_is_capped() {
    let fx = Fixture::new().await;
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
        let now = fx.backend.server_time_ms().await.unwrap() as i64;
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

#[tokio::test]
async fn cancel_by_the_lease_holder_is_terminal() {
    let fx = Fixture::new().await;
    let id = fx.create("cancel").await;
    let h = fx.claim("cancel", "w").await;
    fx.backend.cancel(&h, "user asked").await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Cancelled);
    let snap = fx.backend.describe_execution(&id).await.unwrap().unwrap();
    assert_eq!(snap.blocking_detail.as_deref(), Some("user asked"));
    assert!(fx.try_claim("cancel", "w").await.is_none());
}
