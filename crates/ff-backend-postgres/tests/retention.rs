//! Retention against the schema: a trimmed execution leaves no row in any table keyed by it
//! (found from the catalog, so a table added later is covered too), a trimmed flow leaves no
//! edge, group or backlog row, a row another transaction holds is skipped rather than waited
//! for, the retention reconciler trims every lane and prunes the event log in batches and
//! repeats harmlessly, and the event log's readers get `cursor_expired` behind the horizon.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use ff_backend_postgres::reconciler::{Reconciler, RetentionConfig, RetentionReconciler};
use ff_core::event::EventCursor;
use ff_core::*;
use sqlx::PgPool;
use uuid::Uuid;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Tables keyed by execution that retention leaves alone on purpose: the event log is pruned
/// on its own (by age, in cursor order), and a quota policy's admissions and rate-window
/// entries are its own accounting, aged out by it.
const KEPT_ON_PURPOSE: &[&str] = &["ff_event", "ff_quota_admission", "ff_quota_window"];

fn frame(bytes: &[u8]) -> Frame {
    Frame {
        bytes: bytes.to_vec(),
        kind: FrameKind::Stdout,
        frame_type: "chunk".into(),
        correlation_id: None,
        mode: StreamMode::Durable,
    }
}

fn trim(lane: &str, batch_size: u32) -> TrimRetentionArgs {
    TrimRetentionArgs { lane: lane_id(lane), default_retention_ms: HOUR_MS, batch_size }
}

/// Moves the end of terminal execution `id` (and its events) a day into the past.
async fn age(pool: &PgPool, id: &ExecutionId) {
    let moved = sqlx::query(
        "WITH events AS (UPDATE ff_event SET occurred_at_ms = occurred_at_ms - $2 WHERE execution_id = $1) \
         UPDATE ff_execution SET completed_at_ms = completed_at_ms - $2 WHERE execution_id = $1 \
         AND lifecycle_phase = 'terminal'",
    )
    .bind(id.uuid())
    .bind(DAY_MS)
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(moved, 1, "{id} is terminal");
}

/// Rows about `id` in every table with an `execution_id`, `upstream_id` or `downstream_id`
/// column, by table (tables without any are left out).
async fn rows_about(pool: &PgPool, id: Uuid) -> BTreeMap<String, i64> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c \
         JOIN information_schema.tables t USING (table_schema, table_name) \
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' \
           AND c.column_name IN ('execution_id', 'upstream_id', 'downstream_id') AND c.data_type = 'uuid' \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(columns.len() >= 15, "the catalog lists the execution-keyed tables: {columns:?}");
    let mut out = BTreeMap::new();
    for (table, column) in columns {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = $1"))
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        if n > 0 {
            *out.entry(table).or_insert(0) += n;
        }
    }
    out
}

fn without_kept(mut rows: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    rows.retain(|t, _| !KEPT_ON_PURPOSE.contains(&t.as_str()));
    rows
}

async fn budget(fx: &Fixture) -> BudgetId {
    let args = CreateBudgetArgs {
        budget_id: BudgetId::new(),
        scope_type: "tenant".into(),
        scope_id: "acme".into(),
        enforcement_mode: EnforcementMode::Strict,
        on_hard_limit: Some("block".into()),
        on_soft_limit: None,
        reset_interval_ms: 0,
        dimensions: vec!["tokens".into()],
        hard_limits: vec![1_000_000],
        soft_limits: vec![0],
    };
    assert_eq!(fx.backend.create_budget(args.clone()).await.unwrap(), CreateBudgetResult::Created);
    args.budget_id
}

