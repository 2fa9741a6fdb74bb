//! `s5`: claims routed by capability across four worker classes sharing one lane.
//!
//! Every class's capability set is also one of the four requirements: execution `i` requires
//! the set of class `i mod 4`, so the lane interleaves the four kinds of work evenly.
//!
//! | class         | claims with      | can run                      |
//! |---------------|------------------|------------------------------|
//! | `gpu`         | `{gpu}`          | `{gpu}`                      |
//! | `cpu`         | `{cpu}`          | `{cpu}`                      |
//! | `gpu-highmem` | `{gpu, highmem}` | `{gpu}`, `{gpu, highmem}`    |
//! | `io`          | `{io}`           | `{io}`                       |
//!
//! (A class can run a requirement when the requirement is a subset of its capabilities.)
//!
//! `--workers` W workers, W/4 per class, are registered for the lane with their capabilities
//! before ingress, so no execution is parked as unroutable; then N executions with a payload
//! are created in batches, and after a checkpoint every worker claims with exactly its class's
//! capabilities and completes at once (`--batch 1`: `claim` / `complete`; `--batch B`:
//! `claim_batch` / `complete_batch`), until everything its class can run is done. Throughput is
//! N / drain time; latency is per execution, from the start of the claim call that took it to
//! the end of the complete call that finished it, as in S1.
//!
//! Checked afterwards, from the workers' own records and from the stored attempts: every
//! execution is terminal, ran exactly once (one attempt, claimed by one worker), and was run by
//! a class that can run it. Any violation makes the command fail after printing its figures.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;

use crate::latency::Latency;
use crate::setup::BenchDatabase;

/// Arguments of `s5`.
#[derive(clap::Args, Clone)]
pub struct S5Args {
    /// Executions to create (spread evenly over the four requirements).
    #[arg(long, default_value_t = 10_000)]
    pub tasks: usize,
    /// Concurrent workers, a multiple of 4 (a quarter per class).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
    /// Input payload size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub payload_bytes: usize,
    /// Executions claimed and completed per round trip (1 = the trait's single-item calls).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Executions per create call during ingress.
    #[arg(long, default_value_t = 500)]
    pub ingress_batch: usize,
    /// Database connections shared by the workers (default: one per worker, and two more).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Make claims wait for their WAL flush (the backend's default lets them commit without it).
    #[arg(long)]
    pub synchronous_claims: bool,
}

/// A worker class: its name and the capabilities its workers claim with (also the requirement
/// of every fourth execution).
struct Class {
    name: &'static str,
    capabilities: &'static [&'static str],
}

/// The four classes, in the order their requirements cycle through the executions.
const CLASSES: [Class; 4] = [
    Class { name: "gpu", capabilities: &["gpu"] },
    Class { name: "cpu", capabilities: &["cpu"] },
    Class { name: "gpu-highmem", capabilities: &["gpu", "highmem"] },
    Class { name: "io", capabilities: &["io"] },
];

/// Whether class `class` can run work requiring class `requirement`'s capabilities.
fn can_run(class: usize, requirement: usize) -> bool {
    CLASSES[requirement].capabilities.iter().all(|c| CLASSES[class].capabilities.contains(c))
}

/// The class whose worker instance id is `instance` (`<class>-<n>`).
fn class_of(instance: &str) -> Option<usize> {
    let (name, _) = instance.rsplit_once('-')?;
    CLASSES.iter().position(|c| c.name == name)
}

/// Executions completed per requirement, against how many there are.
struct Progress {
    done: [AtomicUsize; 4],
    totals: [usize; 4],
}

impl Progress {
    /// Whether everything `class` can run is done.
    fn finished_for(&self, class: usize) -> bool {
        (0..CLASSES.len())
            .filter(|&r| can_run(class, r))
            .all(|r| self.done[r].load(Ordering::Relaxed) >= self.totals[r])
    }
}

/// What one worker ran.
struct Ran {
    class: usize,
    ids: Vec<ExecutionId>,
    latency: Latency,
    last_completion: Option<Instant>,
}

