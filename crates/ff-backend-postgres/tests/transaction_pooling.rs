//! The backend in transaction-pooling mode behind a real PgBouncer (`pool_mode = transaction`,
//! fewer server connections per database than the backend has pooled clients), with its
//! reconcilers running: what `LISTEN` would wake is woken by polling, reconcilers elect their
//! leader and fire timers, and no session ever listens. The whole conformance suite also runs
//! behind PgBouncer (`conformance.rs`, `behind_pgbouncer::*`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ff_backend_postgres::{BackendConfig, Metrics, PostgresBackend, PostgresScannerConfig};
use ff_core::*;

/// A backend behind this process's PgBouncer, polling every `poll`, with reconcilers.
async fn bounced(fx: &Fixture, poll: Duration) -> Arc<PostgresBackend> {
    let bouncer = ff_test::pgbouncer::pgbouncer().await.expect("PgBouncer");
    let config = BackendConfig {
        transaction_pooling: true,
        poll_interval: poll,
        max_connections: 8,
        ..BackendConfig::new(bouncer.url_for(fx.db.url()).expect("URL through PgBouncer"))
    };
    let mut backend =
        PostgresBackend::connect_with_metrics(config, PartitionConfig::default(), Arc::new(Metrics::default()))
            .await
            .expect("backend behind PgBouncer");
    let scanners = PostgresScannerConfig {
        lease_expiry_interval: Duration::from_millis(100),
        leader_lease_ttl: Duration::from_millis(1_000),
        ..PostgresScannerConfig::default()
    };
    assert!(backend.with_scanners(scanners));
    backend
}

/// Sessions of the test database that listen (or ever ran LISTEN as their last statement).
async fn listening_sessions(fx: &Fixture) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_one(fx.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_wakes_claims_and_tails_and_reconcilers_fire_timers_behind_pgbouncer() {
    let fx = Fixture::new().await;
    let backend = bounced(&fx, Duration::from_millis(50)).await;

    // The reconcilers elect their leader through the pooler.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !backend.leads_reconcilers() {
        assert!(Instant::now() < deadline, "the only reconciler process never took the leader lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A claim waiting on an empty lane gets work another process created (the direct fixture
    // backend: nothing in the waiting backend's process knows of it but its poll).
    let mut waiting = ClaimPolicy::new("pool", "w1", 30_000);
    waiting.max_wait = Some(Duration::from_secs(20));
    let claim = {
        let backend = backend.clone();
        let policy = waiting.clone();
        tokio::spawn(async move { backend.claim(&lane_id("bounced"), &CapabilitySet::empty(), policy).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = fx.create("bounced").await;
    let started = Instant::now();
    let h = claim.await.unwrap().unwrap().expect("the waiting claim gets the new execution");
    assert_eq!(payload(&h).execution_id, id);
    assert!(started.elapsed() < Duration::from_secs(5), "woken after {:?}", started.elapsed());

    // A tail parked on the attempt's stream sees a frame another process appended.
    let a0 = payload(&h).attempt_index;
    let tail = {
        let backend = backend.clone();
        tokio::spawn(
            async move { backend.tail_stream(&id, a0, StreamCursor::Start, 20_000, 10, TailVisibility::All).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frame = Frame {
        bytes: b"through the pooler".to_vec(),
        kind: FrameKind::Stdout,
        frame_type: "log".into(),
        correlation_id: None,
        mode: StreamMode::default(),
    };
    fx.backend.append_frame(&h, frame).await.unwrap();
    let frames = tail.await.unwrap().unwrap();
    assert_eq!(frames.frames.len(), 1, "the parked tail returns the frame");
    assert_eq!(frames.frames[0].bytes, b"through the pooler");
    backend.complete(&h, None).await.unwrap();
    assert_eq!(fx.state(&id).await, PublicState::Completed);

    // A lease left to lapse is made reclaimable by the leader's lease-expiry reconciler, and a
    // waiting claim of the same backend takes the second attempt.
    let crashed = fx.create("lapse").await;
    let short = ClaimPolicy::new("pool", "dead", 200);
    let first = backend.claim(&lane_id("lapse"), &CapabilitySet::empty(), short).await.unwrap().expect("claimed");
    assert_eq!(payload(&first).execution_id, crashed);
    let second = backend
        .claim(&lane_id("lapse"), &CapabilitySet::empty(), waiting.clone())
        .await
        .unwrap()
        .expect("reclaimed once the lease lapsed");
    assert_eq!(payload(&second).execution_id, crashed);
    assert_eq!(payload(&second).attempt_index.0, payload(&first).attempt_index.0 + 1);
    let stale = backend.complete(&first, None).await.unwrap_err();
    assert!(matches!(stale, EngineError::State(_)), "the lapsed attempt is fenced out: {stale:?}");
    backend.complete(&second, None).await.unwrap();

    // Work delayed a moment is claimed by a waiting claim once due (promoted on the poll).
    let now = backend.server_time_ms().await.unwrap() as i64;
    let delayed = fx.create_with("later", |a| a.delay_until = Some(TimestampMs(now + 300))).await;
    let h = backend
        .claim(&lane_id("later"), &CapabilitySet::empty(), waiting)
        .await
        .unwrap()
        .expect("the delayed execution once due");
    assert_eq!(payload(&h).execution_id, delayed);
    backend.complete(&h, None).await.unwrap();

    assert_eq!(listening_sessions(&fx).await, 0, "no session of the pooled backend runs LISTEN");
    backend.shutdown_prepare(Duration::from_secs(5)).await.unwrap();
}
