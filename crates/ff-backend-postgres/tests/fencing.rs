//! A handle with an old epoch, an expired lease or another worker's lease gets a typed error
//! and writes nothing; a stalled worker cannot complete over the attempt that replaced it.

mod common;

use common::*;
use ff_core::*;

#[tokio::test]
async fn stale_epoch_is_rejected_and_writes_nothing() {
    let fx = Fixture::new().await;
    let id = fx.create("fence").await;
    let first = fx.claim("fence", "w1").await;
    // The lease is lost and the execution reclaimed by another worker: epoch moves on.
    fx.expire_lease(&id).await;
    fx.backend.mark_lease_expired_if_due(Partition::execution(id.partition_index()), &id).await.unwrap();
    let second = fx.claim("fence", "w2").await;
    assert_eq!(second.kind, HandleKind::Reclaimed);
    assert!(payload(&second).lease_epoch > payload(&first).lease_epoch);

    let before = fx.fingerprint(&id).await;
    let errs = vec![
        fx.backend.complete(&first, Some(b"stale".to_vec())).await.unwrap_err(),
        fx.backend.renew(&first).await.unwrap_err(),
        fx.backend.progress(&first, Some(50), Some("x".into())).await.unwrap_err(),
        fx.backend.fail(&first, FailureReason::new("x"), FailureClass::Transient).await.unwrap_err(),
        fx.backend.cancel(&first, "x").await.unwrap_err(),
        fx.backend.delay(&first, TimestampMs(0)).await.unwrap_err(),
        fx.backend
            .append_frame(
                &first,
                Frame { bytes: vec![1], kind: FrameKind::Stdout, frame_type: "log".into(), correlation_id: None },
            )
            .await
            .unwrap_err(),
    ];
    for e in errs {
        assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    }
    assert_eq!(fx.fingerprint(&id).await, before, "a rejected call must write nothing");

    // The new attempt is unaffected.
    fx.backend.complete(&second, Some(b"ok".to_vec())).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"ok".to_vec()));
}

#[tokio::test]
async fn expired_lease_is_rejected_and_writes_nothing() {
    let fx = Fixture::new().await;
    let id = fx.create("fence").await;
    let h = fx.claim("fence", "w1").await;
    fx.expire_lease(&id).await;
    let before = fx.fingerprint(&id).await;
    let e = fx.backend.complete(&h, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
    let e = fx.backend.renew(&h).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
    // Once marked reclaimable the error stays the same.
    fx.backend.mark_lease_expired_if_due(Partition::execution(id.partition_index()), &id).await.unwrap();
    let e = fx.backend.fail(&h, FailureReason::new("late"), FailureClass::Transient).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::LeaseExpired)), "{e:?}");
}

#[tokio::test]
async fn another_workers_handle_cannot_touch_my_execution() {
    let fx = Fixture::new().await;
    let a = fx.create("fence").await;
    let b = fx.create("fence").await;
    let ha = fx.claim("fence", "w1").await;
    let hb = fx.claim("fence", "w2").await;
    assert_ne!(payload(&ha).execution_id, payload(&hb).execution_id);
    // Forge a handle: w2's lease presented against w1's execution.
    let mut forged = payload(&hb);
    forged.execution_id = payload(&ha).execution_id;
    forged.attempt_index = payload(&ha).attempt_index;
    let forged = forged.into_handle(BackendTag::Postgres, HandleKind::Fresh);
    let (ea, eb) = (fx.fingerprint(&a).await, fx.fingerprint(&b).await);
    let e = fx.backend.complete(&forged, None).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    assert_eq!((fx.fingerprint(&a).await, fx.fingerprint(&b).await), (ea, eb));
}