/// An execution drawing on `b` that ran two attempts (frames in both), reported usage,
/// suspended on a waitpoint, was resumed by a signal and completed; plus the grant and dedup rows
/// a crash could leave behind.
async fn rich_execution(fx: &Fixture, lane: &str, b: BudgetId) -> ExecutionId {
    let id =
        fx.create_with(lane, |a| a.policy = Some(ExecutionPolicy { budget_ids: vec![b], ..retry_policy(1, 0) })).await;
    let h = fx.claim(lane, "w").await;
    assert_eq!(payload(&h).execution_id, id);
    fx.backend.append_frame(&h, frame(b"one")).await.unwrap();
    fx.backend.fail(&h, FailureReason::new("flaky"), FailureClass::Transient).await.unwrap();
    fx.make_due(&id).await;
    let h = fx.claim(lane, "w").await;
    fx.backend.append_frame(&h, frame(b"two")).await.unwrap();
    let usage = UsageDimensions { deltas: BTreeMap::from([("tokens".to_owned(), 7)]), dedup_key: None };
    assert_eq!(fx.backend.report_usage(&h, &b, usage).await.unwrap(), ReportUsageResult::Ok);
    let mut args = SuspendArgs::for_signal("approval", "approved");
    args.idempotency_key = Some("suspend-1".into());
    let details = match fx.backend.suspend(&h, args).await.unwrap() {
        SuspendOutcome::Suspended { details } => details,
        other => panic!("expected Suspended, got {other:?}"),
    };
    let w = &details.waitpoints[0];
    let mut s = DeliverSignalArgs::new(id, w.waitpoint_id, "approved", "user", "ann");
    s.waitpoint_token = Some(w.waitpoint_token.clone());
    assert!(matches!(fx.backend.deliver_signal(s).await.unwrap(), DeliverSignalResult::Accepted { .. }));
    let h = fx.claim(lane, "w").await;
    assert_eq!(payload(&h).execution_id, id);
    fx.backend.complete(&h, Some(b"done".to_vec())).await.unwrap();
    sqlx::query(
        "WITH r AS (INSERT INTO ff_reclaim_grant (grant_key, execution_id, worker_id, worker_instance_id, lane_id, \
                    issued_at_ms, expires_at_ms) VALUES (gen_random_uuid(), $1, 'w', 'w', $2, 1, 2)) \
         INSERT INTO ff_claim_grant (grant_id, execution_id, worker_id, worker_instance_id, lane_id, kid, \
                                     issued_at_ms, expires_at_ms) VALUES (gen_random_uuid(), $1, 'w', 'w', $2, 'k', 1, 2)",
    )
    .bind(id.uuid())
    .bind(lane)
    .execute(fx.pool())
    .await
    .unwrap();
    id
}

/// Every row of an aged execution goes (attempts, frames, waitpoints, signals, suspension and
/// its dedup, grants, budget membership and spend); a younger one just like it keeps all of
/// its rows; the budget keeps its usage.
#[tokio::test]
async fn an_aged_execution_leaves_no_row_behind() {
    let fx = Fixture::new().await;
    let b = budget(&fx).await;
    let old = rich_execution(&fx, "rich", b).await;
    let young = rich_execution(&fx, "rich", b).await;
    let rows = rows_about(fx.pool(), old.uuid()).await;
    for table in [
        "ff_execution",
        "ff_attempt",
        "ff_frame",
        "ff_waitpoint",
        "ff_signal",
        "ff_suspension",
        "ff_suspend_dedup",
        "ff_reclaim_grant",
        "ff_claim_grant",
        "ff_budget_member",
        "ff_budget_spend",
    ] {
        assert!(rows.contains_key(table), "the setup wrote {table}: {rows:?}");
    }
    let young_rows = rows_about(fx.pool(), young.uuid()).await;
    age(fx.pool(), &old).await;

    let out = fx.backend.trim_retention(trim("rich", 10)).await.unwrap();
    assert_eq!(out, TrimRetentionOutcome { executions: 1, flows: 0, batch_full: false });
    assert_eq!(without_kept(rows_about(fx.pool(), old.uuid()).await), BTreeMap::new());
    assert_eq!(rows_about(fx.pool(), young.uuid()).await, young_rows, "the young execution is untouched");
    let usage = fx.backend.read_budget_usage_and_limits(&b).await.unwrap();
    assert_eq!(usage.usage["tokens"], 14, "usage already counted stays counted");
}

