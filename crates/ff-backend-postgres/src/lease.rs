//! Leases: renewal, progress heartbeats, expiry and reclaim grants.
//!
//! Expiry follows the canonical model: an expired lease leaves the execution `active` with
//! ownership `lease_expired_reclaimable` (or fails it once its reclaim cap is reached) and closes
//! its attempt as `interrupted_reclaimed`; a new attempt then takes it over through a plain claim
//! on its lane or through an explicit reclaim grant. Renewals write no event (heartbeats would otherwise dominate the log).

use std::sync::LazyLock;

use ff_core::{
    CapabilitySet, ClaimPolicy, EngineError, ExecutionId, IssueReclaimGrantArgs, IssueReclaimGrantOutcome, LeaseEpoch,
    LeaseRenewal, ReclaimExecutionArgs, ReclaimExecutionOutcome, ReclaimGrant, TimestampMs, ValidationKind,
};
use ff_core::{HandlePayload, MAX_GRANT_TTL_MS, WorkerId, WorkerInstanceId};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::claim;
use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::row::{col, non_negative, u32_col};

/// Renews; `None` when the fence failed.
pub(crate) async fn renew(pool: &PgPool, p: &HandlePayload) -> Result<Option<LeaseRenewal>, EngineError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE ff_execution e SET lease_expires_at_ms = ff_now_ms() + $5, last_heartbeat_at_ms = ff_now_ms() \
             WHERE {FENCE} RETURNING e.lease_expires_at_ms, e.lease_epoch"
        )
    });
    let row =
        bind_fence(sqlx::query(&SQL), p).bind(p.lease_ttl_ms as i64).fetch_optional(pool).await.map_err(map_sqlx)?;
    row.map(|r| {
        Ok(LeaseRenewal {
            expires_at_ms: TimestampMs(col(&r, "lease_expires_at_ms")?),
            lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(&r, "lease_epoch")?)?),
        })
    })
    .transpose()
}

/// Records progress; `None` when the fence failed.
pub(crate) async fn progress(
    pool: &PgPool,
    p: &HandlePayload,
    percent: Option<u8>,
    message: Option<&str>,
) -> Result<Option<()>, EngineError> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE ff_execution e SET progress_pct = coalesce($5, e.progress_pct), \
             progress_message = coalesce($6, e.progress_message), last_heartbeat_at_ms = ff_now_ms() \
             WHERE {FENCE} RETURNING 1"
        )
    });
    let row = bind_fence(sqlx::query(&SQL), p)
        .bind(percent.map(i16::from))
        .bind(message)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(row.map(|_| ()))
}

/// Builds the expiry statement around a candidate CTE `due(execution_id)`.
fn expire_sql(due: &str) -> String {
    format!(
        r#"
WITH due AS ({due}),
upd AS (
    UPDATE ff_execution e SET
        lifecycle_phase = CASE WHEN capped THEN 'terminal' ELSE e.lifecycle_phase END,
        ownership_state = (CASE WHEN capped THEN 'unowned' ELSE 'lease_expired_reclaimable' END)::ff_ownership_state,
        eligibility_state = 'not_applicable',
        terminal_outcome = CASE WHEN capped THEN 'failed' ELSE e.terminal_outcome END,
        attempt_state = CASE WHEN capped THEN 'attempt_terminal' ELSE e.attempt_state END,
        completed_at_ms = CASE WHEN capped THEN ff_now_ms() END,
        blocking_detail = CASE WHEN capped THEN 'max_reclaims_exceeded' ELSE 'lease expired' END,
        lease_expires_at_ms = CASE WHEN capped THEN NULL ELSE e.lease_expires_at_ms END,
        attempt_deadline_at_ms = CASE WHEN capped THEN NULL ELSE e.attempt_deadline_at_ms END,
        eligible_at_ms = ff_now_ms(),
        last_mutation_at_ms = ff_now_ms()
    FROM (SELECT d.execution_id, x.lease_reclaim_count >= x.max_reclaim_count AS capped
          FROM due d JOIN ff_execution x USING (execution_id)) c
    WHERE e.execution_id = c.execution_id
    RETURNING e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
              e.worker_instance_id, c.capped
),
att AS (
    UPDATE ff_attempt a SET
        state = (CASE WHEN upd.capped THEN 'ended_failure' ELSE 'interrupted_reclaimed' END)::ff_attempt_lifecycle,
        ended_at_ms = ff_now_ms(),
        failure_message = CASE WHEN upd.capped THEN 'max_reclaims_exceeded' ELSE 'lease expired' END
    FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
),
ev AS (
    INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch, worker_instance_id)
    SELECT (CASE WHEN capped THEN 'failed' ELSE 'lease_expired' END)::ff_event_kind,
           execution_id, partition_key, namespace, lane_id, current_attempt_index, lease_epoch, worker_instance_id
    FROM upd
),
-- Wake claims long-polling the lanes whose work just became reclaimable (delivered on commit).
ready AS (
    SELECT pg_notify('ff_lane_ready', l.lane_id) FROM (SELECT DISTINCT lane_id FROM upd WHERE NOT capped) l
)
SELECT u.execution_id, u.capped FROM upd u CROSS JOIN (SELECT count(*) FROM ready) notified
"#
    )
}

