//! Ending or parking an attempt: complete, fail (with the stored retry policy), cancel, delay.
//!
//! Each is one transaction whose writing statement carries the lease fence; the execution row,
//! the attempt row and the event log change together. `complete` is one call of `ff_complete`
//! over arrays of items, so a batch of completions costs one round trip with every row still
//! fenced.

use std::sync::LazyLock;

use async_trait::async_trait;
use ff_core::backend::AttemptEndBackend;
use ff_core::{Handle, MAX_CLAIM_BATCH};

use ff_core::{
    AttemptIndex, EngineError, ExecutionPolicy, FailOutcome, FailureClass, FailureReason, HandlePayload, TimestampMs,
    ValidationKind,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::backend::PostgresBackend;
use crate::coalesce::CompletionGroups;
use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::metrics::Metrics;
use crate::row::{col, u32_col};

/// Fenced batch completion (see `ff_complete` in the schema): `$1` execution ids, `$2` lease ids,
/// `$3` epochs, `$4` attempt indexes, `$5` results (NULL = none). Returns the ids that completed.
const COMPLETE_SQL: &str = "SELECT * FROM ff_complete($1, $2, $3, $4, $5)";

/// Completes every item whose fence holds; returns, per item in order, whether it completed.
pub(crate) async fn complete(
    pool: &PgPool,
    items: &[(HandlePayload, Option<Vec<u8>>)],
) -> Result<Vec<bool>, EngineError> {
    let mut ids = Vec::with_capacity(items.len());
    let mut leases = Vec::with_capacity(items.len());
    let mut epochs = Vec::with_capacity(items.len());
    let mut attempts = Vec::with_capacity(items.len());
    let mut results: Vec<Option<&[u8]>> = Vec::with_capacity(items.len());
    for (p, r) in items {
        ids.push(p.execution_id.uuid());
        leases.push(p.lease_id.0);
        epochs.push(p.lease_epoch.0 as i64);
        attempts.push(p.attempt_index.0 as i32);
        results.push(r.as_deref());
    }
    let done: Vec<Uuid> = sqlx::query_scalar(COMPLETE_SQL)
        .bind(&ids)
        .bind(&leases)
        .bind(&epochs)
        .bind(&attempts)
        .bind(&results)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    // An execution listed twice completes once: only its first item reports success.
    let mut done: std::collections::HashSet<Uuid> = done.into_iter().collect();
    Ok(ids.iter().map(|id| done.remove(id)).collect())
}

/// Shared tail of the fenced single-row statements below: the attempt update and the event.
fn ending_sql(set_execution: &str, attempt_state: &str, event_kind: &str) -> String {
    format!(
        r#"
WITH upd AS (
    UPDATE ff_execution e SET {set_execution},
        lease_expires_at_ms = NULL, attempt_deadline_at_ms = NULL, last_mutation_at_ms = ff_now_ms()
    WHERE {FENCE}
    RETURNING e.execution_id, e.partition_key, e.namespace, e.lane_id, e.current_attempt_index, e.lease_epoch,
              e.worker_instance_id, e.eligible_at_ms, e.total_attempt_count
),
att AS (
    UPDATE ff_attempt a SET state = '{attempt_state}',
        ended_at_ms = CASE WHEN '{attempt_state}' = 'suspended' THEN NULL ELSE ff_now_ms() END,
        failure_class = $5, failure_message = $6, failure_detail = $7
    FROM upd WHERE a.execution_id = upd.execution_id AND a.attempt_index = upd.current_attempt_index
),
ev AS (
    INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id, attempt_index, lease_epoch, worker_instance_id)
    SELECT '{event_kind}', execution_id, partition_key, namespace, lane_id, current_attempt_index, lease_epoch, worker_instance_id
    FROM upd
)
SELECT eligible_at_ms, total_attempt_count FROM upd
"#
    )
}

const TERMINAL_SET: &str = "lifecycle_phase = 'terminal', ownership_state = 'unowned', eligibility_state = 'not_applicable', \
     blocking_reason = 'none', attempt_state = 'attempt_terminal', completed_at_ms = ff_now_ms()";

