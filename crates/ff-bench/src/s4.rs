//! `s4`: chains. `--chains` linear flows of `--length` members each are built first (one
//! `create_flow_graph` per chain, so only each head is claimable). Then `--workers` workers
//! long-poll `claim` on the chains' lane and `complete` each claimed member at once, calling the
//! backend in-process. A completion releases its downstream in its own transaction and wakes the
//! lane, so the figure of interest is the hop: for every edge, from the upstream's `complete`
//! returning to its downstream's `claim` returning. Throughput is chains per second, from the
//! workers' start to the last completion (every chain's sink is complete then).
//!
//! With more chains than workers, released members queue behind one another, and the hop
//! includes that queueing; with fewer chains than workers, workers sit in the long-poll and the
//! hop is the engine's own hand-off (commit, notification, wake-up, claim statement).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;
use tokio::sync::watch;

use crate::latency::Latency;
use crate::setup::BenchDatabase;

/// Arguments of `s4`.
#[derive(clap::Args, Clone)]
pub struct S4Args {
    /// Concurrent chains.
    #[arg(long, default_value_t = 100)]
    pub chains: usize,
    /// Members per chain.
    #[arg(long, default_value_t = 10)]
    pub length: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Longest a claim long-polls for work, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub max_wait_ms: u64,
    /// Database connections shared by the workers (default: one per worker, and two more).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Make claims wait for their WAL flush (the backend's default lets them commit without it).
    #[arg(long)]
    pub synchronous_claims: bool,
}

/// One member's claim and completion, as its worker saw them.
struct Step {
    id: ExecutionId,
    claimed_at: Instant,
    completed_at: Instant,
    complete_call: Duration,
}

/// Builds the chains, runs them to the end and prints the figures.
pub async fn run(args: S4Args) -> Result<()> {
    if args.chains == 0 || args.length < 2 || args.workers == 0 {
        bail!("--chains and --workers must be at least 1, --length at least 2");
    }
    let db = BenchDatabase::create(args.connections.unwrap_or(args.workers as u32 + 2)).await?;
    println!("{}", db.banner(args.synchronous_claims));
    let backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    backend.set_synchronous_claims(args.synchronous_claims);
    let lane = LaneId::try_new("bench.s4")?;

    let started = Instant::now();
    let mut upstream_of = HashMap::new();
    let mut ends = Vec::with_capacity(args.chains);
    for _ in 0..args.chains {
        let ids = build_chain(&backend, &lane, args.length).await?;
        upstream_of.extend(ids.windows(2).map(|w| (w[1], w[0])));
        ends.push((ids[0], ids[args.length - 1]));
    }
    println!("build: {} chains of {} members in {:.2?}", args.chains, args.length, started.elapsed());
    // The lane wakeup listener starts with the first long-poll: start it now, on another lane,
    // so that the first hops do not pay for its connection.
    let warm =
        ClaimPolicy { max_wait: Some(Duration::from_millis(50)), ..ClaimPolicy::new("bench", "warm-up", 30_000) };
    backend.claim(&LaneId::try_new("bench.s4.warm-up")?, &CapabilitySet::empty(), warm).await?;
    db.checkpoint().await?;

    let total = args.chains * args.length;
    let done = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let stop = Arc::new(stop);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let (backend, lane, done, stop, stopped) =
            (backend.clone(), lane.clone(), done.clone(), stop.clone(), stopped.clone());
        let policy = ClaimPolicy {
            max_wait: Some(Duration::from_millis(args.max_wait_ms)),
            ..ClaimPolicy::new("bench", format!("worker-{w}"), 30_000)
        };
        workers.spawn(async move { worker(backend, lane, policy, total, done, stop, stopped).await });
    }
    let mut steps = Vec::with_capacity(total);
    while let Some(r) = workers.join_next().await {
        steps.extend(r??);
    }
    if steps.len() != total {
        bail!("completed {} of {total} members", steps.len());
    }
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ff_execution WHERE lane_id = $1 AND lifecycle_phase <> 'terminal'")
            .bind(lane.as_str())
            .fetch_one(&db.pool)
            .await?;
    if left != 0 {
        bail!("{left} members are not terminal after the run");
    }

    let Some(last) = steps.iter().map(|s| s.completed_at).max() else { bail!("no member ran") };
    let elapsed = last - started;
    let chains_per_sec = args.chains as f64 / elapsed.as_secs_f64();
    let by_id: HashMap<ExecutionId, &Step> = steps.iter().map(|s| (s.id, s)).collect();
    let mut hops = Latency::new()?;
    let mut completes = Latency::new()?;
    let mut early = 0;
    for s in &steps {
        completes.record(s.complete_call)?;
        if let Some(up) = upstream_of.get(&s.id) {
            let up = by_id[up];
            // A downstream may be claimed before its upstream's `complete` has returned to its
            // caller (the commit and its notification precede the reply): that hop counts as 0.
            if s.claimed_at < up.completed_at {
                early += 1;
            }
            hops.record(s.claimed_at.saturating_duration_since(up.completed_at))?;
        }
    }
    // How the lane served the chains: each one's span (head claimed -> sink completed) and when
    // it finished, counted from the run's start.
    let mut spans = Latency::new()?;
    let mut finished = Latency::new()?;
    for (head, sink) in &ends {
        spans.record(by_id[sink].completed_at - by_id[head].claimed_at)?;
        finished.record(by_id[sink].completed_at - started)?;
    }
    let distinct: HashSet<_> = steps.iter().map(|s| s.id).collect();
    if distinct.len() != total {
        bail!("{} members were claimed more than once", total - distinct.len());
    }
    println!(
        "run: {} chains of {} members with {} workers in {elapsed:.2?} ({chains_per_sec:.1} chains/s, {:.0} members/s)",
        args.chains,
        args.length,
        args.workers,
        total as f64 / elapsed.as_secs_f64()
    );
    println!("hop (upstream complete returned -> downstream claim returned): {}", hops.summary());
    println!("hops where the downstream's claim returned before its upstream's complete: {early}");
    println!("complete call: {}", completes.summary());
    println!("chain span (head claimed -> sink completed): {}", spans.summary());
    println!("chain finished (run start -> sink completed): {}", finished.summary());
    println!(
        "RESULT system=ff scenario=s4 chains={} length={} workers={} max_wait_ms={} hops={} hop_p50_ms={:.2} hop_p90_ms={:.2} hop_p99_ms={:.2} hop_max_ms={:.2} chains_per_sec={chains_per_sec:.1} complete_p50_ms={:.2} chain_span_p50_ms={:.2} early_claims={early}",
        args.chains,
        args.length,
        args.workers,
        args.max_wait_ms,
        hops.count(),
        hops.ms(0.50),
        hops.ms(0.90),
        hops.ms(0.99),
        hops.max_ms(),
        completes.ms(0.50),
        spans.ms(0.50),
    );
    backend.shutdown_prepare(Duration::from_secs(5)).await?;
    Ok(())
}

