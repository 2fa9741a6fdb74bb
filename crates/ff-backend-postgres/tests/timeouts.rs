//! Attempt timeouts and execution deadlines expire executions.

mod common;

use common::*;
use ff_backend_postgres::reconciler::{DelayedPromoter, Reconciler, TimeoutReconciler};
use ff_core::backend::ExpirePhase;
use ff_core::*;

fn timeouts(fx: &Fixture) -> TimeoutReconciler {
    TimeoutReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone())
}

#[tokio::test]
async fn execution_deadline_expires_a_waiting_execution() {
    let fx = Fixture::new().await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("dl", |a| a.execution_deadline_at = Some(TimestampMs(now + 3_600_000))).await;
    assert_eq!(timeouts(&fx).run_once().await.unwrap().processed, 0);
    fx.make_past(&id, "deadline_at_ms").await;
    assert_eq!(timeouts(&fx).run_once().await.unwrap().processed, 1);
    assert_eq!(fx.state(&id).await, PublicState::Expired);
    let waiting = state::apply(state::Transition::Create { delayed: false }, None).unwrap();
    assert_eq!(fx.vector(&id).await, state::apply(state::Transition::Expire, Some(&waiting)).unwrap());
    assert!(fx.try_claim("dl", "w").await.is_none());
}

#[tokio::test]
async fn attempt_timeout_expires_the_running_attempt_and_fences_its_worker() {
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
    let h = fx.claim("at", "w").await;
    let p = Partition::execution(id.partition_index());
    fx.backend.expire_execution(p, &id, ExpirePhase::AttemptTimeout).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Active, "not due yet");
    fx.make_past(&id, "attempt_deadline_at_ms").await;
    fx.backend.expire_execution(p, &id, ExpirePhase::AttemptTimeout).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Expired);
    let e = fx.backend.complete(&h, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::ExecutionNotActive(_))), "{e:?}");
    let state: String = sqlx::query_scalar("SELECT state::text FROM ff_attempt WHERE execution_id = $1")
        .bind(id.uuid())
        .fetch_one(fx.pool())
        .await
        .unwrap();
    assert_eq!(state, "ended_expired");
}

#[tokio::test]
async fn delayed_promoter_relabels_due_executions() {
    let fx = Fixture::new().await;
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    let id = fx.create_with("promo", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    let promoter = DelayedPromoter::new(fx.pool().clone(), 100);
    assert_eq!(promoter.run_once().await.unwrap().processed, 0);
    fx.make_due(&id).await;
    assert_eq!(promoter.run_once().await.unwrap().processed, 1);
    assert_eq!(fx.state(&id).await, PublicState::Waiting);
    let want = state::apply(
        state::Transition::PromoteDelayed,
        Some(&state::apply(state::Transition::Create { delayed: true }, None).unwrap()),
    )
    .unwrap();
    assert_eq!(fx.vector(&id).await, want);
}