/// Fail for good: `$5..$7` failure class, message, detail.
static FAIL_TERMINAL_SQL: LazyLock<String> = LazyLock::new(|| {
    ending_sql(&format!("{TERMINAL_SET}, terminal_outcome = 'failed', blocking_detail = $6"), "ended_failure", "failed")
});

/// Schedule a retry: `$8` backoff ms.
static FAIL_RETRY_SQL: LazyLock<String> = LazyLock::new(|| {
    ending_sql(
        "lifecycle_phase = 'runnable', ownership_state = 'unowned', eligibility_state = 'not_eligible_until_time', \
         blocking_reason = 'waiting_for_retry_backoff', attempt_state = 'pending_retry_attempt', \
         retry_count = e.retry_count + 1, eligible_at_ms = ff_now_ms() + $8, blocking_detail = $6",
        "ended_failure",
        "retry_scheduled",
    )
});

/// Cancel: `$6` reason.
static CANCEL_SQL: LazyLock<String> = LazyLock::new(|| {
    ending_sql(
        &format!("{TERMINAL_SET}, terminal_outcome = 'cancelled', blocking_detail = $6"),
        "ended_cancelled",
        "cancelled",
    )
});

/// Delay: `$8` absolute time (ms).
static DELAY_SQL: LazyLock<String> = LazyLock::new(|| {
    ending_sql(
        "lifecycle_phase = 'runnable', ownership_state = 'unowned', eligibility_state = 'not_eligible_until_time', \
         blocking_reason = 'waiting_for_delay', attempt_state = 'attempt_interrupted', eligible_at_ms = $8, \
         blocking_detail = NULL",
        "suspended",
        "lease_released",
    )
});

/// Result of a fenced single-row ending: `None` when the fence failed.
pub(crate) struct Ended {
    pub eligible_at_ms: i64,
    pub total_attempt_count: i32,
}

async fn run_ending<'e, E>(
    exec: E,
    sql: &str,
    p: &HandlePayload,
    class: Option<&str>,
    message: Option<&str>,
    detail: Option<&str>,
    extra_ms: Option<i64>,
) -> Result<Option<Ended>, EngineError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let q = bind_fence(sqlx::query(sql), p).bind(class).bind(message).bind(detail);
    let q = match extra_ms {
        Some(ms) => q.bind(ms),
        None => q,
    };
    let row = q.fetch_optional(exec).await.map_err(map_sqlx)?;
    row.map(|r| {
        Ok(Ended { eligible_at_ms: col(&r, "eligible_at_ms")?, total_attempt_count: col(&r, "total_attempt_count")? })
    })
    .transpose()
}

/// Cancels; `None` when the fence failed.
pub(crate) async fn cancel(pool: &PgPool, p: &HandlePayload, reason: &str) -> Result<Option<()>, EngineError> {
    Ok(run_ending(pool, &CANCEL_SQL, p, None, Some(reason), None, None).await?.map(|_| ()))
}

/// Parks until `until`; `None` when the fence failed.
pub(crate) async fn delay(pool: &PgPool, p: &HandlePayload, until: TimestampMs) -> Result<Option<()>, EngineError> {
    Ok(run_ending(pool, &DELAY_SQL, p, None, None, None, Some(until.0)).await?.map(|_| ()))
}

