//! Reads, tags and listings.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use crate::db::Db;
use ff_core::{
    AttemptId, AttemptIndex, AttemptSummary, EngineError, ExecutionContext, ExecutionId, ExecutionInfo,
    ExecutionSnapshot, LaneId, LeaseEpoch, LeaseId, LeaseSummary, ListExecutionsPage, ListLanesPage, MAX_LIST_LIMIT,
    Namespace, OwnershipState, Partition, PartitionConfig, PartitionFamily, PartitionKey, PublicState, TimestampMs,
    TraceContext, ValidationKind, WorkerInstanceId,
};
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::fence::{check_id, check_partition};
use crate::row::{STATE_COLUMNS, col, non_negative, state_vector, u32_col};

/// Sets a tag and logs it (for followers of instance tags), in one statement.
pub(crate) const SET_TAG_SQL: &str = "WITH t AS (UPDATE ff_execution SET tags = jsonb_set(tags, ARRAY[$3], to_jsonb($4::text)) \
         WHERE execution_id = $1 AND partition_key = $2 \
           AND (tags ? $3 OR (SELECT count(*) FROM jsonb_object_keys(tags)) < $5) \
         RETURNING execution_id, partition_key, namespace, lane_id) \
     INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, detail) \
     SELECT 'tag_attached', execution_id, partition_key, namespace, lane_id, jsonb_build_object('key', $3::text, 'value', $4::text) FROM t";

/// Removes a tag and logs it, in one statement.
pub(crate) const CLEAR_TAG_SQL: &str = "WITH t AS (UPDATE ff_execution SET tags = tags - $3::text \
         WHERE execution_id = $1 AND partition_key = $2 AND tags ? $3 \
         RETURNING execution_id, partition_key, namespace, lane_id) \
     INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, detail) \
     SELECT 'tag_cleared', execution_id, partition_key, namespace, lane_id, jsonb_build_object('key', $3::text) FROM t";

pub(crate) const GET_TAG_SQL: &str =
    "SELECT tags ->> $3 FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

pub(crate) const LIST_EXECUTIONS_SQL: &str = "SELECT execution_id FROM ff_execution WHERE partition_key = $1 AND ($2::uuid IS NULL OR execution_id > $2) \
         ORDER BY execution_id LIMIT $3";

pub(crate) const LIST_LANES_SQL: &str = "SELECT lane_id FROM ff_lane WHERE ($1::text IS NULL OR lane_id COLLATE \"C\" > $1) ORDER BY lane_id COLLATE \"C\" LIMIT $2";

/// Reads `columns` of one execution row: the one runtime-built statement of the crate. Its
/// column lists are constants, except `read_exec_core_fields`'s (a subset of [`CORE_FIELDS`]).
pub(crate) fn by_id_sql(columns: &str) -> String {
    format!("SELECT {columns} FROM ff_execution WHERE execution_id = $1 AND partition_key = $2")
}

async fn fetch(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
    columns: &str,
) -> Result<Option<PgRow>, EngineError> {
    check_id(id, cfg)?;
    sqlx::query(&by_id_sql(columns))
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)
}

pub(crate) fn tags(row: &PgRow) -> Result<BTreeMap<String, String>, EngineError> {
    serde_json::from_value(col::<serde_json::Value>(row, "tags")?)
        .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("stored tags: {e}")))
}

/// Decodes the `trace_context` column of a row (NULL: none was given).
pub(crate) fn trace_context(row: &PgRow) -> Result<Option<TraceContext>, EngineError> {
    col::<Option<serde_json::Value>>(row, "trace_context")?
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("stored trace context: {e}")))
}

/// Columns `describe_execution` reads.
pub(crate) static DESCRIBE_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{STATE_COLUMNS}, flow_id, lane_id, namespace, blocking_detail, attempt_id, current_attempt_index, \
         total_attempt_count, lease_reclaim_count, retry_count, replay_count, lease_id, lease_epoch, worker_instance_id, \
         lease_expires_at_ms, last_heartbeat_at_ms, created_at_ms, last_mutation_at_ms, progress_pct, progress_message, tags"
    )
});

