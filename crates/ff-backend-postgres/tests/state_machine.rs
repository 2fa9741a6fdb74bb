//! Every transition the backend performs stores exactly the vector `ff_core::state::apply`
//! computes, and every stored vector satisfies the state invariants.

mod common;

use common::*;
use ff_backend_postgres::reconciler::{DelayedPromoter, LeaseExpiryReconciler, Reconciler, TimeoutReconciler};
use ff_core::state::{Transition, apply};
use ff_core::*;

async fn check(fx: &Fixture, id: &ExecutionId, t: Transition, before: StateVector) -> StateVector {
    let after = fx.vector(id).await;
    assert_eq!(after, apply(t, Some(&before)).unwrap(), "{t:?} from {before:?}");
    after.check().unwrap_or_else(|e| panic!("{t:?} stored an invalid vector: {e}"));
    after
}

#[tokio::test]
async fn stored_vectors_follow_the_transition_function() {
    let fx = Fixture::new().await;
    let policy = ExecutionPolicy { max_reclaim_count: Some(1), ..retry_policy(1, 60_000) };
    let id = fx.create_with("sm", |a| a.policy = Some(policy)).await;
    let created = fx.vector(&id).await;
    assert_eq!(created, apply(Transition::Create { delayed: false }, None).unwrap());

    let h = fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, created).await;

    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    fx.backend.delay(&h, TimestampMs(now + 60_000)).await.unwrap();
    let delayed = check(&fx, &id, Transition::Delay, active).await;
    fx.make_due(&id).await;
    DelayedPromoter::new(fx.pool().clone(), 10).run_once().await.unwrap();
    let promoted = check(&fx, &id, Transition::PromoteDelayed, delayed).await;

    let h = fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, promoted).await;
    fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Transient).await.unwrap();
    let retrying = check(&fx, &id, Transition::FailRetry, active).await;
    fx.make_due(&id).await;

    fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, retrying).await;
    fx.expire_lease(&id).await;
    LeaseExpiryReconciler::new(fx.pool().clone(), 10, fx.backend.metrics().clone()).run_once().await.unwrap();
    let reclaimable = check(&fx, &id, Transition::ExpireLease, active).await;

    fx.claim("sm", "w").await;
    let active = check(&fx, &id, Transition::Claim, reclaimable).await;
    fx.expire_lease(&id).await;
    LeaseExpiryReconciler::new(fx.pool().clone(), 10, fx.backend.metrics().clone()).run_once().await.unwrap();
    check(&fx, &id, Transition::ReclaimCapExceeded, active).await;

    let done = fx.create("sm").await;
    let h = fx.claim("sm", "w").await;
    let active = fx.vector(&done).await;
    fx.backend.complete(&h, None).await.unwrap();
    check(&fx, &done, Transition::Complete, active).await;

    let cancelled = fx.create("sm").await;
    let h = fx.claim("sm", "w").await;
    let active = fx.vector(&cancelled).await;
    fx.backend.cancel(&h, "stop").await.unwrap();
    check(&fx, &cancelled, Transition::Cancel, active).await;

    let failed = fx.create("sm").await;
    let h = fx.claim("sm", "w").await;
    let active = fx.vector(&failed).await;
    fx.backend.fail(&h, FailureReason::new("x"), FailureClass::Permanent).await.unwrap();
    check(&fx, &failed, Transition::FailTerminal, active).await;

    let expiring = fx.create("sm").await;
    let waiting = fx.vector(&expiring).await;
    fx.make_past(&expiring, "deadline_at_ms").await;
    TimeoutReconciler::new(fx.pool().clone(), 10, fx.backend.metrics().clone()).run_once().await.unwrap();
    check(&fx, &expiring, Transition::Expire, waiting).await;
}

#[tokio::test]
async fn the_database_refuses_impossible_states() {
    let fx = Fixture::new().await;
    let id = fx.create("sm").await;
    let before = fx.fingerprint(&id).await;
    for bad in [
        // terminal without an outcome
        "UPDATE ff_execution SET lifecycle_phase = 'terminal', eligibility_state = 'not_applicable', \
         attempt_state = 'attempt_terminal', completed_at_ms = 1 WHERE execution_id = $1",
        // an outcome while runnable
        "UPDATE ff_execution SET terminal_outcome = 'success' WHERE execution_id = $1",
        // leased without being active
        "UPDATE ff_execution SET ownership_state = 'leased' WHERE execution_id = $1",
        // a result without success
        "UPDATE ff_execution SET result = 'x' WHERE execution_id = $1",
        // a literal outside the alphabet
        "UPDATE ff_execution SET lifecycle_phase = 'running' WHERE execution_id = $1",
        // priority out of range
        "UPDATE ff_execution SET priority = 9001 WHERE execution_id = $1",
    ] {
        let err = sqlx::query(bad).bind(id.uuid()).execute(fx.pool()).await.expect_err(bad);
        let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
        assert!(matches!(code.as_deref(), Some("23514") | Some("22P02")), "{bad}: {err}");
    }
    assert_eq!(fx.fingerprint(&id).await, before);
}
