//! `ff-bench`: benchmark scenarios for the engine.
//!
//! `s1`: create N executions with a payload (ingress, batched), then W workers claim and complete
//! until every execution is done. `--batch 1` uses the trait's `claim` / `complete` one execution
//! at a time; `--batch B` uses `claim_batch` / `complete_batch` (every row still fenced).
//! Throughput is N / drain time; latency is per execution, from the start of the claim call that
//! took it to the end of the complete call that finished it.
//!
//! `--system ff` (default) calls the backend in-process; `--system ff-http` starts an
//! `ff-server` on a loopback port and drives the same scenario through the HTTP API with the
//! SDK (`Client::submit_batch` for ingress; `HttpTransport` claims and completes; batches
//! complete through `POST /v1/completions`).
//!
//! `s1 --admission keys` runs S1 twice, plain and then with every execution attached to a quota
//! policy whose caps never bind (`admission.rs`).
//!
//! `s2` (suspension: suspend, signal with the waitpoint's token, claim the resumed attempt and
//! complete it; the round trip from the signal to the resumed claim) is in its own module, as
//! are the flow scenarios `s4` (chains: hop latency from one member's completion to its
//! downstream's claim) and `s6` (quorum with sibling cancellation), `s5` (claims routed by
//! capability across four worker classes) and `fairness` (a small concurrency key's wait behind
//! a large one, with a per-key cap and in plain FIFO order). `memory` reads the resident memory
//! of an `ff serve` process before, during and after a burst of large submissions. `retention`
//! samples the engine's table sizes under steady load with a short retention window.
//!
//! The database is `DATABASE_URL`'s server (a database named `ff_bench` is dropped and
//! recreated) or, when unset, the test kit's private throwaway cluster.

mod admission;
mod fairness;
mod latency;
mod limit;
mod memory;
mod retention;
mod s2;
mod s4;
mod s5;
mod s6;
mod setup;
mod tail;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ff_backend_postgres::{BackendConfig, Metrics, PostgresBackend};
use ff_core::wire::{CompleteRequest, SubmitRequest};
use ff_core::*;
use ff_sdk::{ClaimArgs, Client, HttpTransport, WorkerTransport};
use ff_server::{Server, ServerConfig};
use hdrhistogram::Histogram;
use setup::BenchDatabase;

#[derive(Parser)]
#[command(name = "ff-bench", about = "FlowFabric engine benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Submit N executions, then W workers claim -> complete until all are done.
    S1(S1Args),
    /// Suspend, deliver the approving signal, claim the resumed attempt and complete it.
    S2(s2::S2Args),
    /// Concurrent linear chains run to the end; hop latency and chains per second.
    S4(s4::S4Args),
    /// Claims routed by capability across four worker classes; throughput, latency, placement.
    S5(s5::S5Args),
    /// Quorum k-of-n with sibling cancellation; how soon the losers are cancelled.
    S6(s6::S6Args),
    /// A small concurrency key behind a large one: per-key cap against plain FIFO.
    Fairness(fairness::FairnessArgs),
    /// Resident memory of `ff serve` before, during and after a burst of large submissions.
    Memory(memory::MemoryArgs),
    /// How soon frames reach a live tail, and completions a subscriber, across two backends.
    Tail(tail::TailArgs),
    /// Table sizes under steady load with a short retention window: they level off.
    Retention(retention::RetentionArgs),
}

