//! Reading flows: headers, member counts (the derived flow state), edge groups, edges; the
//! summary projection; flow tags.

use std::collections::{BTreeMap, HashMap};

use crate::db::Db;
use ff_core::*;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::{col, state_vector};

/// One flow's header: `$1` flow.
pub(crate) const FLOW_SQL: &str = "SELECT flow_id, namespace, flow_kind, graph_revision, node_count, edge_count, tags, \
     cancelled_at_ms, cancel_reason, cancellation_policy, created_at_ms, last_mutation_at_ms FROM ff_flow WHERE flow_id = $1";

/// Flows after `$1` (NULL: from the start), of partition `$2` and namespace `$3` when given, at
/// most `$4`.
pub(crate) const LIST_FLOWS_SQL: &str = "SELECT flow_id, namespace, flow_kind, graph_revision, node_count, edge_count, \
     tags, cancelled_at_ms, cancel_reason, cancellation_policy, created_at_ms, last_mutation_at_ms FROM ff_flow \
     WHERE ($1::uuid IS NULL OR flow_id > $1) AND ($2::smallint IS NULL OR partition_key = $2) \
     AND ($3::text IS NULL OR namespace = $3) ORDER BY flow_id LIMIT $4";

/// Members of flows `$1`, grouped by state vector: how many, how many ever started, how many
/// are sinks (nothing depends on them).
pub(crate) const MEMBERS_SQL: &str = "SELECT x.flow_id, x.lifecycle_phase::text AS lifecycle_phase, \
     x.ownership_state::text AS ownership_state, x.eligibility_state::text AS eligibility_state, \
     x.blocking_reason::text AS blocking_reason, x.terminal_outcome::text AS terminal_outcome, \
     x.attempt_state::text AS attempt_state, count(*) AS n, \
     count(*) FILTER (WHERE x.total_attempt_count > 0) AS started, \
     count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM ff_edge e WHERE e.upstream_id = x.execution_id)) AS sinks \
     FROM ff_execution x WHERE x.flow_id = ANY($1) \
     GROUP BY x.flow_id, x.lifecycle_phase, x.ownership_state, x.eligibility_state, x.blocking_reason, \
              x.terminal_outcome, x.attempt_state";

/// Edges of flow `$1`: those leaving member `$2`, entering member `$3`, or edge `$4` (each filter
/// applies when given).
pub(crate) const EDGES_SQL: &str = "SELECT e.flow_id, e.edge_id, e.upstream_id, e.downstream_id, \
     e.data_passing_ref, e.created_by, e.created_at_ms, e.applied_at_ms, e.resolution::text AS resolution, \
     e.resolved_at_ms, xu.partition_key AS up_partition, xd.partition_key AS down_partition FROM ff_edge e \
     LEFT JOIN ff_execution xu ON xu.execution_id = e.upstream_id \
     LEFT JOIN ff_execution xd ON xd.execution_id = e.downstream_id \
     WHERE e.flow_id = $1 AND ($2::uuid IS NULL OR e.upstream_id = $2) AND ($3::uuid IS NULL OR e.downstream_id = $3) \
       AND ($4::uuid IS NULL OR e.edge_id = $4) ORDER BY e.edge_id";

pub(crate) const GROUPS_SQL: &str = "SELECT downstream_id, policy_kind, k, on_satisfied, total, success_count, \
     failed_count, skipped_count, group_state FROM ff_edge_group WHERE flow_id = $1 ORDER BY downstream_id";

pub(crate) const FLOW_OF_SQL: &str = "SELECT flow_id FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

pub(crate) const SUMMARY_SQL: &str = "UPDATE ff_flow SET summary = $2, summary_at_ms = ff_now_ms() WHERE flow_id = $1";

pub(crate) const SET_FLOW_TAG_SQL: &str = "UPDATE ff_flow SET tags = jsonb_set(tags, ARRAY[$2], to_jsonb($3::text)), \
     last_mutation_at_ms = ff_now_ms() \
     WHERE flow_id = $1 AND (tags ? $2 OR (SELECT count(*) FROM jsonb_object_keys(tags)) < $4)";

