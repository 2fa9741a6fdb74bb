//! Admission's background passes and its counters, on Postgres: the admission reconciler opens
//! rate windows at their time, resets budgets on their interval and reaps lapsed grants; a
//! recount repairs a drifted slot count, and a settlement left to the reconciler admits; settlements take policy locks in one order, so
//! batches touching the same policies in opposite orders both succeed.

mod common;

use common::*;
use ff_backend_postgres::reconciler::{AdmissionReconciler, AdmissionRecountReconciler, Reconciler};
use ff_core::*;

async fn policy(fx: &Fixture, f: impl FnOnce(&mut CreateQuotaPolicyArgs)) -> QuotaPolicyId {
    let mut args = CreateQuotaPolicyArgs::new(QuotaPolicyId::new());
    f(&mut args);
    fx.backend.create_quota_policy(args.clone()).await.unwrap();
    args.quota_policy_id
}

fn under(q: QuotaPolicyId, key: Option<&str>) -> impl FnOnce(&mut CreateExecutionArgs) {
    let key = key.map(str::to_owned);
    move |a| a.policy = Some(ExecutionPolicy { quota_policy_id: Some(q), concurrency_key: key, ..Default::default() })
}

async fn exec(fx: &Fixture, sql: &str) {
    sqlx::query(sql).execute(fx.pool()).await.unwrap();
}

#[tokio::test]
async fn the_admission_reconciler_admits_rate_limited_work_when_its_window_opens() {
    let fx = Fixture::new().await;
    let q = policy(&fx, |a| {
        a.window_seconds = Some(60);
        a.max_requests_per_window = Some(1);
    })
    .await;
    fx.create_with("rate", under(q, None)).await;
    let second = fx.create_with("rate", under(q, None)).await;
    assert_eq!(fx.state(&second).await, PublicState::RateLimited);
    let r = AdmissionReconciler::new(fx.pool().clone(), 100);
    let report = r.run_once().await.unwrap();
    assert_eq!(fx.state(&second).await, PublicState::RateLimited, "the window is not open yet");
    let due = report.next_due.expect("the reconciler knows when the window opens");
    assert!(due.as_millis() > 50_000 && due.as_millis() <= 60_000, "{due:?}");

    exec(&fx, "UPDATE ff_quota_window SET admitted_at_ms = 0").await;
    exec(&fx, "UPDATE ff_quota_policy SET next_admit_at_ms = ff_now_ms() - 1").await;
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    assert_eq!(fx.state(&second).await, PublicState::Waiting);
    assert!(r.run_once().await.unwrap().next_due.is_none(), "no window holds anything back");
}

#[tokio::test]
async fn budgets_reset_on_their_interval() {
    let fx = Fixture::new().await;
    let b = BudgetId::new();
    fx.backend
        .create_budget(CreateBudgetArgs {
            budget_id: b,
            scope_type: "tenant".into(),
            scope_id: "t".into(),
            enforcement_mode: EnforcementMode::Strict,
            on_hard_limit: None,
            on_soft_limit: None,
            reset_interval_ms: 3_600_000,
            dimensions: vec!["tokens".into()],
            hard_limits: vec![5],
            soft_limits: vec![0],
        })
        .await
        .unwrap();
    let waiting = fx
        .create_with("monthly", |a| a.policy = Some(ExecutionPolicy { budget_ids: vec![b], ..Default::default() }))
        .await;
    let report = ReportUsageAdminArgs { dimensions: vec!["tokens".into()], deltas: vec![5], dedup_key: None };
    fx.backend.report_usage_admin(&b, report).await.unwrap();
    assert_eq!(fx.state(&waiting).await, PublicState::RateLimited);
    let r = AdmissionReconciler::new(fx.pool().clone(), 100);
    assert_eq!(r.run_once().await.unwrap().processed, 0);
    let before = fx.backend.get_budget_status(&b).await.unwrap().next_reset_at.unwrap();

    exec(&fx, "UPDATE ff_budget SET next_reset_at_ms = ff_now_ms() - 1").await;
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    let status = fx.backend.get_budget_status(&b).await.unwrap();
    assert_eq!((status.usage["tokens"], status.exhausted), (0, false));
    assert!(status.next_reset_at.unwrap().0 >= before.0, "the next reset is an interval later");
    assert_eq!(fx.state(&waiting).await, PublicState::Waiting);
}

