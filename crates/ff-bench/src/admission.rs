//! `s1 --admission keys`: what quota admission costs on the hot path when it never holds
//! anything back.
//!
//! S1 runs twice in one process, each time in a freshly recreated benchmark database (so the
//! second run meets none of the first run's rows, dead tuples or autovacuum work), each after a
//! checkpoint: first plain, then with every execution attached to one quota policy
//! (`max_concurrent` = 1,000,000, `max_concurrent_per_key` = 100,000) and a concurrency key,
//! execution `i` taking key `i mod --concurrency-keys`. The caps never bind at the sizes
//! allowed here, so the second run admits everything at creation and every completion gives
//! its slot back: the difference between the runs is the settlement work each creating and
//! completing statement does on the policy (and the one policy row every such statement
//! locks). Both `RESULT` lines are printed, the second with the first's figures and the
//! throughput ratio (admission / plain; the goal is at least 0.80), and the policy's status
//! after the drain must show no slot held and nothing waiting.

use anyhow::{Result, bail};
use ff_core::*;

use crate::{Bench, S1Args, run};

/// The policy's cap on executions admitted at once.
const MAX_CONCURRENT: u32 = 1_000_000;
/// The policy's cap on executions of one key admitted at once.
const MAX_CONCURRENT_PER_KEY: u32 = 100_000;
/// The throughput ratio (admission / plain) the admitted run should reach.
const GOAL_RATIO: f64 = 0.80;

/// A quota policy and the number of concurrency keys S1's executions are spread over.
#[derive(Clone, Debug)]
pub struct KeyedQuota {
    /// The policy every execution is attached to.
    pub quota_policy_id: QuotaPolicyId,
    /// Distinct concurrency keys.
    pub keys: usize,
}

impl KeyedQuota {
    /// The policy of the `index`-th execution: the quota policy and key `index mod keys`.
    pub fn policy(&self, index: usize) -> ExecutionPolicy {
        ExecutionPolicy {
            quota_policy_id: Some(self.quota_policy_id),
            concurrency_key: Some(format!("key-{}", index % self.keys)),
            ..ExecutionPolicy::default()
        }
    }
}

/// Runs S1 plain, then with admission in a recreated database, and prints both and their ratio.
pub async fn compare(args: &S1Args) -> Result<()> {
    if !args.backlog.is_empty() {
        bail!("--admission and --backlog are separate comparisons; give one of them");
    }
    if args.concurrency_keys == 0 {
        bail!("--concurrency-keys must be at least 1");
    }
    if args.tasks > MAX_CONCURRENT as usize
        || args.tasks.div_ceil(args.concurrency_keys) > MAX_CONCURRENT_PER_KEY as usize
    {
        bail!(
            "--tasks {} over {} keys would reach the policy's caps ({MAX_CONCURRENT} in all, {MAX_CONCURRENT_PER_KEY} per key); this comparison needs caps that never bind",
            args.tasks,
            args.concurrency_keys
        );
    }
    let lane = LaneId::try_new("bench.s1")?;

    let bench = Bench::open(args).await?;
    bench.db.checkpoint().await?;
    let plain = run(args, &bench.target, &bench.db.pool, &lane, None).await?;
    plain.print(args, " admission=none");
    bench.close().await?;

    let bench = Bench::open(args).await?;
    let quota = KeyedQuota { quota_policy_id: QuotaPolicyId::new(), keys: args.concurrency_keys };
    let mut policy = CreateQuotaPolicyArgs::new(quota.quota_policy_id);
    policy.max_concurrent = Some(MAX_CONCURRENT);
    policy.max_concurrent_per_key = Some(MAX_CONCURRENT_PER_KEY);
    bench.backend.create_quota_policy(policy).await?;
    bench.db.checkpoint().await?;
    let admitted = run(args, &bench.target, &bench.db.pool, &lane, Some(&quota)).await?;
    let status = bench.backend.get_quota_policy_status(&quota.quota_policy_id).await?;
    println!(
        "quota policy after the drain: {} slots held, {} waiting, busiest key holds {}",
        status.active, status.waiting, status.busiest_key_active
    );
    let ratio = admitted.ops / plain.ops;
    admitted.print(
        args,
        &format!(
            " admission=keys concurrency_keys={} baseline_ops_per_sec={:.0} baseline_p50_ms={:.2} baseline_p99_ms={:.2} ratio={ratio:.3}",
            quota.keys, plain.ops, plain.p50_ms, plain.p99_ms
        ),
    );
    println!(
        "admission / plain: throughput {:.0}/s / {:.0}/s = {ratio:.3} ({} 20% of plain); p50 {:.2} ms -> {:.2} ms, p99 {:.2} ms -> {:.2} ms",
        admitted.ops,
        plain.ops,
        if ratio >= GOAL_RATIO { "within" } else { "NOT within" },
        plain.p50_ms,
        admitted.p50_ms,
        plain.p99_ms,
        admitted.p99_ms,
    );
    bench.close().await?;
    if status.active != 0 || status.waiting != 0 {
        bail!(
            "the quota policy still holds {} slots and {} waiters after every execution completed",
            status.active,
            status.waiting
        );
    }
    Ok(())
}
