//! The Postgres limit measured beside S1, in the same process and database, so an S1 figure
//! reads as a ratio to what the server can do at all on this machine and these settings:
//!
//! - **claim + complete**: the same number of rows with the same payload in a bare table, and
//!   the same number of workers, each claiming `batch` rows with one `UPDATE … WHERE id IN
//!   (SELECT … FOR UPDATE SKIP LOCKED LIMIT batch)` (committed without waiting for its WAL
//!   flush, as the engine's claims are) and completing them with one `UPDATE … WHERE id = ANY`
//!   (committed durably, as the engine's completions are). No events, no attempts, no fences:
//!   the least a durable queue must do.
//! - **update by key**: the same workers each updating one row by primary key per durable
//!   commit, for a fixed time: what one commit costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::latency::Latency;

const CREATE_SQL: &str = "DROP TABLE IF EXISTS bench_limit_job; \
     CREATE TABLE bench_limit_job (id bigserial PRIMARY KEY, payload bytea NOT NULL, state smallint NOT NULL DEFAULT 0, n bigint NOT NULL DEFAULT 0); \
     CREATE INDEX bench_limit_job_ready ON bench_limit_job (id) WHERE state = 0";
const FILL_SQL: &str = "INSERT INTO bench_limit_job (payload) SELECT $1 FROM generate_series(1, $2)";
const CLAIM_SQL: &str = "UPDATE bench_limit_job SET state = 1 WHERE id IN \
     (SELECT id FROM bench_limit_job WHERE state = 0 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $1) RETURNING id";
const COMPLETE_SQL: &str = "UPDATE bench_limit_job SET state = 2 WHERE id = ANY($1)";
const BUMP_SQL: &str = "UPDATE bench_limit_job SET n = n + 1 WHERE id = $1";

/// The limit's figures.
pub struct Limit {
    /// Rows claimed and completed per second.
    pub claim_complete_ops: f64,
    /// Claim → complete latency percentiles (ms).
    pub p50_ms: f64,
    /// 99th percentile (ms).
    pub p99_ms: f64,
    /// Durable single-row updates by key per second.
    pub update_by_key_ops: f64,
}

/// Measures both limits on `url`'s database with `workers` workers over `tasks` rows of
/// `payload_bytes` each, `batch` rows per claim.
pub async fn measure(url: &str, workers: usize, tasks: usize, payload_bytes: usize, batch: usize) -> Result<Limit> {
    let durable = PgPoolOptions::new().max_connections(workers as u32 + 1).connect(url).await?;
    let fast = PgPoolOptions::new()
        .max_connections(workers as u32)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET synchronous_commit = off").execute(conn).await?;
                Ok(())
            })
        })
        .connect(url)
        .await?;
    sqlx::raw_sql(CREATE_SQL).execute(&durable).await?;
    sqlx::query(FILL_SQL).bind(vec![0x5au8; payload_bytes]).bind(tasks as i64).execute(&durable).await?;
    sqlx::query("VACUUM ANALYZE bench_limit_job").execute(&durable).await?;
    sqlx::query("CHECKPOINT").execute(&durable).await?;

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks_set = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (durable, fast, done) = (durable.clone(), fast.clone(), done.clone());
        tasks_set.push(tokio::spawn(async move { claim_complete(&durable, &fast, batch, tasks, &done).await }));
    }
    let mut latency = Latency::new()?;
    for t in tasks_set {
        latency.merge(&t.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let claim_complete_ops = done.load(Ordering::Relaxed) as f64 / elapsed;

    let updates = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut bumpers = Vec::with_capacity(workers);
    for w in 0..workers {
        let (durable, updates) = (durable.clone(), updates.clone());
        bumpers.push(tokio::spawn(async move {
            let mut id = (w % tasks.max(1)) as i64 + 1;
            while Instant::now() < until {
                sqlx::query(BUMP_SQL).bind(id).execute(&durable).await?;
                updates.fetch_add(1, Ordering::Relaxed);
                id = id % tasks.max(1) as i64 + 1;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for b in bumpers {
        b.await??;
    }
    let update_by_key_ops = updates.load(Ordering::Relaxed) as f64 / 3.0;
    sqlx::query("DROP TABLE bench_limit_job").execute(&durable).await?;
    durable.close().await;
    fast.close().await;
    Ok(Limit { claim_complete_ops, p50_ms: latency.ms(0.50), p99_ms: latency.ms(0.99), update_by_key_ops })
}

async fn claim_complete(
    durable: &PgPool,
    fast: &PgPool,
    batch: usize,
    total: usize,
    done: &AtomicUsize,
) -> Result<Latency> {
    let mut latency = Latency::new()?;
    while done.load(Ordering::Relaxed) < total {
        let started = Instant::now();
        let ids: Vec<i64> = sqlx::query_scalar(CLAIM_SQL).bind(batch as i64).fetch_all(fast).await?;
        if ids.is_empty() {
            break;
        }
        sqlx::query(COMPLETE_SQL).bind(&ids).execute(durable).await?;
        let ms = started.elapsed();
        for _ in &ids {
            latency.record(ms)?;
        }
        done.fetch_add(ids.len(), Ordering::Relaxed);
    }
    Ok(latency)
}

impl Limit {
    /// The limit's lines, with S1's throughput as a ratio to it.
    pub fn print(&self, workers: usize, batch: usize, s1_ops: f64) {
        println!(
            "LIMIT system=postgres scenario=skip_locked_claim_complete workers={workers} batch={batch} ops_per_sec={:.0} p50_ms={:.2} p99_ms={:.2}",
            self.claim_complete_ops, self.p50_ms, self.p99_ms
        );
        println!(
            "LIMIT system=postgres scenario=update_by_key workers={workers} ops_per_sec={:.0}",
            self.update_by_key_ops
        );
        println!(
            "s1 / limit: {s1_ops:.0}/s / {:.0}/s = {:.3} of the bare claim + complete",
            self.claim_complete_ops,
            s1_ops / self.claim_complete_ops.max(1e-9)
        );
    }
}
