//! Claims: one round trip picks, leases and records up to N executions.
//!
//! The statement calls `ff_claim` (schema), which locks candidates with `FOR UPDATE SKIP LOCKED`
//! over the partial claim index (lane, priority DESC, eligible time, creation order), so
//! concurrent claimers never wait on each other and never claim the same row. In the same
//! statement it writes each new lease onto its execution row, opens the attempt (or, for a
//! resumed attempt, reopens it) and appends `lease_acquired` / `lease_reclaimed` events.
//!
//! Claim kinds: a runnable execution whose attempt was interrupted (delay) resumes the same
//! attempt; an active execution whose lease expired or was revoked is reclaimed by a new attempt
//! (its reclaim counter +1); anything else starts a new attempt. The epoch always increases.
//! `ff_claim` takes one worker instance per slot, so claims of several workers (see `coalesce`)
//! share one statement and each slot's lease names its own worker.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ff_core::{
    AttemptId, AttemptIndex, BackendTag, CapabilitySet, ClaimPolicy, EngineError, ExecutionContext, ExecutionId,
    Handle, HandleKind, HandlePayload, LaneId, LeaseEpoch, LeaseId, WorkerInstanceId,
};
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use uuid::Uuid;

use super::position::{ClaimPosition, ClaimPositions, Position};
use crate::error::map_sqlx;
use crate::row::{col, non_negative, u32_col};

/// `$1` lane, `$2` worker capabilities, `$3` one worker instance per slot, `$4` lease TTL ms,
/// `$5` worker id, `$6` wait for the WAL flush before returning, `$7` also return each
/// execution's context, `$8..$10` the claim key to start after and `$11` the lane's claim
/// generation it was reached under (NULLs: the head of the lane).
pub(crate) const CLAIM_BY_LANE_SQL: &str =
    "SELECT * FROM ff_claim($1, $2::text[], $3::text[], $4, $5, NULL, $6, $7, $8, $9, $10, $11)";

/// What to claim, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClaimKey {
    pub lane: LaneId,
    pub capabilities: Vec<String>,
    pub lease_ttl_ms: u64,
    pub worker_id: String,
    pub synchronous: bool,
    pub with_context: bool,
}

/// One claimed execution: its handle and, when asked for, its context.
pub(crate) type Claimed = (Handle, Option<ExecutionContext>);

/// Validates a claim of up to `max` executions and builds its key.
pub(crate) fn key(
    lane: &LaneId,
    capabilities: &CapabilitySet,
    policy: &ClaimPolicy,
    max: usize,
    synchronous: bool,
    with_context: bool,
) -> Result<ClaimKey, EngineError> {
    ff_core::validate_claim(policy, capabilities, max)?;
    Ok(ClaimKey {
        lane: lane.clone(),
        capabilities: capabilities.0.iter().cloned().collect(),
        lease_ttl_ms: policy.lease_ttl_ms,
        worker_id: policy.worker_id.as_str().to_owned(),
        synchronous,
        with_context,
    })
}

/// Claims one execution per entry of `instances`; returns `(slot, claimed)` pairs, slots 1-based.
/// The scan starts after the part of the lane this process has already claimed (`positions`);
/// `ff_claim` fills slots left over from the head of the lane, so a claim never answers "no
/// work" while claimable work lies behind that point.
pub(crate) async fn claim_slots<'e, E>(
    exec: E,
    key: &ClaimKey,
    instances: &[&str],
    positions: &ClaimPositions,
) -> Result<Vec<(usize, Claimed)>, EngineError>
where
    E: Executor<'e, Database = Postgres>,
{
    let start = positions.start(key.lane.as_str(), &key.capabilities);
    claim_pass(exec, key, instances, start, positions).await
}

/// One `ff_claim` statement starting after `start` (or at the head of the lane).
async fn claim_pass<'e, E>(
    exec: E,
    key: &ClaimKey,
    instances: &[&str],
    start: Option<Position>,
    positions: &ClaimPositions,
) -> Result<Vec<(usize, Claimed)>, EngineError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows = sqlx::query(CLAIM_BY_LANE_SQL)
        .bind(key.lane.as_str())
        .bind(&key.capabilities)
        .bind(instances)
        .bind(key.lease_ttl_ms as i64)
        .bind(key.worker_id.as_str())
        .bind(key.synchronous)
        .bind(key.with_context)
        .bind(start.map(|p| p.at.0))
        .bind(start.map(|p| p.at.1))
        .bind(start.map(|p| p.at.2))
        .bind(start.map(|p| p.generation))
        .fetch_all(exec)
        .await
        .map_err(map_sqlx)?;
    let mut span: Option<(ClaimPosition, ClaimPosition, Option<i64>)> = None;
    for r in &rows {
        let at: ClaimPosition = (col(r, "neg_priority")?, col(r, "eligible_at_ms")?, col(r, "seq")?);
        span = Some(match span {
            None => (at, at, col(r, "claim_generation")?),
            Some((first, last, generation)) => (first.min(at), last.max(at), generation),
        });
    }
    // A lane with no row in ff_lane has no generation: its claims always scan from the head.
    if let Some((first, last, Some(generation))) = span {
        positions.claimed(key.lane.as_str(), &key.capabilities, start, first, last, generation);
    }
    rows.iter()
        .map(|r| {
            let slot: i64 = col(r, "slot")?;
            let context = if key.with_context {
                Some(ExecutionContext {
                    input_payload: col(r, "input_payload")?,
                    execution_kind: col(r, "execution_kind")?,
                    tags: crate::execution::read::tags(r)?,
                    trace_context: crate::execution::read::trace_context(r)?,
                })
            } else {
                None
            };
            Ok((non_negative("slot", slot)?, (handle_from_row(r, key.lease_ttl_ms)?, context)))
        })
        .collect()
}

