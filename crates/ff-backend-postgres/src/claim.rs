//! Claims: one statement picks, leases and records up to N executions.
//!
//! The statement locks candidates with `FOR UPDATE SKIP LOCKED` over the partial claim index
//! (lane, priority DESC, eligible time, creation order), so concurrent claimers never wait on
//! each other and never claim the same row. In the same statement it writes the new lease onto
//! the execution row, inserts (or, for a resumed attempt, reopens) the attempt row, marks the
//! superseded attempt of a reclaim, and appends `lease_acquired` / `lease_reclaimed` events.
//!
//! Claim kinds: a runnable execution whose attempt was interrupted (delay) resumes the same
//! attempt; an active execution whose lease expired or was revoked is reclaimed by a new attempt
//! (its reclaim counter +1); anything else starts a new attempt. The epoch always increases.

use std::sync::LazyLock;
use std::time::Duration;

use ff_core::{
    AttemptId, AttemptIndex, BackendTag, CapabilitySet, ClaimPolicy, EngineError, ExecutionId, Handle, HandleKind,
    HandlePayload, LaneId, LeaseEpoch, LeaseId, MAX_CLAIM_BATCH, MAX_CLAIM_WAIT,
};
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres};
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::{col, non_negative};

/// Builds the claim statement around a candidate CTE. Shared parameters: `$1` lease TTL ms,
/// `$2` worker id, `$3` worker instance id; the candidate CTE uses `$4..`.
fn claim_sql(candidates: &str) -> String {
    format!(
        r#"
WITH cand AS ({candidates}),
upd AS (
    UPDATE ff_execution e SET
        lifecycle_phase = 'active',
        ownership_state = 'leased',
        eligibility_state = 'not_applicable',
        blocking_reason = 'none',
        attempt_state = 'running_attempt',
        blocking_detail = NULL,
        current_attempt_index = CASE WHEN c.kind = 'resumed' THEN e.current_attempt_index ELSE e.total_attempt_count END,
        total_attempt_count = CASE WHEN c.kind = 'resumed' THEN e.total_attempt_count ELSE e.total_attempt_count + 1 END,
        lease_reclaim_count = e.lease_reclaim_count + (c.kind = 'reclaimed')::int,
        lease_id = gen_random_uuid(),
        lease_epoch = e.lease_epoch + 1,
        lease_expires_at_ms = ff_now_ms() + $1,
        lease_ttl_ms = $1,
        last_heartbeat_at_ms = ff_now_ms(),
        worker_id = $2,
        worker_instance_id = $3,
        attempt_id = CASE WHEN c.kind = 'resumed' THEN e.attempt_id ELSE gen_random_uuid() END,
        attempt_deadline_at_ms = CASE WHEN c.kind = 'resumed' THEN e.attempt_deadline_at_ms
                                      ELSE ff_now_ms() + e.attempt_timeout_ms END,
        started_at_ms = coalesce(e.started_at_ms, ff_now_ms()),
        last_mutation_at_ms = ff_now_ms()
    FROM cand c
    WHERE e.execution_id = c.execution_id
    RETURNING e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.attempt_id,
              e.lease_id, e.lease_epoch, c.kind, c.prev_index
),
superseded AS (
    UPDATE ff_attempt a SET state = 'interrupted_reclaimed', ended_at_ms = ff_now_ms()
    FROM upd
    WHERE upd.kind = 'reclaimed' AND a.execution_id = upd.execution_id AND a.attempt_index = upd.prev_index
      AND a.ended_at_ms IS NULL
),
attempt AS (
    INSERT INTO ff_attempt (execution_id, attempt_index, attempt_id, attempt_type, state, lease_id, lease_epoch,
                            worker_id, worker_instance_id, started_at_ms)
    SELECT execution_id, current_attempt_index, attempt_id,
           CASE WHEN kind = 'reclaimed' THEN 'reclaim' WHEN current_attempt_index = 0 THEN 'initial' ELSE 'retry' END,
           'started', lease_id, lease_epoch, $2, $3, ff_now_ms()
    FROM upd
    ON CONFLICT (execution_id, attempt_index) DO UPDATE SET
        state = 'started', lease_id = EXCLUDED.lease_id, lease_epoch = EXCLUDED.lease_epoch,
        worker_id = EXCLUDED.worker_id, worker_instance_id = EXCLUDED.worker_instance_id
),
ev AS (
    INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch, worker_instance_id)
    SELECT CASE WHEN kind = 'reclaimed' THEN 'lease_reclaimed' ELSE 'lease_acquired' END,
           execution_id, partition_key, namespace, lane_id, current_attempt_index, lease_epoch, $3
    FROM upd
)
SELECT execution_id, partition_key, lane_id, current_attempt_index, attempt_id, lease_id, lease_epoch, kind FROM upd
"#
    )
}

/// Claim by lane: `$4` lane, `$5` worker capabilities, `$6` limit.
static CLAIM_BY_LANE: LazyLock<String> = LazyLock::new(|| {
    claim_sql(
        "SELECT x.execution_id, x.current_attempt_index AS prev_index,
                CASE WHEN x.ownership_state <> 'unowned' THEN 'reclaimed'
                     WHEN x.attempt_state = 'attempt_interrupted' THEN 'resumed'
                     ELSE 'fresh' END AS kind
         FROM ff_execution x
         WHERE x.claimable AND x.lane_id = $4 AND x.eligible_at_ms <= ff_now_ms()
           AND x.required_capabilities <@ $5::text[]
         ORDER BY x.priority DESC, x.eligible_at_ms, x.seq
         LIMIT $6
         FOR UPDATE SKIP LOCKED",
    )
});

