//! Delivering signals: one transaction that holds the execution row, verifies the token
//! against the waitpoint's binding, deduplicates, bounds, records the signal with its effect and,
//! when the signal satisfies the resume condition (evaluated by ff-core over the suspension's
//! signals), resumes the execution (`ff_resume_suspended`).

use ff_core::suspension::condition::{ConditionSignal, SignalRelevance};
use ff_core::suspension::token::{TokenBinding, WaitpointToken, verify};
use ff_core::*;
use sqlx::PgPool;
use uuid::Uuid;

use super::keystore;
use super::waitpoint::WAITPOINT_SQL;
use crate::error::map_sqlx;
use crate::row::col;

/// Locks execution `$1` (partition `$2`) for a delivery.
pub(crate) const DELIVER_LOCK_SQL: &str = "SELECT namespace, lane_id, lifecycle_phase::text AS lifecycle_phase, \
     signal_count, ff_now_ms() AS now_ms FROM ff_execution WHERE execution_id = $1 AND partition_key = $2 FOR UPDATE";

/// The first signal with idempotency key `$2` on execution `$1` still within its dedup TTL.
pub(crate) const SIGNAL_DEDUP_SQL: &str = "SELECT signal_id FROM ff_signal WHERE execution_id = $1 \
     AND idempotency_key = $2 AND dedup_until_ms > ff_now_ms() ORDER BY seq LIMIT 1";

/// The open suspension of execution `$1`.
pub(crate) const OPEN_SUSPENSION_SQL: &str =
    "SELECT suspension_id, condition, resume_delay_ms FROM ff_suspension WHERE execution_id = $1 AND open";

/// The signals recorded under suspension `$1`.
pub(crate) const SUSPENSION_SIGNALS_SQL: &str = "SELECT signal_id, waitpoint_key, signal_name, source_type, \
     source_identity FROM ff_signal WHERE suspension_id = $1 ORDER BY seq";

/// Records a signal and counts it on its execution.
pub(crate) const INSERT_SIGNAL_SQL: &str = "WITH s AS (INSERT INTO ff_signal (signal_id, execution_id, \
       partition_key, namespace, waitpoint_id, waitpoint_key, suspension_id, signal_name, signal_category, source_type, \
       source_identity, correlation_id, idempotency_key, dedup_until_ms, payload, payload_encoding, effect) \
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
               CASE WHEN $13::text IS NULL THEN NULL ELSE ff_now_ms() + $14 END, $15, $16, $17) RETURNING 1) \
     UPDATE ff_execution SET signal_count = signal_count + 1 WHERE execution_id = $2 AND EXISTS (SELECT 1 FROM s)";

/// Resumes execution `$1` after `$2` ms (see `ff_resume_suspended`).
pub(crate) const RESUME_SUSPENDED_SQL: &str = "SELECT ff_resume_suspended($1, $2, $3)";