#[derive(clap::Args, Clone)]
struct S1Args {
    /// Executions to create.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Input payload size in bytes.
    #[arg(long, default_value_t = 4096)]
    payload_bytes: usize,
    /// Executions claimed and completed per round trip (1 = the trait's single-item calls).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Executions per create call during ingress.
    #[arg(long, default_value_t = 500)]
    ingress_batch: usize,
    /// Concurrent submitters during ingress.
    #[arg(long, default_value_t = 4)]
    submitters: usize,
    /// Database connections shared by all workers (default: one per worker). Fewer connections
    /// than workers queue claims in the client instead of in an oversubscribed server.
    #[arg(long)]
    connections: Option<u32>,
    /// Make claims wait for their WAL flush (the backend's default lets them commit without it).
    #[arg(long)]
    synchronous_claims: bool,
    /// `ff` (in-process backend) or `ff-http` (an ff-server on loopback, through the SDK).
    #[arg(long, value_enum, default_value = "ff")]
    system: System,
    /// Connect the engine (`--system ff`) through a transaction pooler listening on this
    /// `host:port` (PgBouncer with `pool_mode = transaction` in front of the same server), in
    /// transaction-pooling mode. The benchmark database and the limit still go directly.
    #[arg(long)]
    pooler: Option<String>,
    /// Run S1 a second time beside a backlog of this kind, and report it as a ratio to the
    /// first run (on an empty lane) of the same process.
    /// Several kinds may be given, comma-separated; each gets `--backlog-size` executions.
    #[arg(long, value_enum, value_delimiter = ',')]
    backlog: Vec<Backlog>,
    /// Executions in the backlog (`delayed`, `unroutable`).
    #[arg(long, default_value_t = 1_000_000)]
    backlog_size: usize,
    /// After seeding the backlog, wait for `VACUUM (ANALYZE)` of the engine's tables before the
    /// second run: a backlog that has sat in the table for a while, rather than one whose
    /// autovacuum and analyze run during the measurement. (Both runs start after a checkpoint.)
    #[arg(long)]
    settle: bool,
    /// Run S1 a second time with every execution attached to a quota policy (in a freshly
    /// recreated database) and report it as a ratio to the first, plain run.
    #[arg(long, value_enum)]
    admission: Option<Admission>,
    /// Concurrency keys the executions are spread over (`--admission keys`).
    #[arg(long, default_value_t = 1_000)]
    concurrency_keys: usize,
    /// Also measure, in the same database after the run, the bare Postgres limit (a
    /// single-table `SKIP LOCKED` claim + complete with the same workers, rows and batch, and
    /// durable updates by key) and print S1 as a ratio to it.
    #[arg(long)]
    limit: bool,
}

/// How S1's second run is admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Admission {
    /// One quota policy with a concurrency cap and a per-key cap that never bind, and a
    /// concurrency key per execution, spread evenly over `--concurrency-keys` keys.
    Keys,
}

/// What S1 runs beside in its second run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backlog {
    /// Executions delayed by a day, at a higher priority than S1's, in S1's lane.
    Delayed,
    /// Executions requiring a capability no worker offers, at a higher priority, in S1's lane.
    Unroutable,
    /// Another session holding one snapshot open for the whole second run.
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum System {
    /// The backend, in-process.
    Ff,
    /// The HTTP API through the SDK.
    FfHttp,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            Self::Ff => "ff",
            Self::FfHttp => "ff-http",
        }
    }
}

/// Where the scenario's calls go.
#[derive(Clone)]
enum Target {
    Direct(Arc<PostgresBackend>),
    Http(Client, Arc<HttpTransport>),
}

/// The same allocator as the `ff` binary, so the figures match what it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    // The process settings of the `ff` binary too; without them the run is only slower.
    let _ = ff_server::process::keep_small_pages();
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::S1(args) => s1(args).await,
        Scenario::S2(args) => s2::run(args).await,
        Scenario::S4(args) => s4::run(args).await,
        Scenario::S5(args) => s5::run(args).await,
        Scenario::S6(args) => s6::run(args).await,
        Scenario::Fairness(args) => fairness::run(args).await,
        Scenario::Memory(args) => memory::run(args).await,
        Scenario::Tail(args) => tail::run(args).await,
        Scenario::Retention(args) => retention::run(args).await,
    }
}