/// Registers the workers, creates the executions, drains them and prints the figures.
pub async fn run(args: S5Args) -> Result<()> {
    if args.tasks == 0 || args.batch == 0 || args.ingress_batch == 0 {
        bail!("--tasks, --batch and --ingress-batch must be at least 1");
    }
    if args.workers == 0 || !args.workers.is_multiple_of(CLASSES.len()) {
        bail!("--workers must be a positive multiple of {} (one quarter per class)", CLASSES.len());
    }
    let db = BenchDatabase::create(args.connections.unwrap_or(args.workers as u32 + 2)).await?;
    println!("{}", db.banner(args.synchronous_claims));
    let backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    backend.set_synchronous_claims(args.synchronous_claims);
    let lane = LaneId::try_new("bench.s5")?;
    let per_class = args.workers / CLASSES.len();
    for (c, class) in CLASSES.iter().enumerate() {
        for n in 0..per_class {
            backend
                .register_worker(RegisterWorkerArgs {
                    worker_id: WorkerId::new("bench"),
                    worker_instance_id: WorkerInstanceId::new(format!("{}-{n}", class.name)),
                    lanes: vec![lane.clone()],
                    capabilities: capabilities(c),
                    liveness_ttl_ms: WORKER_TTL_MAX_MS,
                    namespace: Namespace::default(),
                })
                .await?;
        }
    }

    let (requirement, ingress_ops) = ingress(&backend, &lane, &args).await?;
    let parked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ff_execution WHERE lane_id = $1 AND eligibility_state = 'blocked_by_route'",
    )
    .bind(lane.as_str())
    .fetch_one(&db.pool)
    .await?;
    println!("parked as unroutable after ingress: {parked}");
    let mut totals = [0; 4];
    for &r in requirement.values() {
        totals[r] += 1;
    }
    let progress = Arc::new(Progress { done: Default::default(), totals });
    let requirement = Arc::new(requirement);
    db.checkpoint().await?;

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for (c, class) in CLASSES.iter().enumerate() {
        for n in 0..per_class {
            let (backend, lane, requirement, progress) =
                (backend.clone(), lane.clone(), requirement.clone(), progress.clone());
            let instance = format!("{}-{n}", class.name);
            let batch = args.batch;
            workers.spawn(async move { worker(backend, lane, c, instance, batch, requirement, progress).await });
        }
    }
    let mut ran = Vec::with_capacity(args.workers);
    while let Some(r) = workers.join_next().await {
        ran.push(r??);
    }
    let drain = started.elapsed();
    let ops = args.tasks as f64 / drain.as_secs_f64();

    let mut latency = Latency::new()?;
    let mut seen = HashSet::with_capacity(args.tasks);
    let (mut duplicates, mut misrouted) = (0, 0);
    for r in &ran {
        latency.merge(&r.latency)?;
        for id in &r.ids {
            duplicates += usize::from(!seen.insert(*id));
            misrouted += usize::from(!can_run(r.class, requirement[id]));
        }
    }
    let missing = args.tasks - seen.len();
    let stored = check_stored(&db.pool, &lane).await?;
    println!("drain: {} executions in {drain:.2?} with {} workers, batch {}", args.tasks, args.workers, args.batch);
    println!("latency per execution (claim start -> complete end): {}", latency.summary());
    let mut by_class = Vec::new();
    for (c, class) in CLASSES.iter().enumerate() {
        let mine: Vec<&Ran> = ran.iter().filter(|r| r.class == c).collect();
        let mut class_latency = Latency::new()?;
        for r in &mine {
            class_latency.merge(&r.latency)?;
        }
        let completed: usize = mine.iter().map(|r| r.ids.len()).sum();
        let last = mine.iter().filter_map(|r| r.last_completion).max().map(|t| t - started).unwrap_or_default();
        let runs = (0..CLASSES.len())
            .filter(|&r| can_run(c, r))
            .map(|r| {
                let n = mine.iter().flat_map(|m| &m.ids).filter(|id| requirement[*id] == r).count();
                format!("{{{}}} {n}", CLASSES[r].capabilities.join(","))
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "class {} (claims with {{{}}}): {per_class} workers, {completed} completed ({runs}), last at {last:.2?}; {}",
            class.name,
            class.capabilities.join(","),
            class_latency.summary()
        );
        by_class.push(format!("{}:{completed}", class.name));
    }
    println!(
        "checks: workers saw {} distinct of {} ({missing} missing, {duplicates} twice, {misrouted} by a class that cannot run them); stored: {} executions, {} not terminal, {} without exactly one attempt, {} run by a class that cannot run them",
        seen.len(),
        args.tasks,
        stored.rows,
        stored.not_terminal,
        stored.not_once,
        stored.misrouted
    );
    println!(
        "RESULT system=ff scenario=s5 workers={} tasks={} batch={} ops_per_sec={ops:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} ingress_ops_per_sec={ingress_ops:.0} classes={} completed_by_class={} missing={missing} duplicates={duplicates} misrouted={misrouted}",
        args.workers,
        args.tasks,
        args.batch,
        latency.ms(0.50),
        latency.ms(0.90),
        latency.ms(0.99),
        CLASSES.len(),
        by_class.join(","),
    );
    backend.shutdown_prepare(Duration::from_secs(5)).await?;
    if missing + duplicates + misrouted + stored.not_terminal + stored.not_once + stored.misrouted > 0
        || stored.rows != args.tasks
    {
        bail!("routing did not hold: every execution must run exactly once, on a class that can run it (see above)");
    }
    Ok(())
}

/// The capability set of class `class`.
fn capabilities(class: usize) -> CapabilitySet {
    CapabilitySet::from_iter(CLASSES[class].capabilities.iter().copied())
}

