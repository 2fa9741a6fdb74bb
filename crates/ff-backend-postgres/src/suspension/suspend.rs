//! Suspending: one transaction that holds the fenced execution row, checks the bindings, reads
//! what is buffered on pending waitpoints and, unless that already satisfies the condition
//! (evaluated by ff-core), creates and activates the waitpoints, records the suspension and
//! releases the lease. Tokens are minted from the bindings and never stored.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::db::{Db, TxConn};
use ff_core::suspension::condition::{ConditionSignal, SignalMatcher};
use ff_core::suspension::token::{HmacKey, TokenBinding, fingerprint, mint};
use ff_core::*;
use uuid::Uuid;

use super::keystore;
use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::col;

/// Locks the fenced execution row (`$1..$4` the fence) and reads, in the same round trip, which
/// of the fresh keys `$5` open waitpoints already hold and the current signing key.
pub(crate) static SUSPEND_LOCK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT e.partition_key, ff_now_ms() AS now_ms, \
           (SELECT array_agg(w.waitpoint_key) FROM ff_waitpoint w WHERE w.execution_id = e.execution_id \
              AND w.state <> 'closed' AND w.waitpoint_key = ANY($5)) AS taken_keys, \
           (SELECT k.kid FROM ff_waitpoint_hmac_key k WHERE k.expires_at_ms IS NULL) AS kid, \
           (SELECT k.secret FROM ff_waitpoint_hmac_key k WHERE k.expires_at_ms IS NULL) AS secret \
         FROM ff_execution e WHERE {FENCE} FOR UPDATE"
    )
});

/// Writes the suspension (see `ff_suspend_write`).
pub(crate) const SUSPEND_WRITE_SQL: &str = "SELECT ff_suspend_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)";

/// The suspension a suspend with key `$2` on execution `$1` made before.
pub(crate) const SUSPEND_DEDUP_SQL: &str =
    "SELECT suspension_id, already_satisfied FROM ff_suspend_dedup WHERE execution_id = $1 AND idempotency_key = $2";

/// Records the outcome of a suspend with an idempotency key.
pub(crate) const SUSPEND_DEDUP_INSERT_SQL: &str = "INSERT INTO ff_suspend_dedup (execution_id, idempotency_key, \
     suspension_id, already_satisfied) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// The waitpoints `$1` of execution `$2`, locked.
pub(crate) const BINDINGS_SQL: &str = "SELECT waitpoint_id, waitpoint_key, state, attempt_index FROM ff_waitpoint \
     WHERE waitpoint_id = ANY($1) AND execution_id = $2 FOR UPDATE";

/// Signals buffered on waitpoints `$1`, in delivery order.
pub(crate) const BUFFERED_SQL: &str = "SELECT signal_id, waitpoint_key, signal_name, source_type, source_identity \
     FROM ff_signal WHERE waitpoint_id = ANY($1) AND suspension_id IS NULL ORDER BY seq";

/// The waitpoints of suspension `$1`, in binding order, to rebuild a first outcome.
pub(crate) const SUSPENSION_WAITPOINTS_SQL: &str = "SELECT waitpoint_id, waitpoint_key, token_kid, created_at_ms \
     FROM ff_waitpoint WHERE suspension_id = $1 ORDER BY binding_order, waitpoint_id";

/// The state of execution `$1`, to tell why a suspend's fence failed.
pub(crate) const PHASE_SQL: &str =
    "SELECT lifecycle_phase::text, current_attempt_index FROM ff_execution WHERE execution_id = $1";

/// Signal names the condition accepts on `key` (empty: any).
fn required_names(condition: &ResumeCondition, key: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut any = false;
    collect_names(condition, key, &mut names, &mut any);
    if any { Vec::new() } else { names }
}

