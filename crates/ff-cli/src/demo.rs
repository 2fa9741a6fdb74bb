//! `ff demo`: the engine end to end in one command.
//!
//! It starts a database (the given one, or a private cluster), the HTTP server with a random
//! API token, and a pool of SDK workers talking to it over HTTP; submits a mixed workload on
//! several lanes and priorities; and watches the completion log until every execution is
//! terminal. The workload is built so that its outcome is known in advance: transient failures
//! that succeed on retry, one cancelled by its handler, one whose worker is killed mid-handler
//! and whose lease another worker reclaims, and two the demo acts on as an operator through the
//! API: one waiting for a capability no worker offers, which it cancels, and one that exhausts
//! its retries, which it replays once it has failed (its handler succeeds on the attempt after
//! the failed ones, so the replay completes). Every worker registers in the worker registry
//! under the demo's namespace; the summary lists the instances read from the registry once the
//! pool is up, and compares what happened with what was expected; the exit code is 0 when they
//! agree. Two flows fan out from an extract step to four transforms and fan back in to a load
//! step, each created in one request with the SDK's flow builder; one transform of each fails
//! for good. The strict flow's all-of load is skipped, so that flow fails; the tolerant flow's
//! load needs three of four transforms, runs, and that flow completes. Two handlers suspend
//! for an approval: the demo approves one as an operator, which then completes; the other's
//! short wait times out and fails it (`demo/suspension.rs`).
//!
//! It prints the URL of the operator dashboard and the API token to log in with; `--keep`
//! keeps the server, its dashboard and the database up after the workload until Ctrl-C.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ff_core::event::{CompletionOutcome, EventCursor, ScannerFilter};
use ff_core::{
    BackoffPolicy, CancelExecutionArgs, CompletionBackend, EdgeDependencyPolicy, ExecutionBackend, ExecutionId,
    ExecutionPolicy, FlowId, FlowState, HandleKind, ListWorkersArgs, Namespace, OnSatisfied, PublicState,
    ReplayExecutionArgs, ReplayExecutionResult, RetryPolicy, RoutingRequirements, WorkerInstanceId,
};
use ff_sdk::{Client, HandlerError, HttpTransport, RunningWorker, SubmitRequest, TaskContext, Worker, WorkerConfig};
use ff_server::{Server, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::database::Database;

mod admission;
mod suspension;

/// Arguments of `ff demo`.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// PostgreSQL URL; when unset, a private cluster is started and removed afterwards.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Executions in the regular workload (the four special cases come on top).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(10..=1_000_000))]
    executions: u32,
    /// Worker processes in the pool (each an SDK runtime with its own claims).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: u32,
    /// Handlers running at once per worker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Lease TTL of the pool's workers, in ms.
    #[arg(long, default_value_t = 10_000)]
    lease_ttl_ms: u64,
    /// Give up when the workload has not finished after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Keep the server (and its dashboard) and the database up after the workload, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Where the server listens (default: a free port on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
}

/// Lanes of the workload and what runs on them.
const MEDIA: &str = "demo.media";
const EMAIL: &str = "demo.email";
const REPORTS: &str = "demo.reports";
const FRAGILE: &str = "demo.fragile";
const PIPELINE: &str = "demo.pipeline";
/// Transforms per demo flow, and how many the tolerant flow's load needs.
const TRANSFORMS: u32 = 4;
const TOLERANT_QUORUM: u32 = 3;
/// Retries every execution is allowed.
const MAX_RETRIES: u32 = 3;
/// A capability no demo worker offers: work requiring it waits until an operator acts.
const MISSING_CAPABILITY: &str = "gpu";
/// Why the operator cancels the execution that waits for it.
const OPERATOR_CANCEL_REASON: &str = "no worker here offers a gpu";

/// Input of every demo handler.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Job {
    /// Item number, for frames and results.
    item: u32,
    /// Fail this many first attempts with a transient error.
    #[serde(default)]
    fail_first: u32,
    /// The handler cancels the execution.
    #[serde(default)]
    cancel: bool,
    /// The handler fails for good (no retry).
    #[serde(default)]
    fail: bool,
}

