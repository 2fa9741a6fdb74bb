//! The retention reconciler: deletes terminal executions whose retention window has passed (with
//! every row of theirs) lane by lane, and prunes the event log from its oldest end, one batch of
//! each per lane and per pass, each batch one transaction.

use std::time::Duration;

use crate::db::Db;
use async_trait::async_trait;
use ff_core::{
    DEFAULT_RETENTION_MS, EngineError, PruneEventLogArgs, TrimRetentionArgs, validate_retention_batch,
    validate_retention_ms,
};

use super::{ReconcileReport, Reconciler};
use crate::retention;

/// What the retention reconciler keeps and how much it deletes per batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long a terminal execution is kept after it ended when neither its lane nor its
    /// namespace has an override (default 7 days).
    pub default_retention: Duration,
    /// How long an event is kept in the event log (default 7 days). Keep it at least as long
    /// as subscribers may lag: a subscriber whose cursor falls behind it gets `cursor_expired`.
    pub event_retention: Duration,
    /// Executions per lane, and events, per batch (default 500).
    pub batch_size: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let week = Duration::from_millis(DEFAULT_RETENTION_MS as u64);
        Self { default_retention: week, event_retention: week, batch_size: 500 }
    }
}

impl RetentionConfig {
    /// Checks the windows (1 ms ..= about 100 years) and the batch (1..=10 000).
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_retention_ms("default_retention", ms(self.default_retention))?;
        validate_retention_ms("event_retention", ms(self.event_retention))?;
        validate_retention_batch(self.batch_size)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Retention reconciler.
pub struct RetentionReconciler {
    pool: Db,
    config: RetentionConfig,
}

impl RetentionReconciler {
    /// A reconciler with a validated configuration.
    pub fn new(pool: impl Into<Db>, config: RetentionConfig) -> Result<Self, EngineError> {
        let pool = pool.into();
        config.validate()?;
        Ok(Self { pool, config })
    }
}

#[async_trait]
impl Reconciler for RetentionReconciler {
    fn name(&self) -> &'static str {
        "retention"
    }

    /// One batch of every lane, then one batch of the event log. A lane that fails is logged and
    /// the others still get their pass; the first failure is the pass's error.
    async fn run_once(&self) -> Result<ReconcileReport, EngineError> {
        let mut processed = 0u64;
        let mut batch_full = false;
        let mut failed = None;
        for lane in retention::lanes(&self.pool).await? {
            let args = TrimRetentionArgs {
                lane,
                default_retention_ms: ms(self.config.default_retention),
                batch_size: self.config.batch_size,
            };
            match retention::trim(&self.pool, &args).await {
                Ok(trimmed) => {
                    processed += u64::from(trimmed.executions);
                    batch_full |= trimmed.batch_full;
                }
                Err(e) => {
                    tracing::warn!(lane = %args.lane, error = %e, "retention pass of a lane failed");
                    failed.get_or_insert(e);
                }
            }
        }
        let args =
            PruneEventLogArgs { retention_ms: ms(self.config.event_retention), batch_size: self.config.batch_size };
        let pruned = retention::prune_events(&self.pool, &args).await?;
        processed += u64::from(pruned.events);
        batch_full |= pruned.batch_full;
        if processed > 0 {
            tracing::debug!(rows = processed, "retention deleted aged-out executions and events");
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(ReconcileReport { processed, batch_full, next_due: None }),
        }
    }
}
