//! Concurrent single claims and completions share statements, yet every caller gets exactly its
//! own result: its own execution under a lease naming its own worker, and its own fence verdict.

mod common;

use std::collections::HashSet;

use common::*;
use ff_core::*;

#[tokio::test]
async fn concurrent_claims_each_get_a_distinct_execution_leased_to_themselves() {
    let fx = Fixture::new().await;
    fx.backend.create_executions((0..64).map(|_| args("group")).collect()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let backend = fx.backend.clone();
        tasks.spawn(async move {
            let me = format!("worker-{w}");
            let h = backend.claim(&lane_id("group"), &CapabilitySet::empty(), policy(&me)).await.unwrap();
            (me, h)
        });
    }
    let mut seen = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        let (me, h) = r.unwrap();
        let h = h.expect("64 executions for 64 claimers");
        let p = payload(&h);
        assert_eq!(p.worker_instance_id.as_str(), me, "the handle names its own worker");
        let stored: String = sqlx::query_scalar("SELECT worker_instance_id FROM ff_execution WHERE execution_id = $1")
            .bind(p.execution_id.uuid())
            .fetch_one(fx.pool())
            .await
            .unwrap();
        assert_eq!(stored, me, "the stored lease names the claimer");
        assert!(seen.insert(p.execution_id), "claimed once");
    }
    assert!(fx.try_claim("group", "late").await.is_none());
}

#[tokio::test]
async fn concurrent_completions_are_fenced_one_by_one() {
    let fx = Fixture::new().await;
    fx.backend.create_executions((0..40).map(|_| args("group")).collect()).await.unwrap();
    let handles = fx.backend.claim_batch(&lane_id("group"), &CapabilitySet::empty(), policy("w"), 40).await.unwrap();
    // Every fourth lease has expired; those completions must fail while the rest succeed.
    for h in handles.iter().step_by(4) {
        fx.expire_lease(&payload(h).execution_id).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, h) in handles.into_iter().enumerate() {
        let backend = fx.backend.clone();
        tasks.spawn(async move { (i, payload(&h).execution_id, backend.complete(&h, Some(vec![i as u8])).await) });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, id, result) = r.unwrap();
        if i % 4 == 0 {
            assert!(matches!(result, Err(EngineError::State(StateKind::LeaseExpired))), "{i}: {result:?}");
            assert_eq!(fx.state(&id).await, PublicState::Active);
        } else {
            result.unwrap();
            ok += 1;
            assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(vec![i as u8]));
        }
    }
    assert_eq!(ok, 30);
}