/// What the workload must end as. Outcomes are counted from the completion log, so an
/// execution that fails, is replayed and then completes counts once in each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    completed: u64,
    failed: u64,
    cancelled: u64,
    /// Flow members skipped because their dependencies could no longer be satisfied.
    skipped: u64,
    /// Cancelled executions that an operator cancelled (and that ended as the operator said).
    operator_cancelled: u64,
    /// Retries in the final snapshots (a replay resets its execution's count).
    retried: u64,
    reclaimed: u64,
    /// Replays in the final snapshots of executions that then completed.
    replayed: u64,
    /// Suspended executions an approval resumed, which then completed with it.
    approved: u64,
    /// Suspended executions whose wait timed out, failing them.
    timed_out: u64,
    /// Executions created while their budget was exhausted, held until it was reset.
    held_for_budget: u64,
    /// Concurrency keys seen running more executions at once than their limit.
    over_key_limit: u64,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut signals = crate::Signals::install()?;
    let db = Database::open(args.database_url.as_deref(), false, None::<PathBuf>).await?;
    let stop = CancellationToken::new();
    let outcome = {
        let run = run_on(&args, db.url(), &stop);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = signals.recv() => {
                eprintln!("\nInterrupted: stopping the workers, the server and the database...");
                stop.cancel();
                run.await
            }
        }
    };
    db.stop().await?;
    match outcome {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::FAILURE),
        Err(e) => Err(e),
    }
}

/// Runs the demo on `url`; `Ok(true)` when the outcome matched the expectation.
async fn run_on(args: &DemoArgs, url: &str, stop: &CancellationToken) -> anyhow::Result<bool> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = ServerConfig::new(url);
    cfg.listen = args.listen;
    cfg.api_token = Some(token.clone());
    cfg.lease_expiry_interval_ms = 200;
    cfg.delayed_promoter_interval_ms = 200;
    cfg.pool_size = 24;
    cfg.shutdown_grace_ms = 5_000;
    let server = Server::start(cfg).await.context("starting the server")?;
    eprintln!("FlowFabric API on {} (bearer token required)", server.url());
    eprintln!("Dashboard on {}/dashboard; log in with the API token {token}", server.url());
    let client = Client::new(server.url())?.with_token(token.clone());
    let backend = server.backend().clone();
    let namespace = Namespace::new(format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));

    let result = drive(args, &server, &client, &backend, &namespace, stop).await;
    if args.keep && !stop.is_cancelled() {
        eprintln!("\nStill serving: dashboard on {}/dashboard (API token {token}). Ctrl-C stops.", server.url());
        stop.cancelled().await;
    }
    server.shutdown().await.context("stopping the server")?;
    result
}