/// Reclaim of one execution whose lease was lost: `$4` execution id.
static RECLAIM_BY_ID: LazyLock<String> = LazyLock::new(|| {
    claim_sql(
        "SELECT x.execution_id, x.current_attempt_index AS prev_index, 'reclaimed' AS kind
         FROM ff_execution x
         WHERE x.execution_id = $4 AND x.ownership_state IN ('lease_expired_reclaimable', 'lease_revoked')
         FOR UPDATE",
    )
});

/// Validated claim inputs.
pub(crate) struct ClaimRequest<'a> {
    pub lane: &'a LaneId,
    pub capabilities: Vec<String>,
    pub policy: &'a ClaimPolicy,
}

/// Validates a claim policy.
pub(crate) fn validate_policy(policy: &ClaimPolicy) -> Result<(), EngineError> {
    ff_core::validate_lease_ttl_ms(policy.lease_ttl_ms)?;
    ff_core::execution::validate_name("worker_id", policy.worker_id.as_str(), false)?;
    ff_core::execution::validate_name("worker_instance_id", policy.worker_instance_id.as_str(), false)?;
    if let Some(w) = policy.max_wait {
        if w > MAX_CLAIM_WAIT {
            return Err(EngineError::invalid(format!("max_wait {w:?} exceeds {MAX_CLAIM_WAIT:?}")));
        }
    }
    Ok(())
}

/// Validates a batch size.
pub(crate) fn validate_batch(max: usize) -> Result<(), EngineError> {
    if max == 0 || max > MAX_CLAIM_BATCH {
        return Err(EngineError::invalid(format!("claim batch size {max} outside 1..={MAX_CLAIM_BATCH}")));
    }
    Ok(())
}

/// Builds a request after validating capabilities.
pub(crate) fn request<'a>(
    lane: &'a LaneId,
    capabilities: &CapabilitySet,
    policy: &'a ClaimPolicy,
) -> Result<ClaimRequest<'a>, EngineError> {
    validate_policy(policy)?;
    ff_core::capability::validate_tokens(&capabilities.0)?;
    Ok(ClaimRequest { lane, capabilities: capabilities.0.iter().cloned().collect(), policy })
}

/// Claims up to `max` executions, long-polling up to `policy.max_wait` when none is available.
pub(crate) async fn claim_lane<'e, E>(exec: E, req: &ClaimRequest<'_>, max: usize) -> Result<Vec<Handle>, EngineError>
where
    E: Executor<'e, Database = Postgres> + Copy,
{
    let deadline = req.policy.max_wait.map(|w| tokio::time::Instant::now() + w);
    let mut pause = Duration::from_millis(5);
    loop {
        let rows = sqlx::query(&CLAIM_BY_LANE)
            .bind(req.policy.lease_ttl_ms as i64)
            .bind(req.policy.worker_id.as_str())
            .bind(req.policy.worker_instance_id.as_str())
            .bind(req.lane.as_str())
            .bind(&req.capabilities)
            .bind(max as i64)
            .fetch_all(exec)
            .await
            .map_err(map_sqlx)?;
        if !rows.is_empty() {
            return rows.iter().map(|r| handle_from_row(r, req.policy)).collect();
        }
        let Some(deadline) = deadline else { return Ok(Vec::new()) };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Vec::new());
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Reclaims one execution for the worker in `policy`; `Ok(None)` when it is not reclaimable.
pub(crate) async fn reclaim_one<'e, E>(
    exec: E,
    id: &ExecutionId,
    policy: &ClaimPolicy,
) -> Result<Option<Handle>, EngineError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(&RECLAIM_BY_ID)
        .bind(policy.lease_ttl_ms as i64)
        .bind(policy.worker_id.as_str())
        .bind(policy.worker_instance_id.as_str())
        .bind(id.uuid())
        .fetch_optional(exec)
        .await
        .map_err(map_sqlx)?;
    row.map(|r| handle_from_row(&r, policy)).transpose()
}

fn handle_from_row(row: &PgRow, policy: &ClaimPolicy) -> Result<Handle, EngineError> {
    let partition: i16 = col(row, "partition_key")?;
    let kind = HandleKind::parse(&col::<String>(row, "kind")?)?;
    let payload = HandlePayload {
        execution_id: ExecutionId::from_parts(
            non_negative("partition_key", i64::from(partition))?,
            col::<Uuid>(row, "execution_id")?,
        ),
        attempt_index: AttemptIndex(non_negative(
            "current_attempt_index",
            i64::from(col::<i32>(row, "current_attempt_index")?),
        )?),
        attempt_id: AttemptId(col(row, "attempt_id")?),
        lease_id: LeaseId(col(row, "lease_id")?),
        lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(row, "lease_epoch")?)?),
        lease_ttl_ms: policy.lease_ttl_ms,
        lane_id: LaneId::try_new(col::<String>(row, "lane_id")?)?,
        worker_instance_id: policy.worker_instance_id.clone(),
    };
    Ok(payload.into_handle(BackendTag::Postgres, kind))
}
