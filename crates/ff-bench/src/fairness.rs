//! `fairness`: how long a small concurrency key waits behind a large one.
//!
//! One run, keyed: a quota policy with only `max_concurrent_per_key` = `--per-key-cap` K.
//! `--workers` W workers start first, long-polling `claim` on one lane at batch 1; each holds
//! what it claims for `--handler-ms` H (a sleep, standing in for the handler) and then
//! completes it. Then key `big`'s `--big` executions are created (`create_executions`,
//! `--ingress-batch` per call), then key `small`'s `--small`. With the cap, only K of a key are
//! claimable at a time: the rest wait outside the claimable set, each key in its own queue, so
//! the small key's first K are admitted at creation and claimed next, whatever the big key's
//! backlog.
//!
//! Reported: when the small key's executions have all completed, counted from the start of the
//! call that created the first of them and from the run's start (the workers' start), how many
//! of the big key's had completed at that moment, and the throughput until then (every
//! completion / time since the start). With `--drain` (default) the keyed run continues until
//! every execution is complete and also reports that whole run's throughput: the big key is
//! then capped at K at a time, so this takes at least big × H / K.
//!
//! With `--compare-fifo` (default) the same then runs with no policy (plain FIFO in creation
//! order, so the small key queues behind the whole big key), in a freshly recreated database,
//! and stops as soon as the small key's executions have completed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;
use tokio::sync::watch;

use crate::setup::BenchDatabase;

/// Arguments of `fairness`.
#[derive(clap::Args, Clone)]
pub struct FairnessArgs {
    /// Executions of the big key, created first.
    #[arg(long, default_value_t = 100_000)]
    pub big: usize,
    /// Executions of the small key, created after the big key's.
    #[arg(long, default_value_t = 10)]
    pub small: usize,
    /// The policy's `max_concurrent_per_key` (K).
    #[arg(long, default_value_t = 2)]
    pub per_key_cap: u32,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// How long a worker holds each execution between claim and complete, in ms.
    #[arg(long, default_value_t = 5)]
    pub handler_ms: u64,
    /// Executions per create call.
    #[arg(long, default_value_t = 1_000)]
    pub ingress_batch: usize,
    /// Longest a claim long-polls for work, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub max_wait_ms: u64,
    /// Run the keyed run until every execution is complete (`--drain false`: stop it, like the
    /// FIFO run, once the small key's are).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub drain: bool,
    /// Also run with no policy, in plain FIFO order, and compare (`--compare-fifo false`: don't).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub compare_fifo: bool,
    /// Give up when no execution completes for this many seconds.
    #[arg(long, default_value_t = 60)]
    pub stall_secs: u64,
}

/// Which way the run admits work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One quota policy with a per-key cap; keys `big` and `small`.
    Keyed,
    /// No policy.
    Fifo,
}

/// Completions as the workers report them.
struct Progress {
    big: AtomicUsize,
    small: AtomicUsize,
    small_total: usize,
    /// When the last of the small key completed, and the big key's completions then.
    small_finished: OnceLock<(Instant, usize)>,
    /// When the last execution completed.
    all_finished: OnceLock<Instant>,
    total: usize,
}

impl Progress {
    /// Counts one completion, of the small key's or the big key's.
    fn completed(&self, small: bool) {
        let now = Instant::now();
        if small {
            if self.small.fetch_add(1, Ordering::SeqCst) + 1 == self.small_total {
                let _ = self.small_finished.set((now, self.big.load(Ordering::SeqCst)));
            }
        } else {
            self.big.fetch_add(1, Ordering::SeqCst);
        }
        if self.done() == self.total {
            let _ = self.all_finished.set(now);
        }
    }

    /// Completions so far.
    fn done(&self) -> usize {
        self.big.load(Ordering::SeqCst) + self.small.load(Ordering::SeqCst)
    }
}

/// One run's figures.
struct Outcome {
    small_after_creation: Duration,
    small_after_start: Duration,
    big_done_then: usize,
    ops_until_small: f64,
    /// The whole run's duration and throughput, when it ran to the end.
    drained: Option<(Duration, f64)>,
}

/// Runs the keyed run and, unless told not to, the FIFO run; prints both.
pub async fn run(args: FairnessArgs) -> Result<()> {
    if args.big == 0 || args.small == 0 || args.workers == 0 || args.ingress_batch == 0 || args.per_key_cap == 0 {
        bail!("--big, --small, --workers, --ingress-batch and --per-key-cap must be at least 1");
    }
    let keyed = one_run(&args, Mode::Keyed).await?;
    if args.compare_fifo {
        let fifo = one_run(&args, Mode::Fifo).await?;
        println!(
            "small key done after its creation: {:.3} s with a per-key cap of {}, {:.3} s in FIFO order ({:.0}x sooner); big key completed by then: {} against {}",
            keyed.small_after_creation.as_secs_f64(),
            args.per_key_cap,
            fifo.small_after_creation.as_secs_f64(),
            fifo.small_after_creation.as_secs_f64() / keyed.small_after_creation.as_secs_f64().max(1e-6),
            keyed.big_done_then,
            fifo.big_done_then,
        );
    }
    Ok(())
}