pub(crate) const GET_FLOW_TAG_SQL: &str = "SELECT tags ->> $2 FROM ff_flow WHERE flow_id = $1";

pub(crate) const FLOW_EXISTS_SQL: &str = "SELECT 1 FROM ff_flow WHERE flow_id = $1";

fn ts(v: i64) -> TimestampMs {
    TimestampMs(v)
}

fn count(row: &PgRow, name: &str) -> Result<u32, EngineError> {
    Ok(col::<i32>(row, name)?.max(0) as u32)
}

/// Member counts of each flow in `flows`.
async fn member_counts(pool: &Db, flows: &[Uuid]) -> Result<HashMap<Uuid, FlowMemberCounts>, EngineError> {
    let rows = sqlx::query(MEMBERS_SQL).bind(flows).fetch_all(pool).await.map_err(map_sqlx)?;
    let mut out: HashMap<Uuid, FlowMemberCounts> = HashMap::new();
    for row in &rows {
        let flow: Uuid = col(row, "flow_id")?;
        let state = derive_public_state(&state_vector(row)?);
        let n = col::<i64>(row, "n")?.max(0) as u32;
        let c = out.entry(flow).or_default();
        for _ in 0..n {
            c.count(state);
        }
        c.started += col::<i64>(row, "started")?.max(0) as u32;
        let sinks = col::<i64>(row, "sinks")?.max(0) as u32;
        c.sinks += sinks;
        if state == PublicState::Completed {
            c.sinks_succeeded += sinks;
        }
    }
    Ok(out)
}

struct Header {
    flow_id: FlowId,
    namespace: Namespace,
    flow_kind: String,
    graph_revision: u64,
    node_count: u32,
    edge_count: u32,
    tags: BTreeMap<String, String>,
    cancelled_at: Option<TimestampMs>,
    cancel_reason: Option<String>,
    cancellation_policy: Option<CancelFlowPolicy>,
    created_at: TimestampMs,
    last_mutation_at: TimestampMs,
}

fn header(row: &PgRow) -> Result<Header, EngineError> {
    let tags: serde_json::Value = col(row, "tags")?;
    let tags = serde_json::from_value(tags)
        .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("flow tags: {e}")))?;
    Ok(Header {
        flow_id: FlowId(col(row, "flow_id")?),
        namespace: Namespace(col(row, "namespace")?),
        flow_kind: col(row, "flow_kind")?,
        graph_revision: col::<i64>(row, "graph_revision")?.max(0) as u64,
        node_count: count(row, "node_count")?,
        edge_count: count(row, "edge_count")?,
        tags,
        cancelled_at: col::<Option<i64>>(row, "cancelled_at_ms")?.map(ts),
        cancel_reason: col(row, "cancel_reason")?,
        cancellation_policy: col::<Option<String>>(row, "cancellation_policy")?
            .as_deref()
            .map(CancelFlowPolicy::parse)
            .transpose()?,
        created_at: ts(col(row, "created_at_ms")?),
        last_mutation_at: ts(col(row, "last_mutation_at_ms")?),
    })
}

fn group(row: &PgRow, partition: u16) -> Result<EdgeGroupSnapshot, EngineError> {
    let counts = EdgeGroupCounts {
        total: count(row, "total")?,
        success: count(row, "success_count")?,
        failed: count(row, "failed_count")?,
        skipped: count(row, "skipped_count")?,
    };
    Ok(EdgeGroupSnapshot {
        downstream_execution_id: ExecutionId::from_parts(partition, col(row, "downstream_id")?),
        policy: EdgeDependencyPolicy::from_parts(
            &col::<String>(row, "policy_kind")?,
            col(row, "k")?,
            &col::<String>(row, "on_satisfied")?,
        )?,
        total_deps: counts.total,
        satisfied_count: counts.success,
        failed_count: counts.failed,
        skipped_count: counts.skipped,
        running_count: counts.running(),
        group_state: EdgeGroupState::parse(&col::<String>(row, "group_state")?)?,
    })
}

