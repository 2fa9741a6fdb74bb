//! Flow cancellation and sibling cancellation on Postgres.
//!
//! `ff_cancel_flow` closes the flow, puts its targeted members in the cancel backlog and (for
//! `cancel_flow`) cancels at once those no other transaction holds; `ff_drain_flow_cancel`
//! works the backlog down, from the waits here and from the flow-cancel reconciler. Sibling
//! cancellation is `ff_cancel_siblings`, run by the resolution itself and by the drain here.

use std::time::Duration;

use crate::db::Db;
use ff_core::*;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::map_sqlx;

/// `$1` flow, `$2` reason, `$3` policy, `$4` cancel the free members now.
pub(crate) const CANCEL_FLOW_SQL: &str =
    "SELECT outcome, policy, reason, targeted, remaining FROM ff_cancel_flow($1, $2, $3, $4)";

/// Drains up to `$1` backlog members (of flow `$2` when given).
pub(crate) const DRAIN_FLOW_CANCEL_SQL: &str = "SELECT ff_drain_flow_cancel($1, $2)";

/// Backlog members of flow `$1`.
pub(crate) const BACKLOG_SQL: &str =
    "SELECT execution_id FROM ff_flow_cancel_member WHERE flow_id = $1 ORDER BY execution_id";

pub(crate) const ACK_SQL: &str = "DELETE FROM ff_flow_cancel_member WHERE flow_id = $1 AND execution_id = $2";

/// Drains the sibling cancellation of group `$1` (locking the group first, as the resolution
/// does), if it is flagged. Returns the ids cancelled and how many siblings still run.
pub(crate) const DRAIN_SIBLINGS_SQL: &str = "\
WITH g AS (SELECT downstream_id, group_state, policy_kind, on_satisfied FROM ff_edge_group
           WHERE downstream_id = $1 AND flow_id = $2 FOR UPDATE)
SELECT ff_cancel_siblings(g.downstream_id,
           CASE WHEN g.group_state = 'satisfied' THEN 'sibling_quorum_satisfied' ELSE 'sibling_quorum_impossible' END)
       AS cancelled,
       (SELECT count(*) FROM ff_edge e JOIN ff_execution x ON x.execution_id = e.upstream_id
        WHERE e.downstream_id = $1 AND e.applied_at_ms IS NOT NULL AND x.lifecycle_phase <> 'terminal') AS remaining
FROM g WHERE g.policy_kind <> 'all_of' AND g.on_satisfied = 'cancel_remaining'
  AND g.group_state IN ('satisfied', 'impossible')";

/// Repairs the flag of group `$1` of flow `$2`: 'stale', 'completed' or 'noop'.
pub(crate) const RECONCILE_SIBLINGS_SQL: &str = "\
WITH g AS (SELECT * FROM ff_edge_group WHERE downstream_id = $1 AND flow_id = $2 AND cancel_siblings_pending FOR UPDATE),
verdict AS (
    SELECT CASE
        WHEN g.policy_kind = 'all_of' OR g.on_satisfied <> 'cancel_remaining' OR g.group_state NOT IN ('satisfied', 'impossible')
            THEN 'stale'
        WHEN NOT EXISTS (SELECT 1 FROM ff_edge e JOIN ff_execution x ON x.execution_id = e.upstream_id
                         WHERE e.downstream_id = $1 AND e.applied_at_ms IS NOT NULL AND x.lifecycle_phase <> 'terminal')
            THEN 'completed'
        ELSE 'noop' END AS action
    FROM g
),
cleared AS (
    UPDATE ff_edge_group SET cancel_siblings_pending = false
    WHERE downstream_id = $1 AND (SELECT action FROM verdict) IN ('stale', 'completed')
)
SELECT coalesce((SELECT action FROM verdict), 'noop')";

/// Groups flagged for sibling cancellation, up to `$1`.
pub(crate) const FLAGGED_GROUPS_SQL: &str =
    "SELECT flow_id, downstream_id FROM ff_edge_group WHERE cancel_siblings_pending ORDER BY downstream_id LIMIT $1";

/// A row of `ff_cancel_flow`: outcome, policy, reason, targeted members, members left.
type FlipRow = (String, Option<String>, Option<String>, Option<Vec<Uuid>>, Option<Vec<Uuid>>);

/// Outcome of the flip: the policy applied, the reason, the members targeted, those left.
struct Flip {
    already: bool,
    policy: Option<CancelFlowPolicy>,
    reason: Option<String>,
    targeted: Vec<Uuid>,
    remaining: Vec<Uuid>,
}

async fn flip(pool: &Db, args: &CancelFlowArgs, cancel_now: bool) -> Result<Flip, EngineError> {
    args.validate()?;
    let (outcome, policy, reason, targeted, remaining): FlipRow = sqlx::query_as(CANCEL_FLOW_SQL)
        .bind(args.flow_id.0)
        .bind(args.reason.as_str())
        .bind(args.cancellation_policy.as_str())
        .bind(cancel_now)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    if outcome == "not_found" {
        return Err(EngineError::NotFound { entity: "flow" });
    }
    Ok(Flip {
        already: outcome == "already",
        policy: policy.as_deref().map(CancelFlowPolicy::parse).transpose()?,
        reason,
        targeted: targeted.unwrap_or_default(),
        remaining: remaining.unwrap_or_default(),
    })
}