/// Fails the attempt, deciding retry from the stored policy; `None` when the fence failed.
pub(crate) async fn fail(
    pool: &PgPool,
    p: &HandlePayload,
    reason: &FailureReason,
    class: FailureClass,
) -> Result<Option<FailOutcome>, EngineError> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let locked = bind_fence(
        sqlx::query(&format!(
            "SELECT e.policy, e.retry_count, e.max_retries FROM ff_execution e WHERE {FENCE} FOR UPDATE"
        )),
        p,
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_sqlx)?;
    let Some(row) = locked else {
        return Ok(None);
    };
    let policy: ExecutionPolicy = serde_json::from_value(col::<serde_json::Value>(&row, "policy")?)
        .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("stored policy: {e}")))?;
    let retry_count: u32 = u32_col(&row, "retry_count")?;
    let max_retries: u32 = u32_col(&row, "max_retries")?;
    let retry = match &policy.retry_policy {
        Some(rp) if class.is_retryable() && retry_count < max_retries => {
            Some(rp.delay_for(retry_count, rand::random::<f64>()))
        }
        _ => None,
    };
    let message = Some(reason.message.as_str());
    let detail = reason.detail.as_deref();
    let outcome = match retry {
        Some(backoff) => {
            let ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX);
            let ended =
                run_ending(&mut *tx, &FAIL_RETRY_SQL, p, Some(class.as_str()), message, detail, Some(ms)).await?;
            ended.map(|e| FailOutcome::RetryScheduled {
                delay_until: TimestampMs(e.eligible_at_ms),
                next_attempt_index: AttemptIndex(e.total_attempt_count as u32),
            })
        }
        None => run_ending(&mut *tx, &FAIL_TERMINAL_SQL, p, Some(class.as_str()), message, detail, None)
            .await?
            .map(|_| FailOutcome::TerminalFailed),
    };
    tx.commit().await.map_err(map_sqlx)?;
    Ok(outcome)
}

#[async_trait]
impl AttemptEndBackend for PostgresBackend {
    async fn complete(&self, handle: &Handle, payload: Option<Vec<u8>>) -> Result<(), EngineError> {
        let p = self.decode_completion(handle, &payload)?;
        // Concurrent single completions share a round trip (see `coalesce`).
        let groups = self.completions.get_or_init(|| CompletionGroups::start(self.pool.clone()));
        if groups.complete(p.clone(), payload).await? {
            Metrics::add(&self.metrics.completions, 1);
            Ok(())
        } else {
            Err(self.rejected(&p).await)
        }
    }

    async fn complete_batch(
        &self,
        items: Vec<(Handle, Option<Vec<u8>>)>,
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        if items.len() > MAX_CLAIM_BATCH {
            return Err(EngineError::invalid(format!("batch of {} exceeds {MAX_CLAIM_BATCH}", items.len())));
        }
        // Decode and validate every item first; invalid items get their error without a write.
        let mut results: Vec<Option<Result<(), EngineError>>> = Vec::with_capacity(items.len());
        let mut valid = Vec::with_capacity(items.len());
        for (handle, payload) in items {
            match self.decode_completion(&handle, &payload) {
                Ok(p) => {
                    results.push(None);
                    valid.push((p, payload));
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let done = if valid.is_empty() { Vec::new() } else { complete(&self.pool, &valid).await? };
        Metrics::add(&self.metrics.completions, done.iter().filter(|d| **d).count() as u64);
        let mut valid = valid.into_iter().zip(done);
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            match r {
                Some(e) => out.push(e),
                None => match valid.next() {
                    Some((_, true)) => out.push(Ok(())),
                    Some(((p, _), false)) => out.push(Err(self.rejected(&p).await)),
                    None => return Err(EngineError::Internal("batch bookkeeping".into())),
                },
            }
        }
        Ok(out)
    }

    async fn fail(
        &self,
        handle: &Handle,
        reason: FailureReason,
        classification: FailureClass,
    ) -> Result<FailOutcome, EngineError> {
        let p = self.decode(handle)?;
        ff_core::execution::validate_message("failure message", &reason.message)?;
        if let Some(d) = &reason.detail {
            ff_core::execution::validate_message("failure detail", d)?;
        }
        match fail(&self.pool, &p, &reason, classification).await? {
            Some(outcome) => {
                Metrics::add(&self.metrics.failures, 1);
                if matches!(outcome, FailOutcome::RetryScheduled { .. }) {
                    Metrics::add(&self.metrics.retries, 1);
                }
                Ok(outcome)
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn cancel(&self, handle: &Handle, reason: &str) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        ff_core::execution::validate_message("cancel reason", reason)?;
        match cancel(&self.pool, &p, reason).await? {
            Some(()) => {
                Metrics::add(&self.metrics.cancellations, 1);
                Ok(())
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn delay(&self, handle: &Handle, delay_until: TimestampMs) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        delay_until.validate("delay_until")?;
        match delay(&self.pool, &p, delay_until).await? {
            Some(()) => Ok(()),
            None => Err(self.rejected(&p).await),
        }
    }
}