/// `describe_flow`.
pub(crate) async fn describe(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &FlowId,
) -> Result<Option<FlowSnapshot>, EngineError> {
    let Some(row) = sqlx::query(FLOW_SQL).bind(id.0).fetch_optional(pool).await.map_err(map_sqlx)? else {
        return Ok(None);
    };
    let h = header(&row)?;
    let members = member_counts(pool, &[id.0]).await?.remove(&id.0).unwrap_or_default();
    let partition = id.partition(cfg);
    let groups = sqlx::query(GROUPS_SQL).bind(id.0).fetch_all(pool).await.map_err(map_sqlx)?;
    let edge_groups = groups.iter().map(|r| group(r, partition)).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(FlowSnapshot {
        flow_id: h.flow_id,
        flow_kind: h.flow_kind,
        namespace: h.namespace,
        public_flow_state: FlowState::derive(h.cancelled_at.is_some(), &members),
        graph_revision: h.graph_revision,
        node_count: h.node_count,
        edge_count: h.edge_count,
        members,
        created_at: h.created_at,
        last_mutation_at: h.last_mutation_at,
        cancelled_at: h.cancelled_at,
        cancel_reason: h.cancel_reason,
        cancellation_policy: h.cancellation_policy,
        tags: h.tags,
        edge_groups,
    }))
}

/// `list_flows`.
pub(crate) async fn list(pool: &Db, cfg: &PartitionConfig, args: &ListFlowsArgs) -> Result<ListFlowsPage, EngineError> {
    let limit = args.validate()?;
    if let Some(p) = args.partition {
        cfg.check_execution_partition(p)?;
    }
    let rows = sqlx::query(LIST_FLOWS_SQL)
        .bind(args.cursor.map(|c| c.0))
        .bind(args.partition.map(|p| p as i16))
        .bind(args.namespace.as_ref().map(Namespace::as_str))
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let more = rows.len() > limit as usize;
    let headers = rows.iter().take(limit as usize).map(header).collect::<Result<Vec<_>, _>>()?;
    let ids: Vec<Uuid> = headers.iter().map(|h| h.flow_id.0).collect();
    let counts = member_counts(pool, &ids).await?;
    let flows: Vec<FlowSummary> = headers
        .into_iter()
        .map(|h| {
            let members = counts.get(&h.flow_id.0).copied().unwrap_or_default();
            FlowSummary {
                flow_id: h.flow_id,
                flow_kind: h.flow_kind,
                namespace: h.namespace,
                created_at: h.created_at,
                node_count: h.node_count,
                public_flow_state: FlowState::derive(h.cancelled_at.is_some(), &members),
            }
        })
        .collect();
    let next_cursor = if more { flows.last().map(|f| f.flow_id) } else { None };
    Ok(ListFlowsPage { flows, next_cursor })
}

fn edge(row: &PgRow) -> Result<EdgeSnapshot, EngineError> {
    let part = |name: &str| -> Result<u16, EngineError> {
        let p: Option<i16> = col(row, name)?;
        p.and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| EngineError::validation(ValidationKind::Corruption, format!("edge end {name} missing")))
    };
    Ok(EdgeSnapshot {
        edge_id: EdgeId(col(row, "edge_id")?),
        flow_id: FlowId(col(row, "flow_id")?),
        upstream_execution_id: ExecutionId::from_parts(part("up_partition")?, col(row, "upstream_id")?),
        downstream_execution_id: ExecutionId::from_parts(part("down_partition")?, col(row, "downstream_id")?),
        dependency_kind: DependencyKind::SuccessOnly,
        satisfaction_condition: "all_required".into(),
        data_passing_ref: col(row, "data_passing_ref")?,
        edge_state: if col::<Option<i64>>(row, "applied_at_ms")?.is_some() {
            EdgeState::Applied
        } else {
            EdgeState::Pending
        },
        resolution: col::<Option<String>>(row, "resolution")?.as_deref().map(EdgeResolution::parse).transpose()?,
        created_at: ts(col(row, "created_at_ms")?),
        created_by: col(row, "created_by")?,
        applied_at: col::<Option<i64>>(row, "applied_at_ms")?.map(ts),
        resolved_at: col::<Option<i64>>(row, "resolved_at_ms")?.map(ts),
    })
}

