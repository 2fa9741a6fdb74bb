//! Resolution entry points: terminal transitions resolve their members' edges themselves (the
//! `ff_flow_member_ended` trigger calls `ff_resolve_edges` in their transaction); these are the
//! per-edge and per-execution entry points for repairs, the read-only eligibility check, and
//! `wait_children`, the lease holder's wait for its own upstreams.

use crate::db::Db;
use ff_core::*;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::{col, state_vector};

/// `$1` upstream ids. Returns (edges resolved, downstreams decided).
pub(crate) const RESOLVE_EDGES_SQL: &str = "SELECT resolved, decided FROM ff_resolve_edges($1)";

/// One edge and how its upstream stands: `$1` flow, `$2` edge.
pub(crate) const EDGE_STATUS_SQL: &str = "SELECT e.upstream_id, e.downstream_id, e.applied_at_ms, e.resolution::text AS resolution, \
            x.terminal_outcome::text AS upstream_outcome \
     FROM ff_edge e LEFT JOIN ff_execution x ON x.execution_id = e.upstream_id \
     WHERE e.flow_id = $1 AND e.edge_id = $2";

/// After resolving: the edge's resolution and its group's state. `$1` flow, `$2` edge.
pub(crate) const EDGE_OUTCOME_SQL: &str = "SELECT e.resolution::text, g.group_state FROM ff_edge e \
     JOIN ff_edge_group g ON g.downstream_id = e.downstream_id WHERE e.flow_id = $1 AND e.edge_id = $2";

/// An execution's state and its group's decision: `$1` execution.
pub(crate) const ELIGIBILITY_SQL: &str = "SELECT x.lifecycle_phase::text AS lifecycle_phase, \
     x.ownership_state::text AS ownership_state, x.eligibility_state::text AS eligibility_state, \
     x.blocking_reason::text AS blocking_reason, x.terminal_outcome::text AS terminal_outcome, \
     x.attempt_state::text AS attempt_state, \
     (SELECT g.group_state FROM ff_edge_group g WHERE g.downstream_id = x.execution_id) AS group_state \
     FROM ff_execution x WHERE x.execution_id = $1";

/// `$1` id, `$2` lease id, `$3` epoch, `$4` attempt index. Returns the group state acted on; no
/// row when the fence failed.
pub(crate) const WAIT_CHILDREN_SQL: &str = "SELECT group_state FROM ff_wait_children($1, $2, $3, $4)";

/// Resolves the unresolved applied edges of `upstreams` and the hops that follow.
pub(crate) async fn resolve_edges(pool: &Db, upstreams: &[Uuid]) -> Result<(u32, u32), EngineError> {
    let (resolved, decided): (i32, i32) =
        sqlx::query_as(RESOLVE_EDGES_SQL).bind(upstreams).fetch_one(pool).await.map_err(map_sqlx)?;
    Ok((resolved.max(0) as u32, decided.max(0) as u32))
}