/// Columns `read_execution_info` reads.
pub(crate) static INFO_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{STATE_COLUMNS}, namespace, lane_id, priority, execution_kind, created_at_ms, started_at_ms, completed_at_ms, \
         current_attempt_index, flow_id, blocking_detail, eligible_at_ms, deadline_at_ms, required_capabilities"
    )
});

/// Columns `read_execution_context` reads.
pub(crate) const CONTEXT_COLUMNS: &str = "input_payload, execution_kind, tags, trace_context";

/// `describe_execution`.
pub(crate) async fn describe(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<Option<ExecutionSnapshot>, EngineError> {
    let Some(row) = fetch(pool, cfg, id, &DESCRIBE_COLUMNS).await? else { return Ok(None) };
    let state = state_vector(&row)?;
    let attempt_id: Option<Uuid> = col(&row, "attempt_id")?;
    let attempt_index = AttemptIndex(u32_col(&row, "current_attempt_index")?);
    let current_lease = if state.ownership_state == OwnershipState::Leased {
        Some(LeaseSummary {
            lease_id: LeaseId(col::<Option<Uuid>>(&row, "lease_id")?.unwrap_or_default()),
            lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(&row, "lease_epoch")?)?),
            worker_instance_id: WorkerInstanceId(
                col::<Option<String>>(&row, "worker_instance_id")?.unwrap_or_default(),
            ),
            expires_at: TimestampMs(col::<Option<i64>>(&row, "lease_expires_at_ms")?.unwrap_or_default()),
            attempt_index,
            last_heartbeat_at: col::<Option<i64>>(&row, "last_heartbeat_at_ms")?.map(TimestampMs),
        })
    } else {
        None
    };
    Ok(Some(ExecutionSnapshot {
        execution_id: *id,
        flow_id: col::<Option<Uuid>>(&row, "flow_id")?.map(ff_core::FlowId),
        lane_id: LaneId::try_new(col::<String>(&row, "lane_id")?)?,
        namespace: Namespace(col(&row, "namespace")?),
        public_state: state.public_state(),
        state,
        blocking_reason: Some(state.blocking_reason.as_str().to_owned()),
        blocking_detail: col(&row, "blocking_detail")?,
        current_attempt: attempt_id.map(|a| AttemptSummary { attempt_id: AttemptId(a), attempt_index }),
        current_lease,
        created_at: TimestampMs(col(&row, "created_at_ms")?),
        last_mutation_at: TimestampMs(col(&row, "last_mutation_at_ms")?),
        total_attempt_count: u32_col(&row, "total_attempt_count")?,
        lease_reclaim_count: u32_col(&row, "lease_reclaim_count")?,
        retry_count: u32_col(&row, "retry_count")?,
        replay_count: u32_col(&row, "replay_count")?,
        progress_pct: col::<Option<i16>>(&row, "progress_pct")?.map(|p| p as u8),
        progress_message: col(&row, "progress_message")?,
        tags: tags(&row)?,
    }))
}

