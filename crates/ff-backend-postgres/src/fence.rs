//! Handle decoding and fence diagnosis.
//!
//! Fenced statements carry the lease in their WHERE clause and simply match no row when the
//! fence fails; [`diagnose`] then reads the row once to say why, as a typed error: not found,
//! lease expired, lease revoked, execution no longer active (a replay by the same lease), or a
//! stale lease (someone newer owns it).

use crate::db::Db;
use ff_core::error::ExecutionNotActiveDetail;
use ff_core::{
    AttemptId, AttemptIndex, BackendTag, ContentionKind, EngineError, ExecutionId, Handle, HandlePayload, LaneId,
    LeaseEpoch, LeaseFence, LeaseId, LifecyclePhase, OwnershipState, Partition, PartitionConfig, PartitionFamily,
    StateKind, TerminalOutcome, WorkerInstanceId,
};
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::row::{col, non_negative, u32_col};

pub(crate) const DIAGNOSE_SQL: &str = "SELECT lifecycle_phase::text AS lifecycle_phase, ownership_state::text AS ownership_state, \
                terminal_outcome::text AS terminal_outcome, lease_id, lease_epoch, current_attempt_index, \
                (lease_expires_at_ms IS NOT NULL AND lease_expires_at_ms <= ff_now_ms()) AS expired \
         FROM ff_execution WHERE execution_id = $1 AND partition_key = $2";

/// Decodes a handle minted by this backend and checks its partition.
pub(crate) fn decode(handle: &Handle, partitions: &PartitionConfig) -> Result<HandlePayload, EngineError> {
    let p = HandlePayload::from_handle(handle, BackendTag::Postgres)?;
    partitions.check_execution_partition(p.execution_id.partition_index())?;
    Ok(p)
}

/// Explains why a fenced write for `p` matched no row.
pub(crate) async fn diagnose(pool: &Db, p: &HandlePayload) -> EngineError {
    match diagnose_inner(pool, p).await {
        Ok(e) | Err(e) => e,
    }
}

async fn diagnose_inner(pool: &Db, p: &HandlePayload) -> Result<EngineError, EngineError> {
    let row = sqlx::query(DIAGNOSE_SQL)
        .bind(p.execution_id.uuid())
        .bind(p.execution_id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some(row) = row else {
        return Ok(EngineError::NotFound { entity: "execution" });
    };
    let phase = LifecyclePhase::parse(&col::<String>(&row, "lifecycle_phase")?)?;
    let ownership = OwnershipState::parse(&col::<String>(&row, "ownership_state")?)?;
    let outcome = TerminalOutcome::parse(&col::<String>(&row, "terminal_outcome")?)?;
    let lease_id: Option<Uuid> = col(&row, "lease_id")?;
    let epoch: u64 = non_negative("lease_epoch", col::<i64>(&row, "lease_epoch")?)?;
    let attempt_index: u32 = u32_col(&row, "current_attempt_index")?;
    let expired: bool = col(&row, "expired")?;
    let same_lease = lease_id == Some(p.lease_id.0) && epoch == p.lease_epoch.0 && attempt_index == p.attempt_index.0;
    if !same_lease {
        return Ok(EngineError::State(StateKind::StaleLease));
    }
    Ok(match ownership {
        OwnershipState::Leased if expired => EngineError::State(StateKind::LeaseExpired),
        OwnershipState::LeaseExpiredReclaimable => EngineError::State(StateKind::LeaseExpired),
        OwnershipState::LeaseRevoked => EngineError::State(StateKind::LeaseRevoked),
        OwnershipState::Unowned => {
            EngineError::State(StateKind::ExecutionNotActive(Box::new(ExecutionNotActiveDetail {
                terminal_outcome: outcome,
                lease_epoch: LeaseEpoch(epoch),
                lifecycle_phase: phase,
                attempt_id: p.attempt_id,
            })))
        }
        OwnershipState::Leased => EngineError::Contention(ContentionKind::LeaseConflict),
    })
}

/// Checks that `partition` is the execution partition that holds `id`, and that it exists.
pub(crate) fn check_partition(
    partition: Partition,
    id: &ExecutionId,
    cfg: &PartitionConfig,
) -> Result<(), EngineError> {
    check_id(id, cfg)?;
    if !matches!(partition.family, PartitionFamily::Execution | PartitionFamily::Flow)
        || partition.index != id.partition_index()
    {
        return Err(EngineError::invalid(format!("partition {} does not hold execution {id}", partition.key())));
    }
    Ok(())
}

/// Checks an execution id's partition against the configuration.
pub(crate) fn check_id(id: &ExecutionId, partitions: &PartitionConfig) -> Result<(), EngineError> {
    partitions.check_execution_partition(id.partition_index())
}

/// The standard fence predicate over alias `e` with parameters `$1..$4` =
/// (execution_id, lease_id, lease_epoch, attempt_index).
pub(crate) const FENCE: &str = "e.execution_id = $1 AND e.lease_id = $2 AND e.lease_epoch = $3 \
     AND e.current_attempt_index = $4 AND e.ownership_state = 'leased' AND e.lease_expires_at_ms > ff_now_ms()";

/// Binds the fence parameters `$1..$4` of [`FENCE`].
pub(crate) fn bind_fence<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    p: &HandlePayload,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(p.execution_id.uuid()).bind(p.lease_id.0).bind(p.lease_epoch.0 as i64).bind(p.attempt_index.0 as i32)
}

