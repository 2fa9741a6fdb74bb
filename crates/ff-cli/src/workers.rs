//! `ff workers list`: the live worker instances of the registry, read through the HTTP API.

use std::process::ExitCode;

use anyhow::Context;
use ff_core::{ListWorkersArgs, Namespace, WorkerInstanceId};

use crate::api::ApiArgs;
use crate::output::{print_json, utc};

/// Arguments of `ff workers`.
#[derive(clap::Args)]
pub(crate) struct WorkersArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: WorkersCommand,
}

#[derive(clap::Subcommand)]
enum WorkersCommand {
    /// List live worker instances in instance-id order.
    List {
        /// Only this namespace (default: every namespace).
        #[arg(long)]
        namespace: Option<String>,
        /// Continue after this instance id (the previous page's cursor).
        #[arg(long)]
        after: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// Runs `ff workers`: one API call, printed as text or JSON.
pub(crate) async fn run(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    match args.command {
        WorkersCommand::List { namespace, after, limit } => {
            let query = ListWorkersArgs {
                namespace: namespace.map(Namespace::new),
                after: after.map(WorkerInstanceId::new),
                limit,
            };
            let page = client.list_workers(&query).await.context("listing workers")?;
            if args.json {
                print_json(&page)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<28} {:<16} {:<16} {:<28} {:<16} EXPIRES",
                "INSTANCE", "WORKER", "NAMESPACE", "LANES", "CAPABILITIES"
            );
            for w in &page.entries {
                let lanes: Vec<&str> = w.lanes.iter().map(|l| l.as_str()).collect();
                let caps: Vec<&str> = w.capabilities.0.iter().map(String::as_str).collect();
                println!(
                    "{:<28} {:<16} {:<16} {:<28} {:<16} {}",
                    w.worker_instance_id.as_str(),
                    w.worker_id.as_str(),
                    w.namespace.as_str(),
                    lanes.join(","),
                    caps.join(","),
                    utc(w.expires_at_ms)
                );
            }
            if let Some(next) = page.cursor {
                eprintln!("more: --after '{next}'");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