async fn s1(args: S1Args) -> Result<()> {
    if args.tasks == 0 || args.workers == 0 || args.batch == 0 || args.ingress_batch == 0 || args.submitters == 0 {
        bail!("--tasks, --workers, --batch, --ingress-batch and --submitters must be at least 1");
    }
    if args.admission.is_some() {
        return admission::compare(&args).await;
    }
    let bench = Bench::open(&args).await?;
    let (backend, pool) = (bench.backend.clone(), bench.db.pool.clone());
    let lane = LaneId::try_new("bench.s1")?;

    // Start each run with no dirty buffers left over from set-up (or from the database a previous
    // benchmark dropped), so that no checkpoint's writes land in one run and not the other.
    bench.db.checkpoint().await?;
    let first = run(&args, &bench.target, &pool, &lane, None).await?;
    first.print(&args, "");
    if args.limit {
        let limit = limit::measure(&bench.db.url, args.workers, args.tasks, args.payload_bytes, args.batch).await?;
        limit.print(args.workers, args.batch, first.ops);
    }
    if !args.backlog.is_empty() {
        let mut size = 0;
        for &kind in &args.backlog {
            if kind != Backlog::Snapshot {
                let started = Instant::now();
                seed_backlog(&backend, &lane, kind, args.backlog_size).await?;
                println!("backlog: {} {kind:?} executions in {:.2?}", args.backlog_size, started.elapsed());
                size += args.backlog_size;
            }
        }
        if args.settle {
            let started = Instant::now();
            sqlx::query("VACUUM (ANALYZE) ff_execution, ff_attempt, ff_event").execute(&pool).await?;
            println!("backlog: settled (VACUUM ANALYZE) in {:.2?}", started.elapsed());
        }
        sqlx::query("CHECKPOINT").execute(&pool).await?;
        // A session that holds one snapshot for the whole second run, as a long report or a
        // stuck replication slot would: vacuum cannot remove row versions newer than it.
        let holder = match args.backlog.contains(&Backlog::Snapshot) {
            true => {
                let mut conn = pool.acquire().await?;
                sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ").execute(&mut *conn).await?;
                sqlx::query("SELECT count(*) FROM ff_lane").execute(&mut *conn).await?;
                println!("backlog: a transaction holds its snapshot for the whole second run");
                Some(conn)
            }
            false => None,
        };
        let second = run(&args, &bench.target, &pool, &lane, None).await?;
        let kinds = args.backlog.iter().map(|k| format!("{k:?}").to_lowercase()).collect::<Vec<_>>().join(",");
        second.print(
            &args,
            &format!(
                " backlog={kinds} backlog_size={size} settled={} baseline_ops_per_sec={:.0} ratio={:.3}",
                args.settle,
                first.ops,
                second.ops / first.ops
            ),
        );
        if let Some(mut conn) = holder {
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
        }
    }
    bench.close().await
}

/// What one S1 run talks to: a freshly created benchmark database, the backend on it and, for
/// `--system ff-http`, a server on loopback.
struct Bench {
    db: BenchDatabase,
    backend: Arc<PostgresBackend>,
    server: Option<Server>,
    target: Target,
}

impl Bench {
    /// Drops and recreates the benchmark database, prints its settings line, and starts what
    /// `args.system` needs.
    async fn open(args: &S1Args) -> Result<Self> {
        let connections = args.connections.unwrap_or((args.workers + args.submitters) as u32);
        if args.pooler.is_some() && !matches!(args.system, System::Ff) {
            bail!("--pooler applies to --system ff only");
        }
        let db = BenchDatabase::create(connections).await?;
        println!("{}", db.banner(args.synchronous_claims));
        let backend = match &args.pooler {
            None => PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default()),
            Some(addr) => {
                let direct = sqlx::postgres::PgConnectOptions::from_str(&db.url)?;
                let url = format!(
                    "postgres://{}@{addr}/{}?sslmode=disable",
                    direct.get_username(),
                    direct.get_database().unwrap_or("ff_bench")
                );
                println!("engine connections: through the transaction pooler at {addr} (transaction-pooling mode)");
                let config = BackendConfig {
                    transaction_pooling: true,
                    max_connections: connections,
                    ..BackendConfig::new(url)
                };
                PostgresBackend::connect_with_metrics(config, PartitionConfig::default(), Arc::new(Metrics::default()))
                    .await?
            }
        };
        backend.set_synchronous_claims(args.synchronous_claims);
        let server = match args.system {
            System::Ff => None,
            System::FfHttp => {
                let mut cfg = ServerConfig::new(db.url.clone());
                cfg.listen = "127.0.0.1:0".parse()?;
                cfg.pool_size = connections.max(1);
                Some(Server::start(cfg).await?)
            }
        };
        let target = match &server {
            None => Target::Direct(backend.clone()),
            Some(server) => {
                let client = Client::new(server.url())?;
                Target::Http(client.clone(), Arc::new(HttpTransport::new(client)))
            }
        };
        Ok(Self { db, backend, server, target })
    }

    /// Stops the server (if any) and closes the backend's connections.
    async fn close(self) -> Result<()> {
        if let Some(server) = self.server {
            server.shutdown().await?;
        }
        self.backend.shutdown_prepare(Duration::from_secs(5)).await?;
        Ok(())
    }
}

/// One S1 run's figures.
struct Run {
    ops: f64,
    p50_ms: f64,
    p99_ms: f64,
    ingress_ops: f64,
}

impl Run {
    /// Prints S1's `RESULT` line; `extra` (` name=value` pairs) describes a comparison run.
    fn print(&self, args: &S1Args, extra: &str) {
        println!(
            "RESULT system={} scenario=s1 workers={} tasks={} batch={} ops_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} ingress_ops_per_sec={:.0}{extra}",
            args.system.label(),
            args.workers,
            args.tasks,
            args.batch,
            self.ops,
            self.p50_ms,
            self.p99_ms,
            self.ingress_ops,
        );
    }
}

