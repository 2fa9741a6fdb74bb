//! Lease expiry, following the canonical model: an expired lease leaves the execution `active`
//! with ownership `lease_expired_reclaimable` (or fails it once its reclaim cap is reached) and
//! closes its attempt as `interrupted_reclaimed`; a new attempt then takes it over through a
//! plain claim on its lane or through an explicit reclaim grant.

use crate::db::Db;
use ff_core::{EngineError, ExecutionId};
use sqlx::Postgres;
use uuid::Uuid;

use crate::error::map_sqlx;

/// Expires up to `$1` due leases, oldest first; or, with `$2`/`$3`, only that execution
/// (partition) if its lease is due. See `ff_expire_leases` in the schema.
pub(crate) const EXPIRE_LEASES_SQL: &str = "SELECT execution_id, capped FROM ff_expire_leases($1, $2, $3)";

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
pub(crate) async fn expire_due(pool: &Db, limit: u32) -> Result<ExpiryCounts, EngineError> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(EXPIRE_LEASES_SQL)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(None::<Uuid>)
        .bind(None::<i16>)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(count(&rows))
}

/// Expires one execution's lease if due.
pub(crate) async fn expire_one<'e, E>(exec: E, id: &ExecutionId) -> Result<ExpiryCounts, EngineError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(EXPIRE_LEASES_SQL)
        .bind(0_i32)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_all(exec)
        .await
        .map_err(map_sqlx)?;
    Ok(count(&rows))
}
