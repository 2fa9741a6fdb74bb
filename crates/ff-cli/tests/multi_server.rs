//! Three `ff serve` processes on one database: one leads the reconcilers (the holder of the
//! `reconcilers` leader lease); SIGKILL it mid-run and another takes over, while delayed work
//! comes due and leases of a worker that died lapse. Every execution ends exactly once: each
//! delayed one runs once, each abandoned one is reclaimed once, one completion event each.
//! (This test waits on real time: leader election is about time.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ff_backend_postgres::MIGRATOR;
use ff_core::wire::ClaimRequest;
use ff_core::{ExecutionId, PublicState, TimestampMs};
use ff_sdk::{Client, HttpTransport, SubmitRequest, TaskContext, Worker, WorkerConfig};
use ff_test::TestDb;
use serde_json::json;

const TOKEN: &str = "multi-server-token";

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ff serve` on a free port with a short leader lease; returns it once it listens.
fn serve(db: &TestDb) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ff"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", db.url())
        .env("FF_API_TOKEN", TOKEN)
        .env("FF_LEADER_LEASE_TTL_MS", "1000")
        .env("FF_LEASE_EXPIRY_INTERVAL_MS", "100")
        .env("FF_DELAYED_PROMOTER_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ff serve runs");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).expect("reading stderr") > 0, "ff serve never listened:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.split("FlowFabric API on ").nth(1) {
            break rest.split_whitespace().next().expect("an address").to_owned();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    Serve { child, url }
}

async fn lease(db: &TestDb) -> Option<(String, i64)> {
    sqlx::query_as(
        "SELECT holder, epoch FROM ff_leader_lease WHERE name = 'reconcilers' AND expires_at_ms > ff_now_ms()",
    )
    .fetch_optional(db.pool())
    .await
    .expect("reading the lease")
}

/// Waits for a live lease held by one of `pids`; returns the holder's pid and the epoch.
async fn leader(db: &TestDb, pids: &[u32], within: Duration) -> (u32, i64) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some((holder, epoch)) = lease(db).await {
            let pid = holder.strip_prefix("pid").and_then(|r| r.split('-').next()).and_then(|p| p.parse().ok());
            if let Some(pid) = pid.filter(|p| pids.contains(p)) {
                return (pid, epoch);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader among {pids:?} after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_every_execution_ends_exactly_once() {
    let db = TestDb::new(&MIGRATOR).await;
    let mut servers = vec![serve(&db), serve(&db), serve(&db)];
    let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let (leader_pid, epoch) = leader(&db, &pids, Duration::from_secs(10)).await;
    let killed = servers.iter().position(|s| s.child.id() == leader_pid).expect("the leader is ours");
    let survivor = servers[(killed + 1) % 3].url.clone();
    let client = Client::new(&survivor).unwrap().with_token(TOKEN);

    // Delayed work coming due over the next two seconds, and work whose worker dies holding it.
    let now = sqlx::query_scalar::<_, i64>("SELECT ff_now_ms()").fetch_one(db.pool()).await.unwrap();
    let mut attempts: HashMap<ExecutionId, u32> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..30 {
        let mut req = SubmitRequest::json("timers", "job", json!({"i": i}));
        req.delay_until = Some(TimestampMs(now + 200 + i * 60));
        batch.push(req);
    }
    for id in client.submit_batch(batch).await.unwrap().iter().map(|r| r.execution_id()) {
        attempts.insert(id, 1);
    }
    let dying: Vec<_> = (0..10).map(|i| SubmitRequest::json("dying", "job", json!({"i": i}))).collect();
    for id in client.submit_batch(dying).await.unwrap().iter().map(|r| r.execution_id()) {
        attempts.insert(id, 2);
    }
    let abandon = ClaimRequest {
        lane_id: "dying".into(),
        worker_instance_id: "doomed".into(),
        capabilities: Vec::new(),
        lease_ttl_ms: 1_000,
        max: 10,
        max_wait_ms: 0,
    };
    assert_eq!(client.claim("doomed-pool", &abandon).await.unwrap().claimed.len(), 10);

    // SIGKILL the leader while the timers are coming due.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(leader_pid as libc::pid_t, libc::SIGKILL) }, 0);
    let _ = servers[killed].child.wait();
    let others: Vec<u32> = pids.iter().copied().filter(|p| *p != leader_pid).collect();
    let (next_pid, next_epoch) = leader(&db, &others, Duration::from_secs(10)).await;
    assert_ne!(next_pid, leader_pid);
    assert!(next_epoch > epoch, "the lease changed hands: epoch {epoch} -> {next_epoch}");

    // A healthy worker on a surviving server runs everything.
    let mut cfg = WorkerConfig::new("healthy", ["timers", "dying"]).unwrap();
    cfg.concurrency = 8;
    cfg.claim_max_wait = Duration::from_millis(200);
    let worker = Worker::new(HttpTransport::new(client.clone()), cfg, ())
        .handle("job", |_: TaskContext<()>, _: serde_json::Value| async move { Ok(json!({"ok": true})) })
        .start()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (id, want) in &attempts {
        loop {
            let snap = client.describe(id).await.unwrap().expect("the execution");
            if snap.public_state.is_terminal() {
                assert_eq!(snap.public_state, PublicState::Completed, "{id}");
                assert_eq!(snap.total_attempt_count, *want, "{id}: its timer fired once");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never ended: {:?}", snap.public_state);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    worker.shutdown().await;
    let completions: i64 = sqlx::query_scalar("SELECT count(*) FROM ff_event WHERE kind = 'completed'")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(completions as usize, attempts.len(), "one completion per execution");
    servers.clear();
}
