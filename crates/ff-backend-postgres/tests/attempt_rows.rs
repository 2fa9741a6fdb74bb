//! The stored history of attempts and events: each `ff_attempt` row records how its attempt
//! ended, and the event log records each lease change, in order. (The behaviour behind these rows
//! is in the conformance suite; this file checks what Postgres stores for it.)

mod common;

use common::*;
use ff_backend_postgres::reconciler::{LeaseExpiryReconciler, Reconciler};
use ff_core::backend::ExpirePhase;
use ff_core::*;

async fn attempt_rows(fx: &Fixture, id: &ExecutionId) -> Vec<(i32, String, String)> {
    sqlx::query_as(
        "SELECT attempt_index, attempt_type::text, state::text FROM ff_attempt WHERE execution_id = $1 \
         ORDER BY attempt_index",
    )
    .bind(id.uuid())
    .fetch_all(fx.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_reclaimed_attempt_is_closed_as_interrupted_and_the_lease_changes_are_logged() {
    let fx = Fixture::new().await;
    let id = fx.create("stall").await;
    let stalled = fx.claim("stall", "slow").await;
    fx.expire_lease(&id).await;
    let r = LeaseExpiryReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone());
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    let fresh = fx.claim("stall", "fast").await;
    assert!(fx.backend.complete(&stalled, Some(b"late".to_vec())).await.is_err());
    fx.backend.complete(&fresh, Some(b"winner".to_vec())).await.unwrap();
    let rows = attempt_rows(&fx, &id).await;
    let states: Vec<_> = rows.iter().map(|(i, _, s)| (*i, s.as_str())).collect();
    assert_eq!(states, vec![(0, "interrupted_reclaimed"), (1, "ended_success")]);
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind::text FROM ff_event WHERE execution_id = $1 ORDER BY tx_id, event_id")
            .bind(id.uuid())
            .fetch_all(fx.pool())
            .await
            .unwrap();
    assert_eq!(kinds, vec!["lease_acquired", "lease_expired", "lease_reclaimed", "completed"]);
}

#[tokio::test]
async fn retries_are_stored_as_retry_attempts_each_ended_by_its_failure() {
    let fx = Fixture::new().await;
    let id = fx.create_with("retry", |a| a.policy = Some(retry_policy(2, 60_000))).await;
    for _ in 0..3 {
        let h = fx.claim("retry", "w").await;
        fx.backend.fail(&h, FailureReason::new("boom"), FailureClass::Transient).await.unwrap();
        fx.make_due(&id).await;
    }
    let rows = attempt_rows(&fx, &id).await;
    let want = [(0, "initial", "ended_failure"), (1, "retry", "ended_failure"), (2, "retry", "ended_failure")];
    assert_eq!(rows, want.map(|(i, t, s)| (i, t.to_owned(), s.to_owned())).to_vec());
}

#[tokio::test]
async fn an_attempt_timeout_ends_the_attempt_as_expired() {
    let fx = Fixture::new().await;
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
    fx.claim("at", "w").await;
    fx.make_past(&id, "attempt_deadline_at_ms").await;
    fx.backend
        .expire_execution(Partition::execution(id.partition_index()), &id, ExpirePhase::AttemptTimeout)
        .await
        .unwrap();
    let rows = attempt_rows(&fx, &id).await;
    assert_eq!(rows, vec![(0, "initial".to_owned(), "ended_expired".to_owned())]);
}

#[tokio::test]
async fn an_operator_cancel_ends_the_running_attempt_and_a_replay_opens_a_replay_attempt() {
    let fx = Fixture::new().await;
    let id = fx.create("ops").await;
    fx.claim("ops", "w").await;
    fx.backend.cancel_execution(CancelExecutionArgs::new(id, "stop")).await.unwrap();
    fx.backend.replay_execution(ReplayExecutionArgs { execution_id: id }).await.unwrap();
    let h = fx.claim("ops", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    let rows = attempt_rows(&fx, &id).await;
    let want = [(0, "initial", "ended_cancelled"), (1, "replay", "ended_success")];
    assert_eq!(rows, want.map(|(i, t, s)| (i, t.to_owned(), s.to_owned())).to_vec());
}
