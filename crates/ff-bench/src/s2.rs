//! `s2`: suspend, signal, resume. `--executions` executions are created first (batched, not
//! measured) on one lane (or spread over `--lanes`). Then `--workers` workers long-poll `claim` on it, calling the backend
//! in-process. A fresh attempt is suspended at once for one signal named `approved` on a fresh
//! waitpoint `approval`, and its waitpoint id and token go to one of `--signallers` signaller
//! tasks, which deliver the approving signal with the token (so every delivery verifies it).
//! The satisfying signal makes the execution claimable and wakes the lane in its own
//! transaction; the next claim returns a `Resumed` handle on the same attempt, which the worker
//! completes.
//!
//! The figure of interest is the round trip: for every execution, from the start of the
//! `deliver_signal` call to the return of the `claim` that resumed it. Resumed executions keep
//! their place in the lane (their original eligibility time), so they are claimed ahead of fresh
//! ones, and the round trip includes waiting for a worker to come free. Throughput is
//! executions fully done (suspended, signalled, resumed and completed) per second, from the
//! workers' start to the last completion. The `suspend` and `deliver_signal` calls are timed
//! on their own as well.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;
use tokio::sync::{mpsc, watch};

use crate::latency::Latency;
use crate::setup::BenchDatabase;

/// Arguments of `s2`.
#[derive(clap::Args, Clone)]
pub struct S2Args {
    /// Executions to run through suspend -> signal -> resume -> complete.
    #[arg(long, default_value_t = 2_000)]
    pub executions: usize,
    /// Concurrent workers (claim, suspend, complete).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Concurrent signaller tasks (deliver the approving signal).
    #[arg(long, default_value_t = 4)]
    pub signallers: usize,
    /// Lanes the executions are spread over (round robin); worker `w` claims on lane `w % lanes`.
    /// Every resumption writes its lane's row, so more lanes spread that row's lock.
    #[arg(long, default_value_t = 1)]
    pub lanes: usize,
    /// Longest a claim long-polls for work, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub max_wait_ms: u64,
    /// Database connections shared by workers and signallers (default: one each, and two more).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Make claims wait for their WAL flush (the backend's default lets them commit without it).
    #[arg(long)]
    pub synchronous_claims: bool,
}

/// The waitpoint name and the signal that satisfies it.
const WAITPOINT_KEY: &str = "approval";
const SIGNAL_NAME: &str = "approved";

/// A suspended execution, handed from its worker to a signaller.
struct Suspended {
    id: ExecutionId,
    waitpoint: WaitpointTokenInfo,
    suspended_at: Instant,
}

/// How far the run is: executions completed, and the signal that stops the workers.
struct Progress {
    total: usize,
    done: AtomicUsize,
    stop: watch::Sender<bool>,
}

impl Progress {
    /// Counts one completion; the last one stops the workers.
    fn completed(&self) {
        if self.done.fetch_add(1, Ordering::Relaxed) + 1 == self.total {
            self.stop.send_replace(true);
        }
    }
}

/// What one worker saw.
struct WorkerLog {
    /// `suspend` calls, start to return.
    suspends: Latency,
    /// `complete` calls of resumed attempts, start to return.
    completes: Latency,
    /// When the claim that resumed each execution returned.
    resumed_at: Vec<(ExecutionId, Instant)>,
    /// When this worker's last completion returned.
    last_completed: Option<Instant>,
}

/// What one signaller saw.
struct SignallerLog {
    /// `deliver_signal` calls, start to return.
    delivers: Latency,
    /// From the worker's `suspend` returning to the signaller starting its delivery.
    queued: Latency,
    /// When each delivery started and returned.
    delivered: Vec<(ExecutionId, Instant, Instant)>,
}

