//! Following signal deliveries: the signal rows carry the event log's commit-safe cursor
//! `(tx_id, seq)`, and a reader only returns rows whose transaction is older than every
//! transaction still in flight, so resuming from a cursor misses nothing and repeats nothing.

use std::collections::VecDeque;
use std::time::Duration;

use ff_core::event::{EventCursor, ScannerFilter};
use ff_core::*;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::map_sqlx;
use crate::event::cursor;
use crate::row::col;

/// Up to `$3` deliveries after (`$1`, `$2`), of namespace `$4` when given.
pub(crate) const READ_DELIVERIES_SQL: &str = "SELECT s.tx_id::text AS tx, s.seq, s.execution_id, s.partition_key, \
     s.waitpoint_id, s.signal_id, s.signal_name, s.effect, s.namespace, s.accepted_at_ms FROM ff_signal s \
     WHERE (s.tx_id, s.seq) > ($1::text::xid8, $2) AND s.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
       AND ($4::text IS NULL OR s.namespace = $4) \
     ORDER BY s.tx_id, s.seq LIMIT $3";

/// How often an idle subscription polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

async fn read(
    pool: &PgPool,
    after: EventCursor,
    filter: &ScannerFilter,
) -> Result<Vec<SignalDeliveryEvent>, EngineError> {
    let rows = sqlx::query(READ_DELIVERIES_SQL)
        .bind(after.tx.to_string())
        .bind(after.id)
        .bind(256_i64)
        .bind(filter.namespace.as_ref().map(Namespace::as_str))
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    rows.iter()
        .map(|r| {
            let partition: i16 = col(r, "partition_key")?;
            Ok(SignalDeliveryEvent {
                cursor: cursor(&col::<String>(r, "tx")?, col(r, "seq")?)?,
                execution_id: ExecutionId::from_parts(partition.max(0) as u16, col::<Uuid>(r, "execution_id")?),
                waitpoint_id: WaitpointId(col(r, "waitpoint_id")?),
                signal_id: SignalId(col(r, "signal_id")?),
                signal_name: col(r, "signal_name")?,
                effect: SignalEffect::parse(&col::<String>(r, "effect")?)?,
                namespace: Namespace(col(r, "namespace")?),
                at: TimestampMs(col(r, "accepted_at_ms")?),
            })
        })
        .collect()
}

/// A stream of deliveries after `cursor`.
pub(crate) fn stream(pool: PgPool, cursor: EventCursor, filter: ScannerFilter) -> SignalDeliveryStream {
    struct State {
        pool: PgPool,
        cursor: EventCursor,
        filter: ScannerFilter,
        buffer: VecDeque<SignalDeliveryEvent>,
    }
    let state = State { pool, cursor, filter, buffer: VecDeque::new() };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.buffer.pop_front() {
                return Some((Ok(ev), s));
            }
            match read(&s.pool, s.cursor, &s.filter).await {
                Err(e) => return Some((Err(e), s)),
                Ok(batch) if batch.is_empty() => tokio::time::sleep(POLL_INTERVAL).await,
                Ok(batch) => {
                    if let Some(last) = batch.last() {
                        s.cursor = last.cursor;
                    }
                    s.buffer.extend(batch);
                }
            }
        }
    }))
}
