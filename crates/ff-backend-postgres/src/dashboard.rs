//! Read-only queries behind the operator dashboard: per-lane counts by public state with
//! throughput and the oldest wait, a filtered and paged search over executions (lane, state,
//! kind, tag, namespace, flow; newest first), and one execution's attempts and events. Nothing
//! here writes. The overview and the search each read `ff_execution` in one pass, without an
//! index of their own: the claim path pays nothing for the dashboard, the dashboard pays a scan.
//!
//! The public-state filter uses [`PUBLIC_STATE_SQL`], the SQL image of [`derive_public_state`]:
//! over a row's columns it gives the label the row's state vector derives (a test checks it on
//! every vector). The statements are static items, checked against the schema like every other.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use ff_core::{EngineError, ExecutionId, PublicState, TimestampMs, ValidationKind, derive_public_state};
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::PostgresBackend;
use crate::error::map_sqlx;
use crate::row::{STATE_COLUMNS, col, state_vector};

/// Largest page of [`PostgresBackend::search_executions`].
pub const MAX_SEARCH_PAGE: usize = 500;

/// One lane at a glance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LaneOverview {
    /// The lane.
    pub lane_id: String,
    /// Executions by public state label (labels with none are absent).
    pub counts: BTreeMap<String, u64>,
    /// Executions that completed successfully in the last minute.
    pub completed_last_minute: u64,
    /// Since when the longest-waiting claimable execution has been claimable.
    pub oldest_waiting_since: Option<TimestampMs>,
}

/// What [`PostgresBackend::search_executions`] keeps; every field narrows (`None`: any).
#[derive(Clone, Debug, Default)]
pub struct ExecutionSearch {
    /// Only this lane.
    pub lane_id: Option<String>,
    /// Only this public state.
    pub state: Option<PublicState>,
    /// Only this execution kind.
    pub kind: Option<String>,
    /// Only executions carrying this tag key, with this value when given.
    pub tag: Option<(String, Option<String>)>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only members of this flow.
    pub flow_id: Option<Uuid>,
    /// Continue after this row of the previous page (newest first).
    pub before: Option<SearchCursor>,
    /// Page size, 1..=[`MAX_SEARCH_PAGE`].
    pub limit: usize,
}

/// Where a page of [`PostgresBackend::search_executions`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchCursor {
    /// Creation order of the last row shown.
    pub seq: i64,
}

/// One execution in a search result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExecutionRow {
    /// Id.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: String,
    /// Lane.
    pub lane_id: String,
    /// Kind.
    pub execution_kind: String,
    /// Derived label.
    pub public_state: PublicState,
    /// Priority.
    pub priority: i32,
    /// Attempts so far.
    pub total_attempt_count: i32,
    /// Creation time.
    pub created_at: TimestampMs,
    /// Last state change.
    pub last_mutation_at: TimestampMs,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// One page of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionSearchPage {
    /// Rows, newest first.
    pub rows: Vec<ExecutionRow>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<SearchCursor>,
}

/// One attempt of an execution, with the lease and worker that ran it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRow {
    /// Index (1-based).
    pub attempt_index: i32,
    /// Why it was started (`initial`, `retry`, `reclaim`, `replay`).
    pub attempt_type: String,
    /// Lifecycle (`started`, `suspended`, `ended_success`...).
    pub state: String,
    /// The lease it ran under.
    pub lease_id: Uuid,
    /// The lease epoch.
    pub lease_epoch: i64,
    /// Worker.
    pub worker_id: String,
    /// Worker instance.
    pub worker_instance_id: String,
    /// Start.
    pub started_at: TimestampMs,
    /// End, once ended.
    pub ended_at: Option<TimestampMs>,
    /// Failure class, when it failed.
    pub failure_class: Option<String>,
    /// Failure message, when it failed.
    pub failure_message: Option<String>,
    /// Frames appended.
    pub frame_count: i64,
}

/// One event of an execution's log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EventRow {
    /// Kind (`lease_acquired`, `completed`, `cancelled`...).
    pub kind: String,
    /// Attempt, when the event concerns one.
    pub attempt_index: Option<i32>,
    /// Lease epoch, when the event concerns a lease.
    pub lease_epoch: Option<i64>,
    /// Worker instance, when the event concerns one.
    pub worker_instance_id: Option<String>,
    /// When.
    pub occurred_at: TimestampMs,
}

