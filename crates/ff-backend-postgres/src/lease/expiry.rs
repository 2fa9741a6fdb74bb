//! Lease expiry, following the canonical model: an expired lease leaves the execution `active`
//! with ownership `lease_expired_reclaimable` (or fails it once its reclaim cap is reached) and
//! closes its attempt as `interrupted_reclaimed`; a new attempt then takes it over through a
//! plain claim on its lane or through an explicit reclaim grant.

use std::sync::LazyLock;

use ff_core::{EngineError, ExecutionId};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::error::map_sqlx;

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
