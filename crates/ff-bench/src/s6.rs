//! `s6`: quorum with sibling cancellation. Each round builds one flow of `--upstreams`
//! upstreams feeding one downstream whose group is `Quorum { k: --quorum, CancelRemaining }`,
//! claims every upstream (one worker each, so all are running), then completes `k` of them.
//! The `k`-th completion decides the group: it releases the downstream and cancels the losing
//! siblings in its own transaction, so they should already be cancelled when it returns.
//!
//! After one unmeasured round, each round measures the deciding `complete` call (start to
//! return), whether every loser was already cancelled at the first read after that return, and
//! the time from the deciding call's start until reads (`describe_execution` of every loser,
//! concurrently, repeated) see all of them cancelled. Then each loser's holder calls `complete`,
//! which must be refused with `execution_not_active`; the downstream is claimed and completed,
//! ending the flow.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ff_backend_postgres::PostgresBackend;
use ff_core::*;

use crate::latency::Latency;
use crate::setup::BenchDatabase;

/// Arguments of `s6`.
#[derive(clap::Args, Clone)]
pub struct S6Args {
    /// Rounds (one flow each).
    #[arg(long, default_value_t = 50)]
    pub rounds: usize,
    /// Upstreams per flow.
    #[arg(long, default_value_t = 10)]
    pub upstreams: usize,
    /// Successful upstreams that satisfy the downstream's group.
    #[arg(long, default_value_t = 3)]
    pub quorum: u32,
}

/// Longest the reads wait for the losers to be seen cancelled.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// What the rounds measured and checked.
struct Tally {
    /// `complete` calls that did not decide the group.
    plain_complete: Latency,
    /// The deciding `complete` call, start to return.
    deciding_complete: Latency,
    /// From the deciding call's start until reads saw every loser cancelled.
    all_cancelled: Latency,
    /// Rounds whose first read after the deciding call's return saw every loser cancelled.
    cancelled_at_return: usize,
    /// Losers whose cancellation names the satisfied quorum.
    quorum_detail: usize,
    /// Holders' `complete` calls refused with `execution_not_active`.
    not_active: usize,
    /// Holders' `complete` calls answered otherwise (or not refused at all).
    other_answers: Vec<String>,
}

impl Tally {
    fn new() -> Result<Self> {
        Ok(Self {
            plain_complete: Latency::new()?,
            deciding_complete: Latency::new()?,
            all_cancelled: Latency::new()?,
            cancelled_at_return: 0,
            quorum_detail: 0,
            not_active: 0,
            other_answers: Vec::new(),
        })
    }
}

/// Runs the rounds and prints the figures.
pub async fn run(args: S6Args) -> Result<()> {
    let k = args.quorum as usize;
    if args.rounds == 0 || k == 0 || k >= args.upstreams {
        bail!("--rounds must be at least 1 and --quorum between 1 and --upstreams - 1");
    }
    let db = BenchDatabase::create(args.upstreams as u32 + 2).await?;
    println!("{}", db.banner(false));
    let backend = PostgresBackend::from_pool(db.pool.clone(), PartitionConfig::default());
    let lane = LaneId::try_new("bench.s6")?;
    db.checkpoint().await?;

    // One unmeasured round first: it opens the pool's connections, which the concurrent reads
    // would otherwise pay for in the first measured round.
    round(&backend, &lane, &args, &mut Tally::new()?).await?;
    let mut tally = Tally::new()?;
    for _ in 0..args.rounds {
        round(&backend, &lane, &args, &mut tally).await?;
    }
    let losers = args.rounds * (args.upstreams - k);
    println!("complete, not deciding: {}", tally.plain_complete.summary());
    println!("complete, deciding (cancels the losers in its transaction): {}", tally.deciding_complete.summary());
    println!(
        "every loser cancelled at the first read after the deciding complete returned: {} of {} rounds",
        tally.cancelled_at_return, args.rounds
    );
    println!("deciding complete start -> reads see every loser cancelled: {}", tally.all_cancelled.summary());
    println!(
        "losers cancelled as sibling_quorum_satisfied: {} of {losers}; holders' complete refused with execution_not_active: {} of {losers}",
        tally.quorum_detail, tally.not_active
    );
    for answer in tally.other_answers.iter().take(5) {
        println!("holder's complete answered otherwise: {answer}");
    }
    println!(
        "RESULT system=ff scenario=s6 rounds={} upstreams={} quorum={} cancelled_at_return={}/{} deciding_complete_p50_ms={:.2} deciding_complete_p99_ms={:.2} all_cancelled_p50_ms={:.2} all_cancelled_p99_ms={:.2} plain_complete_p50_ms={:.2} holder_execution_not_active={}/{losers}",
        args.rounds,
        args.upstreams,
        args.quorum,
        tally.cancelled_at_return,
        args.rounds,
        tally.deciding_complete.ms(0.50),
        tally.deciding_complete.ms(0.99),
        tally.all_cancelled.ms(0.50),
        tally.all_cancelled.ms(0.99),
        tally.plain_complete.ms(0.50),
        tally.not_active,
    );
    backend.shutdown_prepare(Duration::from_secs(5)).await?;
    if tally.cancelled_at_return != args.rounds || tally.not_active != losers || tally.quorum_detail != losers {
        bail!("sibling cancellation did not behave as specified (see above)");
    }
    Ok(())
}

