//! Under real concurrency — workers that stall past their lease, a lease-expiry reconciler
//! running alongside, other workers reclaiming — every execution completes exactly once, by
//! the attempt that held the live lease, and no stale completion is ever accepted.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ff_backend_postgres::reconciler::{LeaseExpiryReconciler, Reconciler};
use ff_core::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_workers_never_overwrite_the_attempt_that_replaced_them() {
    let fx = Fixture::new().await;
    let n = 120;
    fx.backend.create_executions((0..n).map(|_| args("chaos")).collect()).await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let rejected = Arc::new(AtomicUsize::new(0));

    let reconciler = {
        let r = LeaseExpiryReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone());
        let done = done.clone();
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < n {
                r.run_once().await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (backend, done, accepted, rejected) =
            (fx.backend.clone(), done.clone(), accepted.clone(), rejected.clone());
        workers.spawn(async move {
            let me = format!("w{w}");
            let mut turn = 0u32;
            while done.load(Ordering::Relaxed) < n {
                let policy = ClaimPolicy::new("pool", me.clone(), 60);
                let Some(h) = backend.claim(&lane_id("chaos"), &CapabilitySet::empty(), policy).await.unwrap() else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                turn += 1;
                // Every third turn this worker stalls well past its 60 ms lease.
                if turn.is_multiple_of(3) {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                let p = payload(&h);
                let result = format!("{}:{}", p.lease_id, p.attempt_index.0).into_bytes();
                match backend.complete(&h, Some(result)).await {
                    Ok(()) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(EngineError::State(StateKind::StaleLease | StateKind::LeaseExpired)) => {
                        rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("unexpected error: {other:?}"),
                }
            }
        });
    }
    let run = async {
        while let Some(r) = workers.join_next().await {
            r.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run).await.expect("the workload drains");
    reconciler.await.unwrap();

    assert_eq!(accepted.load(Ordering::Relaxed), n, "exactly one accepted completion per execution");
    assert!(rejected.load(Ordering::Relaxed) > 0, "stalled workers were fenced out");
    let rows: Vec<(uuid::Uuid, Vec<u8>, uuid::Uuid, i32)> = sqlx::query_as(
        "SELECT execution_id, result, lease_id, current_attempt_index FROM ff_execution WHERE terminal_outcome = 'success'",
    )
    .fetch_all(fx.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), n);
    for (id, result, lease, attempt) in &rows {
        assert_eq!(result, &format!("{lease}:{attempt}").into_bytes(), "{id}: the result is the live lease's");
    }
    let successes: HashMap<uuid::Uuid, i64> = sqlx::query_as(
        "SELECT execution_id, count(*) FROM ff_attempt WHERE state = 'ended_success' GROUP BY execution_id",
    )
    .fetch_all(fx.pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(successes.len(), n);
    assert!(successes.values().all(|c| *c == 1), "one successful attempt per execution");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_attempt WHERE ended_at_ms IS NULL")
        .fetch_one(fx.pool())
        .await
        .unwrap();
    assert_eq!(open, 0, "every superseded attempt was closed");
}
