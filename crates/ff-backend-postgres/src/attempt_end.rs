//! Ending or parking an attempt: complete, fail (with the stored retry policy), cancel, delay.
//!
//! Each is one transaction whose writing statement carries the lease fence; the execution row,
//! the attempt row and the event log change together. The transitions' SQL lives in the schema
//! (`ff_complete`, `ff_end_attempt`); this module binds their arguments. `complete` is one call of `ff_complete`
//! over arrays of items, so a batch of completions costs one round trip with every row still
//! fenced.

use std::sync::LazyLock;

use async_trait::async_trait;
use ff_core::backend::AttemptEndBackend;
use ff_core::{Handle, MAX_CLAIM_BATCH};

use crate::db::Db;
use ff_core::{
    AttemptIndex, CompleteExecutionArgs, CompleteExecutionResult, EngineError, ExecutionPolicy, FailExecutionArgs,
    FailExecutionResult, FailOutcome, FailureClass, FailureReason, HandlePayload, PublicState, TimestampMs,
    ValidationKind,
};
use uuid::Uuid;

use crate::backend::PostgresBackend;
use crate::coalesce::CompletionGroups;
use crate::error::map_sqlx;
use crate::fence::{FENCE, bind_fence};
use crate::metrics::Metrics;
use crate::row::{col, u32_col};

/// Fenced batch completion (see `ff_complete` in the schema): `$1` execution ids, `$2` lease ids,
/// `$3` epochs, `$4` attempt indexes, `$5` results (NULL = none). Returns each completed id with
/// the lease that completed it.
pub(crate) const COMPLETE_SQL: &str = "SELECT execution_id, lease_id FROM ff_complete($1, $2, $3, $4, $5)";

/// Completes every item whose fence holds; returns, per item in order, whether it completed.
pub(crate) async fn complete(pool: &Db, items: &[(HandlePayload, Option<Vec<u8>>)]) -> Result<Vec<bool>, EngineError> {
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
    let done: Vec<(Uuid, Uuid)> = sqlx::query_as(COMPLETE_SQL)
        .bind(&ids)
        .bind(&leases)
        .bind(&epochs)
        .bind(&attempts)
        .bind(&results)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    // Each completion is credited to the lease that made it: a stale handle of an execution in
    // the same batch as its live one is not. The same handle listed twice succeeds once.
    let mut done: std::collections::HashSet<(Uuid, Uuid)> = done.into_iter().collect();
    Ok(ids.iter().zip(&leases).map(|(id, lease)| done.remove(&(*id, *lease))).collect())
}

/// How the lease holder ends or parks its attempt, other than by completing it: the labels of
/// the schema's `ff_attempt_ending` type, whose function `ff_end_attempt` holds each
/// transition's SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Terminal failure.
    Fail,
    /// A retry after backoff.
    Retry,
    /// Terminal cancellation.
    Cancel,
    /// Parked until a time; the same attempt resumes.
    Delay,
}

impl Ending {
    /// Every ending, in the schema's label order.
    #[cfg(test)]
    pub(crate) const ALL: [Ending; 4] = [Ending::Fail, Ending::Retry, Ending::Cancel, Ending::Delay];

    /// The `ff_attempt_ending` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ending::Fail => "fail",
            Ending::Retry => "retry",
            Ending::Cancel => "cancel",
            Ending::Delay => "delay",
        }
    }
}

/// Fenced end of one attempt (see `ff_end_attempt` in the schema): `$1` ending, `$2..$5` the
/// fence, `$6..$8` failure class, message (or cancel reason) and detail, `$9` backoff ms (retry)
/// or absolute time (delay). No row when the fence failed.
pub(crate) const END_ATTEMPT_SQL: &str = "SELECT eligible_at_ms, total_attempt_count FROM ff_end_attempt($1::ff_attempt_ending, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Locks the fenced execution row and reads its retry policy and counters.
pub(crate) static FAIL_LOCK_SQL: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT e.policy, e.retry_count, e.max_retries FROM ff_execution e WHERE {FENCE} FOR UPDATE")
});

/// Result of a fenced single-row ending: `None` when the fence failed.
pub(crate) struct Ended {
    pub eligible_at_ms: i64,
    pub total_attempt_count: i32,
}

/// What an ending records beyond the fence.
#[derive(Default)]
struct EndingArgs<'a> {
    class: Option<&'a str>,
    message: Option<&'a str>,
    detail: Option<&'a str>,
    ms: Option<i64>,
}