#[tokio::test]
async fn lapsed_claim_grants_are_reaped() {
    let fx = Fixture::new().await;
    let id = fx.create("grants").await;
    let args = ClaimForWorkerArgs {
        lane_id: lane_id("grants"),
        worker_id: WorkerId::new("pool"),
        worker_instance_id: WorkerInstanceId::new("w"),
        worker_capabilities: CapabilitySet::empty(),
        grant_ttl_ms: 60_000,
    };
    assert!(matches!(fx.backend.claim_for_worker(args).await.unwrap(), ClaimForWorkerOutcome::Granted(_)));
    let r = AdmissionReconciler::new(fx.pool().clone(), 100);
    assert_eq!(r.run_once().await.unwrap().processed, 0);
    exec(&fx, "UPDATE ff_claim_grant SET expires_at_ms = ff_now_ms() - 1").await;
    exec(&fx, "UPDATE ff_execution SET grant_expires_at_ms = ff_now_ms() - 1 WHERE grant_expires_at_ms IS NOT NULL")
        .await;
    assert_eq!(r.run_once().await.unwrap().processed, 1);
    let (grants, reserved): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ff_claim_grant), (SELECT grant_expires_at_ms FROM ff_execution WHERE execution_id = $1)",
    )
    .bind(id.uuid())
    .fetch_one(fx.pool())
    .await
    .unwrap();
    assert_eq!((grants, reserved), (0, None));
}

#[tokio::test]
async fn a_recount_repairs_drifted_counters_and_admits_into_the_room() {
    let fx = Fixture::new().await;
    let q = policy(&fx, |a| {
        a.max_concurrent = Some(2);
        a.max_concurrent_per_key = Some(1);
    })
    .await;
    let a1 = fx.create_with("drift", under(q, Some("a"))).await;
    let a2 = fx.create_with("drift", under(q, Some("a"))).await;
    let b1 = fx.create_with("drift", under(q, Some("b"))).await;
    let c1 = fx.create_with("drift", under(q, Some("c"))).await;
    assert_eq!(fx.state(&a2).await, PublicState::RateLimited);
    assert_eq!(fx.state(&c1).await, PublicState::RateLimited);
    // Break the counter: the policy thinks it is fuller than it is.
    exec(&fx, "UPDATE ff_quota_policy SET active = 5").await;
    let h = fx.claim("drift", "w").await;
    assert_eq!(payload(&h).execution_id, a1);
    fx.backend.cancel_execution(CancelExecutionArgs::new(b1, "make room")).await.unwrap();
    let r = AdmissionRecountReconciler::new(fx.pool().clone(), PartitionConfig::default());
    let mut repaired = 0;
    for _ in 0..PartitionConfig::default().num_quota_partitions {
        repaired += r.run_once().await.unwrap().processed;
    }
    assert_eq!(repaired, 1, "the policy's count was repaired");
    let status = fx.backend.get_quota_policy_status(&q).await.unwrap();
    assert_eq!(status.active, 2, "a1 runs and c1 was admitted into the room: {status:?}");
    assert_eq!(fx.state(&c1).await, PublicState::Waiting);
    assert_eq!(fx.state(&a2).await, PublicState::RateLimited, "key a is still held by a1");
}

#[tokio::test]
async fn batches_settling_the_same_policies_in_opposite_orders_both_succeed() {
    let fx = Fixture::new().await;
    let p = policy(&fx, |a| a.max_concurrent = Some(1_000)).await;
    let q = policy(&fx, |a| a.max_concurrent = Some(1_000)).await;
    for round in 0..10 {
        let lane = format!("order-{round}");
        let batch = |first: QuotaPolicyId, second: QuotaPolicyId| {
            (0..50)
                .map(|i| {
                    let mut a = args(&lane);
                    under(if i % 2 == 0 { first } else { second }, None)(&mut a);
                    a
                })
                .collect::<Vec<_>>()
        };
        let (x, y) = tokio::join!(fx.backend.create_executions(batch(p, q)), fx.backend.create_executions(batch(q, p)));
        assert_eq!(x.unwrap().len() + y.unwrap().len(), 100);
    }
    let total = fx.backend.get_quota_policy_status(&p).await.unwrap().active
        + fx.backend.get_quota_policy_status(&q).await.unwrap().active;
    assert_eq!(total, 1_000);
}

#[tokio::test]
async fn a_settlement_left_to_the_reconciler_admits_into_room_an_unseen_release_made() {
    let fx = Fixture::new().await;
    let q = policy(&fx, |a| a.max_concurrent = Some(1)).await;
    fx.create_with("unseen", under(q, None)).await;
    let waiting = fx.create_with("unseen", under(q, None)).await;
    assert_eq!(fx.state(&waiting).await, PublicState::RateLimited);
    let (requests,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM ff_quota_settle_request").fetch_one(fx.pool()).await.unwrap();
    assert_eq!(requests, 1, "parking asks for a settlement after commit");
    let r = AdmissionReconciler::new(fx.pool().clone(), 100);
    r.run_once().await.unwrap();
    assert_eq!(fx.state(&waiting).await, PublicState::RateLimited, "no room: it keeps waiting");
    // A release the admission did not see: on a stripe, with the admission's request.
    exec(&fx, "UPDATE ff_quota_stripe SET delta = -1 WHERE stripe = 0").await;
    exec(&fx, &format!("INSERT INTO ff_quota_settle_request (quota_policy_id) VALUES ('{}')", q.0)).await;
    assert!(r.run_once().await.unwrap().processed >= 1);
    assert_eq!(fx.state(&waiting).await, PublicState::Waiting);
    assert_eq!(fx.backend.get_quota_policy_status(&q).await.unwrap().active, 1);
}
