//! The demo's admission: a lane limited to two running executions per customer, and a budget
//! that runs out.
//!
//! - `demo.customers` gets a quota policy with `max_concurrent_per_key = 2` as its lane policy;
//!   three customers' syncs (`customer.sync`, five each) carry the customer as their
//!   concurrency key. The handler counts how many of its customer run at once; the summary
//!   shows the most seen, which must not pass two.
//! - A strict budget of 100 `tokens`: four `llm.summarize` executions each report 30 tokens
//!   (the fourth report is refused and exhausts the budget). Three more are then submitted:
//!   they are created waiting for the budget (`rate_limited`, `waiting_for_budget`) and stay
//!   held until the demo resets the budget, then run.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use ff_core::{
    BlockingReason, BudgetId, ExecutionId, LaneId, Namespace, PublicState, QuotaPolicyId, ReportUsageResult,
    ResetBudgetArgs,
};
use ff_sdk::{Client, SubmitRequest, TaskContext, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Tally;

/// The lane limited per customer.
pub(super) const CUSTOMERS: &str = "demo.customers";
/// The lane of the budgeted work.
pub(super) const LLM: &str = "demo.llm";
/// Running executions allowed per customer.
const PER_CUSTOMER: u32 = 2;
/// Syncs per customer.
const SYNCS: usize = 5;
/// The budget's hard limit in tokens, and what each summary spends.
const TOKENS: u64 = 100;
const TOKENS_PER_SUMMARY: i64 = 30;
/// Summaries run before the budget is exhausted, and those held after.
const FIRST_SUMMARIES: usize = 4;
const HELD_SUMMARIES: usize = 3;

/// Input of `customer.sync`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Sync {
    customer: String,
}

/// Input of `llm.summarize`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Summary {
    budget: Option<BudgetId>,
}

/// Per customer: syncs running now, and the most seen at once.
static RUNNING: LazyLock<Mutex<HashMap<String, (u32, u32)>>> = LazyLock::new(Default::default);

/// What the demo submitted.
#[derive(Clone, Debug)]
pub(super) struct Admission {
    /// Every execution submitted here.
    pub(super) ids: Vec<ExecutionId>,
    budget: BudgetId,
    policy: QuotaPolicyId,
    /// Summaries seen waiting for the budget once it ran out.
    held: usize,
}