/// One run in a freshly recreated database.
async fn one_run(args: &FairnessArgs, mode: Mode) -> Result<Outcome> {
    let db = BenchDatabase::create(args.workers as u32 + 2).await?;
    println!("{}", db.banner(false));
    let backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    let lane = LaneId::try_new("bench.fairness")?;
    let quota = match mode {
        Mode::Keyed => {
            let id = QuotaPolicyId::new();
            let mut policy = CreateQuotaPolicyArgs::new(id);
            policy.max_concurrent_per_key = Some(args.per_key_cap);
            backend.create_quota_policy(policy).await?;
            println!(
                "keyed run: per-key cap {}, so the big key runs at most {} at a time{}",
                args.per_key_cap,
                args.per_key_cap,
                match args.drain {
                    true => format!(
                        "; draining it takes at least {:.0} s",
                        (args.big as f64 * args.handler_ms as f64 / 1000.0) / f64::from(args.per_key_cap)
                    ),
                    false => String::new(),
                }
            );
            Some(id)
        }
        Mode::Fifo => None,
    };
    let small_ids: Arc<HashSet<ExecutionId>> =
        Arc::new((0..args.small).map(|_| ExecutionId::solo(&lane, &PartitionConfig::default())).collect());
    // The long-poll listener starts with the first waiting claim: start it before the clock.
    let warm =
        ClaimPolicy { max_wait: Some(Duration::from_millis(50)), ..ClaimPolicy::new("bench", "warm-up", 30_000) };
    backend.claim(&LaneId::try_new("bench.fairness.warm-up")?, &CapabilitySet::empty(), warm).await?;
    db.checkpoint().await?;

    let progress = Arc::new(Progress {
        big: AtomicUsize::new(0),
        small: AtomicUsize::new(0),
        small_total: args.small,
        small_finished: OnceLock::new(),
        all_finished: OnceLock::new(),
        total: args.big + args.small,
    });
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let policy = ClaimPolicy {
            max_wait: Some(Duration::from_millis(args.max_wait_ms)),
            ..ClaimPolicy::new("bench", format!("worker-{w}"), 30_000)
        };
        let (backend, lane, small_ids, progress, stopped) =
            (backend.clone(), lane.clone(), small_ids.clone(), progress.clone(), stopped.clone());
        let handler = Duration::from_millis(args.handler_ms);
        workers.spawn(async move { worker(backend, lane, policy, handler, small_ids, progress, stopped).await });
    }

    let key_policy = |key: &str| {
        quota.map(|id| ExecutionPolicy {
            quota_policy_id: Some(id),
            concurrency_key: Some(key.to_owned()),
            ..ExecutionPolicy::default()
        })
    };
    let new = |id: ExecutionId, key: &str| {
        let mut a = CreateExecutionArgs::new(id, lane.clone(), format!("bench.fairness.{key}"), b"{}".to_vec());
        a.policy = key_policy(key);
        a
    };
    let mut left = args.big;
    while left > 0 {
        let n = left.min(args.ingress_batch);
        let batch = (0..n).map(|_| new(ExecutionId::solo(&lane, &PartitionConfig::default()), "big")).collect();
        backend.create_executions(batch).await?;
        left -= n;
    }
    let big_created = started.elapsed();
    let small_created = Instant::now();
    let smalls: Vec<CreateExecutionArgs> = small_ids.iter().map(|&id| new(id, "small")).collect();
    for chunk in smalls.chunks(args.ingress_batch) {
        backend.create_executions(chunk.to_vec()).await?;
    }
    println!(
        "{}: big key's {} created in {big_created:.2?} ({:.0}/s) while the workers ran; small key's {} created {:.2?} after the start",
        label(mode),
        args.big,
        args.big as f64 / big_created.as_secs_f64(),
        args.small,
        small_created - started,
    );

    let until_all = mode == Mode::Keyed && args.drain;
    let (mut last_done, mut last_change) = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let finished = match until_all {
            true => progress.all_finished.get().is_some(),
            false => progress.small_finished.get().is_some(),
        };
        if finished {
            break;
        }
        let done = progress.done();
        if done != last_done {
            (last_done, last_change) = (done, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(args.stall_secs) {
            stop.send_replace(true);
            bail!(
                "{}: no completion for {} s ({} of the big key and {} of the small key done)",
                label(mode),
                args.stall_secs,
                progress.big.load(Ordering::SeqCst),
                progress.small.load(Ordering::SeqCst)
            );
        }
    }
    stop.send_replace(true);
    while let Some(r) = workers.join_next().await {
        r??;
    }

    let Some(&(small_at, big_done_then)) = progress.small_finished.get() else { bail!("the small key never finished") };
    let small_after_start = small_at - started;
    let outcome = Outcome {
        small_after_creation: small_at - small_created,
        small_after_start,
        big_done_then,
        ops_until_small: (big_done_then + args.small) as f64 / small_after_start.as_secs_f64(),
        drained: progress.all_finished.get().filter(|_| until_all).map(|&at| {
            let d = at - started;
            (d, (args.big + args.small) as f64 / d.as_secs_f64())
        }),
    };
    let once: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ff_execution WHERE lane_id = $1 AND execution_kind = 'bench.fairness.small' \
         AND lifecycle_phase = 'terminal' AND total_attempt_count = 1",
    )
    .bind(lane.as_str())
    .fetch_one(&db.pool)
    .await?;
    if let Some(id) = quota {
        let s = backend.get_quota_policy_status(&id).await?;
        println!(
            "{}: quota policy now holds {} slots, {} waiting, busiest key {}",
            label(mode),
            s.active,
            s.waiting,
            s.busiest_key_active
        );
        if s.busiest_key_active > args.per_key_cap {
            bail!("a key holds {} slots, above its cap of {}", s.busiest_key_active, args.per_key_cap);
        }
    }
    print(args, mode, &outcome);
    backend.shutdown_prepare(Duration::from_secs(5)).await?;
    if once != args.small as i64 {
        bail!("{once} of the small key's {} executions completed with exactly one attempt", args.small);
    }
    Ok(outcome)
}

