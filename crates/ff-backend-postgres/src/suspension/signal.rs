//! Delivering signals: one transaction that holds the execution row, verifies the token
//! against the waitpoint's binding, deduplicates, bounds, records the signal with its effect and,
//! when the signal satisfies the resume condition (evaluated by ff-core over the suspension's
//! signals), resumes the execution (`ff_resume_suspended`).

use crate::db::Db;
use ff_core::suspension::condition::{ConditionSignal, SignalRelevance};
use ff_core::suspension::token::{HmacKey, TokenBinding, WaitpointToken, verify};
use ff_core::*;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::col;

/// Everything a delivery decides on, in one read that locks execution `$1` (partition `$2`):
/// its state and signal count, waitpoint `$3`, the key `$5` the token names, its open
/// suspension, and the first signal with idempotency key `$4` still within its dedup TTL.
pub(crate) const DELIVER_READ_SQL: &str = "SELECT x.namespace, x.lifecycle_phase::text AS lifecycle_phase, \
       x.signal_count, ff_now_ms() AS now_ms, w.waitpoint_key, w.state AS waitpoint_state, \
       w.created_at_ms AS waitpoint_created_at_ms, k.kid, k.secret, k.expires_at_ms, su.suspension_id, su.condition, \
       su.resume_delay_ms, \
       (SELECT d.signal_id FROM ff_signal d WHERE d.execution_id = x.execution_id AND d.idempotency_key = $4 \
          AND d.dedup_until_ms > ff_now_ms() ORDER BY d.seq LIMIT 1) AS duplicate_of \
     FROM ff_execution x \
     LEFT JOIN ff_waitpoint w ON w.waitpoint_id = $3 AND w.execution_id = x.execution_id \
     LEFT JOIN ff_waitpoint_hmac_key k ON k.kid = $5 \
     LEFT JOIN ff_suspension su ON su.execution_id = x.execution_id AND su.open \
     WHERE x.execution_id = $1 AND x.partition_key = $2 \
     FOR UPDATE OF x";

/// The signals recorded under suspension `$1`.
pub(crate) const SUSPENSION_SIGNALS_SQL: &str = "SELECT signal_id, waitpoint_key, signal_name, source_type, \
     source_identity FROM ff_signal WHERE suspension_id = $1 ORDER BY seq";

/// Records a signal (see `ff_record_signal`).
pub(crate) const RECORD_SIGNAL_SQL: &str =
    "SELECT ff_record_signal($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)";

/// Resumes execution `$1` after `$2` ms (see `ff_resume_suspended`).
pub(crate) const RESUME_SUSPENDED_SQL: &str = "SELECT ff_resume_suspended($1, $2, $3)";