/// Submits `args.tasks` executions to `lane` (attached to `quota`'s policy when given), then
/// drains them with `args.workers` workers.
async fn run(
    args: &S1Args,
    target: &Target,
    pool: &sqlx::PgPool,
    lane: &LaneId,
    quota: Option<&admission::KeyedQuota>,
) -> Result<Run> {
    // Ingress.
    let payload = vec![0x5au8; args.payload_bytes];
    let per_submitter = args.tasks.div_ceil(args.submitters);
    warm_up(target, args.submitters, &payload).await?;
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..args.submitters {
        let (target, lane, payload, quota) = (target.clone(), lane.clone(), payload.clone(), quota.cloned());
        let lo = s * per_submitter;
        let hi = ((s + 1) * per_submitter).min(args.tasks);
        let chunk = args.ingress_batch;
        submitters.spawn(async move {
            let mut i = lo;
            while i < hi {
                let n = chunk.min(hi - i);
                create(&target, &lane, "bench.scenario1", &payload, i..i + n, quota.as_ref()).await?;
                i += n;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = submitters.join_next().await {
        r??;
    }
    let ingress = started.elapsed();
    let ingress_ops = args.tasks as f64 / ingress.as_secs_f64();
    println!("ingress: {} executions in {:.2?} ({ingress_ops:.0}/s)", args.tasks, ingress);

    // Drain.
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let (target, lane, done) = (target.clone(), lane.clone(), done.clone());
        let (batch, total) = (args.batch, args.tasks);
        workers.spawn(async move { worker(target, lane, w, batch, total, done).await });
    }
    let mut hist = Histogram::<u64>::new(3)?;
    while let Some(r) = workers.join_next().await {
        hist.add(r??)?;
    }
    let drain = started.elapsed();
    let completed = done.load(Ordering::Relaxed);
    if completed != args.tasks {
        bail!("completed {completed} of {} executions", args.tasks);
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ff_execution WHERE lifecycle_phase <> 'terminal' AND execution_kind = 'bench.scenario1'",
    )
    .fetch_one(pool)
    .await?;
    if left != 0 {
        bail!("{left} executions are not terminal after the drain");
    }
    let ops = args.tasks as f64 / drain.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!("drain: {} executions in {:.2?} with {} workers, batch {}", args.tasks, drain, args.workers, args.batch);
    println!(
        "latency per execution (claim start -> complete end): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.50),
        ms(0.95),
        ms(0.99),
        hist.max() as f64 / 1000.0
    );
    Ok(Run { ops, p50_ms: ms(0.50), p99_ms: ms(0.99), ingress_ops })
}

/// Fills `lane` with `size` executions S1 cannot claim, at a higher priority than S1's.
async fn seed_backlog(backend: &PostgresBackend, lane: &LaneId, kind: Backlog, size: usize) -> Result<()> {
    let far = TimestampMs(backend.server_time_ms().await? as i64 + 24 * 3_600_000);
    let mut left = size;
    while left > 0 {
        let n = left.min(MAX_CREATE_BATCH);
        let batch = (0..n)
            .map(|_| {
                let mut a = CreateExecutionArgs::new(
                    ExecutionId::solo(lane, &PartitionConfig::default()),
                    lane.clone(),
                    "bench.backlog",
                    b"{}".to_vec(),
                );
                a.priority = 100;
                match kind {
                    Backlog::Delayed => a.delay_until = Some(far),
                    Backlog::Unroutable => {
                        a.policy = Some(ExecutionPolicy {
                            routing_requirements: Some(RoutingRequirements {
                                required_capabilities: ["bench.nobody".to_owned()].into(),
                            }),
                            ..ExecutionPolicy::default()
                        })
                    }
                    Backlog::Snapshot => {}
                }
                a
            })
            .collect();
        backend.create_executions(batch).await?;
        left -= n;
    }
    Ok(())
}

/// Before ingress is timed, each submitter creates one execution on a lane of its own that no
/// worker claims, through the same path: the connections the timed part uses are open and have
/// its statement prepared, as on a server that has been running (a just-started server opens
/// its pool's connections on first use). The same for both systems.
async fn warm_up(target: &Target, submitters: usize, payload: &[u8]) -> Result<()> {
    let lane = LaneId::try_new("bench.warmup")?;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..submitters {
        let (target, lane, payload) = (target.clone(), lane.clone(), payload.to_vec());
        calls.spawn(async move { create(&target, &lane, "bench.warmup", &payload, 0..1, None).await });
    }
    while let Some(r) = calls.join_next().await {
        r??;
    }
    Ok(())
}

/// Creates one execution of `kind` on `lane` per index of `items` in one call (attached to
/// `quota`'s policy, keyed by the index, when given).
async fn create(
    target: &Target,
    lane: &LaneId,
    kind: &str,
    payload: &[u8],
    items: std::ops::Range<usize>,
    quota: Option<&admission::KeyedQuota>,
) -> Result<()> {
    match target {
        Target::Direct(backend) => {
            let batch = items
                .map(|k| {
                    let id = ExecutionId::solo(lane, &PartitionConfig::default());
                    let mut a = CreateExecutionArgs::new(id, lane.clone(), kind, payload.to_vec());
                    a.policy = quota.map(|q| q.policy(k));
                    a
                })
                .collect();
            backend.create_executions(batch).await?;
        }
        Target::Http(client, _) => {
            let encoded = ff_core::wire::encode_bytes(payload);
            let batch = items
                .map(|k| SubmitRequest {
                    lane_id: lane.as_str().to_owned(),
                    execution_kind: kind.into(),
                    input_base64: Some(encoded.clone()),
                    policy: quota.map(|q| q.policy(k)),
                    ..SubmitRequest::default()
                })
                .collect();
            client.submit_batch(batch).await?;
        }
    }
    Ok(())
}

/// One worker: claim -> complete until every execution is done. Returns latencies in µs.
async fn worker(
    target: Target,
    lane: LaneId,
    index: usize,
    batch: usize,
    total: usize,
    done: Arc<AtomicUsize>,
) -> Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let policy = ClaimPolicy::new("bench", format!("worker-{index}"), 30_000);
    let caps = CapabilitySet::empty();
    let claim_args = ClaimArgs {
        worker_id: "bench".into(),
        worker_instance_id: format!("worker-{index}"),
        lane: lane.clone(),
        capabilities: Vec::new(),
        lease_ttl_ms: 30_000,
        max: batch,
        max_wait: Duration::ZERO,
    };
    // Over HTTP at batch 1 a worker completes and claims its next execution in one request, as
    // the SDK's worker does when it is busy: that request's start is the next execution's start.
    let mut next: Option<(Instant, ff_sdk::ClaimedTask)> = None;
    loop {
        let (t0, carried) = match next.take() {
            Some((started, task)) => (started, Some(task)),
            None => (Instant::now(), None),
        };
        let (handles, tasks) = match &target {
            _ if carried.is_some() => (Vec::new(), carried.into_iter().collect()),
            Target::Direct(backend) if batch == 1 => {
                (backend.claim(&lane, &caps, policy.clone()).await?.into_iter().collect::<Vec<_>>(), Vec::new())
            }
            Target::Direct(backend) => (backend.claim_batch(&lane, &caps, policy.clone(), batch).await?, Vec::new()),
            Target::Http(_, transport) => (Vec::new(), transport.claim(&claim_args).await?),
        };
        if handles.is_empty() && tasks.is_empty() {
            if done.load(Ordering::Relaxed) >= total {
                return Ok(hist);
            }
            // Others still hold the remaining executions; they will finish them.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if done.load(Ordering::Relaxed) >= total {
                return Ok(hist);
            }
            continue;
        }
        let n = handles.len() + tasks.len();
        match &target {
            Target::Direct(backend) if batch == 1 => {
                for h in &handles {
                    backend.complete(h, None).await?;
                }
            }
            Target::Direct(backend) => {
                let items = handles.into_iter().map(|h| (h, None)).collect();
                for r in backend.complete_batch(items).await? {
                    r?;
                }
            }
            Target::Http(_, transport) if batch == 1 => {
                for t in &tasks {
                    let started = Instant::now();
                    let claimed = transport.complete_and_claim(t, None, &claim_args).await?;
                    next = claimed.into_iter().next().map(|c| (started, c));
                }
            }
            Target::Http(client, _) => {
                let items = tasks
                    .iter()
                    .map(|t| CompleteRequest { handle: ff_core::wire::handle_token(&t.handle), result_base64: None })
                    .collect();
                if let Some(e) = client.complete_batch(items).await?.into_iter().flatten().next() {
                    bail!("complete failed: {} {}", e.code, e.message);
                }
            }
        }
        let us = t0.elapsed().as_micros() as u64;
        for _ in 0..n {
            hist.record(us.max(1))?;
        }
        done.fetch_add(n, Ordering::Relaxed);
    }
}