/// Creates one chain of `length` members on `lane`; returns their ids, head first.
async fn build_chain(backend: &PostgresBackend, lane: &LaneId, length: usize) -> Result<Vec<ExecutionId>> {
    let flow = CreateFlowArgs::new("bench.s4");
    let members: Vec<CreateExecutionArgs> = (0..length)
        .map(|_| {
            let id = ExecutionId::for_flow(&flow.flow_id, &PartitionConfig::default());
            CreateExecutionArgs::new(id, lane.clone(), "bench.s4", b"{}".to_vec())
        })
        .collect();
    let ids: Vec<ExecutionId> = members.iter().map(|m| m.execution_id).collect();
    let edges = ids
        .windows(2)
        .map(|w| FlowGraphEdge {
            edge_id: None,
            upstream_execution_id: w[0],
            downstream_execution_id: w[1],
            data_passing_ref: None,
        })
        .collect();
    match backend.create_flow_graph(CreateFlowGraphArgs { flow, members, edges, policies: Vec::new() }).await? {
        CreateFlowGraphResult::Created { .. } => Ok(ids),
        other => bail!("chain not created: {other:?}"),
    }
}

/// One worker: long-poll claim, complete at once, until every member is done. Returns what it ran.
async fn worker(
    backend: Arc<PostgresBackend>,
    lane: LaneId,
    policy: ClaimPolicy,
    total: usize,
    done: Arc<AtomicUsize>,
    stop: Arc<watch::Sender<bool>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<Vec<Step>> {
    let caps = CapabilitySet::empty();
    let mut steps = Vec::new();
    loop {
        let claimed = tokio::select! {
            biased;
            _ = stopped.wait_for(|&s| s) => return Ok(steps),
            r = backend.claim(&lane, &caps, policy.clone()) => r?,
        };
        let claimed_at = Instant::now();
        let Some(handle) = claimed else { continue };
        let id = HandlePayload::from_handle(&handle, handle.backend)?.execution_id;
        backend.complete(&handle, None).await?;
        let completed_at = Instant::now();
        steps.push(Step { id, claimed_at, completed_at, complete_call: completed_at - claimed_at });
        if done.fetch_add(1, Ordering::Relaxed) + 1 == total {
            stop.send_replace(true);
        }
    }
}
