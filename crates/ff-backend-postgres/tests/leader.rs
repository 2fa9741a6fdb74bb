//! Several processes running reconcilers on one database: one leads at a time (the holder of
//! the `reconcilers` leader lease); when the leader loses its database, as a killed process
//! would, another takes over within about the lease's lifetime, and every timer still fires
//! once: each delayed execution runs once, each lost lease is reclaimed once.
//!
//! The three "processes" are three backends on three connection pools; the killed one's pool
//! is closed under it. These tests wait on real time: leader election is about time.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ff_backend_postgres::{MIGRATOR, PostgresBackend, PostgresScannerConfig};
use ff_core::*;
use ff_test::TestDb;
use sqlx::PgPool;

const TTL: Duration = Duration::from_millis(1_000);

async fn process(db: &TestDb, name: &str) -> Arc<PostgresBackend> {
    let pool = PgPool::connect(db.url()).await.expect("a pool");
    let mut backend = PostgresBackend::from_pool(pool, PartitionConfig::default());
    let cfg = PostgresScannerConfig {
        leader_lease_ttl: TTL,
        leader_id: Some(name.to_owned()),
        lease_expiry_interval: Duration::from_millis(100),
        delayed_promoter_interval: Duration::from_millis(100),
        ..PostgresScannerConfig::default()
    };
    assert!(backend.with_scanners(cfg));
    backend
}

/// Waits up to `within` for exactly one of `processes` to lead; returns its index.
async fn leader_among(processes: &[&Arc<PostgresBackend>], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let leading: Vec<usize> =
            processes.iter().enumerate().filter(|(_, p)| p.leads_reconcilers()).map(|(i, _)| i).collect();
        if leading.len() == 1 {
            return leading[0];
        }
        assert!(tokio::time::Instant::now() < deadline, "leaders after {within:?}: {leading:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lease(db: &TestDb) -> (String, i64) {
    sqlx::query_as("SELECT holder, epoch FROM ff_leader_lease WHERE name = 'reconcilers'")
        .fetch_one(db.pool())
        .await
        .expect("the lease")
}

#[tokio::test]
async fn one_process_leads_and_another_takes_over_when_it_dies() {
    let db = TestDb::new(&MIGRATOR).await;
    let (a, b, c) = (process(&db, "a").await, process(&db, "b").await, process(&db, "c").await);
    let all = [&a, &b, &c];
    let first = leader_among(&all, Duration::from_secs(5)).await;
    let (holder, epoch) = lease(&db).await;
    assert_eq!(holder, ["a", "b", "c"][first]);
    // Leadership is stable while the leader lives.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(leader_among(&all, Duration::ZERO).await, first);
    assert_eq!(lease(&db).await, (holder.clone(), epoch), "renewed, never handed over");

    all[first].pool().close().await;
    let survivors: Vec<&Arc<PostgresBackend>> =
        all.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, p)| *p).collect();
    let started = tokio::time::Instant::now();
    let next = leader_among(&survivors, TTL * 4).await;
    let took = started.elapsed();
    assert!(!all[first].leads_reconcilers(), "the cut-off process stopped leading");
    let (new_holder, new_epoch) = lease(&db).await;
    assert_ne!(new_holder, holder);
    assert_eq!(new_epoch, epoch + 1);
    assert!(took >= TTL / 2, "taken over only once the lease could expire ({took:?})");
    let _ = next;
    for p in survivors {
        p.shutdown_prepare(Duration::from_secs(2)).await.unwrap();
    }
}

#[tokio::test]
async fn every_timer_fires_once_across_a_leader_change() {
    let db = TestDb::new(&MIGRATOR).await;
    let (a, b, c) = (process(&db, "a").await, process(&db, "b").await, process(&db, "c").await);
    let all = [&a, &b, &c];
    let first = leader_among(&all, Duration::from_secs(5)).await;
    let survivor = all[(first + 1) % 3].clone();
    let client = PostgresBackend::from_pool(PgPool::connect(db.url()).await.unwrap(), PartitionConfig::default());

    // Delayed work due over the next two seconds, and work whose worker dies holding it (a
    // short lease the reconcilers must expire).
    let now = client.server_time_ms().await.unwrap() as i64;
    let mut expected_attempts = HashMap::new();
    for i in 0..30 {
        let mut args = args("timers");
        args.delay_until = Some(TimestampMs(now + 100 + i * 60));
        let CreateExecutionResult::Created { execution_id, .. } = client.create_execution(args).await.unwrap() else {
            panic!("created");
        };
        expected_attempts.insert(execution_id, 1);
    }
    for _ in 0..10 {
        let CreateExecutionResult::Created { execution_id, .. } = client.create_execution(args("dying")).await.unwrap()
        else {
            panic!("created");
        };
        let short = ClaimPolicy { lease_ttl_ms: 300, ..policy("doomed") };
        client.claim(&lane_id("dying"), &CapabilitySet::empty(), short).await.unwrap().expect("claimed");
        expected_attempts.insert(execution_id, 2);
    }

    // The leader dies half-way through.
    tokio::time::sleep(Duration::from_millis(800)).await;
    all[first].pool().close().await;

    // A healthy worker runs everything it can claim until all is done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut done = 0;
    while done < expected_attempts.len() {
        assert!(tokio::time::Instant::now() < deadline, "{done} of {} done", expected_attempts.len());
        let mut idle = true;
        for lane in ["timers", "dying"] {
            let got = client.claim_batch(&lane_id(lane), &CapabilitySet::empty(), policy("healthy"), 50).await.unwrap();
            for h in got {
                idle = false;
                client.complete(&h, None).await.unwrap();
                done += 1;
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(survivor.leads_reconcilers() || all[(first + 2) % 3].leads_reconcilers(), "a survivor took over");
    for (id, attempts) in &expected_attempts {
        let snap = client.describe_execution(id).await.unwrap().unwrap();
        assert_eq!(snap.public_state, PublicState::Completed);
        assert_eq!(snap.total_attempt_count, *attempts, "{id}: each timer fired once");
    }
    let (completions,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM ff_event WHERE kind = 'completed'").fetch_one(db.pool()).await.unwrap();
    assert_eq!(completions as usize, expected_attempts.len(), "one completion per execution");
    for (i, p) in all.iter().enumerate() {
        if i != first {
            p.shutdown_prepare(Duration::from_secs(2)).await.unwrap();
        }
    }
}