/// A flow trimmed whole leaves no member, edge, edge group, cancel backlog or flow row.
#[tokio::test]
async fn a_flow_leaves_no_row_behind() {
    let fx = Fixture::new().await;
    let flow = CreateFlowArgs::new("test.flow");
    let flow_id = flow.flow_id;
    let members: Vec<CreateExecutionArgs> = (0..3)
        .map(|_| {
            let mut m = args("dag");
            m.execution_id = ExecutionId::for_flow(&flow_id, &PartitionConfig::default());
            m
        })
        .collect();
    let ids: Vec<ExecutionId> = members.iter().map(|m| m.execution_id).collect();
    let edge = |u: usize, d: usize| FlowGraphEdge {
        edge_id: None,
        upstream_execution_id: ids[u],
        downstream_execution_id: ids[d],
        data_passing_ref: None,
    };
    let graph = CreateFlowGraphArgs { flow, members, edges: vec![edge(0, 2), edge(1, 2)], policies: vec![] };
    fx.backend.create_flow_graph(graph).await.unwrap();
    for _ in 0..3 {
        let h = fx.claim("dag", "w").await;
        fx.backend.complete(&h, None).await.unwrap();
    }
    sqlx::query("INSERT INTO ff_flow_cancel_member (flow_id, execution_id) VALUES ($1, $2)")
        .bind(flow_id.0)
        .bind(ids[2].uuid())
        .execute(fx.pool())
        .await
        .unwrap();
    for id in &ids {
        age(fx.pool(), id).await;
    }
    let out = fx.backend.trim_retention(trim("dag", 10)).await.unwrap();
    assert_eq!((out.executions, out.flows), (3, 1));
    for id in &ids {
        assert_eq!(without_kept(rows_about(fx.pool(), id.uuid()).await), BTreeMap::new());
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM ff_flow WHERE flow_id = $1) + (SELECT count(*) FROM ff_edge WHERE flow_id = $1) \
              + (SELECT count(*) FROM ff_edge_group WHERE flow_id = $1) \
              + (SELECT count(*) FROM ff_flow_cancel_member WHERE flow_id = $1)",
    )
    .bind(flow_id.0)
    .fetch_one(fx.pool())
    .await
    .unwrap();
    assert_eq!(left, 0);
}

