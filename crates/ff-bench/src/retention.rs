//! `retention`: storage under steady load with a short retention window.
//!
//! A producer creates executions at a steady rate (`--rate` per second, in batches every 100 ms)
//! and `--workers` workers claim each one, append `--frames` frames of `--frame-bytes` and
//! complete it, for `--duration-s` seconds. The backend runs its reconcilers (as `ff serve`
//! does), the retention reconciler every `--interval-s` seconds with a window of `--window-s`
//! seconds for executions and events alike. Every `--sample-s` seconds the run reads
//! `pg_total_relation_size` (table, TOAST and indexes) of every `ff_` table and the rows of the
//! busiest ones, and prints them as one line; at the end, each table's size halfway through
//! beside its final size. Sizes that level off once the window has passed a few
//! times, instead of growing with the executions created, are what the run shows; how soon
//! freed space is reused depends on autovacuum, whose settings are printed with the figures.
//!
//! The database is `ff_ret_bench` on `DATABASE_URL`'s server (dropped and recreated), or the
//! test kit's private cluster when that is unset.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::reconciler::RetentionConfig;
use ff_backend_postgres::{PostgresBackend, PostgresScannerConfig};
use ff_core::*;
use sqlx::PgPool;

use crate::setup::BenchDatabase;

/// Arguments of `retention`.
#[derive(clap::Args, Clone)]
pub struct RetentionArgs {
    /// How long the load runs.
    #[arg(long, default_value_t = 150)]
    pub duration_s: u64,
    /// Retention window of terminal executions and of events.
    #[arg(long, default_value_t = 20)]
    pub window_s: u64,
    /// How often the retention reconciler runs.
    #[arg(long, default_value_t = 5)]
    pub interval_s: u64,
    /// How often sizes are sampled.
    #[arg(long, default_value_t = 10)]
    pub sample_s: u64,
    /// Executions created per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Input payload size in bytes.
    #[arg(long, default_value_t = 512)]
    pub payload_bytes: usize,
    /// Frames each execution appends before completing.
    #[arg(long, default_value_t = 3)]
    pub frames: usize,
    /// Bytes per frame.
    #[arg(long, default_value_t = 1024)]
    pub frame_bytes: usize,
    /// Executions (per lane) and events deleted per retention transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: u32,
}

/// Tables printed in every sample line (the rest count in the total).
const SHOWN: [&str; 5] = ["ff_execution", "ff_attempt", "ff_frame", "ff_event", "ff_lane"];

const SIZES_SQL: &str = "\
SELECT c.relname::text, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'ff\\_%' ORDER BY 1";

const ROWS_SQL: &str = "SELECT (SELECT count(*) FROM ff_execution), (SELECT count(*) FROM ff_event), \
    (SELECT count(*) FROM ff_frame)";

const AUTOVACUUM_SQL: &str = "\
SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings \
WHERE name IN ('autovacuum_naptime', 'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_threshold', \
               'autovacuum_vacuum_cost_limit', 'autovacuum_max_workers')";

/// One sample: when, sizes by table, live rows.
struct Sample {
    at: Duration,
    sizes: BTreeMap<String, i64>,
    executions: i64,
    events: i64,
    frames: i64,
    created: u64,
    completed: u64,
}