#[tokio::test]
async fn stalled_worker_cannot_complete_over_the_new_attempt() {
    let fx = Fixture::new().await;
    let id = fx.create("stall").await;
    let stalled = fx.claim("stall", "slow").await;
    fx.expire_lease(&id).await;
    // The reconciler notices, another worker reclaims and is still running.
    use ff_backend_postgres::reconciler::{LeaseExpiryReconciler, Reconciler};
    let r = LeaseExpiryReconciler::new(fx.pool().clone(), 100, fx.backend.metrics().clone());
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    let fresh = fx.claim("stall", "fast").await;
    assert_eq!(payload(&fresh).attempt_index, AttemptIndex(1));
    // The stalled worker wakes up and tries to finish.
    let e = fx.backend.complete(&stalled, Some(b"late".to_vec())).await.unwrap_err();
    assert!(matches!(e, EngineError::State(StateKind::StaleLease)), "{e:?}");
    assert_eq!(fx.state(&id).await, PublicState::Active);
    fx.backend.complete(&fresh, Some(b"winner".to_vec())).await.unwrap();
    assert_eq!(fx.backend.get_execution_result(&id).await.unwrap(), Some(b"winner".to_vec()));
    let attempts: Vec<(i32, String)> = sqlx::query_as(
        "SELECT attempt_index, state::text FROM ff_attempt WHERE execution_id = $1 ORDER BY attempt_index",
    )
    .bind(id.uuid())
    .fetch_all(fx.pool())
    .await
    .unwrap();
    assert_eq!(attempts, vec![(0, "interrupted_reclaimed".to_owned()), (1, "ended_success".to_owned())]);
}

#[tokio::test]
async fn replay_by_the_same_lease_after_completion_is_reported_as_not_active() {
    let fx = Fixture::new().await;
    let id = fx.create("replay").await;
    let h = fx.claim("replay", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    let e = fx.backend.complete(&h, None).await.unwrap_err();
    match e {
        EngineError::State(StateKind::ExecutionNotActive(d)) => {
            assert_eq!(d.terminal_outcome, TerminalOutcome::Success);
            assert_eq!(d.lifecycle_phase, LifecyclePhase::Terminal);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.state(&id).await, PublicState::Completed);
}

#[tokio::test]
async fn handle_from_another_backend_or_damaged_is_rejected() {
    let fx = Fixture::new().await;
    let id = fx.create("tag").await;
    let h = fx.claim("tag", "w").await;
    let before = fx.fingerprint(&id).await;
    let mut other = h.clone();
    other.backend = BackendTag::Valkey;
    let e = fx.backend.complete(&other, None).await.unwrap_err();
    assert!(matches!(e, EngineError::Validation { kind: ValidationKind::HandleFromOtherBackend, .. }), "{e:?}");
    let mut damaged = h.clone();
    damaged.opaque = HandleOpaque(Box::new([1, 2, 3]));
    let e = fx.backend.renew(&damaged).await.unwrap_err();
    assert!(matches!(e, EngineError::Validation { kind: ValidationKind::Corruption, .. }), "{e:?}");
    assert_eq!(fx.fingerprint(&id).await, before);
}

#[tokio::test]
async fn many_concurrent_claimers_claim_each_execution_exactly_once() {
    let fx = Fixture::new().await;
    let n = 400;
    let batch: Vec<_> = (0..n).map(|_| args("race")).collect();
    fx.backend.create_executions(batch).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let backend = fx.backend.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = if w % 2 == 0 {
                    backend
                        .claim(&lane_id("race"), &CapabilitySet::empty(), policy(&format!("w{w}")))
                        .await
                        .unwrap()
                        .into_iter()
                        .collect()
                } else {
                    backend
                        .claim_batch(&lane_id("race"), &CapabilitySet::empty(), policy(&format!("w{w}")), 7)
                        .await
                        .unwrap()
                };
                if got.is_empty() {
                    return mine;
                }
                for h in got {
                    mine.push(payload(&h).execution_id);
                    backend.complete(&h, None).await.unwrap();
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), n, "every execution claimed");
    assert_eq!(unique.len(), n, "no execution claimed twice");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_attempt").fetch_one(fx.pool()).await.unwrap();
    assert_eq!(attempts, n as i64);
}