/// `list_edges`.
pub(crate) async fn list_edges(
    pool: &Db,
    flow_id: &FlowId,
    direction: EdgeDirection,
) -> Result<Vec<EdgeSnapshot>, EngineError> {
    let (from, to) = match direction {
        EdgeDirection::Outgoing { from_node } => (Some(from_node.uuid()), None),
        EdgeDirection::Incoming { to_node } => (None, Some(to_node.uuid())),
    };
    let rows = sqlx::query(EDGES_SQL)
        .bind(flow_id.0)
        .bind(from)
        .bind(to)
        .bind(None::<Uuid>)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter().map(edge).collect()
}

/// `describe_edge`.
pub(crate) async fn describe_edge(
    pool: &Db,
    flow_id: &FlowId,
    edge_id: &EdgeId,
) -> Result<Option<EdgeSnapshot>, EngineError> {
    let row = sqlx::query(EDGES_SQL)
        .bind(flow_id.0)
        .bind(None::<Uuid>)
        .bind(None::<Uuid>)
        .bind(edge_id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(edge).transpose()
}

/// `resolve_execution_flow_id`.
pub(crate) async fn flow_of(pool: &Db, cfg: &PartitionConfig, id: &ExecutionId) -> Result<Option<FlowId>, EngineError> {
    cfg.check_execution_partition(id.partition_index())?;
    let flow: Option<Option<Uuid>> = sqlx::query_scalar(FLOW_OF_SQL)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(flow.flatten().map(FlowId))
}

/// `project_flow_summary`.
pub(crate) async fn project_summary(pool: &Db, cfg: &PartitionConfig, id: &FlowId) -> Result<bool, EngineError> {
    let Some(snapshot) = describe(pool, cfg, id).await? else {
        return Ok(false);
    };
    if snapshot.members.total == 0 {
        return Ok(false);
    }
    let summary = serde_json::json!({
        "public_flow_state": snapshot.public_flow_state,
        "members": snapshot.members,
    });
    sqlx::query(SUMMARY_SQL).bind(id.0).bind(summary).execute(pool).await.map_err(map_sqlx)?;
    Ok(true)
}

/// `set_flow_tag`.
pub(crate) async fn set_tag(pool: &Db, id: &FlowId, key: &str, value: &str) -> Result<(), EngineError> {
    ff_core::tag::validate_tag_key(key)?;
    ff_core::tag::validate_tag_value(key, value)?;
    let updated = sqlx::query(SET_FLOW_TAG_SQL)
        .bind(id.0)
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
    let exists: Option<i32> =
        sqlx::query_scalar(FLOW_EXISTS_SQL).bind(id.0).fetch_optional(pool).await.map_err(map_sqlx)?;
    match exists {
        None => Err(EngineError::NotFound { entity: "flow" }),
        Some(_) => Err(EngineError::invalid(format!("flow {id} already has {} tags", ff_core::tag::MAX_TAGS))),
    }
}

/// `get_flow_tag`.
pub(crate) async fn get_tag(pool: &Db, id: &FlowId, key: &str) -> Result<Option<String>, EngineError> {
    ff_core::tag::validate_tag_key(key)?;
    sqlx::query_scalar::<_, Option<String>>(GET_FLOW_TAG_SQL)
        .bind(id.0)
        .bind(key)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
        .map_err(map_sqlx)
}
