//! `ff executions`: list, show, cancel, replay, reprioritise and revoke the lease of executions
//! on a running server, through the HTTP API. Each command is one SDK call; a refusal prints the
//! server's code and message and exits non-zero. `--json` prints the server's answer as is.

use std::process::ExitCode;

use crate::api::ApiArgs;
use crate::output::{print_json, utc};
use anyhow::Context;
use ff_core::{
    CancelExecutionArgs, CancelExecutionResult, ChangePriorityArgs, ChangePriorityResult, ExecutionId,
    ExecutionSnapshot, LaneId, LeaseId, ReplayExecutionArgs, ReplayExecutionResult, RevokeLeaseArgs, RevokeLeaseResult,
    WorkerInstanceId,
};

/// Arguments of `ff executions`.
#[derive(clap::Args)]
pub(crate) struct ExecutionsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ExecutionsCommand,
}

#[derive(clap::Subcommand)]
enum ExecutionsCommand {
    /// List one partition's execution ids, in order (listings are per partition).
    List {
        /// Execution partition index (the N of `{fp:N}`).
        #[arg(long)]
        partition: u16,
        /// Continue after this execution id (the previous page's cursor).
        #[arg(long, value_parser = execution_id)]
        cursor: Option<ExecutionId>,
        /// Page size (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show an execution's snapshot: state, attempt, lease, counts, progress, tags.
    Show {
        /// Execution id (`{fp:N}:<uuid>`).
        #[arg(value_parser = execution_id)]
        id: ExecutionId,
    },
    /// Cancel a non-terminal execution as an operator; a lease it holds ends with it.
    Cancel {
        /// Execution id.
        #[arg(value_parser = execution_id)]
        id: ExecutionId,
        /// Why; recorded on the execution.
        #[arg(long)]
        reason: String,
    },
    /// Run a terminal execution again (up to its policy's replay cap).
    Replay {
        /// Execution id.
        #[arg(value_parser = execution_id)]
        id: ExecutionId,
    },
    /// Change the priority of a non-terminal execution (0..=9000, higher is claimed first).
    Priority {
        /// Execution id.
        #[arg(value_parser = execution_id)]
        id: ExecutionId,
        /// New priority.
        #[arg(allow_negative_numbers = true)]
        priority: i32,
        /// Refuse unless the execution is on this lane.
        #[arg(long)]
        lane: Option<String>,
    },
    /// Revoke an execution's live lease: it becomes reclaimable at once.
    Revoke {
        /// Execution id.
        #[arg(value_parser = execution_id)]
        id: ExecutionId,
        /// Revoke only this lease (another current lease is refused as `stale_lease`).
        #[arg(long, value_parser = lease_id)]
        lease_id: Option<LeaseId>,
        /// Revoke only a lease held by this worker instance.
        #[arg(long)]
        worker_instance: Option<String>,
        /// Why; recorded on the execution.
        #[arg(long, default_value = "operator_revoke")]
        reason: String,
    },
}

fn execution_id(s: &str) -> Result<ExecutionId, String> {
    ExecutionId::parse(s).map_err(|e| e.to_string())
}

fn lease_id(s: &str) -> Result<LeaseId, String> {
    LeaseId::parse(s).map_err(|e| e.to_string())
}

/// Runs `ff executions`: one API call, printed as text or JSON.
pub(crate) async fn run(args: ExecutionsArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    let json = args.json;
    match args.command {
        ExecutionsCommand::List { partition, cursor, limit } => {
            let page = client.list(partition, cursor.as_ref(), limit).await.context("listing executions")?;
            if json {
                print_json(&page)?;
            } else {
                page.executions.iter().for_each(|id| println!("{id}"));
                if let Some(next) = page.next_cursor {
                    eprintln!("more: --cursor '{next}'");
                }
            }
        }
        ExecutionsCommand::Show { id } => {
            let snap = client.describe(&id).await.context("reading the execution")?;
            let snap = snap.with_context(|| format!("not_found: no execution {id}"))?;
            if json {
                print_json(&snap)?;
            } else {
                print_snapshot(&snap);
            }
        }
        ExecutionsCommand::Cancel { id, reason } => {
            let result = client.cancel_execution(&CancelExecutionArgs::new(id, reason)).await;
            let result = result.with_context(|| format!("cancelling {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                let CancelExecutionResult::Cancelled { execution_id, public_state } = result;
                println!("cancelled {execution_id}: {public_state}");
            }
        }
        ExecutionsCommand::Replay { id } => {
            let result = client.replay_execution(&ReplayExecutionArgs { execution_id: id }).await;
            let result = result.with_context(|| format!("replaying {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                let ReplayExecutionResult::Replayed { public_state, replay_count } = result;
                println!("replayed {id}: {public_state} (replay {replay_count})");
            }
        }
        ExecutionsCommand::Priority { id, priority, lane } => {
            let lane_id = lane.map(LaneId::try_new).transpose()?;
            let args = ChangePriorityArgs { execution_id: id, new_priority: priority, lane_id };
            let result =
                client.change_priority(&args).await.with_context(|| format!("changing the priority of {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                let ChangePriorityResult::Changed { execution_id, old_priority, new_priority } = result;
                println!("priority of {execution_id}: {old_priority} -> {new_priority}");
            }
        }
        ExecutionsCommand::Revoke { id, lease_id, worker_instance, reason } => {
            let args = RevokeLeaseArgs {
                execution_id: id,
                expected_lease_id: lease_id,
                worker_instance_id: worker_instance.map(WorkerInstanceId::new),
                reason,
            };
            let result = client.revoke_lease(&args).await.with_context(|| format!("revoking the lease of {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                match result {
                    RevokeLeaseResult::Revoked { lease_id, lease_epoch } => {
                        println!("revoked lease {lease_id} (epoch {}) of {id}", lease_epoch.0);
                    }
                    RevokeLeaseResult::AlreadySatisfied { reason } => {
                        let reason = serde_json::to_value(reason)?;
                        println!("nothing to revoke for {id}: {}", reason.as_str().unwrap_or_default());
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The snapshot as aligned lines.
fn print_snapshot(s: &ExecutionSnapshot) {
    let v = &s.state;
    println!("execution   {}", s.execution_id);
    println!(
        "state       {} (lifecycle {}, ownership {}, eligibility {}, attempt {}, outcome {})",
        s.public_state, v.lifecycle_phase, v.ownership_state, v.eligibility_state, v.attempt_state, v.terminal_outcome
    );
    let namespace = if s.namespace.as_str().is_empty() { "(default)" } else { s.namespace.as_str() };
    println!("lane        {}   namespace {namespace}", s.lane_id);
    if let Some(flow) = &s.flow_id {
        println!("flow        {flow}");
    }
    if let Some(reason) = s.blocking_reason.as_deref().filter(|r| *r != "none") {
        println!("blocking    {reason}");
    }
    if let Some(detail) = &s.blocking_detail {
        println!("detail      {detail}");
    }
    match &s.current_attempt {
        Some(a) => println!("attempt     #{} ({})", a.attempt_index.0, a.attempt_id),
        None => println!("attempt     none yet"),
    }
    if let Some(l) = &s.current_lease {
        println!(
            "lease       {} epoch {}, held by {} until {}",
            l.lease_id,
            l.lease_epoch.0,
            l.worker_instance_id,
            utc(l.expires_at)
        );
    }
    println!(
        "counts      attempts {}, retries {}, reclaims {}, replays {}",
        s.total_attempt_count, s.retry_count, s.lease_reclaim_count, s.replay_count
    );
    if s.progress_pct.is_some() || s.progress_message.is_some() {
        let pct = s.progress_pct.map(|p| format!("{p}%")).unwrap_or_default();
        println!("progress    {pct} {}", s.progress_message.as_deref().unwrap_or_default());
    }
    println!("created     {}", utc(s.created_at));
    println!("changed     {}", utc(s.last_mutation_at));
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("tags        {}", tags.join(", "));
    }
}