fn collect_names(c: &ResumeCondition, key: &str, names: &mut Vec<String>, any: &mut bool) {
    let mut add = |m: Option<&SignalMatcher>| match m {
        Some(SignalMatcher::ByName(n)) => {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        Some(SignalMatcher::Wildcard) | None => *any = true,
    };
    match c {
        ResumeCondition::Single { waitpoint_key, matcher } if waitpoint_key == key => add(Some(matcher)),
        ResumeCondition::Composite(CompositeCondition::AllOf { members }) => {
            members.iter().for_each(|m| collect_names(m, key, names, any))
        }
        ResumeCondition::Composite(CompositeCondition::Count { waitpoints, matcher, .. })
            if waitpoints.iter().any(|w| w == key) =>
        {
            add(matcher.as_ref())
        }
        _ => {}
    }
}

/// A token for waitpoint `id` as bound at its creation, signed by `key`.
pub(crate) fn token_for(key: &HmacKey, execution_id: ExecutionId, id: Uuid, wp_key: &str, created_at: i64) -> String {
    mint(
        key,
        &TokenBinding { execution_id, waitpoint_id: id, waitpoint_key: wp_key, created_at: TimestampMs(created_at) },
    )
    .to_string()
}

/// Rebuilds the outcome of suspension `suspension` (a replayed suspend).
async fn replayed_outcome(
    conn: &mut TxConn,
    execution_id: ExecutionId,
    suspension: Uuid,
    already_satisfied: bool,
) -> Result<SuspendOutcome, EngineError> {
    let rows = sqlx::query(SUSPENSION_WAITPOINTS_SQL).bind(suspension).fetch_all(&mut *conn).await.map_err(map_sqlx)?;
    let mut waitpoints = Vec::with_capacity(rows.len());
    for row in &rows {
        let kid: String = col(row, "token_kid")?;
        let id: Uuid = col(row, "waitpoint_id")?;
        let wp_key: String = col(row, "waitpoint_key")?;
        let token = match keystore::key_by_id(conn, &kid).await? {
            Some(k) => token_for(&k, execution_id, id, &wp_key, col(row, "created_at_ms")?),
            None => String::new(),
        };
        waitpoints.push(WaitpointTokenInfo {
            waitpoint_id: WaitpointId(id),
            waitpoint_key: wp_key,
            waitpoint_token: token,
        });
    }
    let details = SuspendOutcomeDetails { suspension_id: SuspensionId(suspension), waitpoints };
    Ok(if already_satisfied {
        SuspendOutcome::AlreadySatisfied { details }
    } else {
        SuspendOutcome::Suspended { details }
    })
}

/// Suspends the fenced attempt `p`. `Ok(None)` when the fence failed (the caller diagnoses).
/// Without pending bindings it is one locking read and one write.
pub(crate) async fn suspend(
    pool: &Db,
    p: &HandlePayload,
    args: &SuspendArgs,
) -> Result<Option<SuspendOutcome>, EngineError> {
    args.validate()?;
    let execution_id = p.execution_id;
    let fresh: Vec<(Uuid, &str)> = args
        .waitpoints
        .iter()
        .filter_map(|w| match w {
            WaitpointBinding::Fresh { waitpoint_id, waitpoint_key } => Some((waitpoint_id.0, waitpoint_key.as_str())),
            WaitpointBinding::UsePending { .. } => None,
        })
        .collect();
    let fresh_keys: Vec<&str> = fresh.iter().map(|(_, k)| *k).collect();
    let pending_ids: Vec<Uuid> = args
        .waitpoints
        .iter()
        .filter(|w| matches!(w, WaitpointBinding::UsePending { .. }))
        .map(|w| w.waitpoint_id().0)
        .collect();
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    if let Some(k) = &args.idempotency_key {
        let first: Option<(Uuid, bool)> = sqlx::query_as(SUSPEND_DEDUP_SQL)
            .bind(execution_id.uuid())
            .bind(k)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if let Some((suspension, satisfied)) = first {
            return replayed_outcome(&mut tx, execution_id, suspension, satisfied).await.map(Some);
        }
    }
    let Some(row) = bind_fence(sqlx::query(&SUSPEND_LOCK_SQL), p)
        .bind(&fresh_keys)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?
    else {
        let phase: Option<(String, i32)> =
            sqlx::query_as(PHASE_SQL).bind(execution_id.uuid()).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
        if let Some((phase, index)) = phase
            && phase == "suspended"
            && index == p.attempt_index.0 as i32
        {
            return Err(tx.abandon(EngineError::State(StateKind::AlreadySuspended)).await);
        }
        return tx.abandon(Ok(None)).await;
    };
    let partition: i16 = col(&row, "partition_key")?;
    let now: i64 = col(&row, "now_ms")?;
    let taken: Option<Vec<String>> = col(&row, "taken_keys")?;

    // Pending bindings must be this execution's, pending, of this attempt.
    let mut pending_keys: HashMap<Uuid, String> = HashMap::new();
    if !pending_ids.is_empty() {
        let rows = sqlx::query(BINDINGS_SQL)
            .bind(&pending_ids)
            .bind(execution_id.uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        for r in &rows {
            let state: String = col(r, "state")?;
            let index: i32 = col(r, "attempt_index")?;
            if state == "closed" {
                return Err(tx.abandon(EngineError::State(StateKind::WaitpointClosed)).await);
            }
            if state != "pending" || index != p.attempt_index.0 as i32 {
                return Err(tx
                    .abandon(EngineError::invalid(
                        "a waitpoint bound with use_pending must be pending, created by this attempt",
                    ))
                    .await);
            }
            pending_keys.insert(col(r, "waitpoint_id")?, col(r, "waitpoint_key")?);
        }
        if pending_keys.len() != pending_ids.len() {
            return Err(tx.abandon(EngineError::NotFound { entity: "waitpoint" }).await);
        }
    }
    if taken.is_some_and(|t| !t.is_empty()) || fresh_keys.iter().any(|k| pending_keys.values().any(|p| p == k)) {
        return Err(tx.abandon(EngineError::Conflict(ConflictKind::WaitpointAlreadyExists)).await);
    }
    let bound: Vec<&str> = fresh_keys.iter().copied().chain(pending_keys.values().map(String::as_str)).collect();
    if let Some(k) = args.resume_condition.waitpoint_keys().into_iter().find(|k| !bound.contains(k)) {
        return Err(tx
            .abandon(EngineError::invalid(format!("the resume condition names waitpoint {k:?}, which is not bound")))
            .await);
    }
    let key_of = |id: Uuid| -> String {
        fresh
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, k)| k.to_string())
            .or_else(|| pending_keys.get(&id).cloned())
            .unwrap_or_default()
    };
    let details = |with_fresh: bool| SuspendOutcomeDetails {
        suspension_id: args.suspension_id,
        waitpoints: args
            .waitpoints
            .iter()
            .filter(|w| with_fresh || matches!(w, WaitpointBinding::UsePending { .. }))
            .map(|w| {
                let id = w.waitpoint_id().0;
                WaitpointTokenInfo {
                    waitpoint_id: WaitpointId(id),
                    waitpoint_key: key_of(id),
                    waitpoint_token: String::new(),
                }
            })
            .collect(),
    };

    // Signals buffered on the pending waitpoints may satisfy the condition already.
    if !pending_ids.is_empty() {
        let buffered = sqlx::query(BUFFERED_SQL).bind(&pending_ids).fetch_all(&mut *tx).await.map_err(map_sqlx)?;
        let owned: Vec<(String, String, String, String, String)> = buffered
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
        let signals: Vec<ConditionSignal<'_>> = owned
            .iter()
            .map(|(id, k, n, t, s)| ConditionSignal {
                waitpoint_key: k,
                signal_id: id,
                signal_name: n,
                source_type: t,
                source_identity: s,
            })
            .collect();
        if !signals.is_empty() && args.resume_condition.is_satisfied(&signals) {
            if let Some(k) = &args.idempotency_key {
                sqlx::query(SUSPEND_DEDUP_INSERT_SQL)
                    .bind(execution_id.uuid())
                    .bind(k)
                    .bind(args.suspension_id.0)
                    .bind(true)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            }
            tx.commit().await.map_err(map_sqlx)?;
            let mut d = details(false);
            fill_tokens(pool, &mut d).await?;
            return Ok(Some(SuspendOutcome::AlreadySatisfied { details: d }));
        }
    }

    let key = match (col::<Option<String>>(&row, "kid")?, col::<Option<Vec<u8>>>(&row, "secret")?) {
        (Some(kid), Some(secret)) => HmacKey { kid, secret, expires_at: None },
        _ => keystore::signing_key(&mut tx).await?,
    };
    let order = |id: Uuid| args.waitpoints.iter().position(|w| w.waitpoint_id().0 == id).unwrap_or(0) as i32;
    let ids: Vec<Uuid> = fresh.iter().map(|(i, _)| *i).collect();
    let mut fps = Vec::with_capacity(fresh.len());
    let mut names = Vec::with_capacity(fresh.len());
    let mut orders = Vec::with_capacity(fresh.len());
    let mut tokens: HashMap<Uuid, String> = HashMap::new();
    for (id, wp_key) in &fresh {
        let token = mint(
            &key,
            &TokenBinding { execution_id, waitpoint_id: *id, waitpoint_key: wp_key, created_at: TimestampMs(now) },
        );
        fps.push(fingerprint(&token));
        names.push(serde_json::json!(required_names(&args.resume_condition, wp_key)));
        orders.push(order(*id));
        tokens.insert(*id, token.to_string());
    }
    let pending_names: Vec<serde_json::Value> = pending_ids
        .iter()
        .map(|id| serde_json::json!(required_names(&args.resume_condition, &pending_keys[id])))
        .collect();
    let pending_orders: Vec<i32> = pending_ids.iter().map(|id| order(*id)).collect();
    let condition = serde_json::to_value(&args.resume_condition).map_err(|e| EngineError::Internal(e.to_string()))?;
    let written: bool = sqlx::query_scalar(SUSPEND_WRITE_SQL)
        .bind(execution_id.uuid())
        .bind(partition)
        .bind(p.attempt_index.0 as i32)
        .bind(args.suspension_id.0)
        .bind(&key.kid)
        .bind(now)
        .bind(args.timeout_at.map(|t| t.0))
        .bind(&ids)
        .bind(&fresh_keys)
        .bind(&fps)
        .bind(&names)
        .bind(&orders)
        .bind(&pending_ids)
        .bind(&pending_names)
        .bind(&pending_orders)
        .bind(args.reason_code.as_str())
        .bind(condition)
        .bind(args.resume_policy.resume_delay_ms as i64)
        .bind(args.resume_policy.close_waitpoint_on_resume)
        .bind(args.timeout_behavior.as_str())
        .bind(args.reason_code.blocking_reason().as_str())
        .bind(args.idempotency_key.as_deref())
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    if !written {
        // A pending waitpoint closed (expired) while this suspension was decided.
        return Err(tx.abandon(EngineError::State(StateKind::WaitpointClosed)).await);
    }
    tx.commit().await.map_err(map_sqlx)?;
    let mut d = details(true);
    for w in &mut d.waitpoints {
        w.waitpoint_token = tokens.get(&w.waitpoint_id.0).cloned().unwrap_or_default();
    }
    fill_tokens(pool, &mut d).await?;
    Ok(Some(SuspendOutcome::Suspended { details: d }))
}

/// Recomputes the tokens of pending waitpoints an outcome names (they keep the tokens they were
/// minted with).
async fn fill_tokens(pool: &Db, d: &mut SuspendOutcomeDetails) -> Result<(), EngineError> {
    if d.waitpoints.iter().all(|w| !w.waitpoint_token.is_empty()) {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    for w in d.waitpoints.iter_mut().filter(|w| w.waitpoint_token.is_empty()) {
        if let Some(t) = super::waitpoint::read_token(&mut tx, &w.waitpoint_id).await? {
            w.waitpoint_token = t;
        }
    }
    tx.commit().await.map_err(map_sqlx)?;
    Ok(())
}
