//! The dashboard's read-only queries on Postgres: the SQL public state agrees with
//! `derive_public_state` on every state vector, the lane overview counts by state with its
//! throughput and oldest wait, the search narrows by each filter and pages newest first, and
//! an execution's attempts and events are listed in order.

mod common;

use common::*;
use ff_backend_postgres::dashboard::{ExecutionSearch, PUBLIC_STATE_SQL, SearchCursor};
use ff_core::*;

#[tokio::test]
async fn the_sql_public_state_matches_the_derivation_on_every_vector() {
    let fx = Fixture::new().await;
    let phases = ["submitted", "runnable", "active", "suspended", "terminal"];
    let eligibilities = [
        "eligible_now",
        "not_eligible_until_time",
        "blocked_by_dependencies",
        "blocked_by_budget",
        "blocked_by_quota",
        "blocked_by_route",
        "blocked_by_lane_state",
        "blocked_by_operator",
        "not_applicable",
    ];
    let outcomes = ["none", "success", "failed", "cancelled", "expired", "skipped"];
    let mut checked = 0;
    for phase in phases {
        for eligibility in eligibilities {
            for outcome in outcomes {
                let vector = StateVector {
                    lifecycle_phase: LifecyclePhase::parse(phase).unwrap(),
                    ownership_state: OwnershipState::Unowned,
                    eligibility_state: EligibilityState::parse(eligibility).unwrap(),
                    blocking_reason: BlockingReason::None,
                    terminal_outcome: TerminalOutcome::parse(outcome).unwrap(),
                    attempt_state: AttemptState::None,
                };
                let derived = derive_public_state(&vector);
                let sql = format!(
                    "SELECT {PUBLIC_STATE_SQL} FROM (SELECT $1::ff_lifecycle_phase AS lifecycle_phase, \
                     $2::ff_eligibility_state AS eligibility_state, $3::ff_terminal_outcome AS terminal_outcome) v"
                );
                let label: String = sqlx::query_scalar(&sql)
                    .bind(phase)
                    .bind(eligibility)
                    .bind(outcome)
                    .fetch_one(fx.pool())
                    .await
                    .unwrap();
                assert_eq!(label, derived.as_str(), "{phase}/{eligibility}/{outcome}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 9 * 6);
}

#[tokio::test]
async fn the_lane_overview_counts_states_throughput_and_the_oldest_wait() {
    let fx = Fixture::new().await;
    for _ in 0..3 {
        fx.create("mail").await;
    }
    let done = fx.create("reports").await;
    fx.create("reports").await;
    let h = fx.claim("reports", "w1").await;
    assert_eq!(h.execution_id().unwrap(), done);
    fx.backend.complete(&h, Some(b"ok".to_vec())).await.unwrap();
    let running = fx.claim("reports", "w2").await;
    let lanes = fx.backend.lane_overview().await.unwrap();
    let names: Vec<&str> = lanes.iter().map(|l| l.lane_id.as_str()).collect();
    assert_eq!(names, ["mail", "reports"]);
    assert_eq!(lanes[0].counts.get("waiting"), Some(&3));
    assert!(lanes[0].oldest_waiting_since.is_some());
    assert_eq!(lanes[0].completed_last_minute, 0);
    assert_eq!((lanes[1].counts.get("completed"), lanes[1].counts.get("active")), (Some(&1), Some(&1)));
    assert_eq!(lanes[1].completed_last_minute, 1);
    assert_eq!(lanes[1].oldest_waiting_since, None, "nothing of reports waits");
    drop(running);
}

#[tokio::test]
async fn the_search_narrows_by_each_filter_and_pages_newest_first() {
    let fx = Fixture::new().await;
    let mut mail = vec![];
    for i in 0..5 {
        mail.push(
            fx.create_with("mail", |a| {
                a.tags.insert("app.customer".into(), format!("c{}", i % 2));
                a.execution_kind = if i < 3 { "send".into() } else { "bounce".into() };
            })
            .await,
        );
    }
    let other = fx.create_with("reports", |a| a.namespace = Namespace::new("acme")).await;
    let h = fx.claim("mail", "w").await;
    let active = h.execution_id().unwrap();
    let ids = |page: &ff_backend_postgres::dashboard::ExecutionSearchPage| -> Vec<ExecutionId> {
        page.rows.iter().map(|r| r.execution_id).collect()
    };
    let search = |f: &dyn Fn(&mut ExecutionSearch)| {
        let mut s = ExecutionSearch { limit: 100, ..Default::default() };
        f(&mut s);
        s
    };
    let all = fx.backend.search_executions(&search(&|_| {})).await.unwrap();
    assert_eq!(all.rows.len(), 6);
    assert_eq!(all.rows[0].execution_id, other, "newest first");
    assert_eq!(all.next, None);
    let by_lane = fx.backend.search_executions(&search(&|s| s.lane_id = Some("mail".into()))).await.unwrap();
    let mut want = mail.clone();
    want.reverse();
    assert_eq!(ids(&by_lane), want);
    let by_state = fx.backend.search_executions(&search(&|s| s.state = Some(PublicState::Active))).await.unwrap();
    assert_eq!(ids(&by_state), [active]);
    let waiting = fx.backend.search_executions(&search(&|s| s.state = Some(PublicState::Waiting))).await.unwrap();
    assert_eq!(waiting.rows.len(), 5, "four of mail and the one of reports");
    assert!(waiting.rows.iter().all(|r| r.public_state == PublicState::Waiting));
    let by_kind = fx.backend.search_executions(&search(&|s| s.kind = Some("bounce".into()))).await.unwrap();
    assert_eq!(ids(&by_kind), [mail[4], mail[3]]);
    let by_tag = fx
        .backend
        .search_executions(&search(&|s| s.tag = Some(("app.customer".into(), Some("c1".into())))))
        .await
        .unwrap();
    assert_eq!(ids(&by_tag), [mail[3], mail[1]]);
    let tag_key =
        fx.backend.search_executions(&search(&|s| s.tag = Some(("app.customer".into(), None)))).await.unwrap();
    assert_eq!(tag_key.rows.len(), 5);
    let by_ns = fx.backend.search_executions(&search(&|s| s.namespace = Some("acme".into()))).await.unwrap();
    assert_eq!(ids(&by_ns), [other]);
    // Pages of two, newest first, each continuing after the last.
    let mut seen = vec![];
    let mut before: Option<SearchCursor> = None;
    loop {
        let page = fx.backend.search_executions(&search(&|s| (s.limit, s.before) = (2, before))).await.unwrap();
        seen.extend(ids(&page));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids(&all));
    for limit in [0, 501] {
        let err = fx.backend.search_executions(&search(&|s| s.limit = limit)).await.unwrap_err();
        assert_eq!(err.code(), "invalid_input", "{limit}");
    }
    drop(h);
}

#[tokio::test]
async fn attempts_and_events_of_one_execution_are_listed_in_order() {
    let fx = Fixture::new().await;
    let id = fx.create("mail").await;
    let first = fx.claim("mail", "w1").await;
    fx.backend.revoke_lease(RevokeLeaseArgs::new(id, "hung")).await.unwrap();
    let second = fx.claim("mail", "w2").await;
    fx.backend.complete(&second, None).await.unwrap();
    let attempts = fx.backend.list_attempts(&id).await.unwrap();
    let summary: Vec<(i32, &str)> = attempts.iter().map(|a| (a.attempt_index, a.worker_instance_id.as_str())).collect();
    assert_eq!(summary.len(), 2, "{attempts:?}");
    assert_eq!(summary.last().unwrap().1, "w2");
    assert_eq!(attempts.last().unwrap().state, "ended_success");
    let events: Vec<String> =
        fx.backend.list_execution_events(&id, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(events.first().map(String::as_str), Some("lease_acquired"));
    assert_eq!(events.last().map(String::as_str), Some("completed"));
    assert!(events.contains(&"lease_revoked".to_owned()), "{events:?}");
    let last_two = fx.backend.list_execution_events(&id, 2).await.unwrap();
    assert_eq!(last_two.len(), 2);
    assert_eq!(last_two[1].kind, "completed");
    drop(first);
}