/// `resolve_dependency`.
pub(crate) async fn resolve_dependency(
    pool: &Db,
    args: &ResolveDependencyArgs,
) -> Result<ResolveDependencyResult, EngineError> {
    let row = sqlx::query(EDGE_STATUS_SQL)
        .bind(args.flow_id.0)
        .bind(args.edge_id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?
        .ok_or(EngineError::NotFound { entity: "edge" })?;
    if col::<Option<String>>(&row, "resolution")?.is_some() {
        return Ok(ResolveDependencyResult::AlreadyResolved);
    }
    if col::<Option<i64>>(&row, "applied_at_ms")?.is_none() {
        return Err(EngineError::invalid("the edge is staged but not applied: apply it first"));
    }
    let outcome = match col::<Option<String>>(&row, "upstream_outcome")? {
        Some(o) => TerminalOutcome::parse(&o)?,
        None => return Err(EngineError::NotFound { entity: "execution" }),
    };
    if outcome == TerminalOutcome::None {
        return Err(EngineError::State(StateKind::ExecutionNotTerminal));
    }
    if let Some(claimed) = args.upstream_outcome
        && claimed != outcome
    {
        return Err(EngineError::invalid(format!("the upstream ended {}, not {}", outcome.as_str(), claimed.as_str())));
    }
    let upstream: Uuid = col(&row, "upstream_id")?;
    let (resolved, _) = resolve_edges(pool, &[upstream]).await?;
    if resolved == 0 {
        return Ok(ResolveDependencyResult::AlreadyResolved);
    }
    let (resolution, state): (Option<String>, String) = sqlx::query_as(EDGE_OUTCOME_SQL)
        .bind(args.flow_id.0)
        .bind(args.edge_id.0)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    let group_state = EdgeGroupState::parse(&state)?;
    match resolution.as_deref().map(EdgeResolution::parse).transpose()? {
        Some(EdgeResolution::Success) => Ok(ResolveDependencyResult::Satisfied { group_state }),
        Some(_) => Ok(ResolveDependencyResult::Impossible { group_state }),
        None => Err(EngineError::Internal("the edge stayed unresolved after resolution".into())),
    }
}

/// `cascade_completion`.
pub(crate) async fn cascade(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &CascadeCompletionArgs,
) -> Result<CascadeOutcome, EngineError> {
    let state =
        eligibility_row(pool, cfg, &args.execution_id).await?.ok_or(EngineError::NotFound { entity: "execution" })?.0;
    if state.lifecycle_phase != LifecyclePhase::Terminal {
        return Err(EngineError::State(StateKind::ExecutionNotTerminal));
    }
    let (resolved, decided) = resolve_edges(pool, &[args.execution_id.uuid()]).await?;
    Ok(CascadeOutcome { resolved, cascaded_children: decided, synchronous: true })
}

async fn eligibility_row(
    pool: &Db,
    cfg: &PartitionConfig,
    id: &ExecutionId,
) -> Result<Option<(StateVector, Option<EdgeGroupState>)>, EngineError> {
    cfg.check_execution_partition(id.partition_index())?;
    let Some(row) = sqlx::query(ELIGIBILITY_SQL).bind(id.uuid()).fetch_optional(pool).await.map_err(map_sqlx)? else {
        return Ok(None);
    };
    let group = col::<Option<String>>(&row, "group_state")?.as_deref().map(EdgeGroupState::parse).transpose()?;
    Ok(Some((state_vector(&row)?, group)))
}

/// `evaluate_flow_eligibility`.
pub(crate) async fn eligibility(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &EvaluateFlowEligibilityArgs,
) -> Result<EvaluateFlowEligibilityResult, EngineError> {
    let status = match eligibility_row(pool, cfg, &args.execution_id).await? {
        None => FlowEligibility::NotFound,
        Some((v, group)) => match v.lifecycle_phase {
            LifecyclePhase::Terminal => FlowEligibility::Terminal,
            LifecyclePhase::Active => FlowEligibility::Owned,
            LifecyclePhase::Runnable if v.eligibility_state == EligibilityState::BlockedByDependencies => {
                if group == Some(EdgeGroupState::Impossible) {
                    FlowEligibility::Impossible
                } else {
                    FlowEligibility::BlockedByDependencies
                }
            }
            LifecyclePhase::Runnable if v.eligibility_state == EligibilityState::EligibleNow => {
                FlowEligibility::Eligible
            }
            _ => FlowEligibility::NotRunnable,
        },
    };
    Ok(EvaluateFlowEligibilityResult::Status { status })
}

/// `wait_children`; `None` when the fence failed.
pub(crate) async fn wait_children(pool: &Db, p: &HandlePayload) -> Result<Option<EdgeGroupState>, EngineError> {
    let state: Option<String> = sqlx::query_scalar(WAIT_CHILDREN_SQL)
        .bind(p.execution_id.uuid())
        .bind(p.lease_id.0)
        .bind(p.lease_epoch.0 as i64)
        .bind(p.attempt_index.0 as i32)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    match state.as_deref() {
        None => Ok(None),
        Some("none") => Ok(Some(EdgeGroupState::Satisfied)),
        Some(s) => EdgeGroupState::parse(s).map(Some),
    }
}