/// One flow: build, claim every upstream, complete `k`, watch the losers, check their holders.
async fn round(backend: &Arc<PostgresBackend>, lane: &LaneId, args: &S6Args, tally: &mut Tally) -> Result<()> {
    let (flow_id, upstreams, downstream) = build(backend, lane, args).await?;
    let caps = CapabilitySet::empty();
    let mut held = Vec::with_capacity(args.upstreams);
    for w in 0..args.upstreams {
        let Some(h) = backend.claim(lane, &caps, ClaimPolicy::new("bench", format!("holder-{w}"), 30_000)).await?
        else {
            bail!("only {w} of {} upstreams were claimable", args.upstreams);
        };
        held.push((HandlePayload::from_handle(&h, h.backend)?.execution_id, h));
    }
    if held.iter().map(|(id, _)| *id).collect::<HashSet<_>>() != upstreams.iter().copied().collect() {
        bail!("the claims took something other than the flow's upstreams");
    }
    let k = args.quorum as usize;
    let losers = held.split_off(k);
    for (_, h) in &held[..k - 1] {
        let t = Instant::now();
        backend.complete(h, None).await?;
        tally.plain_complete.record(t.elapsed())?;
    }

    let started = Instant::now();
    backend.complete(&held[k - 1].1, None).await?;
    tally.deciding_complete.record(started.elapsed())?;
    let loser_ids: Vec<ExecutionId> = losers.iter().map(|(id, _)| *id).collect();
    let mut first = true;
    loop {
        let snapshots = describe_all(backend, &loser_ids).await?;
        let cancelled = snapshots.iter().filter(|s| s.public_state == PublicState::Cancelled).count();
        if first && cancelled == loser_ids.len() {
            tally.cancelled_at_return += 1;
        }
        first = false;
        if cancelled == loser_ids.len() {
            tally.all_cancelled.record(started.elapsed())?;
            tally.quorum_detail +=
                snapshots.iter().filter(|s| s.blocking_detail.as_deref() == Some("sibling_quorum_satisfied")).count();
            break;
        }
        if started.elapsed() > SETTLE_LIMIT {
            bail!("{cancelled} of {} losers cancelled after {SETTLE_LIMIT:?}", loser_ids.len());
        }
    }

    for (_, h) in &losers {
        match backend.complete(h, None).await {
            Err(e) if e.code() == "execution_not_active" => tally.not_active += 1,
            Err(e) => tally.other_answers.push(format!("{}: {e}", e.code())),
            Ok(()) => tally.other_answers.push("completed".into()),
        }
    }
    let Some(h) = backend.claim(lane, &caps, ClaimPolicy::new("bench", "downstream", 30_000)).await? else {
        bail!("the satisfied downstream is not claimable");
    };
    if HandlePayload::from_handle(&h, h.backend)?.execution_id != downstream {
        bail!("the claim took something other than the downstream");
    }
    backend.complete(&h, None).await?;
    let state = backend.describe_flow(&flow_id).await?.map(|f| f.public_flow_state);
    if state != Some(FlowState::Completed) {
        bail!("the flow ended {state:?}, not completed");
    }
    Ok(())
}

/// Creates one flow of `args.upstreams` upstreams feeding one quorum downstream on `lane`;
/// returns the flow, the upstreams and the downstream.
async fn build(
    backend: &PostgresBackend,
    lane: &LaneId,
    args: &S6Args,
) -> Result<(FlowId, Vec<ExecutionId>, ExecutionId)> {
    let flow = CreateFlowArgs::new("bench.s6");
    let flow_id = flow.flow_id;
    let members: Vec<CreateExecutionArgs> = (0..=args.upstreams)
        .map(|_| {
            let id = ExecutionId::for_flow(&flow_id, &PartitionConfig::default());
            CreateExecutionArgs::new(id, lane.clone(), "bench.s6", b"{}".to_vec())
        })
        .collect();
    let mut ids: Vec<ExecutionId> = members.iter().map(|m| m.execution_id).collect();
    let Some(downstream) = ids.pop() else { bail!("no members") };
    let edges = ids
        .iter()
        .map(|&up| FlowGraphEdge {
            edge_id: None,
            upstream_execution_id: up,
            downstream_execution_id: downstream,
            data_passing_ref: None,
        })
        .collect();
    let policy = EdgeDependencyPolicy::Quorum { k: args.quorum, on_satisfied: OnSatisfied::CancelRemaining };
    let policies = vec![FlowGraphPolicy { downstream_execution_id: downstream, policy }];
    match backend.create_flow_graph(CreateFlowGraphArgs { flow, members, edges, policies }).await? {
        CreateFlowGraphResult::Created { .. } => Ok((flow_id, ids, downstream)),
        other => bail!("flow not created: {other:?}"),
    }
}

/// Every execution's snapshot, read concurrently.
async fn describe_all(backend: &Arc<PostgresBackend>, ids: &[ExecutionId]) -> Result<Vec<ExecutionSnapshot>> {
    let mut reads = tokio::task::JoinSet::new();
    for &id in ids {
        let backend = backend.clone();
        reads.spawn(async move { backend.describe_execution(&id).await });
    }
    let mut out = Vec::with_capacity(ids.len());
    while let Some(r) = reads.join_next().await {
        match r?? {
            Some(s) => out.push(s),
            None => bail!("a loser vanished"),
        }
    }
    Ok(out)
}
