//! `ff budgets`: create a budget, show it, report usage to it, replace its limits and reset it,
//! on a running server through the HTTP API. Each command is one SDK call; a refusal prints the
//! server's code and message and exits non-zero. `--json` prints the server's answer as is.
//!
//! Limits and usage are written `<dimension>=<number>`; a limit may add its soft limit after a
//! colon (`tokens=1000:800`), and 0 means no limit of that kind.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ff_core::{
    BudgetChangeResult, BudgetId, BudgetStatus, CreateBudgetResult, ReportUsageAdminArgs, ReportUsageResult,
    ResetBudgetArgs, SetBudgetLimitsArgs,
};

use crate::api::ApiArgs;
use crate::output::{print_json, utc};

/// Arguments of `ff budgets`.
#[derive(clap::Args)]
pub(crate) struct BudgetsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the server's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: BudgetsCommand,
}

#[derive(clap::Subcommand)]
enum BudgetsCommand {
    /// Create a budget (strict unless --warn); creating the same definition again is a no-op.
    Create {
        /// The budget's id (default: a new one, printed).
        #[arg(long, value_parser = budget_id)]
        id: Option<BudgetId>,
        /// What the budget covers, e.g. `tenant`.
        #[arg(long)]
        scope_type: String,
        /// Which one, e.g. the tenant's id.
        #[arg(long)]
        scope_id: String,
        /// A limited dimension, `<name>=<hard>[:<soft>]` (repeat for more; 0 = none).
        #[arg(long = "limit", value_parser = limit, required = true)]
        limits: Vec<Limit>,
        /// Report and count breaches only, never stop claims.
        #[arg(long)]
        warn: bool,
        /// Reset the usage to zero this often, in seconds (default: only by hand).
        #[arg(long)]
        reset_every_secs: Option<u64>,
        /// A label for what to do on a hard breach, shown in the status.
        #[arg(long)]
        on_hard_limit: Option<String>,
        /// A label for what to do on a soft breach, shown in the status.
        #[arg(long)]
        on_soft_limit: Option<String>,
    },
    /// Show a budget: usage against its limits, exhaustion, breaches, resets.
    Show {
        /// Budget id.
        #[arg(value_parser = budget_id)]
        id: BudgetId,
    },
    /// Report usage without a lease (all of it is applied, or none when a hard limit would be
    /// passed).
    Report {
        /// Budget id.
        #[arg(value_parser = budget_id)]
        id: BudgetId,
        /// Usage of one dimension, `<name>=<amount>` (repeat for more).
        #[arg(long = "usage", value_parser = usage, required = true)]
        usage: Vec<(String, i64)>,
        /// Apply this report at most once.
        #[arg(long)]
        dedup_key: Option<String>,
    },
    /// Replace the limits of some dimensions; raising them above the usage ends an exhaustion.
    Limits {
        /// Budget id.
        #[arg(value_parser = budget_id)]
        id: BudgetId,
        /// A new limit, `<name>=<hard>[:<soft>]` (repeat for more; 0 = none).
        #[arg(long = "limit", value_parser = limit, required = true)]
        limits: Vec<Limit>,
    },
    /// Zero the usage and let the executions waiting for the budget run.
    Reset {
        /// Budget id.
        #[arg(value_parser = budget_id)]
        id: BudgetId,
    },
}

/// One dimension's limits from the command line.
#[derive(Clone, Debug)]
struct Limit {
    dimension: String,
    hard: u64,
    soft: u64,
}

fn budget_id(s: &str) -> Result<BudgetId, String> {
    BudgetId::parse(s).map_err(|e| e.to_string())
}

fn limit(s: &str) -> Result<Limit, String> {
    let (dimension, limits) = s.split_once('=').ok_or("expected <dimension>=<hard>[:<soft>]")?;
    let (hard, soft) = limits.split_once(':').unwrap_or((limits, "0"));
    let number = |v: &str| v.parse::<u64>().map_err(|e| format!("{v:?} in {s:?}: {e}"));
    Ok(Limit { dimension: dimension.to_owned(), hard: number(hard)?, soft: number(soft)? })
}

fn usage(s: &str) -> Result<(String, i64), String> {
    let (dimension, amount) = s.split_once('=').ok_or("expected <dimension>=<amount>")?;
    Ok((dimension.to_owned(), amount.parse().map_err(|e| format!("{amount:?} in {s:?}: {e}"))?))
}

