//! Budgets: usage reports apply all-or-nothing and once per dedup key, soft and hard breaches
//! are reported, a strict budget that runs out stops claims of its executions (which say why)
//! until it is reset or raised, spend attributed to an execution is given back by
//! `release_budget`, and bad input writes nothing.

use std::collections::BTreeMap;

use ff_core::*;

use super::fixture::*;
use super::harness::ConformanceHarness;

/// Creates a budget with `(dimension, hard, soft)` limits and returns its id.
pub async fn budget<H: ConformanceHarness>(
    fx: &Fixture<H>,
    mode: EnforcementMode,
    limits: &[(&str, u64, u64)],
) -> BudgetId {
    let args = CreateBudgetArgs {
        budget_id: BudgetId::new(),
        scope_type: "tenant".into(),
        scope_id: "acme".into(),
        enforcement_mode: mode,
        on_hard_limit: Some("block".into()),
        on_soft_limit: None,
        reset_interval_ms: 0,
        dimensions: limits.iter().map(|l| l.0.to_owned()).collect(),
        hard_limits: limits.iter().map(|l| l.1).collect(),
        soft_limits: limits.iter().map(|l| l.2).collect(),
    };
    assert_eq!(fx.backend.create_budget(args.clone()).await.unwrap(), CreateBudgetResult::Created);
    assert_eq!(fx.backend.create_budget(args.clone()).await.unwrap(), CreateBudgetResult::AlreadySatisfied);
    args.budget_id
}

/// Attaches budgets to an execution being created.
pub fn drawing_on(budgets: &[BudgetId]) -> impl FnOnce(&mut CreateExecutionArgs) {
    let budgets = budgets.to_vec();
    move |a| a.policy = Some(ExecutionPolicy { budget_ids: budgets, ..Default::default() })
}

fn admin(dims: &[(&str, i64)], key: Option<&str>) -> ReportUsageAdminArgs {
    ReportUsageAdminArgs {
        dimensions: dims.iter().map(|d| d.0.to_owned()).collect(),
        deltas: dims.iter().map(|d| d.1).collect(),
        dedup_key: key.map(str::to_owned),
    }
}

fn usage(dims: &[(&str, i64)], key: Option<&str>) -> UsageDimensions {
    UsageDimensions {
        deltas: dims.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect(),
        dedup_key: key.map(str::to_owned),
    }
}

async fn usage_of<H: ConformanceHarness>(fx: &Fixture<H>, b: &BudgetId) -> BTreeMap<String, u64> {
    fx.backend.get_budget_status(b).await.unwrap().usage
}

async fn waiting_for_budget<H: ConformanceHarness>(fx: &Fixture<H>, id: &ExecutionId) -> bool {
    let v = fx.vector(id).await;
    v.eligibility_state == EligibilityState::BlockedByBudget && v.blocking_reason == BlockingReason::WaitingForBudget
}

/// Reports apply every delta or none; a breach of a hard limit is reported with the usage it
/// left unchanged; a soft breach applies and is counted; a dedup key applies once and replays
/// the first outcome.
pub async fn usage_reports_apply_all_or_nothing_and_once_per_key<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = budget(&fx, EnforcementMode::Warn, &[("tokens", 100, 80), ("usd", 10, 0)]).await;
    let r = fx.backend.report_usage_admin(&b, admin(&[("tokens", 50), ("usd", 5)], None)).await.unwrap();
    assert_eq!(r, ReportUsageResult::Ok);
    let r = fx.backend.report_usage_admin(&b, admin(&[("tokens", 40), ("usd", 6)], None)).await.unwrap();
    assert_eq!(r, ReportUsageResult::HardBreach { dimension: "usd".into(), current_usage: 5, hard_limit: 10 });
    assert_eq!(usage_of(&fx, &b).await, BTreeMap::from([("tokens".into(), 50), ("usd".into(), 5)]), "nothing applied");
    let r = fx.backend.report_usage_admin(&b, admin(&[("tokens", 35)], Some("r1"))).await.unwrap();
    assert_eq!(r, ReportUsageResult::SoftBreach { dimension: "tokens".into(), current_usage: 85, soft_limit: 80 });
    let replay = fx.backend.report_usage_admin(&b, admin(&[("tokens", 35)], Some("r1"))).await.unwrap();
    assert_eq!(replay, r, "a replay returns the first outcome");
    assert_eq!(usage_of(&fx, &b).await["tokens"], 85, "and applies nothing");
    // A dimension without limits is tracked as it is reported.
    let r = fx.backend.report_usage_admin(&b, admin(&[("calls", 3)], None)).await.unwrap();
    assert_eq!(r, ReportUsageResult::Ok);
    let status = fx.backend.get_budget_status(&b).await.unwrap();
    assert_eq!((status.breach_count, status.soft_breach_count, status.exhausted), (1, 1, false), "{status:?}");
    assert_eq!(status.last_breach_dim.as_deref(), Some("usd"));
    assert_eq!(status.usage["calls"], 3);
    let flat = fx.backend.read_budget_usage_and_limits(&b).await.unwrap();
    assert_eq!(
        flat.limits,
        BTreeMap::from([("hard:tokens".into(), 100), ("soft:tokens".into(), 80), ("hard:usd".into(), 10)])
    );
    assert_eq!(flat.usage["tokens"], 85);
    assert_eq!(
        fx.backend.read_budget_usage_and_limits(&BudgetId::new()).await.unwrap(),
        BudgetUsageAndLimits::default()
    );
}

