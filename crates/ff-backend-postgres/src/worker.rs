//! The worker registry on Postgres: `ff_worker` rows, written by the schema functions
//! `ff_register_worker` and `ff_retire_workers`. Retiring a worker (marked dead, or its
//! liveness TTL lapsed) revokes its leases in the same transaction through `ff_lose_leases`,
//! the same transition lease expiry uses.

use crate::db::Db;
use async_trait::async_trait;
use ff_core::backend::WorkerRegistryBackend;
use ff_core::*;
use sqlx::postgres::PgRow;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::metrics::Metrics;
use crate::row::col;

/// `$1` instance, `$2` worker id, `$3` namespace, `$4` lanes, `$5` capabilities, `$6` TTL.
pub(crate) const REGISTER_SQL: &str =
    "SELECT refreshed, expires_at_ms, bound_worker_id FROM ff_register_worker($1, $2, $3, $4, $5, $6)";

/// Extends a live registration: `$1` instance, `$2` namespace.
pub(crate) const HEARTBEAT_SQL: &str = "UPDATE ff_worker SET last_heartbeat_at_ms = ff_now_ms(), \
     expires_at_ms = ff_now_ms() + liveness_ttl_ms \
     WHERE worker_instance_id = $1 AND namespace = $2 AND expires_at_ms > ff_now_ms() RETURNING expires_at_ms";

/// Retires workers: up to `$1` lapsed ones, or only instance `$2` in namespace `$3`; `$4` reason.
pub(crate) const RETIRE_SQL: &str = "SELECT worker_instance_id, revoked FROM ff_retire_workers($1, $2, $3, $4)";

/// Live workers after `$2` (exclusive), of namespace `$1` when given, at most `$3`.
pub(crate) const LIST_WORKERS_SQL: &str = "SELECT worker_id, worker_instance_id, namespace, lanes, capabilities, \
     liveness_ttl_ms, registered_at_ms, last_heartbeat_at_ms, expires_at_ms FROM ff_worker \
     WHERE ($1::text IS NULL OR namespace = $1) AND ($2::text IS NULL OR worker_instance_id COLLATE \"C\" > $2) \
       AND expires_at_ms > ff_now_ms() \
     ORDER BY worker_instance_id COLLATE \"C\" LIMIT $3";

/// Counts of one retirement pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retired {
    /// Workers removed.
    pub workers: u64,
    /// Leases they lost.
    pub revoked_leases: u64,
}

/// Retires up to `limit` workers whose liveness TTL has lapsed, revoking their leases.
pub(crate) async fn retire_lapsed(pool: &Db, limit: u32) -> Result<Retired, EngineError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(RETIRE_SQL)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(Retired { workers: rows.len() as u64, revoked_leases: rows.iter().map(|(_, n)| *n as u64).sum() })
}

fn worker_info(row: &PgRow) -> Result<WorkerInfo, EngineError> {
    let lanes = col::<Vec<String>>(row, "lanes")?.into_iter().map(LaneId::try_new).collect::<Result<_, _>>()?;
    Ok(WorkerInfo {
        worker_id: WorkerId(col(row, "worker_id")?),
        worker_instance_id: WorkerInstanceId(col(row, "worker_instance_id")?),
        namespace: Namespace(col(row, "namespace")?),
        lanes,
        capabilities: CapabilitySet(col::<Vec<String>>(row, "capabilities")?.into_iter().collect()),
        liveness_ttl_ms: crate::row::non_negative("liveness_ttl_ms", col::<i64>(row, "liveness_ttl_ms")?)?,
        registered_at_ms: TimestampMs(col(row, "registered_at_ms")?),
        last_heartbeat_at_ms: TimestampMs(col(row, "last_heartbeat_at_ms")?),
        expires_at_ms: TimestampMs(col(row, "expires_at_ms")?),
    })
}

#[async_trait]
impl WorkerRegistryBackend for PostgresBackend {
    async fn register_worker(&self, args: RegisterWorkerArgs) -> Result<RegisterWorkerOutcome, EngineError> {
        args.validate()?;
        let lanes: Vec<&str> = args.lanes.iter().map(LaneId::as_str).collect();
        let capabilities: Vec<&str> = args.capabilities.0.iter().map(String::as_str).collect();
        let (refreshed, expires_at_ms, bound): (bool, i64, String) = sqlx::query_as(REGISTER_SQL)
            .bind(args.worker_instance_id.as_str())
            .bind(args.worker_id.as_str())
            .bind(args.namespace.as_str())
            .bind(&lanes)
            .bind(&capabilities)
            .bind(i64::try_from(args.liveness_ttl_ms).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        if bound != args.worker_id.as_str() {
            return Err(EngineError::Conflict(ConflictKind::WorkerInstanceReassigned));
        }
        let expires_at_ms = TimestampMs(expires_at_ms);
        Ok(if refreshed {
            RegisterWorkerOutcome::Refreshed { expires_at_ms }
        } else {
            RegisterWorkerOutcome::Registered { expires_at_ms }
        })
    }

    async fn heartbeat_worker(&self, args: HeartbeatWorkerArgs) -> Result<HeartbeatWorkerOutcome, EngineError> {
        args.validate()?;
        let expiry: Option<i64> = sqlx::query_scalar(HEARTBEAT_SQL)
            .bind(args.worker_instance_id.as_str())
            .bind(args.namespace.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(match expiry {
            Some(ms) => HeartbeatWorkerOutcome::Refreshed { next_expiry_ms: TimestampMs(ms) },
            None => HeartbeatWorkerOutcome::NotRegistered,
        })
    }

    async fn mark_worker_dead(&self, args: MarkWorkerDeadArgs) -> Result<MarkWorkerDeadOutcome, EngineError> {
        args.validate()?;
        let row: Option<(String, i64)> = sqlx::query_as(RETIRE_SQL)
            .bind(0_i32)
            .bind(args.worker_instance_id.as_str())
            .bind(args.namespace.as_str())
            .bind(args.reason.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(match row {
            Some((_, revoked)) => {
                Metrics::add(&self.metrics.lease_revocations, revoked as u64);
                MarkWorkerDeadOutcome::Marked { revoked_leases: revoked as u64 }
            }
            None => MarkWorkerDeadOutcome::NotRegistered,
        })
    }

    async fn list_workers(&self, args: ListWorkersArgs) -> Result<ListWorkersResult, EngineError> {
        let limit = args.validate()?;
        let rows = sqlx::query(LIST_WORKERS_SQL)
            .bind(args.namespace.as_ref().map(Namespace::as_str))
            .bind(args.after.as_ref().map(WorkerInstanceId::as_str))
            .bind(limit as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let more = rows.len() > limit;
        let entries = rows.iter().take(limit).map(worker_info).collect::<Result<Vec<_>, _>>()?;
        let cursor = if more { entries.last().map(|w| w.worker_instance_id.clone()) } else { None };
        Ok(ListWorkersResult { entries, cursor })
    }
}