async fn end_attempt<'e, E>(
    exec: E,
    ending: Ending,
    p: &HandlePayload,
    args: EndingArgs<'_>,
) -> Result<Option<Ended>, EngineError>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let row = sqlx::query(END_ATTEMPT_SQL)
        .bind(ending.as_str())
        .bind(p.execution_id.uuid())
        .bind(p.lease_id.0)
        .bind(p.lease_epoch.0 as i64)
        .bind(p.attempt_index.0 as i32)
        .bind(args.class)
        .bind(args.message)
        .bind(args.detail)
        .bind(args.ms)
        .fetch_optional(exec)
        .await
        .map_err(map_sqlx)?;
    row.map(|r| {
        Ok(Ended { eligible_at_ms: col(&r, "eligible_at_ms")?, total_attempt_count: col(&r, "total_attempt_count")? })
    })
    .transpose()
}

/// Cancels; `None` when the fence failed.
pub(crate) async fn cancel(pool: &Db, p: &HandlePayload, reason: &str) -> Result<Option<()>, EngineError> {
    let args = EndingArgs { message: Some(reason), ..Default::default() };
    Ok(end_attempt(pool, Ending::Cancel, p, args).await?.map(|_| ()))
}

/// Parks until `until`; `None` when the fence failed.
pub(crate) async fn delay(pool: &Db, p: &HandlePayload, until: TimestampMs) -> Result<Option<()>, EngineError> {
    let args = EndingArgs { ms: Some(until.0), ..Default::default() };
    Ok(end_attempt(pool, Ending::Delay, p, args).await?.map(|_| ()))
}

/// Fails the attempt, deciding retry from the stored policy; `None` when the fence failed.
pub(crate) async fn fail(
    pool: &Db,
    p: &HandlePayload,
    reason: &FailureReason,
    class: FailureClass,
) -> Result<Option<FailOutcome>, EngineError> {
    let mut tx = pool.begin().await.map_err(map_sqlx)?;
    let locked = bind_fence(sqlx::query(&FAIL_LOCK_SQL), p).fetch_optional(&mut *tx).await.map_err(map_sqlx)?;
    let Some(row) = locked else {
        return tx.abandon(Ok(None)).await;
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
    let args = EndingArgs {
        class: Some(class.as_str()),
        message: Some(reason.message.as_str()),
        detail: reason.detail.as_deref(),
        ms: retry.map(|backoff| i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX)),
    };
    let outcome = match retry {
        Some(_) => end_attempt(&mut *tx, Ending::Retry, p, args).await?.map(|e| FailOutcome::RetryScheduled {
            delay_until: TimestampMs(e.eligible_at_ms),
            next_attempt_index: AttemptIndex(e.total_attempt_count as u32),
        }),
        None => end_attempt(&mut *tx, Ending::Fail, p, args).await?.map(|_| FailOutcome::TerminalFailed),
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
            self.announce_events();
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
        if done.iter().any(|d| *d) {
            self.announce_events();
        }
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

    async fn complete_execution(&self, args: CompleteExecutionArgs) -> Result<CompleteExecutionResult, EngineError> {
        args.validate()?;
        let p = self.resolve_fence(&args.execution_id, args.attempt_index, args.fence.as_ref()).await?;
        let done = complete(&self.pool, &[(p.clone(), args.result_payload)]).await?;
        if done.first() == Some(&true) {
            Metrics::add(&self.metrics.completions, 1);
            self.announce_events();
            Ok(CompleteExecutionResult::Completed {
                execution_id: args.execution_id,
                public_state: PublicState::Completed,
            })
        } else {
            Err(self.rejected(&p).await)
        }
    }

    async fn fail_execution(&self, args: FailExecutionArgs) -> Result<FailExecutionResult, EngineError> {
        args.validate()?;
        let p = self.resolve_fence(&args.execution_id, args.attempt_index, args.fence.as_ref()).await?;
        match fail(&self.pool, &p, &args.failure_reason, args.failure_category).await? {
            Some(outcome) => {
                self.announce_events();
                Ok(outcome)
            }
            None => Err(self.rejected(&p).await),
        }
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
                self.announce_events();
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
                self.announce_events();
                Ok(())
            }
            None => Err(self.rejected(&p).await),
        }
    }

    async fn delay(&self, handle: &Handle, delay_until: TimestampMs) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        delay_until.validate("delay_until")?;
        match delay(&self.pool, &p, delay_until).await? {
            Some(()) => {
                self.announce_events();
                Ok(())
            }
            None => Err(self.rejected(&p).await),
        }
    }
}