/// `deliver_signal`.
pub(crate) async fn deliver(
    pool: &PgPool,
    cfg: &PartitionConfig,
    args: &DeliverSignalArgs,
) -> Result<DeliverSignalResult, EngineError> {
    args.validate()?;
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    if let Some(t) = &args.waitpoint_token {
        WaitpointToken::parse(t)?;
    }
    let id = args.execution_id.uuid();
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let wp = sqlx::query(WAITPOINT_SQL)
        .bind(args.waitpoint_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .filter(|r| col::<Uuid>(r, "execution_id").is_ok_and(|e| e == id))
        .ok_or(EngineError::NotFound { entity: "waitpoint" })?;
    let wp_key: String = col(&wp, "waitpoint_key")?;
    let row = sqlx::query(DELIVER_LOCK_SQL)
        .bind(id)
        .bind(args.execution_id.partition_index() as i16)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .ok_or(EngineError::NotFound { entity: "execution" })?;
    let now: i64 = col(&row, "now_ms")?;
    if let Some(presented) = &args.waitpoint_token {
        let kid = WaitpointToken::parse(presented)?.kid().to_owned();
        let keys: Vec<_> = keystore::key_by_id(&mut tx, &kid).await?.into_iter().collect();
        let binding = TokenBinding {
            execution_id: args.execution_id,
            waitpoint_id: args.waitpoint_id.0,
            waitpoint_key: &wp_key,
            created_at: TimestampMs(col(&wp, "created_at_ms")?),
        };
        verify(presented, &keys, &binding, TimestampMs(now))?;
    }
    // The waitpoint's state, now that the execution row is held (closing happens under it).
    let wp = sqlx::query(WAITPOINT_SQL).bind(args.waitpoint_id.0).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
    let state = WaitpointState::parse(&col::<String>(&wp, "state")?)?;
    let phase: String = col(&row, "lifecycle_phase")?;
    match state {
        WaitpointState::Closed => return Err(EngineError::State(StateKind::WaitpointClosed)),
        WaitpointState::Pending if phase == "terminal" => {
            return Err(EngineError::State(StateKind::TargetNotSignalable));
        }
        WaitpointState::Active if phase != "suspended" => {
            return Err(EngineError::State(StateKind::TargetNotSignalable));
        }
        _ => {}
    }
    if let Some(k) = &args.idempotency_key {
        let first: Option<Uuid> =
            sqlx::query_scalar(SIGNAL_DEDUP_SQL).bind(id).bind(k).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
        if let Some(first) = first {
            return Ok(DeliverSignalResult::Duplicate { existing_signal_id: SignalId(first) });
        }
    }
    let cap = args.max_signals_per_execution.unwrap_or(DEFAULT_MAX_SIGNALS_PER_EXECUTION);
    if col::<i32>(&row, "signal_count")?.max(0) as u32 >= cap {
        return Err(EngineError::State(StateKind::SignalLimitExceeded));
    }
    let signal_id = args.signal_id.unwrap_or_default();
    let (effect, suspension, resume_delay) = if state == WaitpointState::Pending {
        (SignalEffect::BufferedForPendingWaitpoint, None, 0)
    } else {
        let s = sqlx::query(OPEN_SUSPENSION_SQL)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?
            .ok_or(EngineError::State(StateKind::TargetNotSignalable))?;
        let suspension: Uuid = col(&s, "suspension_id")?;
        let condition: ResumeCondition = serde_json::from_value(col(&s, "condition")?)
            .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("stored condition: {e}")))?;
        let rows = sqlx::query(SUSPENSION_SIGNALS_SQL).bind(suspension).fetch_all(&mut *tx).await.map_err(map_sqlx)?;
        let mut owned: Vec<(String, String, String, String, String)> = rows
            .iter()
            .map(|r| {
                Ok((
                    col::<Uuid>(r, "signal_id")?.to_string(),
                    col(r, "waitpoint_key")?,
                    col(r, "signal_name")?,
                    col(r, "source_type")?,
                    col(r, "source_identity")?,
                ))
            })
            .collect::<Result<_, EngineError>>()?;
        owned.push((
            signal_id.0.to_string(),
            wp_key.clone(),
            args.signal_name.clone(),
            args.source_type.clone(),
            args.source_identity.clone(),
        ));
        let signals: Vec<ConditionSignal<'_>> = owned
            .iter()
            .map(|(i, k, n, t, s)| ConditionSignal {
                waitpoint_key: k,
                signal_id: i,
                signal_name: n,
                source_type: t,
                source_identity: s,
            })
            .collect();
        let effect = match condition.relevance(&wp_key, &args.signal_name) {
            SignalRelevance::NotInCondition => SignalEffect::SignalIgnoredNotInCondition,
            SignalRelevance::MatcherFailed => SignalEffect::SignalIgnoredMatcherFailed,
            SignalRelevance::Counts if condition.is_satisfied(&signals) => SignalEffect::ResumeConditionSatisfied,
            SignalRelevance::Counts => SignalEffect::AppendedToWaitpoint,
        };
        (effect, Some(suspension), col::<i64>(&s, "resume_delay_ms")?)
    };
    let dedup_ttl = args.dedup_ttl_ms.unwrap_or(DEFAULT_SIGNAL_DEDUP_TTL_MS) as i64;
    sqlx::query(INSERT_SIGNAL_SQL)
        .bind(signal_id.0)
        .bind(id)
        .bind(args.execution_id.partition_index() as i16)
        .bind(col::<String>(&row, "namespace")?)
        .bind(args.waitpoint_id.0)
        .bind(&wp_key)
        .bind(suspension)
        .bind(&args.signal_name)
        .bind(args.signal_category.as_deref().unwrap_or("external"))
        .bind(&args.source_type)
        .bind(&args.source_identity)
        .bind(args.correlation_id.as_deref())
        .bind(args.idempotency_key.as_deref())
        .bind(dedup_ttl)
        .bind(args.payload.as_deref())
        .bind(args.payload_encoding.as_deref())
        .bind(effect.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if effect == SignalEffect::ResumeConditionSatisfied {
        let _: Option<String> = sqlx::query_scalar(RESUME_SUSPENDED_SQL)
            .bind(id)
            .bind(resume_delay)
            .bind("signal")
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(DeliverSignalResult::Accepted { signal_id, effect })
}

/// The lane of execution `$1`.
pub(crate) const LANE_OF_SQL: &str = "SELECT lane_id FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

/// `deliver_approval_signal`: the operator's path, trusted (no token), lane checked.
pub(crate) async fn approve(
    pool: &PgPool,
    cfg: &PartitionConfig,
    args: &DeliverApprovalSignalArgs,
) -> Result<DeliverSignalResult, EngineError> {
    args.validate()?;
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    let lane: Option<String> = sqlx::query_scalar(LANE_OF_SQL)
        .bind(args.execution_id.uuid())
        .bind(args.execution_id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    match lane {
        None => return Err(EngineError::NotFound { entity: "execution" }),
        Some(l) if l != args.lane_id.as_str() => {
            return Err(EngineError::invalid("the execution is not on the given lane"));
        }
        Some(_) => {}
    }
    let mut signal = DeliverSignalArgs::new(
        args.execution_id,
        args.waitpoint_id,
        args.signal_name.clone(),
        "operator",
        args.operator_identity.clone(),
    );
    signal.signal_category = Some("approval".into());
    signal.idempotency_key = Some(format!("approval:{}:{}", args.signal_name, args.idempotency_suffix));
    signal.dedup_ttl_ms = args.signal_dedup_ttl_ms;
    deliver(pool, cfg, &signal).await
}
