//! The demo's two suspensions. Each runs `approval.request`, whose handler mints a waitpoint
//! and suspends on it until a signal named `approved`, then completes with the decision on the
//! run that signal wakes. The demo finds the first one's waitpoint by listing the execution's
//! pending waitpoints and approves it as an operator; nobody approves the second, whose short
//! wait times out and fails it.
//!
//! The server's suspension reconciler applies the second one's timeout; the demo also calls the
//! backend's maintenance hook `expire_suspension` once it is due (a no-op when the reconciler got
//! there first), so its run does not wait for the reconciler's next pass.

use std::time::Duration;

use anyhow::{Context, bail};
use ff_core::{
    ExecutionId, ListPendingWaitpointsArgs, Namespace, Partition, PublicState, SuspensionBackend, SuspensionReasonCode,
    WaitpointState,
};
use ff_sdk::{Client, HandlerError, SubmitRequest, TaskContext, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{REPORTS, Tally};

/// How long the approval that nobody gives is waited for.
const SHORT_WAIT_MS: u64 = 1_000;
/// How long the approval the demo gives may take.
const LONG_WAIT_MS: u64 = 3_600_000;

/// Input of `approval.request`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Approval {
    /// What is to be approved.
    document: String,
    /// How long to wait for the approval.
    wait_ms: u64,
}

/// The two suspended executions.
#[derive(Clone, Copy, Debug)]
pub(super) struct Suspensions {
    /// The demo approves it; it completes.
    pub(super) approved: ExecutionId,
    /// Nobody approves it; its wait times out and fails it.
    pub(super) timed_out: ExecutionId,
}

/// Adds the `approval.request` handler to a pool worker.
pub(super) fn handle(worker: Worker<()>) -> Worker<()> {
    worker.handle("approval.request", |ctx: TaskContext<()>, job: Approval| async move {
        if let Some(decision) = ctx.signals().await?.first() {
            return Ok(json!({"document": job.document, "decision": decision.signal_name,
                             "by": decision.source_identity}));
        }
        let wp = ctx.create_waitpoint("approval", Duration::from_millis(job.wait_ms)).await?;
        Err(HandlerError::suspend_on(&wp, "approved").because(SuspensionReasonCode::WaitingForApproval))
    })
}

/// Submits the two executions and adds what they must end as to `expected`.
pub(super) async fn submit(
    client: &Client,
    namespace: &Namespace,
    expected: &mut Tally,
) -> anyhow::Result<Suspensions> {
    let submit = |document: &str, wait_ms: u64| {
        let mut req =
            SubmitRequest::json(REPORTS, "approval.request", json!(Approval { document: document.into(), wait_ms }));
        req.namespace = Some(namespace.clone());
        req.creator_identity = Some("ff-demo".into());
        async move { client.submit(&req).await.map(|r| r.execution_id()) }
    };
    let approved = submit("budget-2025.xlsx", LONG_WAIT_MS).await.context("submitting the approval")?;
    let timed_out = submit("expense-42.pdf", SHORT_WAIT_MS).await.context("submitting the approval to time out")?;
    expected.completed += 1;
    expected.failed += 1;
    expected.approved += 1;
    expected.timed_out += 1;
    Ok(Suspensions { approved, timed_out })
}

/// The demo's part: approves the first once it waits, and applies the second's timeout once
/// it is due. Gives up after `patience`.
pub(super) async fn act(
    client: Client,
    backend: std::sync::Arc<ff_backend_postgres::PostgresBackend>,
    s: Suspensions,
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    let waitpoint = loop {
        let args = ListPendingWaitpointsArgs { execution_id: s.approved, after: None, limit: None };
        let listed = client.list_pending_waitpoints(&args).await.context("listing the waitpoints")?;
        if let Some(w) = listed.entries.into_iter().find(|w| w.state == WaitpointState::Active) {
            break w.waitpoint_id;
        }
        pause(deadline, "the approval request never suspended").await?;
    };
    client.approve(&s.approved, &waitpoint).await.context("approving as an operator")?;
    eprintln!("Operator approved {} through its waitpoint {waitpoint}.", s.approved);

    let partition = Partition::execution(s.timed_out.partition_index());
    loop {
        match client.state(&s.timed_out).await?.context("the approval to time out vanished")? {
            PublicState::Suspended => {
                backend.expire_suspension(partition, &s.timed_out).await.context("applying the timeout")?
            }
            state if state.is_terminal() => break,
            _ => {}
        }
        pause(deadline, "the approval that nobody gives never timed out").await?;
    }
    eprintln!("The approval of {} timed out after {SHORT_WAIT_MS} ms with nobody approving.", s.timed_out);
    Ok(())
}

async fn pause(deadline: tokio::time::Instant, what: &str) -> anyhow::Result<()> {
    if tokio::time::Instant::now() > deadline {
        bail!("{what}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Counts what the two suspensions ended as: an approved one completed with the decision, a
/// timed-out one failed.
pub(super) async fn observe(client: &Client, s: &Suspensions, seen: &mut Tally) -> anyhow::Result<()> {
    if client.state(&s.approved).await? == Some(PublicState::Completed) {
        let result = client.result(&s.approved).await?.unwrap_or_default();
        let result: serde_json::Value = serde_json::from_slice(&result).unwrap_or_default();
        seen.approved += u64::from(result["decision"] == "approved");
    }
    seen.timed_out += u64::from(client.state(&s.timed_out).await? == Some(PublicState::Failed));
    Ok(())
}