/// The public state label of an `ff_execution` row, as SQL over its columns: the image of
/// [`derive_public_state`] (which never derives `resumable`).
pub const PUBLIC_STATE_SQL: &str = "(CASE lifecycle_phase \
    WHEN 'terminal' THEN CASE terminal_outcome WHEN 'success' THEN 'completed' WHEN 'cancelled' THEN 'cancelled' \
        WHEN 'expired' THEN 'expired' WHEN 'skipped' THEN 'skipped' ELSE 'failed' END \
    WHEN 'suspended' THEN 'suspended' \
    WHEN 'active' THEN 'active' \
    WHEN 'runnable' THEN CASE eligibility_state WHEN 'not_eligible_until_time' THEN 'delayed' \
        WHEN 'blocked_by_dependencies' THEN 'waiting_children' WHEN 'blocked_by_budget' THEN 'rate_limited' \
        WHEN 'blocked_by_quota' THEN 'rate_limited' ELSE 'waiting' END \
    ELSE 'waiting' END)";

/// Counts by state vector per lane, the oldest claimable wait, and the successful completions
/// of the last minute (by completion time, so a replayed execution that completes again
/// counts once), in one pass.
pub(crate) static OVERVIEW_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT lane_id, {STATE_COLUMNS}, count(*) AS n, \
                min(eligible_at_ms) FILTER (WHERE {PUBLIC_STATE_SQL} = 'waiting') AS oldest, \
                count(*) FILTER (WHERE terminal_outcome = 'success' AND completed_at_ms > ff_now_ms() - 60000) \
                    AS completed_last_minute \
         FROM ff_execution GROUP BY lane_id, lifecycle_phase, ownership_state, eligibility_state, \
                blocking_reason, terminal_outcome, attempt_state"
    )
});

/// Every registered lane.
pub(crate) const REGISTERED_LANES_SQL: &str = "SELECT lane_id FROM ff_lane";

/// One page of executions, newest first; every filter is optional (`NULL`: any).
pub(crate) static SEARCH_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT execution_id, partition_key, seq, namespace, lane_id, execution_kind, priority, \
                total_attempt_count, created_at_ms, last_mutation_at_ms, tags, {STATE_COLUMNS} \
         FROM ff_execution \
         WHERE ($1::text IS NULL OR lane_id = $1) AND ($2::text IS NULL OR execution_kind = $2) \
           AND ($3::text IS NULL OR namespace = $3) \
           AND ($4::text IS NULL OR tags ? $4) AND ($5::text IS NULL OR tags ->> $4 = $5) \
           AND ($6::bigint IS NULL OR seq < $6) AND ($8::uuid IS NULL OR flow_id = $8) \
           AND ($9::text IS NULL OR {PUBLIC_STATE_SQL} = $9) \
         ORDER BY seq DESC LIMIT $7"
    )
});

/// An execution's attempts, oldest first.
pub(crate) const ATTEMPTS_SQL: &str = "SELECT attempt_index, attempt_type::text AS attempt_type, state::text AS state, \
        lease_id, lease_epoch, worker_id, worker_instance_id, started_at_ms, ended_at_ms, failure_class, \
        failure_message, frame_count \
     FROM ff_attempt WHERE execution_id = $1 ORDER BY attempt_index";

/// The most recent `$2` events of an execution, oldest first.
pub(crate) const EVENTS_SQL: &str = "SELECT * FROM (\
        SELECT kind::text AS kind, attempt_index, lease_epoch, worker_instance_id, occurred_at_ms, tx_id, event_id \
        FROM ff_event WHERE execution_id = $1 ORDER BY tx_id DESC, event_id DESC LIMIT $2) e \
     ORDER BY tx_id, event_id";

impl PostgresBackend {
    /// Every lane that has executions or is registered, in name order, with its counts by
    /// public state, its successful completions in the last minute and its oldest wait.
    pub async fn lane_overview(&self) -> Result<Vec<LaneOverview>, EngineError> {
        let rows = sqlx::query(&OVERVIEW_SQL).fetch_all(&self.pool).await.map_err(map_sqlx)?;
        let mut lanes: BTreeMap<String, LaneOverview> = BTreeMap::new();
        for row in &rows {
            let lane: String = col(row, "lane_id")?;
            let state = derive_public_state(&state_vector(row)?);
            let n: i64 = col(row, "n")?;
            let oldest: Option<i64> = col(row, "oldest")?;
            let completed: i64 = col(row, "completed_last_minute")?;
            let entry = lanes.entry(lane.clone()).or_insert_with(|| empty_lane(lane));
            *entry.counts.entry(state.as_str().to_owned()).or_default() += n as u64;
            entry.completed_last_minute += completed as u64;
            if let Some(t) = oldest {
                entry.oldest_waiting_since =
                    Some(entry.oldest_waiting_since.map_or(TimestampMs(t), |o| TimestampMs(o.0.min(t))));
            }
        }
        let registered: Vec<String> =
            sqlx::query_scalar(REGISTERED_LANES_SQL).fetch_all(&self.pool).await.map_err(map_sqlx)?;
        for lane in registered {
            lanes.entry(lane.clone()).or_insert_with(|| empty_lane(lane));
        }
        Ok(lanes.into_values().collect())
    }

