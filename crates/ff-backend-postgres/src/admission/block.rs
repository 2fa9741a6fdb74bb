//! The scheduler's primitives: scanning eligible work, and blocking or unblocking one
//! execution. A block applies to an eligible execution only; an unblock names the reason the
//! caller expects, and the execution passes admission again (the budget gate and its quota
//! policy run in the same statement).

use crate::db::Db;
use ff_core::*;

use crate::error::map_sqlx;
use crate::row::col;

/// Eligible, unreserved executions of lane `$1` (partition `$2` when given), in claim order.
pub(crate) const SCAN_ELIGIBLE_SQL: &str = "SELECT x.partition_key, x.execution_id FROM ff_execution x \
     WHERE x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now' AND x.lane_id = $1 \
       AND ($2::smallint IS NULL OR x.partition_key = $2) \
       AND (x.grant_expires_at_ms IS NULL OR x.grant_expires_at_ms <= ff_now_ms()) \
       AND (x.budget_ids IS NULL \
            OR NOT EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = ANY (x.budget_ids) AND b.exhausted)) \
     ORDER BY -x.priority, x.eligible_at_ms, x.seq LIMIT $3";

/// Blocks eligible execution `$1` of lane `$2` with eligibility `$3`, reason `$4`, detail `$5`.
pub(crate) const BLOCK_SQL: &str = "UPDATE ff_execution SET eligibility_state = $3::ff_eligibility_state, \
       blocking_reason = $4::ff_blocking_reason, blocking_detail = $5, admission_wait = NULL, \
       grant_expires_at_ms = NULL, last_mutation_at_ms = ff_now_ms() \
     WHERE execution_id = $1 AND lane_id = $2 AND lifecycle_phase = 'runnable' AND eligibility_state = 'eligible_now' \
     RETURNING 1";

/// Unblocks execution `$1` of lane `$2` if blocked with eligibility `$3` and reason `$4`.
pub(crate) const UNBLOCK_SQL: &str = "UPDATE ff_execution SET eligibility_state = 'eligible_now', \
       blocking_reason = 'waiting_for_worker', blocking_detail = NULL, last_mutation_at_ms = ff_now_ms() \
     WHERE execution_id = $1 AND lane_id = $2 AND lifecycle_phase = 'runnable' \
       AND eligibility_state = $3::ff_eligibility_state AND blocking_reason = $4::ff_blocking_reason \
     RETURNING 1";

/// An execution's lane and admission state.
pub(crate) const ADMISSION_STATE_SQL: &str = "SELECT lane_id, eligibility_state::text AS eligibility_state, \
       blocking_reason::text AS blocking_reason FROM ff_execution WHERE execution_id = $1";

/// Bumps the claim generation of lane `$1` and wakes its claimers.
pub(crate) const LANE_READY_SQL: &str =
    "SELECT ff_bump_claim_generation(ARRAY[$1::text]), pg_notify('ff_lane_ready', $1)";

/// `scan_eligible_executions`.
pub(crate) async fn scan(pool: &Db, args: &ScanEligibleArgs) -> Result<Vec<ExecutionId>, EngineError> {
    args.validate()?;
    let rows: Vec<(i16, uuid::Uuid)> = sqlx::query_as(SCAN_ELIGIBLE_SQL)
        .bind(args.lane_id.as_str())
        .bind(args.partition.map(|p| p as i16))
        .bind(i64::from(args.limit))
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(rows.into_iter().map(|(p, u)| ExecutionId::from_parts(p as u16, u)).collect())
}

async fn state(
    exec: impl sqlx::PgExecutor<'_>,
    id: &ExecutionId,
    lane: &LaneId,
) -> Result<(EligibilityState, BlockingReason), EngineError> {
    let Some(row) = sqlx::query(ADMISSION_STATE_SQL).bind(id.uuid()).fetch_optional(exec).await.map_err(map_sqlx)?
    else {
        return Err(EngineError::NotFound { entity: "execution" });
    };
    let actual: String = col(&row, "lane_id")?;
    if actual != lane.as_str() {
        return Err(EngineError::invalid(format!("execution {id} is on lane {actual:?}, not {:?}", lane.as_str())));
    }
    Ok((
        EligibilityState::parse(&col::<String>(&row, "eligibility_state")?)?,
        BlockingReason::parse(&col::<String>(&row, "blocking_reason")?)?,
    ))
}

/// Blocks an eligible execution for `block`.
pub(crate) async fn block(
    pool: &Db,
    id: &ExecutionId,
    lane: &LaneId,
    block: AdmissionBlock,
    detail: Option<&str>,
) -> Result<BlockOutcome, EngineError> {
    let done = sqlx::query(BLOCK_SQL)
        .bind(id.uuid())
        .bind(lane.as_str())
        .bind(block.eligibility().as_str())
        .bind(block.blocking_reason().as_str())
        .bind(detail)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    if done.is_some() {
        return Ok(BlockOutcome::Blocked { execution_id: *id, reason: block.blocking_reason() });
    }
    let (eligibility, _) = state(pool, id, lane).await?;
    Ok(BlockOutcome::NotEligible { execution_id: *id, eligibility })
}

/// `unblock_execution`.
pub(crate) async fn unblock(pool: &Db, args: &UnblockExecutionArgs) -> Result<UnblockOutcome, EngineError> {
    let block = args.validate()?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let done = sqlx::query(UNBLOCK_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.lane_id.as_str())
        .bind(block.eligibility().as_str())
        .bind(block.blocking_reason().as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let (eligibility, blocking_reason) = state(&mut *tx, &args.execution_id, &args.lane_id).await?;
    if done.is_none() {
        return Err(tx.abandon(EngineError::State(StateKind::NotBlocked)).await);
    }
    if eligibility == EligibilityState::EligibleNow {
        sqlx::query(LANE_READY_SQL).bind(args.lane_id.as_str()).execute(&mut *tx).await.map_err(map_sqlx)?;
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(UnblockOutcome { execution_id: args.execution_id, eligibility, blocking_reason })
}
