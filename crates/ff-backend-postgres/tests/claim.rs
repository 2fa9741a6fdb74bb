//! Waiting for work: a long-polling claim picks up work created while it waits, and new or
//! reclaimable work notifies its lane on commit. (Claim behaviour itself is in the conformance
//! suite, `ff_test::conformance::claim`.)

mod common;

use std::time::Duration;

use common::*;
use ff_core::*;

#[tokio::test]
async fn empty_lane_returns_none_and_long_poll_waits_for_work() {
    let fx = Fixture::new().await;
    assert!(fx.try_claim("idle", "w").await.is_none());
    let backend = fx.backend.clone();
    let waiter = tokio::spawn(async move {
        let mut p = policy("waiter");
        p.max_wait = Some(Duration::from_secs(10));
        backend.claim(&lane_id("idle"), &CapabilitySet::empty(), p).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let id = fx.create("idle").await;
    let h = waiter.await.unwrap().unwrap().expect("long-poll picks up new work");
    assert_eq!(payload(&h).execution_id, id);
}

#[tokio::test]
async fn new_and_reclaimable_work_notifies_its_lane_on_commit() {
    let fx = Fixture::new().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(fx.pool()).await.unwrap();
    listener.listen("ff_lane_ready").await.unwrap();
    let id = fx.create("notify-me").await;
    assert_eq!(next(&mut listener).await.payload(), "notify-me");
    // Delayed work is not claimable yet: no notification for it.
    let now = fx.backend.server_time_ms().await.unwrap() as i64;
    fx.create_with("later", |a| a.delay_until = Some(TimestampMs(now + 3_600_000))).await;
    fx.claim("notify-me", "w").await;
    fx.expire_lease(&id).await;
    fx.backend.mark_lease_expired_if_due(Partition::execution(id.partition_index()), &id).await.unwrap();
    assert_eq!(next(&mut listener).await.payload(), "notify-me", "a reclaimable lease wakes its lane");
}

async fn next(l: &mut sqlx::postgres::PgListener) -> sqlx::postgres::PgNotification {
    tokio::time::timeout(Duration::from_secs(10), l.recv()).await.expect("a notification").unwrap()
}
