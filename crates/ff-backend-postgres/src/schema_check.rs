//! Checks the crate's SQL against the migrated schema, so that a typo in a statement or a
//! state literal fails a test instead of a request:
//! - every static statement (each `…_SQL` item of the crate, and the fixed column lists of the
//!   one runtime-built read) is prepared by the server;
//! - no statement is written inline at its call site, where this check could not see it;
//! - the schema's enum labels are exactly the literals of `ff_core::state` (and the other
//!   literal types the schema stores), in the same order.

use std::path::Path;

use ff_core::*;
use ff_test::TestDb;
use sqlx::{Executor, PgPool};

use crate::MIGRATOR;
use crate::execution::read;

/// Every static statement of the crate, by name.
fn statements() -> Vec<(&'static str, String)> {
    macro_rules! list {
        ($($path:path),+ $(,)?) => {
            vec![$((stringify!($path).rsplit("::").next().unwrap_or_default().trim(), $path.to_string())),+]
        };
    }
    let mut all = list![
        crate::leader::ACQUIRE_LEADER_SQL,
        crate::leader::RELEASE_LEADER_SQL,
        crate::retention::TRIM_SQL,
        crate::retention::PRUNE_EVENTS_SQL,
        crate::retention::HORIZON_SQL,
        crate::retention::LANES_SQL,
        crate::retention::SET_POLICY_SQL,
        crate::retention::READ_POLICY_SQL,
        crate::retention::LIST_POLICIES_SQL,
        crate::retention::CLEAR_POLICY_SQL,
        crate::admission::quota::CREATE_POLICY_SQL,
        crate::admission::quota::SET_LANE_POLICY_SQL,
        crate::admission::quota::LANE_POLICY_SQL,
        crate::admission::quota::POLICY_STATUS_SQL,
        crate::admission::quota::CHECK_ADMISSION_SQL,
        crate::admission::quota::RELEASE_ADMISSION_SQL,
        crate::admission::quota::PARTITION_POLICIES_SQL,
        crate::admission::quota::RECOUNT_SQL,
        crate::admission::quota::DUE_POLICIES_SQL,
        crate::admission::quota::ADMIT_SQL,
        crate::admission::quota::NEXT_DUE_SQL,
        crate::admission::budget::CREATE_BUDGET_SQL,
        crate::admission::budget::BUDGET_SQL,
        crate::admission::budget::DIMENSIONS_SQL,
        crate::admission::budget::LOCK_BUDGET_SQL,
        crate::admission::budget::SET_LIMITS_SQL,
        crate::admission::budget::REDERIVE_SQL,
        crate::admission::budget::AFTER_CHANGE_SQL,
        crate::admission::budget::REPORT_ADMIN_SQL,
        crate::admission::budget::REPORT_HELD_SQL,
        crate::admission::budget::RECORD_SPEND_SQL,
        crate::admission::budget::RELEASE_SQL,
        crate::admission::budget::RESET_SQL,
        crate::admission::budget::PARTITION_BUDGETS_SQL,
        crate::admission::budget::BLOCK_STRAGGLERS_SQL,
        crate::admission::budget::FORGET_REPORTS_SQL,
        crate::admission::budget::DUE_RESETS_SQL,
        crate::admission::budget::NEXT_RESET_SQL,
        crate::admission::grant::RESERVE_BEST_SQL,
        crate::admission::grant::LOCK_FOR_CLAIM_GRANT_SQL,
        crate::admission::grant::RESERVE_SQL,
        crate::admission::grant::INSERT_CLAIM_GRANT_SQL,
        crate::admission::grant::TAKE_CLAIM_GRANT_SQL,
        crate::admission::grant::DROP_GRANTS_SQL,
        crate::admission::grant::LEASE_EXPIRY_SQL,
        crate::admission::grant::NOW_SQL,
        crate::admission::grant::REAP_SQL,
        crate::admission::block::SCAN_ELIGIBLE_SQL,
        crate::admission::block::BLOCK_SQL,
        crate::admission::block::UNBLOCK_SQL,
        crate::admission::block::ADMISSION_STATE_SQL,
        crate::admission::block::LANE_READY_SQL,
        crate::reconciler::admission::ADMISSION_NOW_SQL,
        crate::attempt_end::COMPLETE_SQL,
        crate::attempt_end::END_ATTEMPT_SQL,
        crate::attempt_end::FAIL_LOCK_SQL,
        crate::backend::PING_SQL,
        crate::backend::SERVER_TIME_SQL,
        crate::event::HEAD_CURSOR_SQL,
        crate::event::READ_EVENTS_SQL,
        crate::execution::ingress::CREATE_SQL,
        crate::execution::read::GET_TAG_SQL,
        crate::execution::read::LIST_EXECUTIONS_SQL,
        crate::execution::read::LIST_LANES_SQL,
        crate::execution::read::SET_TAG_SQL,
        crate::execution::read::CLEAR_TAG_SQL,
        crate::fence::CURRENT_LEASE_SQL,
        crate::flow::build::ADD_MEMBER_SQL,
        crate::flow::build::APPLY_EDGE_SQL,
        crate::flow::build::BUILD_GRAPH_SQL,
        crate::flow::build::CREATE_FLOW_SQL,
        crate::flow::build::SET_POLICY_SQL,
        crate::flow::build::STAGE_EDGE_SQL,
        crate::flow::cancel::ACK_SQL,
        crate::flow::cancel::BACKLOG_SQL,
        crate::flow::cancel::CANCEL_FLOW_SQL,
        crate::flow::cancel::DRAIN_FLOW_CANCEL_SQL,
        crate::flow::cancel::DRAIN_SIBLINGS_SQL,
        crate::flow::cancel::FLAGGED_GROUPS_SQL,
        crate::flow::cancel::RECONCILE_SIBLINGS_SQL,
        crate::flow::read::EDGES_SQL,
        crate::flow::read::FLOW_EXISTS_SQL,
        crate::flow::read::FLOW_OF_SQL,
        crate::flow::read::FLOW_SQL,
        crate::flow::read::GET_FLOW_TAG_SQL,
        crate::flow::read::GROUPS_SQL,
        crate::flow::read::LIST_FLOWS_SQL,
        crate::flow::read::MEMBERS_SQL,
        crate::flow::read::SET_FLOW_TAG_SQL,
        crate::flow::read::SUMMARY_SQL,
        crate::flow::resolve::EDGE_OUTCOME_SQL,
        crate::flow::resolve::EDGE_STATUS_SQL,
        crate::flow::resolve::ELIGIBILITY_SQL,
        crate::flow::resolve::RESOLVE_EDGES_SQL,
        crate::flow::resolve::WAIT_CHILDREN_SQL,
        crate::reconciler::dependency::RESOLVE_STRAGGLERS_SQL,
        crate::fence::DIAGNOSE_SQL,
        crate::lease::claim::CLAIM_BY_LANE_SQL,
        crate::lease::claim::CLAIM_BY_ID_SQL,
        crate::lease::expiry::EXPIRE_LEASES_SQL,
        crate::lease::reclaim::INSERT_GRANT_SQL,
        crate::lease::reclaim::LOCK_FOR_GRANT_SQL,
        crate::lease::reclaim::TAKE_GRANT_SQL,
        crate::lease::renew::PROGRESS_SQL,
        crate::lease::renew::RENEW_SQL,
        crate::migrate::SCHEMA_EXISTS_SQL,
        crate::migrate::SCHEMA_VERSION_SQL,
        crate::operator::CANCEL_SQL,
        crate::operator::CHANGE_PRIORITY_SQL,
        crate::operator::LIST_EXPIRED_LEASES_SQL,
        crate::operator::REPLAYED_STATE_SQL,
        crate::operator::REPLAY_SQL,
        crate::operator::REVOKE_SQL,
        crate::reconciler::delayed::PROMOTE_SQL,
        crate::reconciler::suspension::SUSPENSION_PASS_SQL,
        crate::reconciler::timeout::EXPIRE_EXECUTIONS_SQL,
        crate::route::NOTE_CLAIMER_SQL,
        crate::suspension::keystore::GC_KEYS_SQL,
        crate::suspension::keystore::INSERT_KEY_SQL,
        crate::suspension::keystore::INSTALL_KEY_SQL,
        crate::suspension::keystore::KEYS_SQL,
        crate::suspension::keystore::KEY_BY_ID_SQL,
        crate::suspension::keystore::LOCK_CURRENT_SQL,
        crate::suspension::keystore::RETIRE_CURRENT_SQL,
        crate::suspension::resume::CURRENT_ATTEMPT_SQL,
        crate::suspension::resume::EXPIRE_SUSPENSIONS_SQL,
        crate::suspension::resume::LIST_SUSPENDED_SQL,
        crate::suspension::resume::OBSERVE_SQL,
        crate::suspension::resume::RESUME_LOCK_SQL,
        crate::suspension::signal::DELIVER_READ_SQL,
        crate::suspension::signal::LANE_OF_SQL,
        crate::suspension::signal::RECORD_SIGNAL_SQL,
        crate::suspension::signal::RESUME_SUSPENDED_SQL,
        crate::suspension::signal::SUSPENSION_SIGNALS_SQL,
        crate::suspension::suspend::BINDINGS_SQL,
        crate::suspension::suspend::BUFFERED_SQL,
        crate::suspension::suspend::PHASE_SQL,
        crate::suspension::suspend::SUSPEND_DEDUP_INSERT_SQL,
        crate::suspension::suspend::SUSPEND_DEDUP_SQL,
        crate::suspension::suspend::SUSPEND_LOCK_SQL,
        crate::suspension::suspend::SUSPEND_WRITE_SQL,
        crate::suspension::suspend::SUSPENSION_WAITPOINTS_SQL,
        crate::suspension::waitpoint::EXECUTION_EXISTS_SQL,
        crate::suspension::waitpoint::EXPIRE_WAITPOINTS_SQL,
        crate::suspension::waitpoint::INSERT_PENDING_SQL,
        crate::suspension::waitpoint::LIST_WAITPOINTS_SQL,
        crate::suspension::waitpoint::WAITPOINT_LOCK_SQL,
        crate::suspension::waitpoint::WAITPOINT_SQL,
        crate::suspension::delivery::READ_DELIVERIES_SQL,
        crate::pulse::ANNOUNCE_SQL,
        crate::pulse::ANYONE_FOLLOWS_SQL,
        crate::pulse::PRESENT_SQL,
        crate::pulse::ABSENT_SQL,
        crate::stream::APPEND_SQL,
        crate::dashboard::OVERVIEW_SQL,
        crate::dashboard::REGISTERED_LANES_SQL,
        crate::dashboard::SEARCH_SQL,
        crate::dashboard::ATTEMPTS_SQL,
        crate::dashboard::EVENTS_SQL,
        crate::stream::READ_ATTEMPT_SQL,
        crate::stream::READ_FRAMES_SQL,
        crate::stream::TAIL_SQL,
        crate::stream::READ_SUMMARY_SQL,
        crate::stream::APPLY_SUMMARY_SQL,
        crate::stream::NOTE_LIVE_FRAME_SQL,
        crate::worker::HEARTBEAT_SQL,
        crate::worker::LIST_WORKERS_SQL,
        crate::worker::REGISTER_SQL,
        crate::worker::RETIRE_SQL,
    ];
    let core_fields = read::CORE_FIELDS.iter().map(|f| format!("{f}::text AS {f}")).collect::<Vec<_>>().join(", ");
    for (name, columns) in [
        ("by_id(describe)", read::DESCRIBE_COLUMNS.as_str()),
        ("by_id(info)", read::INFO_COLUMNS.as_str()),
        ("by_id(context)", read::CONTEXT_COLUMNS),
        ("by_id(state)", crate::row::STATE_COLUMNS),
        ("by_id(core fields)", core_fields.as_str()),
        ("by_id(result)", "result"),
        ("by_id(namespace)", "namespace"),
        ("by_id(current_attempt_index)", "current_attempt_index"),
        ("by_id(total_attempt_count)", "total_attempt_count"),
        ("by_id(presence)", "1 AS present"),
    ] {
        all.push((name, read::by_id_sql(columns)));
    }
    all
}

