//! `ff quotas`: create a quota policy and show it, on a running server through the HTTP API.
//! Each command is one SDK call; a refusal prints the server's code and message and exits
//! non-zero. `--json` prints the server's answer as is.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ff_core::{CreateQuotaPolicyResult, QuotaPolicyId, QuotaPolicyStatus};

use crate::api::ApiArgs;
use crate::output::{print_json, utc};

/// Arguments of `ff quotas`.
#[derive(clap::Args)]
pub(crate) struct QuotasArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: QuotasCommand,
}

#[derive(clap::Subcommand)]
enum QuotasCommand {
    /// Create a quota policy (at least one limit); creating the same limits again is a no-op.
    Create {
        /// The policy's id (default: a new one, printed).
        #[arg(long, value_parser = quota_policy_id)]
        id: Option<QuotaPolicyId>,
        /// Most executions admitted at once.
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Most executions of one concurrency key admitted at once.
        #[arg(long)]
        max_concurrent_per_key: Option<u32>,
        /// Most admissions per window (with --window-secs).
        #[arg(long, requires = "window_secs")]
        rate: Option<u32>,
        /// The rate window, in seconds (with --rate).
        #[arg(long, requires = "rate")]
        window_secs: Option<u32>,
        /// Extra delay added to a rate-limited waiter's retry time, in milliseconds.
        #[arg(long)]
        jitter_ms: Option<u64>,
    },
    /// Show a quota policy: its limits and what it holds now.
    Show {
        /// Quota policy id.
        #[arg(value_parser = quota_policy_id)]
        id: QuotaPolicyId,
    },
}

fn quota_policy_id(s: &str) -> Result<QuotaPolicyId, String> {
    QuotaPolicyId::parse(s).map_err(|e| e.to_string())
}

/// Runs `ff quotas`: one API call, printed as text or JSON.
pub(crate) async fn run(args: QuotasArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    match args.command {
        QuotasCommand::Create { id, max_concurrent, max_concurrent_per_key, rate, window_secs, jitter_ms } => {
            let id = id.unwrap_or_else(QuotaPolicyId::new);
            let mut builder = client.quota_policy(id);
            if let Some(n) = max_concurrent {
                builder = builder.max_concurrent(n);
            }
            if let Some(n) = max_concurrent_per_key {
                builder = builder.max_concurrent_per_key(n);
            }
            if let (Some(n), Some(secs)) = (rate, window_secs) {
                builder = builder.rate(n, Duration::from_secs(secs.into()));
            }
            if let Some(ms) = jitter_ms {
                builder = builder.jitter(Duration::from_millis(ms));
            }
            let result = builder.create().await.with_context(|| format!("creating quota policy {id}"))?;
            if args.json {
                print_json(&serde_json::json!({"quota_policy_id": id, "result": result}))?;
            } else {
                match result {
                    CreateQuotaPolicyResult::Created => println!("created quota policy {id}"),
                    CreateQuotaPolicyResult::AlreadySatisfied => {
                        println!("quota policy {id} exists with these limits")
                    }
                }
            }
        }
        QuotasCommand::Show { id } => {
            let status =
                client.get_quota_policy_status(&id).await.with_context(|| format!("reading quota policy {id}"))?;
            if args.json {
                print_json(&status)?;
            } else {
                print_status(&status);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as aligned lines; a limit of 0 is none.
fn print_status(s: &QuotaPolicyStatus) {
    let l = &s.limits;
    let cap = |n: u32| if n == 0 { "none".to_owned() } else { n.to_string() };
    println!("policy      {}", s.quota_policy_id);
    let rate = if l.max_requests_per_window == 0 {
        "none".to_owned()
    } else {
        format!("{} per {} s", l.max_requests_per_window, l.requests_per_window_seconds)
    };
    println!("rate        {rate}");
    println!("concurrent  {} (per key {})", cap(l.active_concurrency_cap), cap(l.max_concurrent_per_key));
    if l.jitter_ms > 0 {
        println!("jitter      {} ms", l.jitter_ms);
    }
    println!("active      {} (busiest key {})", s.active, s.busiest_key_active);
    println!("in window   {}", s.requests_in_window);
    println!("waiting     {} executions", s.waiting);
    if let Some(at) = s.next_admission_at {
        println!("next        {}", utc(at));
    }
    println!("created     {}", utc(s.created_at));
}