/// Runs the scenario.
pub async fn run(args: RetentionArgs) -> Result<()> {
    if args.duration_s == 0 || args.window_s == 0 || args.interval_s == 0 || args.sample_s == 0 {
        bail!("--duration-s, --window-s, --interval-s and --sample-s must be at least 1");
    }
    if args.rate == 0 || args.workers == 0 || args.batch == 0 {
        bail!("--rate, --workers and --batch must be at least 1");
    }
    let db = BenchDatabase::create_named("ff_ret_bench", args.workers as u32 + 8).await?;
    println!("{}", db.banner(false));
    let autovacuum: String = sqlx::query_scalar(AUTOVACUUM_SQL).fetch_one(&db.pool).await?;
    println!("autovacuum: {autovacuum}");
    println!(
        "load: {} executions/s, {} workers, payload {} B, {} frames of {} B each; retention window {} s, \
         retention pass every {} s, batch {}; {} s, sampled every {} s",
        args.rate,
        args.workers,
        args.payload_bytes,
        args.frames,
        args.frame_bytes,
        args.window_s,
        args.interval_s,
        args.batch,
        args.duration_s,
        args.sample_s
    );

    let mut backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    let window = Duration::from_secs(args.window_s);
    let scanners = PostgresScannerConfig {
        retention_interval: Duration::from_secs(args.interval_s),
        retention: RetentionConfig { default_retention: window, event_retention: window, batch_size: args.batch },
        ..PostgresScannerConfig::default()
    };
    if !backend.with_scanners(scanners) {
        bail!("the reconcilers did not start");
    }
    let lane = LaneId::try_new("bench.retention")?;
    let created = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);

    let mut tasks = tokio::task::JoinSet::new();
    {
        let (backend, lane, created) = (backend.clone(), lane.clone(), created.clone());
        let per_tick = (args.rate / 10).max(1) as usize;
        let payload = vec![b'x'; args.payload_bytes];
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < deadline {
                tick.tick().await;
                let batch = (0..per_tick)
                    .map(|_| {
                        CreateExecutionArgs::new(
                            ExecutionId::solo(&lane, &PartitionConfig::default()),
                            lane.clone(),
                            "bench.retention",
                            payload.clone(),
                        )
                    })
                    .collect();
                backend.create_executions(batch).await?;
                created.fetch_add(per_tick as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    for w in 0..args.workers {
        let (backend, lane, completed) = (backend.clone(), lane.clone(), completed.clone());
        let (frames, frame_bytes) = (args.frames, args.frame_bytes);
        tasks.spawn(async move {
            let policy = ClaimPolicy::new("bench", format!("w{w}"), 30_000);
            let chunk = vec![b'f'; frame_bytes];
            while Instant::now() < deadline {
                let Some(h) = backend.claim(&lane, &CapabilitySet::empty(), policy.clone()).await? else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                for _ in 0..frames {
                    let frame = Frame {
                        bytes: chunk.clone(),
                        kind: FrameKind::Stdout,
                        frame_type: "chunk".into(),
                        correlation_id: None,
                        mode: StreamMode::Durable,
                    };
                    backend.append_frame(&h, frame).await?;
                }
                backend.complete(&h, Some(b"done".to_vec())).await?;
                completed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }

    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample_s));
    tick.tick().await;
    print_header();
    loop {
        tick.tick().await;
        let sample = sample(&db.pool, started.elapsed(), &created, &completed).await?;
        print_sample(&sample);
        samples.push(sample);
        if Instant::now() >= deadline {
            break;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    summarize(&samples);
    Ok(())
}

async fn sample(pool: &PgPool, at: Duration, created: &AtomicU64, completed: &AtomicU64) -> Result<Sample> {
    let sizes: Vec<(String, i64)> = sqlx::query_as(SIZES_SQL).fetch_all(pool).await?;
    let (executions, events, frames): (i64, i64, i64) = sqlx::query_as(ROWS_SQL).fetch_one(pool).await?;
    Ok(Sample {
        at,
        sizes: sizes.into_iter().collect(),
        executions,
        events,
        frames,
        created: created.load(Ordering::Relaxed),
        completed: completed.load(Ordering::Relaxed),
    })
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_header() {
    print!(
        "{:>6} {:>9} {:>9} | {:>9} {:>10} {:>10} |",
        "t(s)", "created", "done", "exec_rows", "event_rows", "frame_rows"
    );
    for t in SHOWN {
        print!(" {t:>12}");
    }
    println!(" {:>12}   (sizes in MiB, table + TOAST + indexes)", "all ff_");
}

fn print_sample(s: &Sample) {
    print!(
        "{:>6} {:>9} {:>9} | {:>9} {:>10} {:>10} |",
        s.at.as_secs(),
        s.created,
        s.completed,
        s.executions,
        s.events,
        s.frames
    );
    for t in SHOWN {
        print!(" {:>12.2}", mib(s.sizes.get(t).copied().unwrap_or(0)));
    }
    println!(" {:>12.2}", mib(s.sizes.values().sum()));
}

/// Each table's size halfway through the run beside its final size: once the window and an
/// autovacuum cycle have passed, the second half adds executions but not storage.
fn summarize(samples: &[Sample]) {
    let Some(last) = samples.last() else { return };
    let Some(half) = samples.iter().find(|s| s.at >= last.at / 2) else { return };
    println!(
        "\nper table: size at t={}s (halfway) and at t={}s (end); executions created in between: {}",
        half.at.as_secs(),
        last.at.as_secs(),
        last.created - half.created
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "table", "MiB half", "MiB end", "ratio");
    for (table, &end) in &last.sizes {
        let then = half.sizes.get(table).copied().unwrap_or(0);
        if end == then && end <= 64 * 1024 {
            continue;
        }
        let ratio = if then > 0 { format!("{:.2}", end as f64 / then as f64) } else { "-".into() };
        println!("{table:<28} {:>12.2} {:>12.2} {ratio:>8}", mib(then), mib(end));
    }
    let (then, end): (i64, i64) = (half.sizes.values().sum(), last.sizes.values().sum());
    println!(
        "{:<28} {:>12.2} {:>12.2} {:>8.2}\nexecutions created: {} by halfway, {} at the end ({:.2}x); rows at the end: \
         {} executions, {} events, {} frames",
        "all ff_ tables",
        mib(then),
        mib(end),
        end as f64 / then.max(1) as f64,
        half.created,
        last.created,
        last.created as f64 / half.created.max(1) as f64,
        last.executions,
        last.events,
        last.frames
    );
}
