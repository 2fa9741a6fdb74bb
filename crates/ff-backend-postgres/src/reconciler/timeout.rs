//! Expires executions past their execution deadline or whose running attempt exceeded its
//! attempt timeout: terminal `expired`, attempt closed, `expired` event.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use ff_core::backend::ExpirePhase;
use ff_core::{EngineError, ExecutionId};
use sqlx::PgPool;

use super::{ReconcileReport, Reconciler};
use crate::error::map_sqlx;
use crate::metrics::Metrics;

fn expire_sql(due: &str) -> String {
    format!(
        r#"
WITH {due},
upd AS (
    UPDATE ff_execution e SET
        lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable',
        blocking_reason = 'none', terminal_outcome = 'expired', attempt_state = 'attempt_terminal',
        blocking_detail = d.why, lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL,
        completed_at_ms = ff_now_ms(), last_mutation_at_ms = ff_now_ms()
    FROM due d
    WHERE e.execution_id = d.execution_id
    RETURNING e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
              e.worker_instance_id, d.why
),
att AS (
    UPDATE ff_attempt a SET state = 'ended_expired', ended_at_ms = ff_now_ms(), failure_message = upd.why
    FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
      AND a.ended_at_ms IS NULL
),
ev AS (
    INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch, worker_instance_id)
    SELECT 'expired', execution_id, partition_key, namespace, lane_id, current_attempt_index, lease_epoch, worker_instance_id
    FROM upd
)
SELECT count(*) FROM upd
"#
    )
}

/// Up to `$1` of each kind of due execution.
static EXPIRE_DUE: LazyLock<String> = LazyLock::new(|| {
    expire_sql(
        "deadline AS (
            SELECT execution_id FROM ff_execution
            WHERE deadline_at_ms <= ff_now_ms() AND deadline_at_ms IS NOT NULL AND lifecycle_phase <> 'terminal'
            ORDER BY deadline_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED),
         attempt AS (
            SELECT execution_id FROM ff_execution
            WHERE attempt_deadline_at_ms <= ff_now_ms() AND attempt_deadline_at_ms IS NOT NULL
              AND lifecycle_phase = 'active'
            ORDER BY attempt_deadline_at_ms LIMIT $1 FOR UPDATE SKIP LOCKED),
         due AS (
            SELECT execution_id, 'execution_deadline' AS why FROM deadline
            UNION ALL
            SELECT execution_id, 'attempt_timeout' AS why FROM attempt
            WHERE execution_id NOT IN (SELECT execution_id FROM deadline))",
    )
});

/// One execution `$1` (partition `$2`) for the execution deadline.
static EXPIRE_ONE_DEADLINE: LazyLock<String> = LazyLock::new(|| {
    expire_sql(
        "due AS (
            SELECT execution_id, 'execution_deadline' AS why FROM ff_execution
            WHERE execution_id = $1 AND partition_key = $2 AND deadline_at_ms <= ff_now_ms()
              AND lifecycle_phase <> 'terminal'
            FOR UPDATE)",
    )
});

/// One execution `$1` (partition `$2`) for the attempt timeout.
static EXPIRE_ONE_ATTEMPT: LazyLock<String> = LazyLock::new(|| {
    expire_sql(
        "due AS (
            SELECT execution_id, 'attempt_timeout' AS why FROM ff_execution
            WHERE execution_id = $1 AND partition_key = $2 AND attempt_deadline_at_ms <= ff_now_ms()
              AND lifecycle_phase = 'active'
            FOR UPDATE)",
    )
});

/// Attempt-timeout and execution-deadline reconciler.
pub struct TimeoutReconciler {
    pool: PgPool,
    batch_size: u32,
    metrics: Arc<Metrics>,
}

impl TimeoutReconciler {
    /// A reconciler handling up to `batch_size` executions of each kind per pass.
    pub fn new(pool: PgPool, batch_size: u32, metrics: Arc<Metrics>) -> Self {
        Self { pool, batch_size: batch_size.max(1), metrics }
    }
}

#[async_trait]
impl Reconciler for TimeoutReconciler {
    fn name(&self) -> &'static str {
        "timeout"
    }

    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let n: i64 = sqlx::query_scalar(&EXPIRE_DUE)
            .bind(i64::from(self.batch_size))
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let n = n as u64;
        Metrics::add(&self.metrics.expirations, n);
        Ok(ReconcileReport { processed: n, batch_full: n >= u64::from(self.batch_size) })
    }
}

/// Expires one execution if due for `phase`; returns whether it did.
pub(crate) async fn expire_one(pool: &PgPool, id: &ExecutionId, phase: ExpirePhase) -> Result<bool, EngineError> {
    let sql: &str = match phase {
        ExpirePhase::ExecutionDeadline => &EXPIRE_ONE_DEADLINE,
        ExpirePhase::AttemptTimeout => &EXPIRE_ONE_ATTEMPT,
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(id.uuid())
        .bind(id.partition_index() as i16)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(n > 0)
}
