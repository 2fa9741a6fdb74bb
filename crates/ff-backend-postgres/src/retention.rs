//! Retention (`RetentionBackend`, and the retention passes of `MaintenanceBackend`): the
//! per-lane and per-namespace windows, the trimming of terminal executions, the pruning of the
//! event log, and the horizon check of event-log readers.
//!
//! Each batch is one call of a schema function (`0013_retention.sql`): `ff_trim_retention`
//! deletes a lane's due terminal executions with every row of theirs (a flow only whole, once no
//! member is live or young), `ff_prune_events` deletes the oldest events in cursor order and
//! moves the horizon in the same transaction.
//!
//! The horizon: every event at or before it may be gone, every event after it is intact. A read
//! after a cursor before the horizon is `cursor_expired`; [`EventCursor::BEGINNING`] is never
//! expired and means "from the oldest event retained". [`check_cursor`] is called after the
//! read's statement: the horizon only moves forward and moves in the transaction that deletes,
//! so a horizon at or before the cursor seen after the read was also there when the read took
//! its snapshot, and the read missed nothing.

use crate::db::Db;
use async_trait::async_trait;
use ff_core::backend::RetentionBackend;
use ff_core::event::EventCursor;
use ff_core::{
    EngineError, LaneId, PruneEventLogArgs, PruneEventLogOutcome, RetentionPolicy, RetentionScope,
    SetRetentionPolicyArgs, TimestampMs, TrimRetentionArgs, TrimRetentionOutcome, ValidationKind,
};
use sqlx::postgres::PgRow;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::event;
use crate::row::col;

/// One batch of one lane: `$1` lane, `$2` default window, `$3` batch size.
pub(crate) const TRIM_SQL: &str = "SELECT executions, flows FROM ff_trim_retention($1, $2, $3)";

/// One batch of the event log: `$1` window, `$2` batch size.
pub(crate) const PRUNE_EVENTS_SQL: &str = "SELECT pruned, horizon_tx, horizon_id FROM ff_prune_events($1, $2)";

/// The newest pruned cursor.
pub(crate) const HORIZON_SQL: &str = "SELECT tx_id::text AS tx, event_id FROM ff_event_horizon";

/// Every lane, by name: what the retention reconciler walks.
pub(crate) const LANES_SQL: &str = "SELECT lane_id FROM ff_lane ORDER BY lane_id";

pub(crate) const SET_POLICY_SQL: &str = "\
INSERT INTO ff_retention_policy (scope_kind, scope_id, retention_ms) VALUES ($1, $2, $3)
ON CONFLICT (scope_kind, scope_id) DO UPDATE SET retention_ms = EXCLUDED.retention_ms, updated_at_ms = ff_now_ms()
RETURNING scope_kind, scope_id, retention_ms, updated_at_ms";

pub(crate) const READ_POLICY_SQL: &str = "\
SELECT scope_kind, scope_id, retention_ms, updated_at_ms FROM ff_retention_policy WHERE scope_kind = $1 AND scope_id = $2";

pub(crate) const LIST_POLICIES_SQL: &str = "\
SELECT scope_kind, scope_id, retention_ms, updated_at_ms FROM ff_retention_policy ORDER BY scope_kind, scope_id";

pub(crate) const CLEAR_POLICY_SQL: &str = "DELETE FROM ff_retention_policy WHERE scope_kind = $1 AND scope_id = $2";

/// Fails with `cursor_expired` when `cursor` lies before the event log's horizon (events after
/// it were pruned). [`EventCursor::BEGINNING`] never expires. Call it after reading (see the
/// module documentation).
pub(crate) async fn check_cursor(pool: &Db, cursor: EventCursor) -> Result<(), EngineError> {
    if cursor == EventCursor::BEGINNING {
        return Ok(());
    }
    let horizon = horizon(pool).await?;
    if cursor < horizon {
        return Err(EngineError::validation(
            ValidationKind::CursorExpired,
            format!(
                "events after cursor {cursor} were pruned by retention (horizon {horizon}); read again from the \
                 beginning of the retained log or from its head"
            ),
        ));
    }
    Ok(())
}