async fn drive(
    args: &DemoArgs,
    server: &Server,
    client: &Client,
    backend: &Arc<ff_backend_postgres::PostgresBackend>,
    namespace: &Namespace,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let filter = ScannerFilter { namespace: Some(namespace.clone()), instance_tag: None };
    let mut events = backend.subscribe_completions_from(EventCursor::BEGINNING, &filter).await?;

    // 1. A worker that dies holding a lease: it claims the ledger sync and is killed inside the
    //    handler, as if its process crashed. Nothing renews or ends that lease any more.
    let mut ids = Vec::new();
    let ledger = submit_one(client, namespace, FRAGILE, "ledger.sync", 9000, Job::default()).await?;
    ids.push(ledger);
    let claimed = Arc::new(Notify::new());
    let doomed = start_doomed_worker(client, namespace, claimed.clone()).await?;
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(30), claimed.notified()) => {
            r.context("the doomed worker never claimed the ledger sync")?;
        }
        _ = stop.cancelled() => {
            doomed.kill();
            bail!("interrupted");
        }
    }
    doomed.kill();
    eprintln!("Killed worker `doomed` while it held {ledger}; its lease will expire and be reclaimed.");

    // 2. The healthy pool, and the registry as it stands now: the pool, and the killed worker
    //    whose registration has not lapsed yet.
    let mut pool = Vec::with_capacity(args.workers as usize);
    for n in 0..args.workers {
        match start_pool_worker(client, args, namespace, n).await {
            Ok(worker) => pool.push(worker),
            Err(e) => {
                stop_pool(pool).await;
                return Err(e);
            }
        }
    }
    let registered = match registered_workers(client, namespace).await {
        Ok(registered) => registered,
        Err(e) => {
            stop_pool(pool).await;
            return Err(e);
        }
    };

    // 3. The workload, in batches, and the two executions the demo acts on as an operator.
    let (requests, mut expected) = workload(args.executions, namespace);
    expected.completed += 1; // the ledger sync, after its reclaim
    expected.reclaimed = 1;
    let started = Instant::now();
    for chunk in requests.chunks(500) {
        if stop.is_cancelled() {
            stop_pool(pool).await;
            bail!("interrupted while submitting");
        }
        let results = client.submit_batch(chunk.to_vec()).await.context("submitting the workload")?;
        ids.extend(results.iter().map(|r| r.execution_id()));
    }
    let operated = match operator_cases(client, namespace, args.executions, &mut expected).await {
        Ok(operated) => operated,
        Err(e) => {
            stop_pool(pool).await;
            return Err(e);
        }
    };
    ids.extend([operated.held, operated.replayed]);
    let flows = match submit_flows(client, namespace, &mut expected).await {
        Ok(flows) => flows,
        Err(e) => {
            stop_pool(pool).await;
            return Err(e);
        }
    };
    ids.extend(flows.iter().flat_map(|f| f.members.iter().copied()));
    let suspensions = match suspension::submit(client, namespace, &mut expected).await {
        Ok(s) => s,
        Err(e) => {
            stop_pool(pool).await;
            return Err(e);
        }
    };
    ids.extend([suspensions.approved, suspensions.timed_out]);
    let patience = Duration::from_secs(args.timeout_secs);
    let admitted = match admission::submit(client, namespace, &mut expected, patience).await {
        Ok(a) => a,
        Err(e) => {
            stop_pool(pool).await;
            return Err(e);
        }
    };
    ids.extend(admitted.ids.iter().copied());
    let acts = (
        suspension::act(client.clone(), backend.clone(), suspensions, patience),
        admission::act(client.clone(), admitted.clone()),
    );
    let mut approver = tokio::spawn(async move {
        let (suspended, admitted) = tokio::join!(acts.0, acts.1);
        suspended.and(admitted)
    });
    let mut approver_done = false;
    let total = ids.len() as u64;
    let ours: HashSet<ExecutionId> = ids.iter().copied().collect();

    // 4. Watch the completion log until everything is terminal.
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut seen = Tally::default();
    let mut terminal = HashSet::new();
    let mut replay_pending = true;
    let mut workload_done = started.elapsed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    while (terminal.len() as u64) < total {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, events.next()) => next,
            acted = &mut approver, if !approver_done => {
                approver_done = true;
                if let Err(e) = acted.map_err(anyhow::Error::from).and_then(|r| r) {
                    bar.abandon();
                    stop_pool(pool).await;
                    return Err(e.context("acting on the suspended and the held executions"));
                }
                continue;
            }
            _ = stop.cancelled() => {
                bar.abandon();
                stop_pool(pool).await;
                bail!("interrupted with {}/{total} executions terminal", terminal.len());
            }
        };
        let event = match next {
            Ok(Some(event)) => event?,
            Ok(None) => bail!("the completion stream ended early"),
            Err(_) => {
                bar.abandon();
                bail!("timed out with {}/{total} executions terminal", terminal.len());
            }
        };
        if !ours.contains(&event.execution_id) {
            continue;
        }
        // The execution that exhausts its retries is replayed once it has failed: not terminal
        // yet, its next outcome is the one that ends it.
        if replay_pending && event.execution_id == operated.replayed && event.outcome == CompletionOutcome::Failure {
            replay_pending = false;
            seen.failed += 1;
            if let Err(e) = replay(client, operated.replayed).await {
                bar.abandon();
                stop_pool(pool).await;
                return Err(e);
            }
            continue;
        }
        if !terminal.insert(event.execution_id) {
            continue;
        }
        if event.execution_id != ledger {
            workload_done = started.elapsed();
        }
        match event.outcome {
            CompletionOutcome::Success => seen.completed += 1,
            CompletionOutcome::Failure | CompletionOutcome::Expired => seen.failed += 1,
            CompletionOutcome::Skipped => seen.skipped += 1,
            CompletionOutcome::Cancelled => seen.cancelled += 1,
        }
        bar.set_position(terminal.len() as u64);
        bar.set_message(format!("ok {} / failed {} / cancelled {}", seen.completed, seen.failed, seen.cancelled));
    }
    bar.finish();

    let reports = stop_pool(pool).await;

    // 5. Read back every execution: retries, reclaims and end-to-end latency.
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    let snapshots: Vec<_> = futures::stream::iter(ids.iter().map(|id| backend.describe_execution(id)))
        .buffer_unordered(16)
        .try_collect()
        .await?;
    for snap in snapshots.into_iter().flatten() {
        seen.retried += u64::from(snap.retry_count);
        seen.reclaimed += u64::from(snap.lease_reclaim_count);
        if snap.public_state == PublicState::Completed {
            seen.replayed += u64::from(snap.replay_count);
        }
        if snap.execution_id == operated.held
            && snap.public_state == PublicState::Cancelled
            && snap.blocking_detail.as_deref() == Some(OPERATOR_CANCEL_REASON)
        {
            seen.operator_cancelled += 1;
        }
        let ms = (snap.last_mutation_at.0 - snap.created_at.0).max(1) as u64;
        latency.record(ms.min(3_600_000))?;
    }
    let ledger_snap = backend.describe_execution(&ledger).await?.context("the ledger sync vanished")?;
    suspension::observe(client, &suspensions, &mut seen).await?;
    let admission_lines = admission::observe(&admitted, &mut seen);

    let mut flows_ok = true;
    let mut flow_lines = Vec::with_capacity(flows.len());
    for f in &flows {
        let snap = client.describe_flow(&f.flow_id).await?.context("a demo flow vanished")?;
        flows_ok &= snap.public_flow_state == f.expected;
        let m = &snap.members;
        flow_lines.push(format!(
            "{:<14} {:<10} (expected {}): {} completed, {} failed, {} skipped; load group {}",
            f.name,
            snap.public_flow_state.as_str(),
            f.expected.as_str(),
            m.completed,
            m.failed,
            m.skipped,
            snap.edge_groups
                .iter()
                .find(|g| g.total_deps == TRANSFORMS)
                .map(|g| format!("{} of {} succeeded, {}", g.satisfied_count, g.total_deps, g.group_state.as_str()))
                .unwrap_or_default(),
        ));
    }

    let pool = PoolRun { reports, registered };
    print_summary(&seen, &expected, total - 1, workload_done, &latency, &pool, server);
    for line in &flow_lines {
        println!("  flow         {line}");
    }
    for line in &admission_lines {
        println!("  admission    {line}");
    }
    let ok = seen == expected && ledger_snap.lease_reclaim_count == 1 && flows_ok;
    if ok {
        println!("\nOutcome matches the workload's expectations.");
    } else {
        println!("\nOutcome differs from the expectation: expected {expected:?}, saw {seen:?}.");
    }
    Ok(ok)
}