/// Creates the executions, runs them through suspension and resumption, and prints the figures.
pub async fn run(args: S2Args) -> Result<()> {
    if args.executions == 0 || args.workers == 0 || args.signallers == 0 || args.lanes == 0 {
        bail!("--executions, --workers, --signallers and --lanes must be at least 1");
    }
    if args.lanes > args.workers {
        bail!("--lanes must be at most --workers, so that every lane has a worker");
    }
    let db = BenchDatabase::create(args.connections.unwrap_or((args.workers + args.signallers) as u32 + 2)).await?;
    println!("{}", db.banner(args.synchronous_claims));
    let backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    backend.set_synchronous_claims(args.synchronous_claims);
    let lanes = (0..args.lanes).map(|l| LaneId::try_new(format!("bench.s2.{l}"))).collect::<Result<Vec<_>, _>>()?;

    // A deployment seeds its signing key at boot; without one, the first suspends would race to
    // install a random key. The database is recreated for every run, so a fixed secret will do.
    let secret_hex = "5a".repeat(32);
    backend.seed_waitpoint_hmac_secret(SeedWaitpointHmacSecretArgs { kid: "bench".into(), secret_hex }).await?;

    let started = Instant::now();
    let mut created = 0;
    while created < args.executions {
        let n = (args.executions - created).min(MAX_CREATE_BATCH);
        let batch = (created..created + n)
            .map(|i| {
                let lane = &lanes[i % lanes.len()];
                CreateExecutionArgs::new(
                    ExecutionId::solo(lane, &PartitionConfig::default()),
                    lane.clone(),
                    "bench.s2",
                    b"{}".to_vec(),
                )
            })
            .collect();
        backend.create_executions(batch).await?;
        created += n;
    }
    println!("ingress: {} executions in {:.2?}", args.executions, started.elapsed());
    // The lane wakeup listener starts with the first long-poll: start it now, on another lane,
    // so that the first resumptions do not pay for its connection.
    let warm =
        ClaimPolicy { max_wait: Some(Duration::from_millis(50)), ..ClaimPolicy::new("bench", "warm-up", 30_000) };
    backend.claim(&LaneId::try_new("bench.warm-up")?, &CapabilitySet::empty(), warm).await?;
    db.checkpoint().await?;

    let progress =
        Arc::new(Progress { total: args.executions, done: AtomicUsize::new(0), stop: watch::channel(false).0 });
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..args.signallers).map(|_| mpsc::unbounded_channel()).unzip();
    let started = Instant::now();
    let mut signallers = tokio::task::JoinSet::new();
    for rx in receivers {
        signallers.spawn(signaller(backend.clone(), rx));
    }
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let (backend, lane, progress, senders) =
            (backend.clone(), lanes[w % lanes.len()].clone(), progress.clone(), senders.clone());
        let policy = ClaimPolicy {
            max_wait: Some(Duration::from_millis(args.max_wait_ms)),
            ..ClaimPolicy::new("bench", format!("worker-{w}"), 30_000)
        };
        workers.spawn(async move { worker(backend, lane, policy, w, progress, senders).await });
    }
    // The signallers end when every worker has ended and dropped its senders.
    drop(senders);

    let mut suspends = Latency::new()?;
    let mut completes = Latency::new()?;
    let mut resumed_at = HashMap::with_capacity(args.executions);
    let mut last = None;
    while let Some(r) = workers.join_next().await {
        let log = r??;
        suspends.merge(&log.suspends)?;
        completes.merge(&log.completes)?;
        for (id, at) in log.resumed_at {
            if resumed_at.insert(id, at).is_some() {
                bail!("execution {id} was resumed twice");
            }
        }
        last = last.max(log.last_completed);
    }
    let mut delivers = Latency::new()?;
    let mut queued = Latency::new()?;
    let mut delivered = Vec::with_capacity(args.executions);
    while let Some(r) = signallers.join_next().await {
        let log = r??;
        delivers.merge(&log.delivers)?;
        queued.merge(&log.queued)?;
        delivered.extend(log.delivered);
    }
    if resumed_at.len() != args.executions || delivered.len() != args.executions {
        bail!("{} of {} executions resumed, {} signalled", resumed_at.len(), args.executions, delivered.len());
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ff_execution WHERE execution_kind = 'bench.s2' AND lifecycle_phase <> 'terminal'",
    )
    .fetch_one(&db.pool)
    .await?;
    if left != 0 {
        bail!("{left} executions are not terminal after the run");
    }

    let Some(last) = last else { bail!("no execution completed") };
    let elapsed = last - started;
    let per_sec = args.executions as f64 / elapsed.as_secs_f64();
    let mut round_trips = Latency::new()?;
    let mut after_return = Latency::new()?;
    let mut early = 0;
    for (id, signal_started, signal_returned) in &delivered {
        let Some(&claimed) = resumed_at.get(id) else { bail!("execution {id} was signalled but never resumed") };
        round_trips.record(claimed - *signal_started)?;
        // The claim may return before `deliver_signal` returns to its caller (the commit and its
        // notification precede the reply): that one counts as 0 here.
        if claimed < *signal_returned {
            early += 1;
        }
        after_return.record(claimed.saturating_duration_since(*signal_returned))?;
    }
    println!(
        "run: {} executions on {} lane(s) with {} workers and {} signallers in {elapsed:.2?} ({per_sec:.0} executions/s)",
        args.executions, args.lanes, args.workers, args.signallers
    );
    println!("round trip (deliver_signal start -> resumed claim returned): {}", round_trips.summary());
    println!("deliver_signal returned -> resumed claim returned: {}", after_return.summary());
    println!("resumed claims that returned before their deliver_signal call: {early}");
    println!("suspend call: {}", suspends.summary());
    println!("deliver_signal call: {}", delivers.summary());
    println!("signal queue (suspend returned -> deliver_signal start): {}", queued.summary());
    println!("complete call (resumed): {}", completes.summary());
    println!(
        "RESULT system=ff scenario=s2 executions={} lanes={} workers={} signallers={} max_wait_ms={} rt_p50_ms={:.2} rt_p90_ms={:.2} rt_p99_ms={:.2} rt_max_ms={:.2} executions_per_sec={per_sec:.0} suspend_p50_ms={:.2} suspend_p99_ms={:.2} deliver_p50_ms={:.2} deliver_p99_ms={:.2} early_claims={early}",
        args.executions,
        args.lanes,
        args.workers,
        args.signallers,
        args.max_wait_ms,
        round_trips.ms(0.50),
        round_trips.ms(0.90),
        round_trips.ms(0.99),
        round_trips.max_ms(),
        suspends.ms(0.50),
        suspends.ms(0.99),
        delivers.ms(0.50),
        delivers.ms(0.99),
    );
    backend.shutdown_prepare(Duration::from_secs(5)).await?;
    Ok(())
}