fn ids(partition: u16, ids: &[Uuid]) -> Vec<ExecutionId> {
    ids.iter().map(|u| ExecutionId::from_parts(partition, *u)).collect()
}

async fn backlog(pool: &Db, flow: &FlowId) -> Result<Vec<Uuid>, EngineError> {
    sqlx::query_scalar(BACKLOG_SQL).bind(flow.0).fetch_all(pool).await.map_err(map_sqlx)
}

/// `cancel_flow`.
pub(crate) async fn cancel_flow(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &CancelFlowArgs,
    wait: CancelFlowWait,
) -> Result<CancelFlowResult, EngineError> {
    let f = flip(pool, args, true).await?;
    let partition = args.flow_id.partition(cfg);
    let policy = f.policy.unwrap_or(args.cancellation_policy);
    let members = ids(partition, &f.targeted);
    let mut remaining = f.remaining;
    let deadline = match wait {
        CancelFlowWait::NoWait => None,
        CancelFlowWait::WaitTimeout(d) => Some(Instant::now() + d),
        CancelFlowWait::WaitIndefinite => Some(Instant::now() + CANCEL_FLOW_WAIT_CAP),
    };
    if let Some(deadline) = deadline {
        // Members another transaction held: drain the backlog until it is empty or time is up.
        let mut pause = Duration::from_millis(5);
        while !remaining.is_empty() && Instant::now() < deadline {
            sqlx::query_scalar::<_, i32>(DRAIN_FLOW_CANCEL_SQL)
                .bind(i32::try_from(remaining.len()).unwrap_or(i32::MAX))
                .bind(args.flow_id.0)
                .fetch_one(pool)
                .await
                .map_err(map_sqlx)?;
            remaining = backlog(pool, &args.flow_id).await?;
            if !remaining.is_empty() {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        }
    }
    if remaining.is_empty() {
        return Ok(CancelFlowResult::Cancelled { cancellation_policy: policy, member_execution_ids: members });
    }
    if deadline.is_some() {
        return Ok(CancelFlowResult::PartiallyCancelled {
            cancellation_policy: policy,
            member_execution_ids: members,
            failed_member_execution_ids: ids(partition, &remaining),
        });
    }
    Ok(CancelFlowResult::CancellationScheduled {
        cancellation_policy: policy,
        member_count: u32::try_from(members.len()).unwrap_or(u32::MAX),
        member_execution_ids: members,
    })
}

/// `cancel_flow_header`.
pub(crate) async fn cancel_header(
    pool: &Db,
    cfg: &PartitionConfig,
    args: &CancelFlowArgs,
) -> Result<CancelFlowHeader, EngineError> {
    let f = flip(pool, args, false).await?;
    let partition = args.flow_id.partition(cfg);
    if f.already {
        return Ok(CancelFlowHeader::AlreadyTerminal {
            stored_cancellation_policy: f.policy,
            stored_cancel_reason: f.reason,
            member_execution_ids: ids(partition, &f.remaining),
        });
    }
    Ok(CancelFlowHeader::Cancelled {
        cancellation_policy: f.policy.unwrap_or(args.cancellation_policy),
        member_execution_ids: ids(partition, &f.targeted),
    })
}

/// `ack_cancel_member`.
pub(crate) async fn ack(pool: &Db, flow: &FlowId, id: &ExecutionId) -> Result<(), EngineError> {
    sqlx::query(ACK_SQL).bind(flow.0).bind(id.uuid()).execute(pool).await.map_err(map_sqlx)?;
    Ok(())
}

/// `drain_sibling_cancel_group`.
pub(crate) async fn drain_siblings(
    pool: &Db,
    flow: &FlowId,
    downstream: &ExecutionId,
) -> Result<SiblingCancelDrainResult, EngineError> {
    let row: Option<(Vec<Uuid>, i64)> = sqlx::query_as(DRAIN_SIBLINGS_SQL)
        .bind(downstream.uuid())
        .bind(flow.0)
        .fetch_optional(pool)
        .await
        .map_err(map_sqlx)?;
    let Some((cancelled, remaining)) = row else {
        return Ok(SiblingCancelDrainResult::default());
    };
    Ok(SiblingCancelDrainResult {
        cancelled: ids(downstream.partition_index(), &cancelled),
        remaining: remaining.max(0) as u32,
    })
}

/// `reconcile_sibling_cancel_group`.
pub(crate) async fn reconcile_siblings(
    pool: &Db,
    flow: &FlowId,
    downstream: &ExecutionId,
) -> Result<SiblingCancelReconcileAction, EngineError> {
    let action: String = sqlx::query_scalar(RECONCILE_SIBLINGS_SQL)
        .bind(downstream.uuid())
        .bind(flow.0)
        .fetch_one(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(match action.as_str() {
        "completed" => SiblingCancelReconcileAction::CompletedDrain,
        "noop" => SiblingCancelReconcileAction::NoOp,
        _ => SiblingCancelReconcileAction::SremmedStale,
    })
}