/// Expires up to `$1` due leases, oldest first.
static EXPIRE_DUE: LazyLock<String> = LazyLock::new(|| {
    expire_sql(
        "SELECT execution_id FROM ff_execution
         WHERE ownership_state = 'leased' AND lease_expires_at_ms <= ff_now_ms()
         ORDER BY lease_expires_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
});

/// Expires the lease of execution `$1` (partition `$2`) if due.
static EXPIRE_ONE: LazyLock<String> = LazyLock::new(|| {
    expire_sql(
        "SELECT execution_id FROM ff_execution
         WHERE execution_id = $1 AND partition_key = $2 AND ownership_state = 'leased'
           AND lease_expires_at_ms <= ff_now_ms()
         FOR UPDATE",
    )
});

/// Counts of one expiry pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryCounts {
    /// Leases marked reclaimable.
    pub reclaimable: u64,
    /// Executions failed at their reclaim cap.
    pub failed: u64,
}

fn count(rows: &[(Uuid, bool)]) -> ExpiryCounts {
    let failed = rows.iter().filter(|(_, capped)| *capped).count() as u64;
    ExpiryCounts { reclaimable: rows.len() as u64 - failed, failed }
}

/// Expires up to `limit` due leases.
pub(crate) async fn expire_due(pool: &PgPool, limit: u32) -> Result<ExpiryCounts, EngineError> {
    let rows: Vec<(Uuid, bool)> =
        sqlx::query_as(&EXPIRE_DUE).bind(i64::from(limit)).fetch_all(pool).await.map_err(map_sqlx)?;
    Ok(count(&rows))
}

/// Expires one execution's lease if due.
pub(crate) async fn expire_one<'e, E>(exec: E, id: &ExecutionId) -> Result<ExpiryCounts, EngineError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(&EXPIRE_ONE)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_all(exec)
        .await
        .map_err(map_sqlx)?;
    Ok(count(&rows))
}

/// Issues a reclaim grant.
pub(crate) async fn issue_reclaim_grant(
    pool: &PgPool,
    args: &IssueReclaimGrantArgs,
) -> Result<IssueReclaimGrantOutcome, EngineError> {
    if args.grant_ttl_ms == 0 || args.grant_ttl_ms > MAX_GRANT_TTL_MS {
        return Err(EngineError::invalid(format!("grant_ttl_ms {} outside 1..={MAX_GRANT_TTL_MS}", args.grant_ttl_ms)));
    }
    validate_worker(&args.worker_id, &args.worker_instance_id)?;
    ff_core::capability::validate_tokens(&args.worker_capabilities.0)?;
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    // An expired lease the reconciler has not marked yet is marked here first.
    let expired = expire_one(&mut *tx, &args.execution_id).await?;
    let id = &args.execution_id;
    let row = sqlx::query(
        "SELECT lane_id, lifecycle_phase::text AS lifecycle_phase, ownership_state::text AS ownership_state, required_capabilities, lease_reclaim_count \
         FROM ff_execution WHERE execution_id = $1 AND partition_key = $2 FOR UPDATE",
    )
    .bind(id.uuid())
    .bind(id.partition_index() as i16)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let Some(row) = row else {
        return Err(EngineError::NotFound { entity: "execution" });
    };
    let reclaim_count: u32 = u32_col(&row, "lease_reclaim_count")?;
    if expired.failed > 0 {
        tx.commit().await.map_err(map_sqlx)?;
        return Ok(IssueReclaimGrantOutcome::ReclaimCapExceeded { execution_id: *id, reclaim_count });
    }
    let lane: String = col(&row, "lane_id")?;
    if lane != args.lane_id.as_str() {
        return Err(EngineError::invalid(format!(
            "execution {id} is on lane {lane:?}, not {:?}",
            args.lane_id.as_str()
        )));
    }
    let ownership: String = col(&row, "ownership_state")?;
    if ownership != "lease_expired_reclaimable" && ownership != "lease_revoked" {
        let phase: String = col(&row, "lifecycle_phase")?;
        let detail = if ownership == "leased" { "lease is live".to_owned() } else { format!("execution is {phase}") };
        return Ok(IssueReclaimGrantOutcome::NotReclaimable { execution_id: *id, detail });
    }
    check_capabilities(&args.worker_capabilities, col::<Vec<String>>(&row, "required_capabilities")?)?;
    let grant: (Uuid, i64) = sqlx::query_as(
        "INSERT INTO ff_reclaim_grant (grant_key, execution_id, worker_id, worker_instance_id, lane_id, issued_at_ms, expires_at_ms) \
         VALUES (gen_random_uuid(), $1, $2, $3, $4, ff_now_ms(), ff_now_ms() + $5) RETURNING grant_key, expires_at_ms",
    )
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

fn validate_worker(worker_id: &WorkerId, instance: &WorkerInstanceId) -> Result<(), EngineError> {
    ff_core::execution::validate_name("worker_id", worker_id.as_str(), false)?;
    ff_core::execution::validate_name("worker_instance_id", instance.as_str(), false)
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
    pool: &PgPool,
    args: &ReclaimExecutionArgs,
) -> Result<ReclaimExecutionOutcome, EngineError> {
    ff_core::validate_lease_ttl_ms(args.lease_ttl_ms)?;
    validate_worker(&args.worker_id, &args.worker_instance_id)?;
    let Ok(grant_key) = Uuid::parse_str(&args.grant_key) else {
        return Err(EngineError::invalid(format!("malformed grant key {:?}", args.grant_key)));
    };
    let id = args.execution_id;
    let mut tx: Transaction<'_, Postgres> = pool.begin().await.map_err(map_sqlx)?;
    let grant: Option<(String, String, String, bool)> = sqlx::query_as(
        "DELETE FROM ff_reclaim_grant WHERE grant_key = $1 AND execution_id = $2 \
         RETURNING worker_id, worker_instance_id, lane_id, expires_at_ms > ff_now_ms()",
    )
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
    let outcome = match claim::reclaim_one(&mut *tx, &id, &policy).await? {
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