/// One worker: long-poll claim; suspend a fresh attempt and hand its waitpoint to a signaller;
/// complete a resumed one. Until every execution is done.
async fn worker(
    backend: Arc<PostgresBackend>,
    lane: LaneId,
    policy: ClaimPolicy,
    index: usize,
    progress: Arc<Progress>,
    signallers: Vec<mpsc::UnboundedSender<Suspended>>,
) -> Result<WorkerLog> {
    let caps = CapabilitySet::empty();
    let mut log = WorkerLog {
        suspends: Latency::new()?,
        completes: Latency::new()?,
        resumed_at: Vec::new(),
        last_completed: None,
    };
    let mut stopped = progress.stop.subscribe();
    let mut next = index;
    loop {
        let claimed = tokio::select! {
            biased;
            _ = stopped.wait_for(|&s| s) => return Ok(log),
            r = backend.claim(&lane, &caps, policy.clone()) => r?,
        };
        let claimed_at = Instant::now();
        let Some(handle) = claimed else { continue };
        let id = HandlePayload::from_handle(&handle, handle.backend)?.execution_id;
        match handle.kind {
            HandleKind::Fresh => {
                let t0 = Instant::now();
                let outcome = backend.suspend(&handle, SuspendArgs::for_signal(WAITPOINT_KEY, SIGNAL_NAME)).await?;
                let suspended_at = Instant::now();
                log.suspends.record(suspended_at - t0)?;
                let SuspendOutcome::Suspended { details } = outcome else { bail!("{id} not suspended: {outcome:?}") };
                let Some(waitpoint) = details.waitpoints.into_iter().next() else { bail!("{id}: no waitpoint") };
                signallers[next % signallers.len()]
                    .send(Suspended { id, waitpoint, suspended_at })
                    .map_err(|_| anyhow::anyhow!("the signallers ended early"))?;
                next += 1;
            }
            HandleKind::Resumed => {
                log.resumed_at.push((id, claimed_at));
                let t0 = Instant::now();
                backend.complete(&handle, None).await?;
                let completed_at = Instant::now();
                log.completes.record(completed_at - t0)?;
                log.last_completed = Some(completed_at);
                progress.completed();
            }
            other => bail!("{id}: unexpected handle kind {other:?}"),
        }
    }
}

/// One signaller: delivers the approving signal, with its token, to every waitpoint it is
/// handed, until the workers have all ended.
async fn signaller(backend: Arc<PostgresBackend>, mut rx: mpsc::UnboundedReceiver<Suspended>) -> Result<SignallerLog> {
    let mut log = SignallerLog { delivers: Latency::new()?, queued: Latency::new()?, delivered: Vec::new() };
    while let Some(s) = rx.recv().await {
        let mut signal = DeliverSignalArgs::new(s.id, s.waitpoint.waitpoint_id, SIGNAL_NAME, "user", "bench");
        signal.waitpoint_token = Some(s.waitpoint.waitpoint_token);
        let t0 = Instant::now();
        log.queued.record(t0 - s.suspended_at)?;
        let result = backend.deliver_signal(signal).await?;
        let returned = Instant::now();
        log.delivers.record(returned - t0)?;
        match result {
            DeliverSignalResult::Accepted { effect: SignalEffect::ResumeConditionSatisfied, .. } => {}
            other => bail!("{}: the signal did not resume it: {other:?}", s.id),
        }
        log.delivered.push((s.id, t0, returned));
    }
    Ok(log)
}