/// Runs `ff budgets`: one API call, printed as text or JSON.
pub(crate) async fn run(args: BudgetsArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client()?;
    let json = args.json;
    match args.command {
        BudgetsCommand::Create {
            id,
            scope_type,
            scope_id,
            limits,
            warn,
            reset_every_secs,
            on_hard_limit,
            on_soft_limit,
        } => {
            let id = id.unwrap_or_else(BudgetId::new);
            let mut builder = client.budget(id).scope(scope_type, scope_id);
            for l in limits {
                builder = builder.dimension(l.dimension, l.hard, l.soft);
            }
            if warn {
                builder = builder.warn();
            }
            if let Some(secs) = reset_every_secs {
                builder = builder.reset_every(Duration::from_secs(secs));
            }
            if let Some(label) = on_hard_limit {
                builder = builder.on_hard_limit(label);
            }
            if let Some(label) = on_soft_limit {
                builder = builder.on_soft_limit(label);
            }
            let result = builder.create().await.with_context(|| format!("creating budget {id}"))?;
            if json {
                print_json(&serde_json::json!({"budget_id": id, "result": result}))?;
            } else {
                match result {
                    CreateBudgetResult::Created => println!("created budget {id}"),
                    CreateBudgetResult::AlreadySatisfied => println!("budget {id} exists with this definition"),
                }
            }
        }
        BudgetsCommand::Show { id } => {
            let status = client.get_budget_status(&id).await.with_context(|| format!("reading budget {id}"))?;
            if json {
                print_json(&status)?;
            } else {
                print_status(&status);
            }
        }
        BudgetsCommand::Report { id, usage, dedup_key } => {
            let (dimensions, deltas) = usage.into_iter().unzip();
            let report = ReportUsageAdminArgs { dimensions, deltas, dedup_key };
            let result = client.report_usage_admin(&id, &report).await;
            let result = result.with_context(|| format!("reporting usage to budget {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                print_report(&id, &result);
            }
        }
        BudgetsCommand::Limits { id, limits } => {
            let args = SetBudgetLimitsArgs {
                budget_id: id,
                dimensions: limits.iter().map(|l| l.dimension.clone()).collect(),
                hard_limits: limits.iter().map(|l| l.hard).collect(),
                soft_limits: limits.iter().map(|l| l.soft).collect(),
            };
            let result =
                client.set_budget_limits(&args).await.with_context(|| format!("setting the limits of budget {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                print_change(&format!("limits of budget {id} set"), &result);
            }
        }
        BudgetsCommand::Reset { id } => {
            let result = client
                .reset_budget(&ResetBudgetArgs { budget_id: id })
                .await
                .with_context(|| format!("resetting budget {id}"))?;
            if json {
                print_json(&result)?;
            } else {
                print_change(&format!("budget {id} reset"), &result);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The status as aligned lines, one per dimension.
fn print_status(s: &BudgetStatus) {
    let mode = serde_json::to_value(s.enforcement_mode).ok();
    let mode = mode.as_ref().and_then(|m| m.as_str()).unwrap_or_default();
    println!("budget      {}", s.budget_id);
    println!("scope       {}/{}   mode {mode}   exhausted {}", s.scope_type, s.scope_id, yes_no(s.exhausted));
    let dimensions: BTreeSet<&String> =
        s.usage.keys().chain(s.hard_limits.keys()).chain(s.soft_limits.keys()).collect();
    for d in dimensions {
        let mut line = format!("dimension   {d}: used {}", s.usage.get(d).copied().unwrap_or(0));
        if let Some(h) = s.hard_limits.get(d) {
            line.push_str(&format!(", hard {h}"));
        }
        if let Some(soft) = s.soft_limits.get(d) {
            line.push_str(&format!(", soft {soft}"));
        }
        println!("{line}");
    }
    let mut breaches = format!("breaches    hard {}, soft {}", s.breach_count, s.soft_breach_count);
    if let Some(at) = s.last_breach_at {
        breaches.push_str(&format!(" (last at {} on {})", utc(at), s.last_breach_dim.as_deref().unwrap_or("?")));
    }
    println!("{breaches}");
    if let Some(label) = &s.on_hard_limit {
        println!("on hard     {label}");
    }
    if let Some(label) = &s.on_soft_limit {
        println!("on soft     {label}");
    }
    match (s.reset_interval_ms, s.next_reset_at) {
        (0, _) => println!("reset       by hand only"),
        (every, Some(next)) => println!("reset       every {} s, next at {}", every / 1000, utc(next)),
        (every, None) => println!("reset       every {} s", every / 1000),
    }
    println!("waiting     {} executions", s.blocked_executions);
    println!("created     {}", utc(s.created_at));
}

fn print_report(id: &BudgetId, r: &ReportUsageResult) {
    match r {
        ReportUsageResult::Ok => println!("usage applied to budget {id}"),
        ReportUsageResult::SoftBreach { dimension, current_usage, soft_limit } => println!(
            "usage applied to budget {id}; {dimension} is past its soft limit ({current_usage} > {soft_limit})"
        ),
        ReportUsageResult::HardBreach { dimension, current_usage, hard_limit } => println!(
            "nothing applied to budget {id}: {dimension} would pass its hard limit (used {current_usage} of \
             {hard_limit})"
        ),
        ReportUsageResult::AlreadyApplied => println!("this report was applied to budget {id} before"),
    }
}

fn print_change(what: &str, r: &BudgetChangeResult) {
    let mut line = format!("{what}: exhausted {}, {} executions released", yes_no(r.exhausted), r.unblocked);
    if let Some(next) = r.next_reset_at {
        line.push_str(&format!(", next reset at {}", utc(next)));
    }
    println!("{line}");
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
