//! `memory`: the resident memory of an `ff serve` process under a burst of large submissions.
//!
//! Starts the `ff` binary (a child process, so the figures are the server's alone, not this
//! client's), reads its `VmRSS` from `/proc/<pid>/status` when idle after boot (baseline),
//! every few milliseconds during a burst of concurrent submissions (peak), and after some
//! idle seconds (after idle). Each submission carries an input of the given size; a `503` is
//! counted and, with `--retries`, retried after its `Retry-After`. The server's settings come
//! from the usual environment variables (`FF_MAX_INFLIGHT_BODY_BYTES`, `FF_INFLIGHT_WAIT_MS`,
//! `MIMALLOC_*`...), which the child inherits.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::setup::BenchDatabase;

/// Arguments of `ff-bench memory`.
#[derive(clap::Args)]
pub struct MemoryArgs {
    /// The `ff` binary to run (default: `ff` beside this benchmark's binary).
    #[arg(long)]
    ff_bin: Option<PathBuf>,
    /// Concurrent submissions in the burst.
    #[arg(long, default_value_t = 24)]
    requests: usize,
    /// Size of each submission's input (MiB).
    #[arg(long, default_value_t = 8)]
    payload_mib: usize,
    /// Bursts, one after another (the peak is over all of them).
    #[arg(long, default_value_t = 1)]
    bursts: usize,
    /// Times a submission answered `503` is sent again after its `Retry-After`.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Seconds idle after the burst before the last reading.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
}

/// Runs the scenario and prints the three readings and the answers' counts.
pub async fn run(args: MemoryArgs) -> Result<()> {
    let db = BenchDatabase::create(2).await?;
    println!("{}", db.banner(false));
    let ff_bin = match args.ff_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("ff"),
    };
    let mut child = Command::new(&ff_bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db.url)
        .env_remove("FF_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("run {}", ff_bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let url = loop {
        let Some(line) = stderr.next_line().await? else { bail!("ff serve exited before listening") };
        if let Some(rest) = line.strip_prefix("FlowFabric API on ") {
            break rest.split_whitespace().next().context("no address")?.to_owned();
        }
    };
    // Keep draining the server's log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    let http = reqwest::Client::new();
    http.get(format!("{url}/healthz")).send().await?.error_for_status()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib(pid)?;

    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Ok(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let input_bytes = args.payload_mib * 1024 * 1024;
    let mut tally = Tally::default();
    let started = Instant::now();
    for burst in 0..args.bursts {
        let calls = (0..args.requests).map(|i| {
            let (http, url) = (http.clone(), url.clone());
            let body = submission(&format!("mem-{burst}-{i}"), input_bytes);
            async move { submit(&http, &url, body, args.retries).await }
        });
        for result in futures::future::join_all(calls).await {
            tally.add(result?);
        }
    }
    let burst_time = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let peak = peak.load(Ordering::Relaxed);

    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle = rss_kib(pid)?;

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "memory: {} burst(s) of {} concurrent submissions of a {} MiB input, retries {}, in {:.2} s",
        args.bursts,
        args.requests,
        args.payload_mib,
        args.retries,
        burst_time.as_secs_f64()
    );
    println!(
        "  server VmRSS: baseline {:.1} MiB, peak under load {:.1} MiB, after {} s idle {:.1} MiB",
        mib(baseline),
        mib(peak),
        args.idle_secs,
        mib(idle)
    );
    println!(
        "  answers: {} created, {} answered 503 server_busy ({} retries sent), {} other (e.g. 503 resource_exhausted)",
        tally.created, tally.busy, tally.retried, tally.other
    );
    child.start_kill()?;
    child.wait().await?;
    Ok(())
}

/// The answers of a run.
#[derive(Default)]
struct Tally {
    created: usize,
    busy: usize,
    retried: usize,
    other: usize,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.busy += outcome.busy as usize;
        self.retried += outcome.retried as usize;
        match outcome.last {
            201 | 200 => self.created += 1,
            503 if outcome.busy > outcome.retried => {}
            _ => self.other += 1,
        }
    }
}

/// One submission's fate: its last status and how many `503`s it met.
struct Outcome {
    last: u16,
    busy: u32,
    retried: u32,
}

/// Sends `body`, again after `Retry-After` on a `503`, at most `retries` more times.
async fn submit(http: &reqwest::Client, url: &str, body: String, retries: u32) -> Result<Outcome> {
    let mut outcome = Outcome { last: 0, busy: 0, retried: 0 };
    loop {
        let resp = http
            .post(format!("{url}/v1/executions"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        outcome.last = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
        let code = resp.json::<serde_json::Value>().await.ok().and_then(|b| b["code"].as_str().map(str::to_owned));
        if outcome.last != 503 || code.as_deref() != Some("server_busy") {
            return Ok(outcome);
        }
        outcome.busy += 1;
        if outcome.retried == retries {
            return Ok(outcome);
        }
        outcome.retried += 1;
        tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
    }
}

/// A submission whose input is a JSON string of `input_bytes` bytes in all.
fn submission(key: &str, input_bytes: usize) -> String {
    // `{"b":"` and `"}` frame the padding.
    let pad = "x".repeat(input_bytes.saturating_sub(8));
    format!(r#"{{"lane_id":"mem","execution_kind":"blob","idempotency_key":"{key}","input":{{"b":"{pad}"}}}}"#)
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}
