//! The event log: written with each state change, and read with a cursor that never skips an
//! event whose transaction committed late.

mod common;

use common::*;
use ff_core::event::EventCursor;
use ff_core::*;

#[tokio::test]
async fn a_late_committing_event_is_not_skipped_by_a_resuming_reader() {
    let fx = Fixture::new().await;
    let a = fx.create("log").await;
    let b = fx.create("log").await;
    let ha = fx.claim("log", "w").await;
    let hb = fx.claim("log", "w").await;
    let start = claims_read(&fx).await;

    // Transaction T1 completes `a` but does not commit yet (its xid is older).
    let mut t1 = fx.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut *t1).await.unwrap();
    // T2 completes `b` and commits first.
    fx.backend.complete(&hb, None).await.unwrap();
    sqlx::query(
        "INSERT INTO ff_event (kind, execution_id, partition_key, namespace, lane_id) VALUES ('completed', $1, $2, '', 'log')",
    )
    .bind(a.uuid())
    .bind(a.partition_index() as i16)
    .execute(&mut *t1)
    .await
    .unwrap();
    // While T1 is open, a reader must not advance past T2's event.
    let seen = fx.backend.read_events(start, 100).await.unwrap();
    assert!(seen.is_empty(), "events behind an open older transaction are held back: {seen:?}");
    t1.commit().await.unwrap();
    let mut seen = fx.backend.read_events(start, 100).await.unwrap();
    for _ in 0..500 {
        if seen.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        seen = fx.backend.read_events(start, 100).await.unwrap();
    }
    let ids: Vec<_> = seen.iter().map(|e| e.execution_id).collect();
    assert_eq!(ids, vec![a, b], "commit-safe order: the older transaction's event first");
    // Resuming after the first delivers exactly the second.
    let rest = fx.backend.read_events(seen[0].cursor, 100).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].execution_id, b);
    drop(ha);
}

/// The cursor of the last of the two claims' events. A reader sees an event only once every
/// older transaction in the cluster has ended, and other databases' transactions count too, so
/// it reads until both are visible.
async fn claims_read(fx: &Fixture) -> EventCursor {
    for _ in 0..500 {
        let events = fx.backend.read_events(EventCursor::BEGINNING, 100).await.unwrap();
        if events.len() >= 2 {
            return events[events.len() - 1].cursor;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the claims' events never became visible");
}