/// Creates `args.tasks` executions, execution `i` requiring class `i mod 4`'s capabilities;
/// returns each one's requirement and the creation rate.
async fn ingress(
    backend: &PostgresBackend,
    lane: &LaneId,
    args: &S5Args,
) -> Result<(HashMap<ExecutionId, usize>, f64)> {
    let payload = vec![0x5au8; args.payload_bytes];
    let mut requirement = HashMap::with_capacity(args.tasks);
    let started = Instant::now();
    let mut i = 0;
    while i < args.tasks {
        let n = args.ingress_batch.min(args.tasks - i);
        let batch: Vec<CreateExecutionArgs> = (i..i + n)
            .map(|k| {
                let mut a = CreateExecutionArgs::new(
                    ExecutionId::solo(lane, &PartitionConfig::default()),
                    lane.clone(),
                    "bench.s5",
                    payload.clone(),
                );
                a.policy = Some(ExecutionPolicy {
                    routing_requirements: Some(RoutingRequirements {
                        required_capabilities: capabilities(k % CLASSES.len()).0,
                    }),
                    ..ExecutionPolicy::default()
                });
                requirement.insert(a.execution_id, k % CLASSES.len());
                a
            })
            .collect();
        backend.create_executions(batch).await?;
        i += n;
    }
    let elapsed = started.elapsed();
    let ops = args.tasks as f64 / elapsed.as_secs_f64();
    println!("ingress: {} executions in {elapsed:.2?} ({ops:.0}/s)", args.tasks);
    Ok((requirement, ops))
}

/// One worker of class `class`: claim -> complete until everything its class can run is done.
async fn worker(
    backend: Arc<PostgresBackend>,
    lane: LaneId,
    class: usize,
    instance: String,
    batch: usize,
    requirement: Arc<HashMap<ExecutionId, usize>>,
    progress: Arc<Progress>,
) -> Result<Ran> {
    let caps = capabilities(class);
    let policy = ClaimPolicy::new("bench", instance, 30_000);
    let mut ran = Ran { class, ids: Vec::new(), latency: Latency::new()?, last_completion: None };
    loop {
        let t0 = Instant::now();
        let handles = match batch {
            1 => backend.claim(&lane, &caps, policy.clone()).await?.into_iter().collect::<Vec<_>>(),
            _ => backend.claim_batch(&lane, &caps, policy.clone(), batch).await?,
        };
        if handles.is_empty() {
            if progress.finished_for(class) {
                return Ok(ran);
            }
            // Other workers hold what is left of this class's work; they will finish it.
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let ids = handles
            .iter()
            .map(|h| Ok(HandlePayload::from_handle(h, h.backend)?.execution_id))
            .collect::<Result<Vec<_>, EngineError>>()?;
        match batch {
            1 => {
                for h in &handles {
                    backend.complete(h, None).await?;
                }
            }
            _ => {
                for r in backend.complete_batch(handles.into_iter().map(|h| (h, None)).collect()).await? {
                    r?;
                }
            }
        }
        let elapsed = t0.elapsed();
        ran.last_completion = Some(Instant::now());
        for id in ids {
            let Some(&r) = requirement.get(&id) else { bail!("claimed {id}, which this benchmark did not create") };
            ran.latency.record(elapsed)?;
            progress.done[r].fetch_add(1, Ordering::Relaxed);
            ran.ids.push(id);
        }
    }
}

/// What the stored rows say about the lane's executions.
struct Stored {
    rows: usize,
    not_terminal: usize,
    not_once: usize,
    misrouted: usize,
}

/// Reads every execution of `lane` with its requirement and the workers of its attempts.
async fn check_stored(pool: &sqlx::PgPool, lane: &LaneId) -> Result<Stored> {
    let rows: Vec<(Vec<String>, bool, Vec<String>)> = sqlx::query_as(
        "SELECT x.required_capabilities, x.lifecycle_phase = 'terminal', \
                array_remove(array_agg(a.worker_instance_id), NULL) \
         FROM ff_execution x LEFT JOIN ff_attempt a ON a.execution_id = x.execution_id \
         WHERE x.lane_id = $1 GROUP BY x.execution_id",
    )
    .bind(lane.as_str())
    .fetch_all(pool)
    .await?;
    let mut stored = Stored { rows: rows.len(), not_terminal: 0, not_once: 0, misrouted: 0 };
    for (required, terminal, runners) in rows {
        stored.not_terminal += usize::from(!terminal);
        stored.not_once += usize::from(runners.len() != 1);
        let covered = |instance: &String| {
            class_of(instance).is_some_and(|c| required.iter().all(|r| CLASSES[c].capabilities.contains(&r.as_str())))
        };
        stored.misrouted += runners.iter().filter(|i| !covered(i)).count();
    }
    Ok(stored)
}