/// A strict budget that runs out stops claims of its executions: those waiting move out of
/// the claimable set (`rate_limited`, `waiting_for_budget`, the budget named in the detail),
/// new ones are created waiting, running ones finish. A reset lets them all go; running out
/// again by a refused report blocks them again, and raising the limit lets them go.
pub async fn a_strict_budget_that_runs_out_stops_claims_until_reset_or_raised<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = budget(&fx, EnforcementMode::Strict, &[("tokens", 10, 0)]).await;
    let ids = [
        fx.create_with("spend", drawing_on(&[b])).await,
        fx.create_with("spend", drawing_on(&[b])).await,
        fx.create_with("spend", drawing_on(&[b])).await,
    ];
    let other = fx.create("spend").await;
    let h = fx.claim("spend", "w").await;
    assert_eq!(payload(&h).execution_id, ids[0]);
    let r = fx.backend.report_usage(&h, &b, usage(&[("tokens", 10)], None)).await.unwrap();
    assert_eq!(r, ReportUsageResult::Ok);
    assert!(fx.backend.get_budget_status(&b).await.unwrap().exhausted, "usage at the hard limit exhausts it");
    assert!(waiting_for_budget(&fx, &ids[1]).await && waiting_for_budget(&fx, &ids[2]).await);
    assert_eq!(fx.state(&ids[1]).await, PublicState::RateLimited);
    let detail = fx.snapshot(&ids[1]).await.blocking_detail.unwrap_or_default();
    assert!(detail.contains(&b.to_string()), "{detail}");
    let late = fx.create_with("spend", drawing_on(&[b])).await;
    assert!(waiting_for_budget(&fx, &late).await, "new work drawing on it waits too");
    assert_eq!(payload(&fx.claim("spend", "w2").await).execution_id, other, "work not drawing on it runs");
    assert!(fx.try_claim("spend", "w3").await.is_none());
    // The holder's further reports are refused; it can still finish.
    let r = fx.backend.report_usage(&h, &b, usage(&[("tokens", 1)], None)).await.unwrap();
    assert!(matches!(r, ReportUsageResult::HardBreach { .. }), "{r:?}");
    fx.backend.complete(&h, None).await.unwrap();
    assert_eq!(fx.backend.get_budget_status(&b).await.unwrap().blocked_executions, 3);

    let reset = fx.backend.reset_budget(ResetBudgetArgs { budget_id: b }).await.unwrap();
    assert_eq!((reset.exhausted, reset.unblocked), (false, 3));
    assert_eq!(usage_of(&fx, &b).await["tokens"], 0);
    let h = fx.claim("spend", "w4").await;
    assert_eq!(payload(&h).execution_id, ids[1]);

    let r = fx.backend.report_usage_admin(&b, admin(&[("tokens", 11)], None)).await.unwrap();
    assert!(matches!(r, ReportUsageResult::HardBreach { .. }));
    assert!(waiting_for_budget(&fx, &ids[2]).await, "a refused report exhausts a strict budget");
    let raised = SetBudgetLimitsArgs {
        budget_id: b,
        dimensions: vec!["tokens".into()],
        hard_limits: vec![100],
        soft_limits: vec![0],
    };
    let r = fx.backend.set_budget_limits(raised).await.unwrap();
    assert_eq!((r.exhausted, r.unblocked), (false, 2));
    assert!(!waiting_for_budget(&fx, &ids[2]).await && !waiting_for_budget(&fx, &late).await);
    assert_eq!(fx.backend.get_budget_status(&b).await.unwrap().hard_limits["tokens"], 100);
}