/// The current lease of an execution, for resolving a fence triple: `$1` id, `$2` partition.
pub(crate) const CURRENT_LEASE_SQL: &str = "SELECT lane_id, lease_id, lease_epoch, attempt_id, current_attempt_index, \
     worker_instance_id, coalesce(lease_ttl_ms, 0) AS lease_ttl_ms FROM ff_execution \
     WHERE execution_id = $1 AND partition_key = $2";

/// Turns a fence triple (or, for an operator override, no fence: the execution's current
/// lease) into the payload the handle-based writes take. Nothing here is trusted for writing:
/// the writing statement checks the lease again. What this adds is the attempt id, which the
/// writes do not compare: a fence naming the current lease with another attempt id is stale.
pub(crate) async fn resolve(
    pool: &Db,
    partitions: &PartitionConfig,
    execution_id: &ExecutionId,
    attempt_index: AttemptIndex,
    fence: Option<&LeaseFence>,
) -> Result<HandlePayload, EngineError> {
    check_id(execution_id, partitions)?;
    let row = sqlx::query(CURRENT_LEASE_SQL)
        .bind(execution_id.uuid())
        .bind(execution_id.partition_index() as i16)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?
        .ok_or(EngineError::NotFound { entity: "execution" })?;
    let stored_lease: Option<Uuid> = col(&row, "lease_id")?;
    let stored_attempt: Option<Uuid> = col(&row, "attempt_id")?;
    let stored_index = AttemptIndex(u32_col(&row, "current_attempt_index")?);
    let (lease_id, lease_epoch, attempt_id) = match fence {
        Some(f) => {
            if stored_lease == Some(f.lease_id.0) && stored_attempt != Some(f.attempt_id.0) {
                return Err(EngineError::State(StateKind::StaleLease));
            }
            (f.lease_id, f.lease_epoch, f.attempt_id)
        }
        None => {
            // An override acts on the attempt the caller named, and only while it is current.
            let (Some(lease), Some(attempt)) = (stored_lease, stored_attempt) else {
                return Err(EngineError::Contention(ContentionKind::NoActiveLease));
            };
            if stored_index != attempt_index {
                return Err(EngineError::State(StateKind::StaleLease));
            }
            let epoch = non_negative("lease_epoch", col::<i64>(&row, "lease_epoch")?)?;
            (LeaseId(lease), LeaseEpoch(epoch), AttemptId(attempt))
        }
    };
    Ok(HandlePayload {
        execution_id: *execution_id,
        attempt_index,
        attempt_id,
        lease_id,
        lease_epoch,
        lease_ttl_ms: non_negative("lease_ttl_ms", col::<i64>(&row, "lease_ttl_ms")?)?,
        lane_id: LaneId::try_new(col::<String>(&row, "lane_id")?)?,
        worker_instance_id: WorkerInstanceId(col::<Option<String>>(&row, "worker_instance_id")?.unwrap_or_default()),
    })
}
