//! Resuming and reading suspensions: an operator's resume, the timeout hook, the signals a
//! resumed attempt reads, and the listing of suspended executions.

use crate::db::Db;
use ff_core::*;
use uuid::Uuid;

use super::signal::RESUME_SUSPENDED_SQL;
use crate::error::map_sqlx;
use crate::row::col;

/// Locks execution `$1` (partition `$2`) and reads its phase.
pub(crate) const RESUME_LOCK_SQL: &str = "SELECT lifecycle_phase::text FROM ff_execution \
     WHERE execution_id = $1 AND partition_key = $2 FOR UPDATE";

/// Applies the due suspension timeout of execution `$2` (partition `$3`), or of up to `$1`.
pub(crate) const EXPIRE_SUSPENSIONS_SQL: &str = "SELECT ff_expire_suspensions($1, $2, $3)";

/// The signals of attempt `$2` of execution `$1`: those of its latest suspension, and those
/// buffered on its pending waitpoints.
pub(crate) const OBSERVE_SQL: &str = "SELECT s.signal_id, s.waitpoint_id, s.waitpoint_key, s.signal_name, \
     s.signal_category, s.source_type, s.source_identity, s.correlation_id, s.accepted_at_ms, s.payload, \
     s.payload_encoding FROM ff_signal s \
     WHERE s.execution_id = $1 AND (s.suspension_id = (SELECT su.suspension_id FROM ff_suspension su \
                                                      WHERE su.execution_id = $1 AND su.attempt_index = $2) \
       OR (s.suspension_id IS NULL AND s.waitpoint_id IN (SELECT w.waitpoint_id FROM ff_waitpoint w \
                                                          WHERE w.execution_id = $1 AND w.attempt_index = $2))) \
     ORDER BY s.seq";

/// The current attempt of execution `$1` (partition `$2`).
pub(crate) const CURRENT_ATTEMPT_SQL: &str =
    "SELECT current_attempt_index FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

/// Open suspensions of partition `$1` (all when NULL) after execution `$2`'s, at most `$3`.
pub(crate) const LIST_SUSPENDED_SQL: &str = "SELECT s.execution_id, s.partition_key, s.suspended_at_ms, \
     s.reason_code, s.timeout_at_ms FROM ff_suspension s \
     WHERE s.open AND ($1::smallint IS NULL OR s.partition_key = $1) \
       AND ($2::uuid IS NULL OR (s.suspended_at_ms, s.execution_id) > \
            (SELECT c.suspended_at_ms, c.execution_id FROM ff_suspension c WHERE c.execution_id = $2)) \
     ORDER BY s.suspended_at_ms, s.execution_id LIMIT $3";

/// `resume_execution`.
pub(crate) async fn resume(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &ResumeExecutionArgs,
) -> Result<ResumeExecutionResult, EngineError> {
    args.validate()?;
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let phase: Option<String> = sqlx::query_scalar(RESUME_LOCK_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.execution_id.partition_index() as i16)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let refusal = match phase.as_deref() {
        None => Some(EngineError::NotFound { entity: "execution" }),
        Some("terminal") => Some(EngineError::State(StateKind::Terminal)),
        Some("suspended") => None,
        Some(_) => Some(EngineError::State(StateKind::ExecutionNotSuspended)),
    };
    if let Some(refusal) = refusal {
        return Err(tx.abandon(refusal).await);
    }
    let state: Option<String> = sqlx::query_scalar(RESUME_SUSPENDED_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.resume_delay_ms as i64)
        .bind(args.trigger_type.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    let public_state = match state.as_deref() {
        Some("delayed") => PublicState::Delayed,
        Some(_) => PublicState::Waiting,
        None => return Err(EngineError::State(StateKind::ExecutionNotSuspended)),
    };
    Ok(ResumeExecutionResult::Resumed { public_state })
}

/// `expire_suspension`.
pub(crate) async fn expire(pool: &Db, partition: Partition, id: &ExecutionId) -> Result<(), EngineError> {
    let _: i32 = sqlx::query_scalar(EXPIRE_SUSPENSIONS_SQL)
        .bind(1_i32)
        .bind(id.uuid())
        .bind(partition.index as i16)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(())
}

/// `observe_signals` for the attempt `p` names (it need not hold a lease: a suspended or a
/// resumed handle reads the same signals), which must be the execution's current attempt.
pub(crate) async fn observe(pool: &Db, p: &HandlePayload) -> Result<Vec<ResumeSignal>, EngineError> {
    let current: Option<i32> = sqlx::query_scalar(CURRENT_ATTEMPT_SQL)
        .bind(p.execution_id.uuid())
        .bind(p.execution_id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    match current {
        None => return Err(EngineError::NotFound { entity: "execution" }),
        Some(i) if i != p.attempt_index.0 as i32 => return Err(EngineError::State(StateKind::StaleLease)),
        Some(_) => {}
    }
    let rows = sqlx::query(OBSERVE_SQL)
        .bind(p.execution_id.uuid())
        .bind(p.attempt_index.0 as i32)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|r| {
            Ok(ResumeSignal {
                signal_id: SignalId(col(r, "signal_id")?),
                waitpoint_id: WaitpointId(col(r, "waitpoint_id")?),
                waitpoint_key: col(r, "waitpoint_key")?,
                signal_name: col(r, "signal_name")?,
                signal_category: col(r, "signal_category")?,
                source_type: col(r, "source_type")?,
                source_identity: col(r, "source_identity")?,
                correlation_id: col(r, "correlation_id")?,
                accepted_at: TimestampMs(col(r, "accepted_at_ms")?),
                payload: col(r, "payload")?,
                payload_encoding: col(r, "payload_encoding")?,
            })
        })
        .collect()
}

/// `list_suspended`.
pub(crate) async fn list(
    pool: &Db,
    cfg: &PartitionConfig,
    partition: Option<u16>,
    cursor: Option<ExecutionId>,
    limit: usize,
) -> Result<ListSuspendedPage, EngineError> {
    if let Some(p) = partition {
        cfg.check_execution_partition(p)?;
    }
    if limit == 0 || limit > 1000 {
        return Err(EngineError::invalid(format!("limit {limit} outside 1..=1000")));
    }
    let rows = sqlx::query(LIST_SUSPENDED_SQL)
        .bind(partition.map(|p| p as i16))
        .bind(cursor.map(|c| c.uuid()))
        .bind(limit as i64 + 1)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    let more = rows.len() > limit;
    let entries = rows
        .iter()
        .take(limit)
        .map(|r| {
            let partition: i16 = col(r, "partition_key")?;
            Ok(SuspendedExecutionEntry {
                execution_id: ExecutionId::from_parts(partition.max(0) as u16, col::<Uuid>(r, "execution_id")?),
                suspended_at: TimestampMs(col(r, "suspended_at_ms")?),
                reason: SuspensionReasonCode::parse(&col::<String>(r, "reason_code")?)?,
                timeout_at: col::<Option<i64>>(r, "timeout_at_ms")?.map(TimestampMs),
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let next_cursor = if more { entries.last().map(|e| e.execution_id) } else { None };
    Ok(ListSuspendedPage { entries, next_cursor })
}