/// The newest pruned cursor ([`EventCursor::BEGINNING`] while nothing was pruned).
pub(crate) async fn horizon(pool: &Db) -> Result<EventCursor, EngineError> {
    let row: Option<(String, i64)> = sqlx::query_as(HORIZON_SQL).fetch_optional(pool).await.map_err(map_sqlx)?;
    match row {
        None => Ok(EventCursor::BEGINNING),
        Some((tx, id)) => event::cursor(&tx, id),
    }
}

/// One `trim_retention` batch (validated first).
pub(crate) async fn trim(pool: &Db, args: &TrimRetentionArgs) -> Result<TrimRetentionOutcome, EngineError> {
    args.validate()?;
    let (executions, flows): (i32, i32) = sqlx::query_as(TRIM_SQL)
        .bind(args.lane.as_str())
        .bind(args.default_retention_ms)
        .bind(args.batch_size as i32)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(TrimRetentionOutcome {
        executions: executions.max(0) as u32,
        flows: flows.max(0) as u32,
        // Full only when as many went as were asked for: executions skipped because another
        // transaction held them wait for the next pass instead of being retried at once.
        batch_full: executions.max(0) as u32 >= args.batch_size,
    })
}

/// One `prune_event_log` batch (validated first).
pub(crate) async fn prune_events(pool: &Db, args: &PruneEventLogArgs) -> Result<PruneEventLogOutcome, EngineError> {
    args.validate()?;
    let (pruned, tx, id): (i32, String, i64) = sqlx::query_as(PRUNE_EVENTS_SQL)
        .bind(args.retention_ms)
        .bind(args.batch_size as i32)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    let events = pruned.max(0) as u32;
    Ok(PruneEventLogOutcome { events, horizon: event::cursor(&tx, id)?, batch_full: events >= args.batch_size })
}

/// Every lane, by name.
pub(crate) async fn lanes(pool: &Db) -> Result<Vec<LaneId>, EngineError> {
    let names: Vec<String> = sqlx::query_scalar(LANES_SQL).fetch_all(pool).await.map_err(map_sqlx)?;
    names.into_iter().map(LaneId::try_new).collect()
}

fn policy(r: &PgRow) -> Result<RetentionPolicy, EngineError> {
    let kind: String = col(r, "scope_kind")?;
    let id: String = col(r, "scope_id")?;
    let scope = RetentionScope::from_parts(&kind, &id)
        .map_err(|e| EngineError::validation(ValidationKind::Corruption, format!("retention scope: {e}")))?;
    Ok(RetentionPolicy {
        scope,
        retention_ms: col(r, "retention_ms")?,
        updated_at: TimestampMs(col(r, "updated_at_ms")?),
    })
}

#[async_trait]
impl RetentionBackend for PostgresBackend {
    async fn set_retention_policy(&self, args: SetRetentionPolicyArgs) -> Result<RetentionPolicy, EngineError> {
        args.validate()?;
        let row = sqlx::query(SET_POLICY_SQL)
            .bind(args.scope.kind())
            .bind(args.scope.id())
            .bind(args.retention_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        policy(&row)
    }

    async fn read_retention_policy(&self, scope: &RetentionScope) -> Result<Option<RetentionPolicy>, EngineError> {
        scope.validate()?;
        let row = sqlx::query(READ_POLICY_SQL)
            .bind(scope.kind())
            .bind(scope.id())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(policy).transpose()
    }

    async fn list_retention_policies(&self) -> Result<Vec<RetentionPolicy>, EngineError> {
        let rows = sqlx::query(LIST_POLICIES_SQL).fetch_all(&self.pool).await.map_err(map_sqlx)?;
        rows.iter().map(policy).collect()
    }

    async fn clear_retention_policy(&self, scope: &RetentionScope) -> Result<bool, EngineError> {
        scope.validate()?;
        let done = sqlx::query(CLEAR_POLICY_SQL)
            .bind(scope.kind())
            .bind(scope.id())
            .execute(&self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }
}