/// Adds the `customer.sync` and `llm.summarize` handlers to a pool worker.
pub(super) fn handle(worker: Worker<()>) -> Worker<()> {
    worker
        .handle("customer.sync", |_: TaskContext<()>, job: Sync| async move {
            {
                let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
                let (now, peak) = running.entry(job.customer.clone()).or_default();
                *now += 1;
                *peak = (*peak).max(*now);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((now, _)) = running.get_mut(&job.customer) {
                *now -= 1;
            }
            Ok(json!({"customer": job.customer, "synced": true}))
        })
        .handle("llm.summarize", |ctx: TaskContext<()>, job: Summary| async move {
            let budget = job.budget.ok_or_else(|| ff_sdk::HandlerError::permanent("no budget named"))?;
            let spent = ctx.report_usage(budget, [("tokens", TOKENS_PER_SUMMARY)]).await?;
            let refused = matches!(spent, ReportUsageResult::HardBreach { .. });
            Ok(json!({"summary": "…", "tokens_refused": refused}))
        })
}

/// Sets up the policy and the budget, submits the work, waits for the budget to run out and
/// submits the summaries it then holds. Adds what they must end as to `expected`.
pub(super) async fn submit(
    client: &Client,
    namespace: &Namespace,
    expected: &mut Tally,
    patience: Duration,
) -> anyhow::Result<Admission> {
    let policy = QuotaPolicyId::new();
    client
        .quota_policy(policy)
        .max_concurrent_per_key(PER_CUSTOMER)
        .create()
        .await
        .context("creating the quota policy")?;
    client
        .set_lane_quota_policy(&LaneId::try_new(CUSTOMERS)?, Some(policy))
        .await
        .context("limiting the customers lane")?;
    let budget = BudgetId::new();
    client
        .budget(budget)
        .scope("namespace", namespace.as_str())
        .dimension("tokens", TOKENS, TOKENS * 8 / 10)
        .strict()
        .create()
        .await
        .context("creating the budget")?;

    let request = |lane: &str, kind: &str, input: serde_json::Value| {
        let mut req = SubmitRequest::json(lane, kind, input);
        req.namespace = Some(namespace.clone());
        req.creator_identity = Some("ff-demo".into());
        req
    };
    let mut batch = Vec::new();
    for customer in ["acme", "globex", "initech"] {
        for _ in 0..SYNCS {
            batch.push(
                request(CUSTOMERS, "customer.sync", json!(Sync { customer: customer.into() }))
                    .concurrency_key(customer),
            );
        }
    }
    for _ in 0..FIRST_SUMMARIES {
        batch.push(request(LLM, "llm.summarize", json!(Summary { budget: Some(budget) })).budget(budget));
    }
    let mut ids: Vec<ExecutionId> = client
        .submit_batch(batch)
        .await
        .context("submitting the admission work")?
        .iter()
        .map(|r| r.execution_id())
        .collect();

    // Wait for the summaries to spend the budget, then submit the ones it must hold.
    let deadline = tokio::time::Instant::now() + patience;
    while !client.get_budget_status(&budget).await?.exhausted {
        if tokio::time::Instant::now() > deadline {
            bail!("the demo budget never ran out");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late: Vec<_> = (0..HELD_SUMMARIES)
        .map(|_| request(LLM, "llm.summarize", json!(Summary { budget: Some(budget) })).budget(budget))
        .collect();
    let late: Vec<ExecutionId> = client
        .submit_batch(late)
        .await
        .context("submitting the held summaries")?
        .iter()
        .map(|r| r.execution_id())
        .collect();
    let mut held = 0;
    for id in &late {
        let snap = client.describe(id).await?.context("a held summary vanished")?;
        if snap.public_state == PublicState::RateLimited
            && snap.state.blocking_reason == BlockingReason::WaitingForBudget
        {
            held += 1;
        }
    }
    ids.extend(late);
    expected.completed += (3 * SYNCS + FIRST_SUMMARIES + HELD_SUMMARIES) as u64;
    expected.held_for_budget += HELD_SUMMARIES as u64;
    eprintln!("Budget {budget} ran out after {FIRST_SUMMARIES} summaries; {held} new ones wait for it.");
    Ok(Admission { ids, budget, policy, held })
}

/// The demo's part: lets the held summaries wait a moment (nothing claims them), then resets
/// the budget so they run.
pub(super) async fn act(client: Client, a: Admission) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = client.get_budget_status(&a.budget).await?;
    if status.blocked_executions != a.held as u64 {
        bail!("{} summaries wait for the budget, not {}", status.blocked_executions, a.held);
    }
    let reset = client.reset_budget(&ResetBudgetArgs { budget_id: a.budget }).await.context("resetting the budget")?;
    eprintln!("Operator reset budget {}: {} held summaries may run.", a.budget, reset.unblocked);
    Ok(())
}

/// Counts what admission held: the summaries the budget held, and customers seen running more
/// than their limit at once (never, when admission works).
pub(super) fn observe(a: &Admission, seen: &mut Tally) -> Vec<String> {
    seen.held_for_budget += a.held as u64;
    let running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    let mut peaks: Vec<_> = running.iter().map(|(k, (_, peak))| (k.clone(), *peak)).collect();
    peaks.sort();
    seen.over_key_limit += peaks.iter().filter(|(_, p)| *p > PER_CUSTOMER).count() as u64;
    vec![
        format!(
            "lane {CUSTOMERS} (policy {}): at most {PER_CUSTOMER} per customer; most seen at once: {}",
            a.policy,
            peaks.iter().map(|(k, p)| format!("{k} {p}")).collect::<Vec<_>>().join(", ")
        ),
        format!(
            "budget of {TOKENS} tokens: ran out after {FIRST_SUMMARIES} summaries (the last report refused); \
             {} summaries held waiting_for_budget until the reset, then ran",
            a.held
        ),
    ]
}