/// One demo flow: extract -> transforms -> load.
struct DemoFlow {
    name: &'static str,
    flow_id: FlowId,
    members: Vec<ExecutionId>,
    /// The state the flow must end in.
    expected: FlowState,
}

/// Creates the two demo flows, each in one request: an extract step fans out to
/// [`TRANSFORMS`] transforms (the second of which fails for good) that fan back in to a load
/// step. The strict flow's load needs every transform (it is skipped, the flow fails); the
/// tolerant one's needs [`TOLERANT_QUORUM`] (it runs, the flow completes).
async fn submit_flows(client: &Client, namespace: &Namespace, expected: &mut Tally) -> anyhow::Result<Vec<DemoFlow>> {
    let mut out = Vec::new();
    let tolerant = EdgeDependencyPolicy::Quorum { k: TOLERANT_QUORUM, on_satisfied: OnSatisfied::LetRun };
    for (name, policy, state) in [
        ("etl.strict", EdgeDependencyPolicy::AllOf, FlowState::Failed),
        ("etl.tolerant", tolerant, FlowState::Completed),
    ] {
        let job = |item: u32, fail: bool| Job { item, fail, ..Job::default() };
        let mut b = client.flow(name).namespace(namespace.as_str()).creator("ff-demo");
        b = b.member("extract", request(namespace, PIPELINE, "flow.extract", 0, job(0, false)));
        for t in 0..TRANSFORMS {
            let key = format!("transform-{t}");
            b = b.member(key.clone(), request(namespace, PIPELINE, "flow.transform", 0, job(t, t == 1)));
            b = b.edge("extract", key.clone()).edge(key, "load");
        }
        b = b.member("load", request(namespace, PIPELINE, "flow.load", 0, job(0, false)));
        b = b.policy("load", policy);
        let created = b.create().await.with_context(|| format!("creating the {name} flow"))?;
        let mut members = Vec::new();
        for key in std::iter::once("extract".to_owned())
            .chain((0..TRANSFORMS).map(|t| format!("transform-{t}")))
            .chain(std::iter::once("load".to_owned()))
        {
            members.push(created.member(&key).with_context(|| format!("the {name} flow has no member {key}"))?);
        }
        // extract and three transforms complete, one transform fails; the load completes or
        // is skipped.
        expected.completed += u64::from(TRANSFORMS);
        expected.failed += 1;
        if state == FlowState::Completed {
            expected.completed += 1;
        } else {
            expected.skipped += 1;
        }
        out.push(DemoFlow { name, flow_id: created.flow_id, members, expected: state });
    }
    Ok(out)
}

