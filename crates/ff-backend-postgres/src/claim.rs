//! Claims: one round trip picks, leases and records up to N executions.
//!
//! The statement calls `ff_claim` (schema), which locks candidates with `FOR UPDATE SKIP LOCKED`
//! over the partial claim index (lane, priority DESC, eligible time, creation order), so
//! concurrent claimers never wait on each other and never claim the same row. In the same
//! transaction `ff_lease` writes the new lease onto each execution row, inserts (or, for a
//! resumed attempt, reopens) the attempt row, closes the superseded attempt of a reclaim, and
//! appends `lease_acquired` / `lease_reclaimed` events.
//!
//! Claim kinds: a runnable execution whose attempt was interrupted (delay) resumes the same
//! attempt; an active execution whose lease expired or was revoked is reclaimed by a new attempt
//! (its reclaim counter +1); anything else starts a new attempt. The epoch always increases.

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

/// Claim by lane (see `ff_claim` in the schema): `$1` lease TTL ms, `$2` worker id, `$3` worker
/// instance id, `$4` lane, `$5` worker capabilities, `$6` limit.
const CLAIM_BY_LANE: &str = "SELECT * FROM ff_claim($4, $5::text[], $6::int, $1, $2, $3)";

/// Reclaim of one execution whose lease was lost: `$4` execution id.
const RECLAIM_BY_ID: &str = "SELECT * FROM ff_claim(NULL, '{}', 1, $1, $2, $3, $4)";

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
        let rows = sqlx::query(CLAIM_BY_LANE)
            .bind(req.policy.lease_ttl_ms as i64)
            .bind(req.policy.worker_id.as_str())
            .bind(req.policy.worker_instance_id.as_str())
            .bind(req.lane.as_str())
            .bind(&req.capabilities)
            .bind(max as i32)
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
    let row = sqlx::query(RECLAIM_BY_ID)
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
            i64::from(col::<i32>(row, "attempt_index")?),
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