async fn migrated() -> TestDb {
    TestDb::new(&MIGRATOR).await
}

#[tokio::test]
async fn every_static_statement_prepares_against_the_schema() {
    let db = migrated().await;
    let mut failures = Vec::new();
    for (name, sql) in statements() {
        if let Err(e) = db.pool().prepare(sql.as_str()).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "statements that do not prepare:\n{}", failures.join("\n"));
}

/// Every `.rs` file under `src/`, with its path relative to `src/`.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src").display().to_string();
                out.push((rel, std::fs::read_to_string(&path).expect("read source")));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

#[test]
fn every_statement_is_a_registered_item() {
    let registered: Vec<&str> = statements().iter().map(|(name, _)| *name).collect();
    let mut problems = Vec::new();
    for (file, text) in sources() {
        if file == "schema_check.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            // A statement item must be in the list above.
            for keyword in ["const ", "static "] {
                if let Some(rest) = code.strip_prefix("pub(crate) ").unwrap_or(code).strip_prefix(keyword) {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    if name.ends_with("_SQL") && !registered.contains(&name.as_str()) {
                        problems.push(format!("{file}:{}: {name} is not listed in schema_check::statements", n + 1));
                    }
                }
            }
        }
        // A query call names a statement item; only `by_id_sql` builds one at run time.
        for call in ["sqlx::query(", "sqlx::query_as(", "sqlx::query_scalar(", "sqlx::query_scalar::<"] {
            for (at, _) in text.match_indices(call) {
                let mut after = text[at + call.len()..].trim_start();
                if call.ends_with('<') {
                    after = after.split_once(">(").map(|(_, a)| a.trim_start()).unwrap_or(after);
                }
                let item = after.strip_prefix('&').unwrap_or(after);
                let names_item = item.starts_with(|c: char| c.is_ascii_uppercase()) || item.starts_with("by_id_sql(");
                if !names_item {
                    let line = text[..at].lines().count();
                    problems.push(format!("{file}:{line}: a statement written at its call site"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

async fn labels(pool: &PgPool, enum_type: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT unnest(enum_range(NULL::{enum_type}))::text"))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("labels of {enum_type}: {e}"))
}

#[tokio::test]
async fn the_schemas_state_literals_are_ff_cores() {
    let db = migrated().await;
    fn strs<T: Copy>(all: &[T], f: fn(&T) -> &'static str) -> Vec<String> {
        all.iter().map(|v| f(v).to_owned()).collect()
    }
    let expected = [
        ("ff_lifecycle_phase", strs(LifecyclePhase::ALL, LifecyclePhase::as_str)),
        ("ff_ownership_state", strs(OwnershipState::ALL, OwnershipState::as_str)),
        ("ff_eligibility_state", strs(EligibilityState::ALL, EligibilityState::as_str)),
        ("ff_blocking_reason", strs(BlockingReason::ALL, BlockingReason::as_str)),
        ("ff_terminal_outcome", strs(TerminalOutcome::ALL, TerminalOutcome::as_str)),
        ("ff_attempt_state", strs(AttemptState::ALL, AttemptState::as_str)),
        ("ff_frame_kind", strs(FrameKind::ALL, FrameKind::as_str)),
        ("ff_attempt_ending", crate::attempt_end::Ending::ALL.iter().map(|e| e.as_str().to_owned()).collect()),
    ];
    for (enum_type, literals) in expected {
        assert_eq!(labels(db.pool(), enum_type).await, literals, "labels of {enum_type}");
    }
}

/// The schema's edge-group verdict is ff-core's, for every policy and counter combination.
#[tokio::test]
async fn the_schemas_edge_group_verdict_is_ff_cores() {
    use ff_core::flow::edge_group::evaluate;
    let db = migrated().await;
    let mut policies =
        vec![EdgeDependencyPolicy::AllOf, EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::LetRun }];
    policies.extend((1..=5).map(|k| EdgeDependencyPolicy::Quorum { k, on_satisfied: OnSatisfied::CancelRemaining }));
    let (mut kinds, mut ks, mut totals, mut oks, mut fails, mut skips, mut want) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for p in &policies {
        for total in 0..=6u32 {
            for s in 0..=total {
                for f in 0..=(total - s) {
                    for k in 0..=(total - s - f) {
                        let c = EdgeGroupCounts { total, success: s, failed: f, skipped: k };
                        kinds.push(p.kind());
                        ks.push(p.k().map(|k| k as i32));
                        totals.push(total as i32);
                        oks.push(s as i32);
                        fails.push(f as i32);
                        skips.push(k as i32);
                        want.push(evaluate(p, &c).as_str().to_owned());
                    }
                }
            }
        }
    }
    let got: Vec<String> = sqlx::query_scalar(
        "SELECT ff_edge_group_verdict(kind, k, total, s, f, sk) FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], \
         $5::int[], $6::int[]) WITH ORDINALITY AS t(kind, k, total, s, f, sk, ord) ORDER BY ord",
    )
    .bind(&kinds)
    .bind(&ks)
    .bind(&totals)
    .bind(&oks)
    .bind(&fails)
    .bind(&skips)
    .fetch_all(db.pool())
    .await
    .expect("verdicts");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g, w,
            "{} k={:?} total {} ok {} failed {} skipped {}",
            kinds[i], ks[i], totals[i], oks[i], fails[i], skips[i]
        );
    }
}