/// How the run is named in the figures.
fn label(mode: Mode) -> &'static str {
    match mode {
        Mode::Keyed => "keyed run",
        Mode::Fifo => "FIFO run",
    }
}

/// Prints one run's figures and its `RESULT` line.
fn print(args: &FairnessArgs, mode: Mode, o: &Outcome) {
    println!(
        "{}: small key done {:.3} s after its creation, {:.3} s after the start; big key completed by then: {}; throughput until then: {:.0}/s",
        label(mode),
        o.small_after_creation.as_secs_f64(),
        o.small_after_start.as_secs_f64(),
        o.big_done_then,
        o.ops_until_small
    );
    if let Some((d, ops)) = o.drained {
        println!("{}: all {} executions done after {d:.2?}: {ops:.0}/s", label(mode), args.big + args.small);
    }
    let (mode_name, cap) = match mode {
        Mode::Keyed => ("per_key_cap", args.per_key_cap.to_string()),
        Mode::Fifo => ("fifo", "none".to_owned()),
    };
    println!(
        "RESULT system=ff scenario=fairness mode={mode_name} per_key_cap={cap} big={} small={} workers={} handler_ms={} small_done_after_creation_s={:.3} small_done_after_start_s={:.3} big_done_at_small_done={} ops_per_sec_until_small_done={:.0} drained={}{}",
        args.big,
        args.small,
        args.workers,
        args.handler_ms,
        o.small_after_creation.as_secs_f64(),
        o.small_after_start.as_secs_f64(),
        o.big_done_then,
        o.ops_until_small,
        o.drained.is_some(),
        o.drained.map(|(d, ops)| format!(" drain_s={:.2} ops_per_sec={ops:.0}", d.as_secs_f64())).unwrap_or_default(),
    );
}

/// One worker: long-poll a claim, hold it for the handler time, complete; until told to stop.
async fn worker(
    backend: Arc<PostgresBackend>,
    lane: LaneId,
    policy: ClaimPolicy,
    handler: Duration,
    small_ids: Arc<HashSet<ExecutionId>>,
    progress: Arc<Progress>,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let caps = CapabilitySet::empty();
    loop {
        let claimed = tokio::select! {
            biased;
            _ = stopped.wait_for(|&s| s) => return Ok(()),
            r = backend.claim(&lane, &caps, policy.clone()) => r?,
        };
        let Some(handle) = claimed else { continue };
        let id = HandlePayload::from_handle(&handle, handle.backend)?.execution_id;
        tokio::select! {
            biased;
            _ = stopped.wait_for(|&s| s) => return Ok(()),
            _ = tokio::time::sleep(handler) => {}
        }
        backend.complete(&handle, None).await?;
        progress.completed(small_ids.contains(&id));
    }
}
