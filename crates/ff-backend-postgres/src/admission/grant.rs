//! Claim grants: reserving an eligible execution for one worker instance (the reservation is
//! `grant_expires_at_ms` on the execution, which claims respect; the grant row holds who may
//! use it), and claiming with the signed grant key. A grant is consumed by its claim; a lapsed
//! one is reaped by the grant reconciler (`ff_reap_claim_grants`), though a claim already
//! ignores a lapsed reservation.

use crate::db::{Db, Tx, TxConn};
use ff_core::suspension::token::HmacKey;
use ff_core::*;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::lease::claim::{self, ById};
use crate::lease::wrong_lane;
use crate::row::col;
use crate::suspension::keystore;

/// Reserves the best eligible execution of lane `$1` that capabilities `$2` cover, for `$3` ms.
pub(crate) const RESERVE_BEST_SQL: &str = "WITH c AS ( \
       SELECT x.execution_id FROM ff_execution x \
       WHERE ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now') \
              OR x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')) \
         AND x.lane_id = $1 AND x.required_capabilities <@ $2 \
         AND (x.grant_expires_at_ms IS NULL OR x.grant_expires_at_ms <= ff_now_ms()) \
         AND (x.budget_ids IS NULL \
              OR NOT EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = ANY (x.budget_ids) AND b.exhausted)) \
       ORDER BY -x.priority, x.eligible_at_ms, x.seq LIMIT 1 \
       FOR UPDATE OF x SKIP LOCKED) \
     UPDATE ff_execution e SET grant_expires_at_ms = ff_now_ms() + $3 FROM c WHERE e.execution_id = c.execution_id \
     RETURNING e.execution_id, e.partition_key, e.grant_expires_at_ms";

/// One execution, locked, with what a grant for it depends on.
pub(crate) const LOCK_FOR_CLAIM_GRANT_SQL: &str = "SELECT x.lane_id, x.partition_key, x.required_capabilities, \
       ((x.lifecycle_phase = 'runnable' AND x.eligibility_state = 'eligible_now') \
        OR (x.lifecycle_phase = 'active' AND x.ownership_state <> 'leased')) AS claimable, \
       (SELECT g.worker_instance_id FROM ff_claim_grant g \
        WHERE g.execution_id = x.execution_id AND g.expires_at_ms > ff_now_ms()) AS holder, \
       (x.budget_ids IS NOT NULL \
        AND EXISTS (SELECT 1 FROM ff_budget b WHERE b.budget_id = ANY (x.budget_ids) AND b.exhausted)) AS budget_exhausted \
     FROM ff_execution x WHERE x.execution_id = $1 FOR UPDATE";

/// Reserves execution `$1` for `$2` ms.
pub(crate) const RESERVE_SQL: &str = "UPDATE ff_execution SET grant_expires_at_ms = ff_now_ms() + $2 \
     WHERE execution_id = $1 RETURNING grant_expires_at_ms";

/// Records a grant, replacing a lapsed (or the same worker's) grant of the execution.
pub(crate) const INSERT_CLAIM_GRANT_SQL: &str = "INSERT INTO ff_claim_grant AS g (grant_id, execution_id, worker_id, \
       worker_instance_id, lane_id, kid, issued_at_ms, expires_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, ff_now_ms(), $7) \
     ON CONFLICT (execution_id) DO UPDATE SET grant_id = EXCLUDED.grant_id, worker_id = EXCLUDED.worker_id, \
       worker_instance_id = EXCLUDED.worker_instance_id, lane_id = EXCLUDED.lane_id, kid = EXCLUDED.kid, \
       issued_at_ms = EXCLUDED.issued_at_ms, expires_at_ms = EXCLUDED.expires_at_ms";

/// Consumes grant `$1`.
pub(crate) const TAKE_CLAIM_GRANT_SQL: &str = "DELETE FROM ff_claim_grant WHERE grant_id = $1 \
     RETURNING execution_id, worker_instance_id, lane_id, expires_at_ms, expires_at_ms > ff_now_ms() AS live";

/// Drops every grant of execution `$1`.
pub(crate) const DROP_GRANTS_SQL: &str = "DELETE FROM ff_claim_grant WHERE execution_id = $1";

/// The lease expiry of execution `$1` (after a claim in the same transaction).
pub(crate) const LEASE_EXPIRY_SQL: &str =
    "SELECT lease_expires_at_ms, ff_now_ms() AS now_ms FROM ff_execution WHERE execution_id = $1";

/// The database clock.
pub(crate) const NOW_SQL: &str = "SELECT ff_now_ms()";

/// Reaps lapsed grants (at most `$1`).
pub(crate) const REAP_SQL: &str = "SELECT ff_reap_claim_grants($1)";

/// The worker identity of an operator's immediate claim.
pub const OPERATOR_WORKER: &str = "operator";

