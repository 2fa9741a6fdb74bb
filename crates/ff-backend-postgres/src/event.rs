//! Reading the event log and subscribing to completions.
//!
//! The log is ordered by `(tx_id, event_id)`. A reader only returns events whose writing
//! transaction is older than the oldest transaction still in flight, so an event that commits
//! after a later one can never fall behind a reader's cursor: resuming from a cursor misses
//! nothing and repeats nothing.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::CompletionBackend;

use ff_core::event::{CompletionEvent, CompletionOutcome, CompletionStream, EventCursor, ScannerFilter};
use ff_core::{EngineError, ExecutionId, LaneId, Namespace, TimestampMs, ValidationKind};
use sqlx::PgPool;
use uuid::Uuid;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::row::col;

pub(crate) const HEAD_CURSOR_SQL: &str = "SELECT tx_id::text, event_id FROM ff_event WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx_id DESC, event_id DESC LIMIT 1";

/// One entry of the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLogEntry {
    /// Position; pass to [`read_events`] to continue after this entry.
    pub cursor: EventCursor,
    /// `lease_acquired`, `lease_reclaimed`, `lease_expired`, `lease_released`, `retry_scheduled`,
    /// `completed`, `failed`, `cancelled`, `expired`, `lease_revoked`, `priority_changed`, `replayed`
    /// or `skipped`.
    pub kind: String,
    /// Execution.
    pub execution_id: ExecutionId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lane.
    pub lane_id: LaneId,
    /// Attempt involved.
    pub attempt_index: Option<u32>,
    /// Lease epoch involved.
    pub lease_epoch: Option<u64>,
    /// When (database time).
    pub occurred_at: TimestampMs,
}

pub(crate) const READ_EVENTS_SQL: &str = "
SELECT v.tx_id::text AS tx, v.event_id, v.kind::text AS kind, v.execution_id, v.partition_key, v.namespace, v.lane_id,
       v.attempt_index, v.lease_epoch, v.occurred_at_ms
FROM ff_event v
WHERE (v.tx_id, v.event_id) > ($1::text::xid8, $2)
  AND v.tx_id < pg_snapshot_xmin(pg_current_snapshot())
  AND ($4::text[] IS NULL OR v.kind::text = ANY($4))
  AND ($5::text IS NULL OR v.namespace = $5)
  AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ff_execution x WHERE x.execution_id = v.execution_id
                                   AND x.tags ->> $6 = $7))
ORDER BY v.tx_id, v.event_id
LIMIT $3";

/// A cursor from a stored transaction id (as text) and a sequence number.
pub(crate) fn cursor(tx: &str, id: i64) -> Result<EventCursor, EngineError> {
    let tx = tx.parse().map_err(|_| EngineError::validation(ValidationKind::Corruption, format!("tx id {tx:?}")))?;
    Ok(EventCursor { tx, id })
}

/// Reads up to `limit` events after `after`, optionally restricted to `kinds` and `filter`.
pub async fn read_events(
    pool: &PgPool,
    after: EventCursor,
    limit: u32,
    kinds: Option<&[&str]>,
    filter: &ScannerFilter,
) -> Result<Vec<EventLogEntry>, EngineError> {
    let (tag_key, tag_value) = match &filter.instance_tag {
        Some((k, v)) => (Some(k.as_str()), Some(v.as_str())),
        None => (None, None),
    };
    let rows = sqlx::query(READ_EVENTS_SQL)
        .bind(after.tx.to_string())
        .bind(after.id)
        .bind(i64::from(limit))
        .bind(kinds.map(|k| k.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()))
        .bind(filter.namespace.as_ref().map(|n| n.as_str()))
        .bind(tag_key)
        .bind(tag_value)
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    crate::retention::check_cursor(pool, after).await?;
    rows.iter()
        .map(|r| {
            let partition: i16 = col(r, "partition_key")?;
            Ok(EventLogEntry {
                cursor: cursor(&col::<String>(r, "tx")?, col(r, "event_id")?)?,
                kind: col(r, "kind")?,
                execution_id: ExecutionId::from_parts(partition as u16, col::<Uuid>(r, "execution_id")?),
                namespace: Namespace(col(r, "namespace")?),
                lane_id: LaneId::try_new(col::<String>(r, "lane_id")?)?,
                attempt_index: col::<Option<i32>>(r, "attempt_index")?.map(|i| i as u32),
                lease_epoch: col::<Option<i64>>(r, "lease_epoch")?.map(|i| i as u64),
                occurred_at: TimestampMs(col(r, "occurred_at_ms")?),
            })
        })
        .collect()
}

/// The cursor just after the newest event visible now.
pub async fn head_cursor(pool: &PgPool) -> Result<EventCursor, EngineError> {
    let row: Option<(String, i64)> = sqlx::query_as(HEAD_CURSOR_SQL).fetch_optional(pool).await.map_err(map_sqlx)?;
    match row {
        None => Ok(EventCursor::BEGINNING),
        Some((tx, id)) => cursor(&tx, id),
    }
}

const COMPLETION_KINDS: &[&str] = &["completed", "failed", "cancelled", "expired", "skipped"];

/// How often an idle subscription polls the log.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A stream of completion events after `cursor`, polling the log.
pub(crate) fn completion_stream(pool: PgPool, cursor: EventCursor, filter: ScannerFilter) -> CompletionStream {
    struct State {
        pool: PgPool,
        cursor: EventCursor,
        filter: ScannerFilter,
        buffer: VecDeque<CompletionEvent>,
    }
    let state = State { pool, cursor, filter, buffer: VecDeque::new() };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.buffer.pop_front() {
                return Some((Ok(ev), s));
            }
            match read_events(&s.pool, s.cursor, 256, Some(COMPLETION_KINDS), &s.filter).await {
                Err(e) => return Some((Err(e), s)),
                Ok(entries) if entries.is_empty() => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(entries) => {
                    for e in entries {
                        s.cursor = e.cursor;
                        let outcome = match e.kind.as_str() {
                            "completed" => CompletionOutcome::Success,
                            "failed" => CompletionOutcome::Failure,
                            "cancelled" => CompletionOutcome::Cancelled,
                            "skipped" => CompletionOutcome::Skipped,
                            _ => CompletionOutcome::Expired,
                        };
                        s.buffer.push_back(CompletionEvent {
                            cursor: e.cursor,
                            execution_id: e.execution_id,
                            outcome,
                            namespace: e.namespace,
                            lane_id: e.lane_id,
                            at: e.occurred_at,
                        });
                    }
                }
            }
        }
    }))
}

#[async_trait]
impl CompletionBackend for PostgresBackend {
    async fn subscribe_completions(&self) -> Result<CompletionStream, EngineError> {
        self.subscribe_completions_filtered(&ScannerFilter::default()).await
    }

    async fn subscribe_completions_filtered(&self, filter: &ScannerFilter) -> Result<CompletionStream, EngineError> {
        let head = head_cursor(&self.pool).await?;
        Ok(completion_stream(self.pool.clone(), head, filter.clone()))
    }

    async fn subscribe_completions_from(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<CompletionStream, EngineError> {
        Ok(completion_stream(self.pool.clone(), cursor, filter.clone()))
    }
}
