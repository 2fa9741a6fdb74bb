//! Reading the event log, and the subscriptions that follow it: completions, lease history and
//! instance tags (followed with `subscription::follow`, woken by `pulse`).
//!
//! The log is ordered by `(tx_id, event_id)`. A reader only returns events whose writing
//! transaction is older than the oldest transaction still in flight, so an event that commits
//! after a later one can never fall behind a reader's cursor: resuming from a cursor misses
//! nothing and repeats nothing.

use async_trait::async_trait;
use ff_core::backend::CompletionBackend;

use crate::db::Db;
use ff_core::event::{
    CompletionEvent, CompletionOutcome, CompletionStream, EventCursor, InstanceTagChange, InstanceTagEvent,
    InstanceTagStream, LeaseHistoryEvent, LeaseHistoryKind, LeaseHistoryStream, ScannerFilter,
};
use ff_core::{EngineError, ExecutionId, LaneId, Namespace, TimestampMs, ValidationKind};
use uuid::Uuid;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::row::col;
use crate::subscription::{Batch, ReadBatch, follow};

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
    /// The worker instance involved (a lease's owner).
    pub worker_instance_id: Option<String>,
    /// Kind-specific detail (a tag event's key and value).
    pub detail: Option<serde_json::Value>,
}

/// Up to `$3` matching events after the cursor (`$1`, `$2`), and in the same snapshot the newest
/// visible event of any kind (so a filtered reader that saw everything visible can move past
/// what did not match). One row without event columns when nothing matches.
pub(crate) const READ_EVENTS_SQL: &str = "
WITH hits AS (
    SELECT v.tx_id, v.event_id, v.kind::text AS kind, v.execution_id, v.partition_key, v.namespace, v.lane_id,
           v.attempt_index, v.lease_epoch, v.occurred_at_ms, v.worker_instance_id, v.detail
    FROM ff_event v
    WHERE (v.tx_id, v.event_id) > ($1::text::xid8, $2)
      AND v.tx_id < pg_snapshot_xmin(pg_current_snapshot())
      AND ($4::text[] IS NULL OR v.kind::text = ANY($4))
      AND ($5::text IS NULL OR v.namespace = $5)
      AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM ff_execution x WHERE x.execution_id = v.execution_id
                                       AND x.tags ->> $6 = $7))
    ORDER BY v.tx_id, v.event_id
    LIMIT $3
), head AS (
    SELECT tx_id, event_id FROM ff_event WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY tx_id DESC, event_id DESC LIMIT 1
)
SELECT hits.tx_id::text AS tx, hits.event_id, hits.kind, hits.execution_id, hits.partition_key, hits.namespace,
       hits.lane_id, hits.attempt_index, hits.lease_epoch, hits.occurred_at_ms, hits.worker_instance_id, hits.detail,
       head.tx_id::text AS head_tx, head.event_id AS head_id
FROM (SELECT 1) AS one LEFT JOIN hits ON true LEFT JOIN head ON true
ORDER BY hits.tx_id, hits.event_id";

/// A cursor from a stored transaction id (as text) and a sequence number.
pub(crate) fn cursor(tx: &str, id: i64) -> Result<EventCursor, EngineError> {
    let tx = tx.parse().map_err(|_| EngineError::validation(ValidationKind::Corruption, format!("tx id {tx:?}")))?;
    Ok(EventCursor { tx, id })
}

/// Reads up to `limit` events after `after`, optionally restricted to `kinds` and `filter`.
pub async fn read_events(
    pool: &Db,
    after: EventCursor,
    limit: u32,
    kinds: Option<&[&str]>,
    filter: &ScannerFilter,
) -> Result<Vec<EventLogEntry>, EngineError> {
    Ok(read_events_scanning(pool, after, limit, kinds, filter).await?.0)
}

/// [`read_events`], also returning how far the read looked: when it returned fewer than
/// `limit` events it saw every visible event, so a follower may resume after the newest visible
/// one, matching or not (a filtered follower then never falls behind the log's retention).
pub(crate) async fn read_events_scanning(
    pool: &Db,
    after: EventCursor,
    limit: u32,
    kinds: Option<&[&str]>,
    filter: &ScannerFilter,
) -> Result<(Vec<EventLogEntry>, Option<EventCursor>), EngineError> {
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
    let mut entries = Vec::with_capacity(rows.len());
    let mut head = None;
    for r in &rows {
        if let Some(tx) = col::<Option<String>>(r, "head_tx")? {
            head = Some(cursor(&tx, col(r, "head_id")?)?);
        }
        let Some(tx) = col::<Option<String>>(r, "tx")? else { continue };
        let partition: i16 = col(r, "partition_key")?;
        entries.push(EventLogEntry {
            cursor: cursor(&tx, col(r, "event_id")?)?,
            kind: col(r, "kind")?,
            execution_id: ExecutionId::from_parts(partition as u16, col::<Uuid>(r, "execution_id")?),
            namespace: Namespace(col(r, "namespace")?),
            lane_id: LaneId::try_new(col::<String>(r, "lane_id")?)?,
            attempt_index: col::<Option<i32>>(r, "attempt_index")?.map(|i| i as u32),
            lease_epoch: col::<Option<i64>>(r, "lease_epoch")?.map(|i| i as u64),
            occurred_at: TimestampMs(col(r, "occurred_at_ms")?),
            worker_instance_id: col(r, "worker_instance_id")?,
            detail: col(r, "detail")?,
        });
    }
    let scanned_to = if entries.len() < limit as usize { head.filter(|h| *h > after) } else { None };
    Ok((entries, scanned_to))
}