/// The executions the demo acts on as an operator.
struct Operated {
    /// Waits for a capability no worker offers; cancelled through the operator route.
    held: ExecutionId,
    /// Fails every attempt of its first run; replayed once failed, then completes.
    replayed: ExecutionId,
}

/// Submits the two executions the demo acts on as an operator (items `n + 1` and `n + 2`),
/// cancels the one that waits, and adds what they must end as to `expected`. The other is replayed by [`replay`] once it fails.
async fn operator_cases(
    client: &Client,
    namespace: &Namespace,
    n: u32,
    expected: &mut Tally,
) -> anyhow::Result<Operated> {
    let mut waits = request(namespace, REPORTS, "report.build", 0, Job { item: n + 1, ..Job::default() });
    if let Some(policy) = waits.policy.as_mut() {
        policy.routing_requirements =
            Some(RoutingRequirements { required_capabilities: [MISSING_CAPABILITY.to_owned()].into() });
    }
    let held = client.submit(&waits).await.context("submitting the execution to cancel")?.execution_id();
    let state = client.state(&held).await?.context("the execution to cancel vanished")?;
    client
        .cancel_execution(&CancelExecutionArgs::new(held, OPERATOR_CANCEL_REASON))
        .await
        .context("cancelling as an operator")?;
    eprintln!("Operator cancelled {held} while it was {state} for a `{MISSING_CAPABILITY}` worker.");
    expected.cancelled += 1;
    expected.operator_cancelled += 1;

    // Its first run fails every attempt (the first try and MAX_RETRIES retries); the attempt
    // after those, which only a replay starts, succeeds.
    let job = Job { item: n + 2, fail_first: MAX_RETRIES + 1, cancel: false, fail: false };
    let replayed = submit_one(client, namespace, REPORTS, "report.build", 0, job).await?;
    expected.failed += 1;
    expected.completed += 1;
    expected.replayed += 1;
    // The replay resets its retry count, and the replayed attempt succeeds: it adds no retries.
    Ok(Operated { held, replayed })
}

/// Replays the failed execution through the operator route.
async fn replay(client: &Client, id: ExecutionId) -> anyhow::Result<()> {
    let ReplayExecutionResult::Replayed { public_state, replay_count } =
        client.replay_execution(&ReplayExecutionArgs { execution_id: id }).await.context("replaying as an operator")?;
    eprintln!("Operator replayed {id} after it failed: {public_state} again (replay {replay_count}).");
    Ok(())
}

/// What the pool's workers did, and the registry as read while they ran.
struct PoolRun {
    /// One report per pool worker.
    reports: Vec<ff_sdk::WorkerReport>,
    /// Instance ids registered in the demo's namespace once the pool was up.
    registered: Vec<String>,
}

/// Instance ids of the live workers registered in `namespace`, read through the API.
async fn registered_workers(client: &Client, namespace: &Namespace) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<WorkerInstanceId> = None;
    loop {
        let args = ListWorkersArgs { namespace: Some(namespace.clone()), after, limit: None };
        let page = client.list_workers(&args).await.context("listing the registered workers")?;
        ids.extend(page.entries.into_iter().map(|w| w.worker_instance_id.0));
        match page.cursor {
            Some(cursor) => after = Some(cursor),
            None => return Ok(ids),
        }
    }
}

/// Shuts the pool down, all workers at once.
async fn stop_pool(pool: Vec<RunningWorker>) -> Vec<ff_sdk::WorkerReport> {
    futures::future::join_all(pool.into_iter().map(RunningWorker::shutdown)).await
}