/// `deliver_signal`: one locking read, the suspension's signals when it is active, one write.
pub(crate) async fn deliver(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &DeliverSignalArgs,
) -> Result<DeliverSignalResult, EngineError> {
    args.validate()?;
    cfg.check_execution_partition(args.execution_id.partition_index())?;
    let presented = args.waitpoint_token.as_deref().map(WaitpointToken::parse).transpose()?;
    let id = args.execution_id.uuid();
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let row = sqlx::query(DELIVER_READ_SQL)
        .bind(id)
        .bind(args.execution_id.partition_index() as i16)
        .bind(args.waitpoint_id.0)
        .bind(args.idempotency_key.as_deref())
        .bind(presented.as_ref().map(|t| t.kid()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .ok_or(EngineError::NotFound { entity: "execution" })?;
    // To a caller presenting a token, a waitpoint that does not exist (or is another
    // execution's) is an invalid token: the answer does not reveal which ids exist.
    let wp_key: String = col::<Option<String>>(&row, "waitpoint_key")?.ok_or_else(|| {
        if presented.is_some() {
            EngineError::validation(ValidationKind::InvalidToken, "the waitpoint token does not match this waitpoint")
        } else {
            EngineError::NotFound { entity: "waitpoint" }
        }
    })?;
    let now: i64 = col(&row, "now_ms")?;
    if let Some(token) = &presented {
        let key = match col::<Option<String>>(&row, "kid")? {
            Some(kid) => vec![HmacKey {
                kid,
                secret: col(&row, "secret")?,
                expires_at: col::<Option<i64>>(&row, "expires_at_ms")?.map(TimestampMs),
            }],
            None => Vec::new(),
        };
        let binding = TokenBinding {
            execution_id: args.execution_id,
            waitpoint_id: args.waitpoint_id.0,
            waitpoint_key: &wp_key,
            created_at: TimestampMs(col(&row, "waitpoint_created_at_ms")?),
        };
        verify(&token.to_string(), &key, &binding, TimestampMs(now))?;
    }
    // A retry of a delivery that was recorded (its response lost) is a duplicate even when that
    // delivery resumed the execution and closed the waitpoint since.
    if let Some(first) = col::<Option<Uuid>>(&row, "duplicate_of")? {
        return tx.abandon(Ok(DeliverSignalResult::Duplicate { existing_signal_id: SignalId(first) })).await;
    }
    let state = WaitpointState::parse(&col::<String>(&row, "waitpoint_state")?)?;
    let phase: String = col(&row, "lifecycle_phase")?;
    match state {
        WaitpointState::Closed => return Err(tx.abandon(EngineError::State(StateKind::WaitpointClosed)).await),
        WaitpointState::Pending if phase == "terminal" => {
            return Err(tx.abandon(EngineError::State(StateKind::TargetNotSignalable)).await);
        }
        WaitpointState::Active if phase != "suspended" => {
            return Err(tx.abandon(EngineError::State(StateKind::TargetNotSignalable)).await);
        }
        _ => {}
    }
    let cap = args.max_signals_per_execution.unwrap_or(DEFAULT_MAX_SIGNALS_PER_EXECUTION);
    if col::<i32>(&row, "signal_count")?.max(0) as u32 >= cap {
        return Err(tx.abandon(EngineError::State(StateKind::SignalLimitExceeded)).await);
    }
    let signal_id = args.signal_id.unwrap_or_default();
    let (effect, suspension, resume_delay) = if state == WaitpointState::Pending {
        (SignalEffect::BufferedForPendingWaitpoint, None, 0)
    } else {
        let suspension: Uuid =
            col::<Option<Uuid>>(&row, "suspension_id")?.ok_or(EngineError::State(StateKind::TargetNotSignalable))?;
        let condition: ResumeCondition =
            serde_json::from_value(col::<Option<serde_json::Value>>(&row, "condition")?.unwrap_or_default())
                .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("stored condition: {e}")))?;
        let effect = match condition.relevance(&wp_key, &args.signal_name) {
            SignalRelevance::NotInCondition => SignalEffect::SignalIgnoredNotInCondition,
            SignalRelevance::MatcherFailed => SignalEffect::SignalIgnoredMatcherFailed,
            SignalRelevance::Counts => {
                let rows =
                    sqlx::query(SUSPENSION_SIGNALS_SQL).bind(suspension).fetch_all(&mut *tx).await.map_err(map_sqlx)?;
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
                if condition.is_satisfied(&signals) {
                    SignalEffect::ResumeConditionSatisfied
                } else {
                    SignalEffect::AppendedToWaitpoint
                }
            }
        };
        (effect, Some(suspension), col::<Option<i64>>(&row, "resume_delay_ms")?.unwrap_or(0))
    };
    sqlx::query(RECORD_SIGNAL_SQL)
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
        .bind(args.dedup_ttl_ms.unwrap_or(DEFAULT_SIGNAL_DEDUP_TTL_MS) as i64)
        .bind(args.payload.as_deref())
        .bind(args.payload_encoding.as_deref())
        .bind(effect.as_str())
        .bind(effect == SignalEffect::ResumeConditionSatisfied)
        .bind(resume_delay)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(DeliverSignalResult::Accepted { signal_id, effect })
}

/// The lane of execution `$1`.
pub(crate) const LANE_OF_SQL: &str = "SELECT lane_id FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

/// `deliver_approval_signal`: the operator's path, trusted (no token), lane checked.
pub(crate) async fn approve(
    pool: &Db,
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