async fn record(
    conn: &mut TxConn,
    key: &HmacKey,
    execution_id: ExecutionId,
    lane: &LaneId,
    worker_id: &WorkerId,
    worker_instance_id: &WorkerInstanceId,
    expires_at_ms: i64,
) -> Result<ClaimGrant, EngineError> {
    let grant_id = GrantId::new();
    sqlx::query(INSERT_CLAIM_GRANT_SQL)
        .bind(grant_id.0)
        .bind(execution_id.uuid())
        .bind(worker_id.as_str())
        .bind(worker_instance_id.as_str())
        .bind(lane.as_str())
        .bind(&key.kid)
        .bind(expires_at_ms)
        .execute(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    let binding = GrantBinding { grant_id, execution_id, worker_instance_id, expires_at: TimestampMs(expires_at_ms) };
    Ok(ClaimGrant {
        execution_id,
        lane_id: lane.clone(),
        grant_key: mint_grant_key(key, &binding),
        expires_at_ms: TimestampMs(expires_at_ms),
    })
}

/// `claim_for_worker`.
pub(crate) async fn claim_for_worker(
    pool: &Db,
    args: &ClaimForWorkerArgs,
) -> Result<ClaimForWorkerOutcome, EngineError> {
    args.validate()?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let key = keystore::signing_key(&mut tx).await?;
    let caps: Vec<String> = args.worker_capabilities.0.iter().cloned().collect();
    let row = sqlx::query(RESERVE_BEST_SQL)
        .bind(args.lane_id.as_str())
        .bind(&caps)
        .bind(args.grant_ttl_ms as i64)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else {
        return tx.abandon(Ok(ClaimForWorkerOutcome::NoWork)).await;
    };
    let partition: i16 = col(&row, "partition_key")?;
    let id = ExecutionId::from_parts(partition as u16, col(&row, "execution_id")?);
    let expires: i64 = col(&row, "grant_expires_at_ms")?;
    let grant = record(&mut tx, &key, id, &args.lane_id, &args.worker_id, &args.worker_instance_id, expires).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(ClaimForWorkerOutcome::Granted(grant))
}

/// `issue_claim_grant`.
pub(crate) async fn issue(pool: &Db, args: &IssueClaimGrantArgs) -> Result<IssueClaimGrantOutcome, EngineError> {
    args.validate()?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let key = keystore::signing_key(&mut tx).await?;
    let id = args.execution_id;
    let Some(row) =
        sqlx::query(LOCK_FOR_CLAIM_GRANT_SQL).bind(id.uuid()).fetch_optional(&mut *tx).await.map_err(map_sqlx)?
    else {
        return Err(tx.abandon(EngineError::NotFound { entity: "execution" }).await);
    };
    let lane: String = col(&row, "lane_id")?;
    if lane != args.lane_id.as_str() {
        return Err(tx.abandon(wrong_lane(&id, &lane, &args.lane_id)).await);
    }
    let required: Vec<String> = col(&row, "required_capabilities")?;
    let missing: Vec<String> = required.into_iter().filter(|c| !args.worker_capabilities.0.contains(c)).collect();
    if !missing.is_empty() {
        let refusal = EngineError::validation(ValidationKind::CapabilityMismatch, missing.join(","));
        return Err(tx.abandon(refusal).await);
    }
    let holder: Option<String> = col(&row, "holder")?;
    if !col::<bool>(&row, "claimable")? || holder.is_some_and(|h| h != args.worker_instance_id.as_str()) {
        return Err(tx.abandon(EngineError::Contention(ContentionKind::ExecutionNotEligible)).await);
    }
    if col::<bool>(&row, "budget_exhausted")? {
        return Err(tx.abandon(EngineError::State(StateKind::BudgetExceeded)).await);
    }
    let (expires,): (i64,) = sqlx::query_as(RESERVE_SQL)
        .bind(id.uuid())
        .bind(args.grant_ttl_ms as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let grant = record(&mut tx, &key, id, &args.lane_id, &args.worker_id, &args.worker_instance_id, expires).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(IssueClaimGrantOutcome::Granted(grant))
}

async fn claimed(tx: &mut Tx, handle: Handle) -> Result<ClaimedExecution, EngineError> {
    let p = HandlePayload::from_handle(&handle, BackendTag::Postgres)?;
    let (expires, _now): (i64, i64) =
        sqlx::query_as(LEASE_EXPIRY_SQL).bind(p.execution_id.uuid()).fetch_one(&mut **tx).await.map_err(map_sqlx)?;
    Ok(ClaimedExecution {
        execution_id: p.execution_id,
        lease_id: p.lease_id,
        lease_epoch: p.lease_epoch,
        attempt_index: p.attempt_index,
        attempt_id: p.attempt_id,
        lease_expires_at: TimestampMs(expires),
        handle,
    })
}

/// Why a claim by id found nothing to claim.
async fn not_claimable(tx: &mut Tx, id: &ExecutionId) -> Result<EngineError, EngineError> {
    let row =
        sqlx::query(LOCK_FOR_CLAIM_GRANT_SQL).bind(id.uuid()).fetch_optional(&mut **tx).await.map_err(map_sqlx)?;
    Ok(match row {
        None => EngineError::NotFound { entity: "execution" },
        Some(r) if col::<bool>(&r, "budget_exhausted")? && col::<bool>(&r, "claimable")? => {
            EngineError::State(StateKind::BudgetExceeded)
        }
        Some(_) => EngineError::Contention(ContentionKind::ExecutionNotEligible),
    })
}

/// `claim_execution`: verify the key, consume the grant, claim. Any refusal writes nothing.
pub(crate) async fn claim_execution(pool: &Db, args: &ClaimExecutionArgs) -> Result<ClaimExecutionResult, EngineError> {
    args.validate()?;
    let parsed = ParsedGrantKey::parse(&args.grant_key)?;
    let id = args.execution_id;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let row =
        sqlx::query(TAKE_CLAIM_GRANT_SQL).bind(parsed.grant_id.0).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
    let Some(row) = row else {
        // Never issued, or consumed already.
        return Err(tx.abandon(EngineError::Contention(ContentionKind::InvalidClaimGrant)).await);
    };
    let holder = WorkerInstanceId(col(&row, "worker_instance_id")?);
    let binding = GrantBinding {
        grant_id: parsed.grant_id,
        execution_id: id,
        worker_instance_id: &holder,
        expires_at: parsed.expires_at,
    };
    let (now,): (i64,) = sqlx::query_as(NOW_SQL).fetch_one(&mut *tx).await.map_err(map_sqlx)?;
    let keys = keystore::verifying_keys(&mut tx).await?;
    if let Err(refusal) = verify_grant_key(&parsed, &keys, &binding, TimestampMs(now)) {
        return Err(tx.abandon(refusal).await);
    }
    if col::<Uuid>(&row, "execution_id")? != id.uuid() || holder != args.worker_instance_id {
        return Err(tx.abandon(EngineError::Contention(ContentionKind::InvalidClaimGrant)).await);
    }
    let lane: String = col(&row, "lane_id")?;
    if lane != args.lane_id.as_str() {
        let refusal = EngineError::invalid(format!("the grant is for lane {lane:?}, not {:?}", args.lane_id.as_str()));
        return Err(tx.abandon(refusal).await);
    }
    if !col::<bool>(&row, "live")? {
        return Err(tx.abandon(EngineError::Contention(ContentionKind::ClaimGrantExpired)).await);
    }
    let policy = ClaimPolicy {
        worker_id: args.worker_id.clone(),
        worker_instance_id: args.worker_instance_id.clone(),
        lease_ttl_ms: args.lease_ttl_ms,
        max_wait: None,
    };
    let Some(handle) = claim::claim_one(&mut *tx, &id, &policy, ById::Granted).await? else {
        let e = not_claimable(&mut tx, &id).await?;
        return Err(tx.abandon(e).await);
    };
    let out = claimed(&mut tx, handle).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(ClaimExecutionResult::Claimed(out))
}

/// `issue_grant_and_claim`: the operator claims now; any grant of the execution is dropped.
pub(crate) async fn grant_and_claim(
    pool: &Db,
    args: &IssueGrantAndClaimArgs,
) -> Result<ClaimGrantOutcome, EngineError> {
    args.validate()?;
    let id = args.execution_id;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let Some(row) =
        sqlx::query(LOCK_FOR_CLAIM_GRANT_SQL).bind(id.uuid()).fetch_optional(&mut *tx).await.map_err(map_sqlx)?
    else {
        return Err(tx.abandon(EngineError::NotFound { entity: "execution" }).await);
    };
    let lane: String = col(&row, "lane_id")?;
    if lane != args.lane_id.as_str() {
        return Err(tx.abandon(wrong_lane(&id, &lane, &args.lane_id)).await);
    }
    let policy = ClaimPolicy {
        worker_id: WorkerId(OPERATOR_WORKER.into()),
        worker_instance_id: WorkerInstanceId(OPERATOR_WORKER.into()),
        lease_ttl_ms: args.lease_duration_ms,
        max_wait: None,
    };
    sqlx::query(DROP_GRANTS_SQL).bind(id.uuid()).execute(&mut *tx).await.map_err(map_sqlx)?;
    let Some(handle) = claim::claim_one(&mut *tx, &id, &policy, ById::Granted).await? else {
        let e = not_claimable(&mut tx, &id).await?;
        return Err(tx.abandon(e).await);
    };
    let c = claimed(&mut tx, handle).await?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(ClaimGrantOutcome {
        lease_id: c.lease_id,
        lease_epoch: c.lease_epoch,
        attempt_index: c.attempt_index,
        handle: c.handle,
    })
}

/// Reaps up to `limit` lapsed grants; returns how many.
pub(crate) async fn reap(pool: &Db, limit: i64) -> Result<u64, EngineError> {
    let (n,): (i64,) = sqlx::query_as(REAP_SQL).bind(limit as i32).fetch_one(pool).await.map_err(map_sqlx)?;
    Ok(n.max(0) as u64)
}