/// The regular workload plus the execution its handler cancels, and the tally it must produce.
fn workload(n: u32, namespace: &Namespace) -> (Vec<SubmitRequest>, Tally) {
    let mut expected = Tally::default();
    let mut requests = Vec::with_capacity(n as usize + 1);
    for item in 0..n {
        let (lane, kind, fail_first) = match item % 10 {
            0..=5 => (MEDIA, "thumbnail.render", u32::from(item % 7 == 0)),
            6..=8 => (EMAIL, "email.send", if item % 20 == 6 { 2 } else { 0 }),
            _ => (REPORTS, "report.build", 0),
        };
        let priority = ((item * 37) % 10) as i32 * 100;
        requests.push(request(namespace, lane, kind, priority, Job { item, fail_first, cancel: false, fail: false }));
        expected.completed += 1;
        expected.retried += u64::from(fail_first);
    }
    // Its handler cancels it.
    requests.push(request(
        namespace,
        EMAIL,
        "email.send",
        0,
        Job { item: n, fail_first: 0, cancel: true, fail: false },
    ));
    expected.cancelled += 1;
    (requests, expected)
}

fn request(namespace: &Namespace, lane: &str, kind: &str, priority: i32, job: Job) -> SubmitRequest {
    let mut req = SubmitRequest::json(lane, kind, json!(job));
    req.namespace = Some(namespace.clone());
    req.priority = priority;
    req.creator_identity = Some("ff-demo".into());
    req.policy = Some(ExecutionPolicy {
        retry_policy: Some(RetryPolicy {
            max_retries: MAX_RETRIES,
            backoff: BackoffPolicy::Exponential {
                initial_delay_ms: 50,
                max_delay_ms: 400,
                multiplier: 2.0,
                jitter: true,
            },
        }),
        max_reclaim_count: Some(3),
        ..ExecutionPolicy::default()
    });
    req
}

async fn submit_one(
    client: &Client,
    namespace: &Namespace,
    lane: &str,
    kind: &str,
    priority: i32,
    job: Job,
) -> anyhow::Result<ExecutionId> {
    Ok(client.submit(&request(namespace, lane, kind, priority, job)).await?.execution_id())
}

async fn start_doomed_worker(
    client: &Client,
    namespace: &Namespace,
    claimed: Arc<Notify>,
) -> anyhow::Result<RunningWorker> {
    let mut cfg = WorkerConfig::new("doomed", [FRAGILE])?;
    cfg.namespace = namespace.to_string();
    cfg.lease_ttl = Duration::from_millis(1500);
    cfg.claim_max_wait = Duration::from_millis(200);
    let worker = Worker::new(HttpTransport::new(client.clone()), cfg, claimed)
        .handle("ledger.sync", |ctx: TaskContext<Arc<Notify>>, _: Job| async move {
            ctx.progress(Some(10), Some("syncing ledger")).await?;
            ctx.state().notify_one();
            // Hangs until the process "crashes".
            std::future::pending::<()>().await;
            Ok(json!(null))
        })
        .start()
        .await?;
    Ok(worker)
}

async fn start_pool_worker(
    client: &Client,
    args: &DemoArgs,
    namespace: &Namespace,
    n: u32,
) -> anyhow::Result<RunningWorker> {
    let mut cfg = WorkerConfig::new(
        "demo-pool",
        [MEDIA, EMAIL, REPORTS, FRAGILE, PIPELINE, admission::CUSTOMERS, admission::LLM],
    )?;
    cfg.worker_instance_id = format!("{namespace}-pool-{n}");
    cfg.namespace = namespace.to_string();
    cfg.concurrency = args.concurrency as usize;
    cfg.claim_batch = args.concurrency as usize;
    cfg.claim_max_wait = Duration::from_millis(500);
    cfg.lease_ttl = Duration::from_millis(args.lease_ttl_ms);
    cfg.shutdown_grace = Duration::from_secs(5);
    let worker = admission::handle(suspension::handle(Worker::new(HttpTransport::new(client.clone()), cfg, ())))
        .handle("thumbnail.render", |ctx: TaskContext<()>, job: Job| async move {
            transient_failures(&ctx, &job)?;
            for (pct, step) in [(30, "decode"), (70, "resize"), (100, "encode")] {
                ctx.progress(Some(pct), Some(step)).await?;
            }
            ctx.append_frame("log", &format!("rendered thumbnail {}", job.item)).await?;
            Ok(json!({"thumbnail": format!("thumb-{}.webp", job.item)}))
        })
        .handle("email.send", |ctx: TaskContext<()>, job: Job| async move {
            if job.cancel {
                return Err(HandlerError::cancel("the recipient unsubscribed"));
            }
            transient_failures(&ctx, &job)?;
            ctx.append_frame("smtp", "250 OK").await?;
            Ok(json!({"message_id": format!("<{}@demo>", job.item)}))
        })
        .handle("report.build", |ctx: TaskContext<()>, job: Job| async move {
            transient_failures(&ctx, &job)?;
            ctx.progress(Some(100), Some("report ready")).await?;
            Ok(json!({"rows": job.item * 3}))
        })
        .handle("ledger.sync", |ctx: TaskContext<()>, _: Job| async move {
            Ok(json!({"reclaimed": ctx.claim_kind() == HandleKind::Reclaimed}))
        })
        .handle("flow.extract", |_: TaskContext<()>, _: Job| async move { Ok(json!({"rows": 1000})) })
        .handle("flow.transform", |_: TaskContext<()>, job: Job| async move {
            if job.fail {
                return Err(HandlerError::permanent(format!("transform {} found a malformed row", job.item)));
            }
            Ok(json!({"rows": 250}))
        })
        .handle("flow.load", |_: TaskContext<()>, _: Job| async move { Ok(json!({"loaded": true})) })
        .start()
        .await?;
    Ok(worker)
}

