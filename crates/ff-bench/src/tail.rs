//! `tail`: how soon what a worker writes reaches a reader that follows it, across two backends
//! with their own pools (as two processes would be: the wake-up travels through PostgreSQL's
//! `NOTIFY`, not through memory).
//!
//! Frames: a worker appends `--frames` frames to one attempt, one every `--interval-ms`; a
//! reader long-polls `tail_stream` after the last frame it saw. Each frame's latency is from its
//! `append_frame` returning (committed) to the tail returning it. Completions: a worker creates,
//! claims and completes `--completions` executions one at a time; a subscriber follows
//! `subscribe_completions`. Each latency is from `complete` returning to the subscriber
//! receiving the event. A reader that receives an entry before the writer's call returned
//! counts zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;
use futures::StreamExt;
use sqlx::postgres::PgPoolOptions;

use crate::latency::Latency;
use crate::setup::BenchDatabase;

/// Arguments of `tail`.
#[derive(clap::Args, Clone)]
pub struct TailArgs {
    /// Frames the worker appends.
    #[arg(long, default_value_t = 2_000)]
    pub frames: usize,
    /// Pause between two frames, in ms.
    #[arg(long, default_value_t = 2)]
    pub interval_ms: u64,
    /// Executions completed one after another for the completion subscriber.
    #[arg(long, default_value_t = 500)]
    pub completions: usize,
}

type Arrivals<K> = Arc<Mutex<HashMap<K, Instant>>>;

/// Runs both measurements and prints the figures.
pub async fn run(args: TailArgs) -> Result<()> {
    if args.frames == 0 || args.completions == 0 {
        bail!("--frames and --completions must be at least 1");
    }
    let db = BenchDatabase::create(4).await?;
    println!("{}", db.banner(false));
    let writer = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    let reader_pool = PgPoolOptions::new().max_connections(4).connect(&db.url).await.context("reader pool")?;
    let reader = PostgresBackend::from_pool(reader_pool, PartitionConfig::default());
    let lane = LaneId::try_new("bench.tail")?;
    db.checkpoint().await?;

    let frames = frames(&writer, &reader, &lane, &args).await?;
    println!("append_frame returned -> tail returned it: {}", frames.summary());
    let completions = completions(&writer, &reader, &lane, &args).await?;
    println!("complete returned -> completion subscriber received it: {}", completions.summary());
    println!(
        "RESULT system=ff scenario=tail frames={} interval_ms={} frame_p50_ms={:.2} frame_p90_ms={:.2} frame_p99_ms={:.2} completions={} completion_p50_ms={:.2} completion_p99_ms={:.2}",
        args.frames,
        args.interval_ms,
        frames.ms(0.50),
        frames.ms(0.90),
        frames.ms(0.99),
        args.completions,
        completions.ms(0.50),
        completions.ms(0.99),
    );
    Ok(())
}

async fn frames(
    writer: &PostgresBackend,
    reader: &Arc<PostgresBackend>,
    lane: &LaneId,
    args: &TailArgs,
) -> Result<Latency> {
    let id = ExecutionId::solo(lane, &PartitionConfig::default());
    writer.create_execution(CreateExecutionArgs::new(id, lane.clone(), "bench.tail", Vec::new())).await?;
    let h = writer
        .claim(lane, &CapabilitySet::empty(), ClaimPolicy::new("bench", "writer", 600_000))
        .await?
        .context("the execution to claim")?;
    let received: Arrivals<u64> = Arc::default();
    let follower = tokio::spawn({
        let (reader, id, received, total) = (reader.clone(), id, received.clone(), args.frames as u64);
        async move {
            let mut after = StreamCursor::Start;
            let mut seen = 0;
            while seen < total {
                let got = reader.tail_stream(&id, AttemptIndex(0), after, 10_000, 1_000, TailVisibility::All).await?;
                let now = Instant::now();
                for f in &got.frames {
                    received.lock().unwrap().insert(f.seq, now);
                    after = StreamCursor::At { ms: f.appended_at.0, seq: f.seq };
                    seen = f.seq;
                }
                if got.frames.is_empty() && got.closed_at.is_some() {
                    bail!("the attempt ended before every frame arrived");
                }
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    // Let the follower park before the first frame.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = HashMap::with_capacity(args.frames);
    for i in 0..args.frames {
        let frame = Frame {
            bytes: format!("frame {i}").into_bytes(),
            kind: FrameKind::Stdout,
            frame_type: "log".into(),
            correlation_id: None,
            mode: StreamMode::Durable,
        };
        let out = writer.append_frame(&h, frame).await?;
        sent.insert(out.frame_count, Instant::now());
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    follower.await??;
    writer.complete(&h, None).await?;
    let received = received.lock().unwrap();
    let mut latency = Latency::new()?;
    for (seq, at) in sent {
        let got = received.get(&seq).context("a frame the follower never saw")?;
        latency.record(got.saturating_duration_since(at))?;
    }
    Ok(latency)
}

async fn completions(
    writer: &PostgresBackend,
    reader: &Arc<PostgresBackend>,
    lane: &LaneId,
    args: &TailArgs,
) -> Result<Latency> {
    let mut sub = reader.subscribe_completions().await?;
    let received: Arrivals<ExecutionId> = Arc::default();
    let follower = tokio::spawn({
        let (received, total) = (received.clone(), args.completions);
        async move {
            for _ in 0..total {
                let ev = sub.next().await.context("the subscription ended")??;
                received.lock().unwrap().insert(ev.execution_id, Instant::now());
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = HashMap::with_capacity(args.completions);
    for _ in 0..args.completions {
        let id = ExecutionId::solo(lane, &PartitionConfig::default());
        writer.create_execution(CreateExecutionArgs::new(id, lane.clone(), "bench.tail", Vec::new())).await?;
        let h = writer
            .claim(lane, &CapabilitySet::empty(), ClaimPolicy::new("bench", "writer", 60_000))
            .await?
            .context("the execution to claim")?;
        writer.complete(&h, None).await?;
        sent.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    follower.await??;
    let received = received.lock().unwrap();
    let mut latency = Latency::new()?;
    for (id, at) in sent {
        let got = received.get(&id).context("a completion the subscriber never saw")?;
        latency.record(got.saturating_duration_since(at))?;
    }
    Ok(latency)
}