/// Claims up to `max` executions for one worker, long-polling up to `policy.max_wait` when none
/// is available (woken early by `wake` when work arrives on the lane).
pub(crate) async fn claim_lane<'e, E>(
    exec: E,
    key: &ClaimKey,
    policy: &ClaimPolicy,
    max: usize,
    wake: Option<Arc<Notify>>,
    positions: &ClaimPositions,
) -> Result<Vec<Claimed>, EngineError>
where
    E: Executor<'e, Database = Postgres> + Copy,
{
    let instances = vec![policy.worker_instance_id.as_str(); max];
    let mut poll = Poll::new(policy.max_wait, wake);
    loop {
        let armed = poll.arm();
        let got = claim_slots(exec, key, &instances, positions).await?;
        if !got.is_empty() || !poll.wait(armed).await {
            return Ok(got.into_iter().map(|(_, c)| c).collect());
        }
    }
}

/// Long-poll pacing: retry after a lane wakeup, or after pauses growing from 5 ms to 100 ms,
/// until the deadline.
pub(crate) struct Poll {
    deadline: Option<tokio::time::Instant>,
    pause: Duration,
    wake: Option<Arc<Notify>>,
}

/// A wakeup registered before a claim attempt, so that work arriving during the attempt is not
/// missed.
pub(crate) struct Armed(Option<Pin<Box<OwnedNotified>>>);

impl Poll {
    pub(crate) fn new(max_wait: Option<Duration>, wake: Option<Arc<Notify>>) -> Self {
        Self { deadline: max_wait.map(|w| tokio::time::Instant::now() + w), pause: Duration::from_millis(5), wake }
    }

    /// Registers for the next lane wakeup; call before each attempt.
    pub(crate) fn arm(&self) -> Armed {
        Armed(self.wake.clone().map(|n| {
            let mut notified = Box::pin(n.notified_owned());
            notified.as_mut().enable();
            notified
        }))
    }

    /// Waits before the next try; `false` when the wait is over.
    pub(crate) async fn wait(&mut self, armed: Armed) -> bool {
        let Some(deadline) = self.deadline else { return false };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        let sleep = tokio::time::sleep(self.pause.min(deadline - now));
        match armed.0 {
            Some(notified) => {
                tokio::select! {
                    _ = sleep => {}
                    _ = notified => self.pause = Duration::from_millis(5),
                }
            }
            None => sleep.await,
        }
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        true
    }
}

/// Claim of one execution by id: `$1` lease TTL ms, `$2` worker id, `$3` worker instance, `$4`
/// execution id, `$5` what to take over (see [`ById`]).
pub(crate) const CLAIM_BY_ID_SQL: &str =
    "SELECT * FROM ff_claim(NULL, '{}', ARRAY[$3::text], $1, $2, $4, true, false, NULL, NULL, NULL, NULL, $5)";

/// What a claim by id takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ById {
    /// An execution whose lease was lost: a new attempt.
    Reclaim,
    /// A resumed execution waiting for a worker: the same attempt.
    Resumed,
    /// Whatever claim the execution admits (fresh, resumed or reclaimed), with a grant or by an
    /// operator: unless a budget it draws on is exhausted.
    Granted,
}

/// Claims execution `id` for the worker in `policy`, as `what` says; `Ok(None)` when it is not
/// in that state.
pub(crate) async fn claim_one<'e, E>(
    exec: E,
    id: &ExecutionId,
    policy: &ClaimPolicy,
    what: ById,
) -> Result<Option<Handle>, EngineError>
where
    E: Executor<'e, Database = Postgres>,
{
    let row = sqlx::query(CLAIM_BY_ID_SQL)
        .bind(policy.lease_ttl_ms as i64)
        .bind(policy.worker_id.as_str())
        .bind(policy.worker_instance_id.as_str())
        .bind(id.uuid())
        .bind(match what {
            ById::Reclaim => "reclaim",
            ById::Resumed => "resumed",
            ById::Granted => "granted",
        })
        .fetch_optional(exec)
        .await
        .map_err(map_sqlx)?;
    row.map(|r| handle_from_row(&r, policy.lease_ttl_ms)).transpose()
}

fn handle_from_row(row: &PgRow, lease_ttl_ms: u64) -> Result<Handle, EngineError> {
    let partition: i16 = col(row, "partition_key")?;
    let kind = HandleKind::parse(&col::<String>(row, "kind")?)?;
    let payload = HandlePayload {
        execution_id: ExecutionId::from_parts(
            non_negative("partition_key", i64::from(partition))?,
            col::<Uuid>(row, "execution_id")?,
        ),
        attempt_index: AttemptIndex(u32_col(row, "attempt_index")?),
        attempt_id: AttemptId(col(row, "attempt_id")?),
        lease_id: LeaseId(col(row, "lease_id")?),
        lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(row, "lease_epoch")?)?),
        lease_ttl_ms,
        lane_id: LaneId::try_new(col::<String>(row, "lane_id")?)?,
        worker_instance_id: WorkerInstanceId(col(row, "worker_instance_id")?),
    };
    Ok(payload.into_handle(BackendTag::Postgres, kind))
}