fn transient_failures(ctx: &TaskContext<()>, job: &Job) -> Result<(), HandlerError> {
    if ctx.attempt_index().0 < job.fail_first {
        return Err(HandlerError::transient(format!(
            "upstream timed out on attempt {} of item {}",
            ctx.attempt_index().0,
            job.item
        )));
    }
    Ok(())
}

fn print_summary(
    seen: &Tally,
    expected: &Tally,
    total: u64,
    wall: Duration,
    latency: &Histogram<u64>,
    pool: &PoolRun,
    server: &Server,
) {
    let row = |name: &str, got: u64, want: u64| {
        let mark = if got == want { "ok" } else { "MISMATCH" };
        println!("  {name:<12} {got:>10} {want:>10}   {mark}");
    };
    println!("\nFlowFabric demo on {}", server.url());
    println!("  {:<12} {:>10} {:>10}", "", "observed", "expected");
    row("completed", seen.completed, expected.completed);
    row("failed", seen.failed, expected.failed);
    row("cancelled", seen.cancelled, expected.cancelled);
    row("skipped", seen.skipped, expected.skipped);
    row(" by operator", seen.operator_cancelled, expected.operator_cancelled);
    row("retried", seen.retried, expected.retried);
    row("reclaimed", seen.reclaimed, expected.reclaimed);
    row("replayed", seen.replayed, expected.replayed);
    row("approved", seen.approved, expected.approved);
    row("timed out", seen.timed_out, expected.timed_out);
    row("held (budget)", seen.held_for_budget, expected.held_for_budget);
    row("over key cap", seen.over_key_limit, expected.over_key_limit);
    let secs = wall.as_secs_f64().max(1e-9);
    println!(
        "\n  throughput   {total} submitted executions terminal in {secs:.2} s = {:.0}/s (first submit -> last terminal)",
        total as f64 / secs
    );
    println!(
        "  latency      submit -> terminal: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        latency.value_at_quantile(0.50),
        latency.value_at_quantile(0.90),
        latency.value_at_quantile(0.99),
        latency.max()
    );
    println!(
        "  operator     cancelled by operator: {} (waiting for a `{MISSING_CAPABILITY}` worker); replayed: {} (then completed)",
        seen.operator_cancelled, seen.replayed
    );
    let PoolRun { reports, registered } = pool;
    let suspended: u64 = reports.iter().map(|r| r.suspended).sum();
    println!(
        "  suspensions  {suspended} handlers suspended for an approval: approved: {} (then completed), timed out: {} (then failed)",
        seen.approved, seen.timed_out
    );
    let claimed: u64 = reports.iter().map(|r| r.claimed).sum();
    let panicked: u64 = reports.iter().map(|r| r.panicked).sum();
    let lost: u64 = reports.iter().map(|r| r.lease_lost).sum();
    println!("  workers      {} in the pool: {claimed} claims, {panicked} panics, {lost} lost leases", reports.len());
    println!("  registry     {} workers registered: {}", registered.len(), registered.join(", "));
}