/// `read_execution_info`.
pub(crate) async fn info(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<Option<ExecutionInfo>, EngineError> {
    let Some(row) = fetch(pool, cfg, id, &INFO_COLUMNS).await? else { return Ok(None) };
    let state = state_vector(&row)?;
    let delayed = state.public_state() == PublicState::Delayed;
    Ok(Some(ExecutionInfo {
        execution_id: *id,
        namespace: Namespace(col(&row, "namespace")?),
        lane_id: LaneId::try_new(col::<String>(&row, "lane_id")?)?,
        priority: col(&row, "priority")?,
        execution_kind: col(&row, "execution_kind")?,
        state_vector: state,
        public_state: state.public_state(),
        created_at: TimestampMs(col(&row, "created_at_ms")?),
        started_at: col::<Option<i64>>(&row, "started_at_ms")?.map(TimestampMs),
        completed_at: col::<Option<i64>>(&row, "completed_at_ms")?.map(TimestampMs),
        current_attempt_index: AttemptIndex(u32_col(&row, "current_attempt_index")?),
        flow_id: col::<Option<Uuid>>(&row, "flow_id")?.map(ff_core::FlowId),
        blocking_detail: col(&row, "blocking_detail")?,
        delay_until: if delayed { Some(TimestampMs(col(&row, "eligible_at_ms")?)) } else { None },
        execution_deadline_at: col::<Option<i64>>(&row, "deadline_at_ms")?.map(TimestampMs),
        required_capabilities: col(&row, "required_capabilities")?,
    }))
}

/// `read_execution_state`.
pub(crate) async fn state(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<Option<PublicState>, EngineError> {
    let Some(row) = fetch(pool, cfg, id, STATE_COLUMNS).await? else { return Ok(None) };
    Ok(Some(state_vector(&row)?.public_state()))
}

/// `read_execution_context`.
pub(crate) async fn context(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<ExecutionContext, EngineError> {
    let row = fetch(pool, cfg, id, CONTEXT_COLUMNS).await?.ok_or(EngineError::NotFound { entity: "execution" })?;
    Ok(ExecutionContext {
        input_payload: col(&row, "input_payload")?,
        execution_kind: col(&row, "execution_kind")?,
        tags: tags(&row)?,
        trace_context: trace_context(&row)?,
    })
}

/// A single `integer` column, `NotFound` when absent.
pub(crate) async fn attempt_counter(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
    column: &str,
) -> Result<AttemptIndex, EngineError> {
    let row = fetch(pool, cfg, id, column).await?.ok_or(EngineError::NotFound { entity: "execution" })?;
    Ok(AttemptIndex(u32_col(&row, column)?))
}

/// `get_execution_result`.
pub(crate) async fn result(pool: &Db, cfg: &PartitionConfig, id: &ExecutionId) -> Result<Option<Vec<u8>>, EngineError> {
    let Some(row) = fetch(pool, cfg, id, "result").await? else { return Ok(None) };
    col(&row, "result")
}

/// `get_execution_namespace`.
pub(crate) async fn namespace(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<Option<String>, EngineError> {
    let Some(row) = fetch(pool, cfg, id, "namespace").await? else { return Ok(None) };
    col(&row, "namespace")
}

/// Columns `read_exec_core_fields` may project, each rendered as text.
pub(crate) const CORE_FIELDS: &[&str] = &[
    "lane_id",
    "namespace",
    "execution_kind",
    "priority",
    "lifecycle_phase",
    "ownership_state",
    "eligibility_state",
    "blocking_reason",
    "terminal_outcome",
    "attempt_state",
    "blocking_detail",
    "eligible_at_ms",
    "deadline_at_ms",
    "current_attempt_index",
    "total_attempt_count",
    "retry_count",
    "replay_count",
    "lease_reclaim_count",
    "lease_id",
    "lease_epoch",
    "lease_expires_at_ms",
    "worker_id",
    "worker_instance_id",
    "attempt_id",
    "attempt_deadline_at_ms",
    "cancel_source",
    "progress_pct",
    "progress_message",
    "created_at_ms",
    "started_at_ms",
    "completed_at_ms",
    "last_mutation_at_ms",
    "flow_id",
    "idempotency_key",
    "creator_identity",
    "payload_encoding",
    "max_retries",
    "max_reclaim_count",
    "attempt_timeout_ms",
];

/// `read_exec_core_fields`.
pub(crate) async fn core_fields(
    pool: &Db,
    cfg: &PartitionConfig,
    partition: Partition,
    id: &ExecutionId,
    fields: &[&str],
) -> Result<HashMap<String, Option<String>>, EngineError> {
    check_partition(partition, id, cfg)?;
    let known: Vec<&str> = fields.iter().copied().filter(|f| CORE_FIELDS.contains(f)).collect();
    let mut out: HashMap<String, Option<String>> = fields.iter().map(|f| ((*f).to_owned(), None)).collect();
    if known.is_empty() {
        return Ok(out);
    }
    let cols = known.iter().map(|f| format!("{f}::text AS {f}")).collect::<Vec<_>>().join(", ");
    let Some(row) = fetch(pool, cfg, id, &cols).await? else {
        return Err(EngineError::NotFound { entity: "execution" });
    };
    for f in known {
        out.insert(f.to_owned(), col(&row, f)?);
    }
    Ok(out)
}

/// `set_execution_tag`.
pub(crate) async fn set_tag(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
    key: &str,
    value: &str,
) -> Result<(), EngineError> {
    ff_core::tag::validate_tag_key(key)?;
    ff_core::tag::validate_tag_value(key, value)?;
    check_id(id, cfg)?;
    let updated = sqlx::query(SET_TAG_SQL)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(key)
        .bind(value)
        .bind(ff_core::tag::MAX_TAGS as i64)
        .execute(pool)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
    if updated == 1 {
        return Ok(());
    }
    match fetch(pool, cfg, id, "1 AS present").await? {
        None => Err(EngineError::NotFound { entity: "execution" }),
        Some(_) => Err(EngineError::invalid(format!("execution {id} already has {} tags", ff_core::tag::MAX_TAGS))),
    }
}

/// `clear_execution_tag`.
pub(crate) async fn clear_tag(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
    key: &str,
) -> Result<bool, EngineError> {
    ff_core::tag::validate_tag_key(key)?;
    check_id(id, cfg)?;
    let cleared = sqlx::query(CLEAR_TAG_SQL)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(key)
        .execute(pool)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
    if cleared == 1 {
        return Ok(true);
    }
    match fetch(pool, cfg, id, "1 AS present").await? {
        None => Err(EngineError::NotFound { entity: "execution" }),
        Some(_) => Ok(false),
    }
}

/// `get_execution_tag`.
pub(crate) async fn get_tag(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
    key: &str,
) -> Result<Option<String>, EngineError> {
    ff_core::tag::validate_tag_key(key)?;
    check_id(id, cfg)?;
    sqlx::query_scalar::<_, Option<String>>(GET_TAG_SQL)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
        .map_err(map_sqlx)
}

fn check_limit(limit: usize) -> Result<(), EngineError> {
    if limit > MAX_LIST_LIMIT {
        return Err(EngineError::invalid(format!("limit {limit} exceeds {MAX_LIST_LIMIT}")));
    }
    Ok(())
}

/// `list_executions`.
pub(crate) async fn list_executions(
    pool: &Db,
    cfg: &PartitionConfig,
    partition: &PartitionKey,
    cursor: Option<ExecutionId>,
    limit: usize,
) -> Result<ListExecutionsPage, EngineError> {
    check_limit(limit)?;
    let p = partition.parse()?;
    if !matches!(p.family, PartitionFamily::Execution | PartitionFamily::Flow) {
        return Err(EngineError::invalid(format!("{partition} is not an execution partition")));
    }
    cfg.check_execution_partition(p.index)?;
    if let Some(c) = &cursor
        && c.partition_index() != p.index
    {
        return Err(EngineError::invalid(format!("cursor {c} is not in partition {partition}")));
    }
    if limit == 0 {
        return Ok(ListExecutionsPage { executions: Vec::new(), next_cursor: None });
    }
    let ids: Vec<Uuid> = sqlx::query_scalar(LIST_EXECUTIONS_SQL)
        .bind(p.index as i16)
        .bind(cursor.map(|c| c.uuid()))
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let more = ids.len() > limit;
    let executions: Vec<ExecutionId> =
        ids.into_iter().take(limit).map(|u| ExecutionId::from_parts(p.index, u)).collect();
    let next_cursor = if more { executions.last().copied() } else { None };
    Ok(ListExecutionsPage { executions, next_cursor })
}

/// `list_lanes`.
pub(crate) async fn list_lanes(pool: &Db, cursor: Option<LaneId>, limit: usize) -> Result<ListLanesPage, EngineError> {
    check_limit(limit)?;
    if limit == 0 {
        return Ok(ListLanesPage { lanes: Vec::new(), next_cursor: None });
    }
    let names: Vec<String> = sqlx::query_scalar(LIST_LANES_SQL)
        .bind(cursor.as_ref().map(|c| c.as_str()))
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let more = names.len() > limit;
    let lanes = names.into_iter().take(limit).map(LaneId::try_new).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if more { lanes.last().cloned() } else { None };
    Ok(ListLanesPage { lanes, next_cursor })
}