/// The cursor just after the newest event visible now.
pub async fn head_cursor(pool: &Db) -> Result<EventCursor, EngineError> {
    let row: Option<(String, i64)> = sqlx::query_as(HEAD_CURSOR_SQL).fetch_optional(pool).await.map_err(map_sqlx)?;
    match row {
        None => Ok(EventCursor::BEGINNING),
        Some((tx, id)) => cursor(&tx, id),
    }
}

const COMPLETION_KINDS: &[&str] = &["completed", "failed", "cancelled", "expired", "skipped"];

const LEASE_KINDS: &[&str] = &["lease_acquired", "lease_reclaimed", "lease_expired", "lease_released", "lease_revoked"];

const TAG_KINDS: &[&str] = &["tag_attached", "tag_cleared"];

/// Entries of `kinds` matching `filter`, mapped by `map` (which may drop an entry).
fn log_reader<T: Send + 'static>(
    pool: Db,
    kinds: &'static [&'static str],
    filter: ScannerFilter,
    map: fn(EventLogEntry) -> Result<Option<T>, EngineError>,
) -> ReadBatch<T> {
    Box::new(move |after| {
        let (pool, filter) = (pool.clone(), filter.clone());
        Box::pin(async move {
            let (entries, scanned_to) = read_events_scanning(&pool, after, 256, Some(kinds), &filter).await?;
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                if let Some(t) = map(e)? {
                    out.push(t);
                }
            }
            Ok(Batch { entries: out, scanned_to })
        })
    })
}

fn completion(e: EventLogEntry) -> Result<Option<CompletionEvent>, EngineError> {
    let outcome = match e.kind.as_str() {
        "completed" => CompletionOutcome::Success,
        "failed" => CompletionOutcome::Failure,
        "cancelled" => CompletionOutcome::Cancelled,
        "skipped" => CompletionOutcome::Skipped,
        _ => CompletionOutcome::Expired,
    };
    Ok(Some(CompletionEvent {
        cursor: e.cursor,
        execution_id: e.execution_id,
        outcome,
        namespace: e.namespace,
        lane_id: e.lane_id,
        at: e.occurred_at,
    }))
}

fn lease_change(e: EventLogEntry) -> Result<Option<LeaseHistoryEvent>, EngineError> {
    let owner = e.worker_instance_id;
    let kind = match e.kind.as_str() {
        "lease_acquired" => LeaseHistoryKind::Acquired { worker_instance_id: owner },
        "lease_reclaimed" => LeaseHistoryKind::Reclaimed { new_owner: owner },
        "lease_expired" => LeaseHistoryKind::Expired { prev_owner: owner },
        "lease_released" => LeaseHistoryKind::Released { worker_instance_id: owner },
        _ => LeaseHistoryKind::Revoked { prev_owner: owner },
    };
    Ok(Some(LeaseHistoryEvent {
        cursor: e.cursor,
        execution_id: e.execution_id,
        namespace: e.namespace,
        lane_id: e.lane_id,
        attempt_index: e.attempt_index,
        lease_epoch: e.lease_epoch,
        kind,
        at: e.occurred_at,
    }))
}

fn tag_change(e: EventLogEntry) -> Result<Option<InstanceTagEvent>, EngineError> {
    let corrupt =
        || EngineError::validation(ValidationKind::Corruption, format!("tag event {} without its tag", e.cursor));
    let detail = e.detail.as_ref().ok_or_else(corrupt)?;
    let key = detail.get("key").and_then(|k| k.as_str()).ok_or_else(corrupt)?.to_owned();
    let change = if e.kind == "tag_attached" {
        let value = detail.get("value").and_then(|v| v.as_str()).ok_or_else(corrupt)?.to_owned();
        InstanceTagChange::Attached { value }
    } else {
        InstanceTagChange::Cleared
    };
    Ok(Some(InstanceTagEvent {
        cursor: e.cursor,
        execution_id: e.execution_id,
        namespace: e.namespace,
        key,
        change,
        at: e.occurred_at,
    }))
}

/// A stream of completion events after `cursor`.
pub(crate) fn completion_stream(
    backend: &PostgresBackend,
    cursor: EventCursor,
    filter: ScannerFilter,
) -> CompletionStream {
    follow(cursor, backend.follow(), log_reader(backend.pool.clone(), COMPLETION_KINDS, filter, completion), |e| {
        e.cursor
    })
}

#[async_trait]
impl CompletionBackend for PostgresBackend {
    async fn subscribe_completions(&self) -> Result<CompletionStream, EngineError> {
        self.subscribe_completions_filtered(&ScannerFilter::default()).await
    }

    async fn subscribe_completions_filtered(&self, filter: &ScannerFilter) -> Result<CompletionStream, EngineError> {
        let head = head_cursor(&self.pool).await?;
        Ok(completion_stream(self, head, filter.clone()))
    }

    async fn subscribe_completions_from(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<CompletionStream, EngineError> {
        Ok(completion_stream(self, cursor, filter.clone()))
    }

    async fn subscribe_lease_history(
        &self,
        cursor: EventCursor,
        filter: &ScannerFilter,
    ) -> Result<LeaseHistoryStream, EngineError> {
        let read = log_reader(self.pool.clone(), LEASE_KINDS, filter.clone(), lease_change);
        Ok(follow(cursor, self.follow(), read, |e| e.cursor))
    }

    async fn event_log_head(&self) -> Result<EventCursor, EngineError> {
        head_cursor(&self.pool).await
    }

    async fn subscribe_instance_tags(&self, cursor: EventCursor) -> Result<InstanceTagStream, EngineError> {
        let read = log_reader(self.pool.clone(), TAG_KINDS, ScannerFilter::default(), tag_change);
        Ok(follow(cursor, self.follow(), read, |e| e.cursor))
    }
}
