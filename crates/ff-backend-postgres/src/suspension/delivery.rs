//! Following signal deliveries: the signal rows carry the event log's commit-safe cursor
//! `(tx_id, seq)`, and a reader only returns rows whose transaction is older than every
//! transaction still in flight, so resuming from a cursor misses nothing and repeats nothing.

use crate::db::Db;
use ff_core::event::{EventCursor, ScannerFilter};
use ff_core::*;
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

async fn read(pool: &Db, after: EventCursor, filter: &ScannerFilter) -> Result<Vec<SignalDeliveryEvent>, EngineError> {
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

/// A stream of deliveries after `cursor`, woken by the event feed (a delivery's transaction
/// announces events like every transition).
pub(crate) fn stream(
    backend: &crate::backend::PostgresBackend,
    cursor: EventCursor,
    filter: ScannerFilter,
) -> SignalDeliveryStream {
    let pool = backend.pool.clone();
    let reader: crate::subscription::ReadBatch<SignalDeliveryEvent> = Box::new(move |after| {
        let (pool, filter) = (pool.clone(), filter.clone());
        Box::pin(async move {
            let entries = read(&pool, after, &filter).await?;
            Ok(crate::subscription::Batch { entries, scanned_to: None })
        })
    });
    crate::subscription::follow(cursor, backend.follow(), reader, |e| e.cursor)
}