/// Spend attributed to an execution applies once per idempotency key and is given back,
/// once, by `release_budget`; a holder's reports are attributed to its execution too.
pub async fn spend_is_attributed_and_released<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = budget(&fx, EnforcementMode::Strict, &[("tokens", 1000, 0)]).await;
    let id = fx.create_with("ledger", drawing_on(&[b])).await;
    let spend = RecordSpendArgs {
        budget_id: b,
        execution_id: id,
        deltas: BTreeMap::from([("tokens".into(), 30)]),
        idempotency_key: "call-1".into(),
    };
    assert_eq!(fx.backend.record_spend(spend.clone()).await.unwrap(), ReportUsageResult::Ok);
    assert_eq!(fx.backend.record_spend(spend).await.unwrap(), ReportUsageResult::AlreadyApplied);
    let h = fx.claim("ledger", "w").await;
    fx.backend.report_usage(&h, &b, usage(&[("tokens", 12)], Some("u-1"))).await.unwrap();
    fx.backend.report_usage_admin(&b, admin(&[("tokens", 100)], None)).await.unwrap();
    assert_eq!(usage_of(&fx, &b).await["tokens"], 142);

    let release = ReleaseBudgetArgs { budget_id: b, execution_id: id };
    let r = fx.backend.release_budget(release.clone()).await.unwrap();
    assert_eq!(r.released, BTreeMap::from([("tokens".into(), 42)]));
    assert_eq!(usage_of(&fx, &b).await["tokens"], 100, "only the execution's spend is given back");
    assert!(fx.backend.release_budget(release).await.unwrap().released.is_empty(), "a second release gives nothing");
}

/// Bad input: mismatched limit arrays, negative deltas, unknown budgets, a budget re-created
/// differently, work drawing on an unknown budget, a report under a stale lease. Each gets its
/// code and nothing changes.
pub async fn budget_bad_input_is_refused<H: ConformanceHarness>() {
    let fx = Fixture::<H>::new().await;
    let b = budget(&fx, EnforcementMode::Strict, &[("tokens", 100, 0)]).await;
    let before = fx.backend.get_budget_status(&b).await.unwrap();
    let mismatched = CreateBudgetArgs {
        budget_id: BudgetId::new(),
        scope_type: "tenant".into(),
        scope_id: "acme".into(),
        enforcement_mode: EnforcementMode::Strict,
        on_hard_limit: None,
        on_soft_limit: None,
        reset_interval_ms: 0,
        dimensions: vec!["tokens".into(), "usd".into()],
        hard_limits: vec![1],
        soft_limits: vec![0, 0],
    };
    assert_eq!(fx.backend.create_budget(mismatched.clone()).await.unwrap_err().code(), "invalid_budget_spec");
    assert_eq!(fx.backend.get_budget_status(&mismatched.budget_id).await.unwrap_err().code(), "not_found");
    let different = CreateBudgetArgs {
        budget_id: b,
        dimensions: vec!["tokens".into()],
        hard_limits: vec![5],
        soft_limits: vec![0],
        ..mismatched
    };
    assert_eq!(fx.backend.create_budget(different).await.unwrap_err().code(), "budget_already_exists");
    let e = fx.backend.report_usage_admin(&b, admin(&[("tokens", -1)], None)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_budget_spec");
    let uneven = ReportUsageAdminArgs { dimensions: vec!["tokens".into()], deltas: vec![1, 2], dedup_key: None };
    assert_eq!(fx.backend.report_usage_admin(&b, uneven).await.unwrap_err().code(), "invalid_budget_spec");
    let e = fx.backend.report_usage_admin(&BudgetId::new(), admin(&[("tokens", 1)], None)).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    let e = fx.backend.reset_budget(ResetBudgetArgs { budget_id: BudgetId::new() }).await.unwrap_err();
    assert_eq!(e.code(), "not_found");
    let mut unknown = args("bad");
    drawing_on(&[b, BudgetId::new()])(&mut unknown);
    let id = unknown.execution_id;
    assert_eq!(fx.backend.create_execution(unknown).await.unwrap_err().code(), "not_found");
    assert_eq!(fx.backend.read_execution_state(&id).await.unwrap(), None, "nothing was created");
    let mut twice = args("bad");
    drawing_on(&[b, b])(&mut twice);
    assert_eq!(fx.backend.create_execution(twice).await.unwrap_err().code(), "invalid_policy");
    let spend = RecordSpendArgs {
        budget_id: b,
        execution_id: ExecutionId::in_partition(0),
        deltas: BTreeMap::from([("tokens".into(), 1)]),
        idempotency_key: "k".into(),
    };
    assert_eq!(fx.backend.record_spend(spend).await.unwrap_err().code(), "not_found");

    let id = fx.create("bad").await;
    let h = fx.claim("bad", "w").await;
    let e = fx.backend.report_usage(&h, &b, usage(&[("tokens", 1)], None)).await.unwrap_err();
    assert_eq!(e.code(), "invalid_input", "a holder reports only to budgets its execution draws on: {e}");
    fx.backend.complete(&h, None).await.unwrap();
    let print = fx.fingerprint(&id).await;
    let e = fx.backend.report_usage(&h, &b, usage(&[("tokens", 1)], None)).await.unwrap_err();
    assert_eq!(e.code(), "execution_not_active", "{e}");
    assert_eq!(fx.fingerprint(&id).await, print);
    assert_eq!(fx.backend.get_budget_status(&b).await.unwrap(), before, "no refused call changed the budget");
}