/// A due execution another transaction holds is skipped, not waited for, and goes on a later
/// pass.
#[tokio::test]
async fn a_held_row_is_skipped_not_waited_for() {
    let fx = Fixture::new().await;
    let id = fx.create("held").await;
    let h = fx.claim("held", "w").await;
    fx.backend.complete(&h, None).await.unwrap();
    age(fx.pool(), &id).await;
    let mut tx = fx.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM ff_execution WHERE execution_id = $1 FOR UPDATE")
        .bind(id.uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    let out = fx.backend.trim_retention(trim("held", 10)).await.unwrap();
    assert_eq!(out, TrimRetentionOutcome::default());
    tx.rollback().await.unwrap();
    assert_eq!(fx.backend.trim_retention(trim("held", 10)).await.unwrap().executions, 1);
}

/// The newest pruned cursor, as stored.
async fn horizon(pool: &PgPool) -> EventCursor {
    let (tx, id): (String, i64) =
        sqlx::query_as("SELECT tx_id::text, event_id FROM ff_event_horizon").fetch_one(pool).await.unwrap();
    EventCursor { tx: tx.parse().unwrap(), id }
}

/// Runs the reconciler until its passes come back short and the horizon has reached `target`
/// (events are prunable once no transaction older than them is in flight in the cluster).
async fn run_until(r: &RetentionReconciler, pool: &PgPool, target: EventCursor) -> u64 {
    let mut processed = 0;
    for _ in 0..600 {
        let report = r.run_once().await.unwrap();
        processed += report.processed;
        if !report.batch_full && horizon(pool).await >= target {
            return processed;
        }
        if !report.batch_full {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("the horizon never reached {target}");
}

/// The reconciler trims every lane in batches and prunes the aged head of the event log; a
/// further pass finds nothing; readers behind the horizon get `cursor_expired`, the beginning
/// reads from the oldest retained event, the horizon itself reads on.
#[tokio::test]
async fn the_reconciler_trims_every_lane_prunes_events_and_expires_cursors() {
    let fx = Fixture::new().await;
    let mut aged = Vec::new();
    for lane in ["r-a", "r-a", "r-a", "r-b"] {
        let id = fx.create(lane).await;
        let h = fx.claim(lane, "w").await;
        fx.backend.complete(&h, None).await.unwrap();
        age(fx.pool(), &id).await;
        aged.push(id);
    }
    // Read from the table, not the log: a reader sees an event only once every older
    // transaction in the cluster has ended.
    let ids: Vec<Uuid> = aged.iter().map(ExecutionId::uuid).collect();
    let (aged_events, tx, id): (i64, String, i64) = sqlx::query_as(
        "SELECT count(*) OVER (), tx_id::text, event_id FROM ff_event WHERE execution_id = ANY($1) \
         ORDER BY tx_id DESC, event_id DESC LIMIT 1",
    )
    .bind(&ids)
    .fetch_one(fx.pool())
    .await
    .unwrap();
    let last_aged = EventCursor { tx: tx.parse().unwrap(), id };
    let first_aged: (String, i64) =
        sqlx::query_as("SELECT tx_id::text, event_id FROM ff_event ORDER BY tx_id, event_id LIMIT 1")
            .fetch_one(fx.pool())
            .await
            .unwrap();
    let first_aged = EventCursor { tx: first_aged.0.parse().unwrap(), id: first_aged.1 };
    let young = fx.create("r-b").await;
    let h = fx.claim("r-b", "w").await;
    fx.backend.complete(&h, None).await.unwrap();

    let config = RetentionConfig {
        default_retention: Duration::from_millis(HOUR_MS as u64),
        event_retention: Duration::from_millis(HOUR_MS as u64),
        batch_size: 2,
    };
    let r = RetentionReconciler::new(fx.pool().clone(), config).unwrap();
    let processed = run_until(&r, fx.pool(), last_aged).await;
    assert_eq!(processed, 4 + aged_events as u64, "four executions and their events");
    for id in &aged {
        assert!(fx.backend.read_execution_info(id).await.unwrap().is_none());
    }
    assert!(fx.backend.read_execution_info(&young).await.unwrap().is_some());
    assert_eq!(horizon(fx.pool()).await, last_aged, "pruning stopped at the first young event");
    assert_eq!(r.run_once().await.unwrap().processed, 0, "a further pass finds nothing");

    let e = fx.backend.read_events(first_aged, 100).await.unwrap_err();
    assert_eq!(e.code(), "cursor_expired");
    assert!(e.to_string().contains(&last_aged.to_string()), "{e}");
    // A reader sees an event only once every older transaction in the cluster has ended (other
    // databases' included): read until all of the young execution's events are visible.
    let young_events: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_event WHERE execution_id = $1")
        .bind(young.uuid())
        .fetch_one(fx.pool())
        .await
        .unwrap();
    let mut from_start = fx.backend.read_events(EventCursor::BEGINNING, 100).await.unwrap();
    for _ in 0..500 {
        if from_start.len() as i64 >= young_events {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        from_start = fx.backend.read_events(EventCursor::BEGINNING, 100).await.unwrap();
    }
    assert!(!from_start.is_empty() && from_start.iter().all(|e| e.execution_id == young));
    assert_eq!(fx.backend.read_events(last_aged, 100).await.unwrap(), from_start, "the horizon reads on");
}

/// A reconciler with a zero window or a zero batch is refused.
#[tokio::test]
async fn a_bad_reconciler_configuration_is_refused() {
    let fx = Fixture::new().await;
    let ok = RetentionConfig::default();
    assert_eq!(ok.default_retention, Duration::from_secs(7 * 24 * 3600));
    for bad in [
        RetentionConfig { default_retention: Duration::ZERO, ..ok.clone() },
        RetentionConfig { event_retention: Duration::ZERO, ..ok.clone() },
        RetentionConfig { batch_size: 0, ..ok.clone() },
    ] {
        let e = RetentionReconciler::new(fx.pool().clone(), bad).err().expect("refused");
        assert_eq!(e.code(), "invalid_input");
    }
}
