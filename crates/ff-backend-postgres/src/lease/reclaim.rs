//! Reclaim grants: admitting one worker to take over an execution whose lease expired or was
//! revoked, and consuming the grant to start the new attempt.

use crate::db::{Db, Tx};
use ff_core::HandlePayload;
use ff_core::{
    CapabilitySet, ClaimPolicy, EngineError, IssueReclaimGrantArgs, IssueReclaimGrantOutcome, LifecyclePhase,
    OwnershipState, ReclaimExecutionArgs, ReclaimExecutionOutcome, ReclaimGrant, TimestampMs, ValidationKind,
};
use uuid::Uuid;

use super::claim;
use super::expiry::expire_one;
use crate::error::map_sqlx;
use crate::row::{col, u32_col};

pub(crate) const LOCK_FOR_GRANT_SQL: &str = "SELECT lane_id, lifecycle_phase::text AS lifecycle_phase, ownership_state::text AS ownership_state, required_capabilities, lease_reclaim_count \
         FROM ff_execution WHERE execution_id = $1 AND partition_key = $2 FOR UPDATE";

pub(crate) const INSERT_GRANT_SQL: &str = "INSERT INTO ff_reclaim_grant (grant_key, execution_id, worker_id, worker_instance_id, lane_id, issued_at_ms, expires_at_ms) \
         VALUES (gen_random_uuid(), $1, $2, $3, $4, ff_now_ms(), ff_now_ms() + $5) RETURNING grant_key, expires_at_ms";

pub(crate) const TAKE_GRANT_SQL: &str = "DELETE FROM ff_reclaim_grant WHERE grant_key = $1 AND execution_id = $2 \
         RETURNING worker_id, worker_instance_id, lane_id, expires_at_ms > ff_now_ms()";

/// Issues a reclaim grant.
pub(crate) async fn issue_reclaim_grant(
    pool: &Db,
    args: &IssueReclaimGrantArgs,
) -> Result<IssueReclaimGrantOutcome, EngineError> {
    args.validate()?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // An expired lease the reconciler has not marked yet is marked here first.
    let expired = expire_one(&mut *tx, &args.execution_id).await?;
    let id = &args.execution_id;
    let row = sqlx::query(LOCK_FOR_GRANT_SQL)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else {
        return Err(tx.abandon(EngineError::NotFound { entity: "execution" }).await);
    };
    let reclaim_count: u32 = u32_col(&row, "lease_reclaim_count")?;
    if expired.failed > 0 {
        tx.commit().await.map_err(map_sqlx)?;
        return Ok(IssueReclaimGrantOutcome::ReclaimCapExceeded { execution_id: *id, reclaim_count });
    }
    let lane: String = col(&row, "lane_id")?;
    if lane != args.lane_id.as_str() {
        return Err(tx.abandon(super::wrong_lane(id, &lane, &args.lane_id)).await);
    }
    let ownership = OwnershipState::parse(&col::<String>(&row, "ownership_state")?)?;
    if !matches!(ownership, OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked) {
        let phase = LifecyclePhase::parse(&col::<String>(&row, "lifecycle_phase")?)?;
        let detail = if ownership == OwnershipState::Leased {
            "lease is live".to_owned()
        } else {
            format!("execution is {phase}")
        };
        return tx.abandon(Ok(IssueReclaimGrantOutcome::NotReclaimable { execution_id: *id, detail })).await;
    }
    check_capabilities(&args.worker_capabilities, col::<Vec<String>>(&row, "required_capabilities")?)?;
    let grant: (Uuid, i64) = sqlx::query_as(INSERT_GRANT_SQL)
        .bind(id.uuid())
        .bind(args.worker_id.as_str())
        .bind(args.worker_instance_id.as_str())
        .bind(args.lane_id.as_str())
        .bind(args.grant_ttl_ms as i64)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    tx.commit().await.map_err(map_sqlx)?;
    Ok(IssueReclaimGrantOutcome::Granted(ReclaimGrant {
        execution_id: *id,
        lane_id: args.lane_id.clone(),
        grant_key: grant.0.to_string(),
        expires_at_ms: TimestampMs(grant.1),
    }))
}

fn check_capabilities(worker: &CapabilitySet, required: Vec<String>) -> Result<(), EngineError> {
    let missing: Vec<String> = required.into_iter().filter(|c| !worker.0.contains(c)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(EngineError::validation(ValidationKind::CapabilityMismatch, missing.join(",")))
}

/// Consumes a reclaim grant and starts the new attempt.
pub(crate) async fn reclaim_execution(
    pool: &Db,
    args: &ReclaimExecutionArgs,
) -> Result<ReclaimExecutionOutcome, EngineError> {
    args.validate()?;
    let Ok(grant_key) = Uuid::parse_str(&args.grant_key) else {
        return Err(EngineError::invalid(format!("malformed grant key {:?}", args.grant_key)));
    };
    let id = args.execution_id;
    let mut tx: Tx = pool.begin().await.map_err(map_sqlx)?;
    let grant: Option<(String, String, String, bool)> = sqlx::query_as(TAKE_GRANT_SQL)
        .bind(grant_key)
        .bind(id.uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
    let Some((worker_id, worker_instance_id, lane, live)) = grant else {
        return Ok(ReclaimExecutionOutcome::GrantNotFound { execution_id: id });
    };
    if !live {
        tx.commit().await.map_err(map_sqlx)?;
        return Ok(ReclaimExecutionOutcome::GrantNotFound { execution_id: id });
    }
    if worker_id != args.worker_id.as_str()
        || worker_instance_id != args.worker_instance_id.as_str()
        || lane != args.lane_id.as_str()
    {
        return Err(EngineError::invalid(format!(
            "reclaim grant for execution {id} belongs to worker {worker_id}/{worker_instance_id} on lane {lane:?}"
        )));
    }
    let policy = ClaimPolicy {
        worker_id: args.worker_id.clone(),
        worker_instance_id: args.worker_instance_id.clone(),
        lease_ttl_ms: args.lease_ttl_ms,
        max_wait: None,
    };
    let outcome = match claim::claim_one(&mut *tx, &id, &policy, claim::ById::Reclaim).await? {
        Some(handle) => {
            let attempt_index = HandlePayload::from_handle(&handle, ff_core::BackendTag::Postgres)?.attempt_index;
            ReclaimExecutionOutcome::Claimed { handle, attempt_index }
        }
        None => ReclaimExecutionOutcome::NotReclaimable {
            execution_id: id,
            detail: "execution is no longer reclaimable".into(),
        },
    };
    tx.commit().await.map_err(map_sqlx)?;
    Ok(outcome)
}
