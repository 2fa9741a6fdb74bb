//! `ff serve` behind a real PgBouncer in transaction-pooling mode (`FF_TRANSACTION_POOLING`):
//! the server migrates an empty database over its direct migration URL, then serves through
//! the pooler, whose few server connections its pool and its reconcilers share; SDK workers
//! over HTTP run handlers that report progress, append frames, fail and retry, and every
//! execution ends exactly as it should.

use std::collections::HashSet;
use std::time::Duration;

use ff_core::{ExecutionId, PublicState};
use ff_sdk::{Client, HttpTransport, SubmitRequest, TaskContext, Worker, WorkerConfig};
use ff_server::{Server, ServerConfig};
use ff_test::TestDb;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_behind_pgbouncer_runs_workers_to_the_end() {
    let db = TestDb::empty().await;
    let bouncer = ff_test::pgbouncer::pgbouncer().await.expect("PgBouncer");
    let mut cfg = ServerConfig::new(bouncer.url_for(db.url()).expect("URL through PgBouncer"));
    cfg.transaction_pooling = true;
    cfg.poll_interval_ms = 50;
    cfg.migration_database_url = Some(db.url().to_owned());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.pool_size = 8;
    cfg.lease_expiry_interval_ms = 50;
    cfg.delayed_promoter_interval_ms = 50;
    cfg.shutdown_grace_ms = 5_000;
    let server = Server::start(cfg).await.expect("server starts behind PgBouncer");
    let client = Client::new(server.url()).unwrap();

    let n = 40;
    let mut ids = Vec::new();
    for i in 0..n {
        let mut req = SubmitRequest::json("pooled", if i % 4 == 0 { "flaky" } else { "work" }, json!({ "i": i }));
        req.policy = Some(
            serde_json::from_value(json!({
                "retry_policy": {"max_retries": 2, "backoff": {"type": "fixed", "delay_ms": 20}}
            }))
            .unwrap(),
        );
        ids.push(client.submit(&req).await.expect("submit").execution_id());
    }

    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut wc = WorkerConfig::new("pool", ["pooled"]).unwrap();
        wc.claim_max_wait = Duration::from_millis(500);
        wc.concurrency = 4;
        let worker = Worker::new(HttpTransport::new(client.clone()), wc, ())
            .handle("work", |ctx: TaskContext<()>, input: serde_json::Value| async move {
                ctx.progress(Some(50), Some("halfway")).await?;
                ctx.append_frame("log", &format!("working on {input}")).await?;
                Ok(input)
            })
            .handle("flaky", |ctx: TaskContext<()>, input: serde_json::Value| async move {
                if ctx.attempt_index().0 == 0 {
                    return Err(std::io::Error::other("first attempt fails").into());
                }
                Ok(input)
            })
            .start()
            .await
            .unwrap();
        workers.push(worker);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pending: HashSet<ExecutionId> = ids.iter().copied().collect();
    while !pending.is_empty() {
        let mut still = HashSet::new();
        for id in pending {
            if client.state(&id).await.unwrap().expect("exists") != PublicState::Completed {
                still.insert(id);
            }
        }
        pending = still;
        assert!(tokio::time::Instant::now() < deadline, "{} executions never completed", pending.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut completed = 0;
    for w in workers {
        completed += w.shutdown().await.completed;
    }
    assert_eq!(completed, n, "each execution completed exactly once");

    for (i, id) in ids.iter().enumerate() {
        let result: serde_json::Value = serde_json::from_slice(&client.result(id).await.unwrap().unwrap()).unwrap();
        assert_eq!(result, json!({ "i": i }));
        let snap = client.describe(id).await.unwrap().unwrap();
        let want = if i % 4 == 0 { 2 } else { 1 };
        assert_eq!(snap.total_attempt_count, want, "attempts of execution {i}");
    }
    server.shutdown().await.unwrap();
}

#[test]
fn transaction_pooling_needs_a_direct_url_to_migrate_at_boot() {
    let mut cfg = ServerConfig::new("postgres://u@127.0.0.1:6432/db");
    cfg.transaction_pooling = true;
    let message = cfg.validate().unwrap_err().to_string();
    assert!(message.contains("FF_MIGRATION_DATABASE_URL"), "{message}");
    cfg.migration_database_url = Some("postgres://u@127.0.0.1:5432/db".into());
    cfg.validate().expect("with a direct migration URL");
    cfg.migration_database_url = None;
    cfg.migrate = ff_server::MigratePolicy::Check;
    cfg.validate().expect("checking the schema needs no direct URL");
    cfg.poll_interval_ms = 0;
    let message = cfg.validate().unwrap_err().to_string();
    assert!(message.contains("FF_POLL_INTERVAL_MS"), "{message}");
}