    /// Executions matching `search`, newest first, one page.
    pub async fn search_executions(&self, search: &ExecutionSearch) -> Result<ExecutionSearchPage, EngineError> {
        if search.limit == 0 || search.limit > MAX_SEARCH_PAGE {
            return Err(EngineError::validation(
                ValidationKind::InvalidInput,
                format!("page size {} outside 1..={MAX_SEARCH_PAGE}", search.limit),
            ));
        }
        let (tag_key, tag_value) = match &search.tag {
            Some((k, v)) => (Some(k.as_str()), v.as_deref()),
            None => (None, None),
        };
        let rows = sqlx::query(&SEARCH_SQL)
            .bind(search.lane_id.as_deref())
            .bind(search.kind.as_deref())
            .bind(search.namespace.as_deref())
            .bind(tag_key)
            .bind(tag_value)
            .bind(search.before.map(|c| c.seq))
            .bind(search.limit as i64 + 1)
            .bind(search.flow_id)
            .bind(search.state.as_ref().map(PublicState::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let more = rows.len() > search.limit;
        let mut out = Vec::with_capacity(search.limit);
        let mut last_seq = None;
        for row in rows.iter().take(search.limit) {
            last_seq = Some(col::<i64>(row, "seq")?);
            out.push(execution_row(row)?);
        }
        let next = if more { last_seq.map(|seq| SearchCursor { seq }) } else { None };
        Ok(ExecutionSearchPage { rows: out, next })
    }

    /// An execution's attempts, oldest first.
    pub async fn list_attempts(&self, id: &ExecutionId) -> Result<Vec<AttemptRow>, EngineError> {
        let rows = sqlx::query(ATTEMPTS_SQL).bind(id.uuid()).fetch_all(&self.pool).await.map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(AttemptRow {
                    attempt_index: col(row, "attempt_index")?,
                    attempt_type: col(row, "attempt_type")?,
                    state: col(row, "state")?,
                    lease_id: col(row, "lease_id")?,
                    lease_epoch: col(row, "lease_epoch")?,
                    worker_id: col(row, "worker_id")?,
                    worker_instance_id: col(row, "worker_instance_id")?,
                    started_at: TimestampMs(col(row, "started_at_ms")?),
                    ended_at: col::<Option<i64>>(row, "ended_at_ms")?.map(TimestampMs),
                    failure_class: col(row, "failure_class")?,
                    failure_message: col(row, "failure_message")?,
                    frame_count: col(row, "frame_count")?,
                })
            })
            .collect()
    }

    /// The most recent `limit` events of an execution's log, oldest first.
    pub async fn list_execution_events(&self, id: &ExecutionId, limit: usize) -> Result<Vec<EventRow>, EngineError> {
        let rows = sqlx::query(EVENTS_SQL)
            .bind(id.uuid())
            .bind(limit.min(MAX_SEARCH_PAGE) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    kind: col(row, "kind")?,
                    attempt_index: col(row, "attempt_index")?,
                    lease_epoch: col(row, "lease_epoch")?,
                    worker_instance_id: col(row, "worker_instance_id")?,
                    occurred_at: TimestampMs(col(row, "occurred_at_ms")?),
                })
            })
            .collect()
    }
}

fn empty_lane(lane_id: String) -> LaneOverview {
    LaneOverview { lane_id, counts: BTreeMap::new(), completed_last_minute: 0, oldest_waiting_since: None }
}

fn execution_row(row: &PgRow) -> Result<ExecutionRow, EngineError> {
    let partition: i16 = col(row, "partition_key")?;
    let tags: serde_json::Value = col(row, "tags")?;
    let tags = match tags {
        serde_json::Value::Object(map) => {
            map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
        }
        _ => BTreeMap::new(),
    };
    Ok(ExecutionRow {
        execution_id: ExecutionId::from_parts(partition as u16, col(row, "execution_id")?),
        namespace: col(row, "namespace")?,
        lane_id: col(row, "lane_id")?,
        execution_kind: col(row, "execution_kind")?,
        public_state: derive_public_state(&state_vector(row)?),
        priority: col(row, "priority")?,
        total_attempt_count: col(row, "total_attempt_count")?,
        created_at: TimestampMs(col(row, "created_at_ms")?),
        last_mutation_at: TimestampMs(col(row, "last_mutation_at_ms")?),
        tags,
    })
}
