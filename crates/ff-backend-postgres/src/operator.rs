//! Operator controls on Postgres. Each control is one call of its schema function
//! (`ff_cancel_execution`, `ff_revoke_lease`, `ff_change_priority`, `ff_replay_execution`),
//! which locks the execution row, checks what the operator expected, writes the transition and
//! logs its event in one transaction, or writes nothing and names why; this module maps that
//! name to the typed error. The listing of expired leases is one read over two partial indexes.

use async_trait::async_trait;
use ff_core::backend::OperatorBackend;
use ff_core::*;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::backend::PostgresBackend;
use crate::error::map_sqlx;
use crate::fence::check_id;
use crate::metrics::Metrics;
use crate::row::{col, non_negative, state_vector, u32_col};

/// `$1` id, `$2` partition, `$3` reason, `$4` source, `$5` fenced, `$6..$8` lease id, epoch,
/// attempt id.
pub(crate) const CANCEL_SQL: &str = "SELECT ff_cancel_execution($1, $2, $3, $4, $5, $6, $7, $8) AS outcome";

/// `$1` id, `$2` partition, `$3` expected lease, `$4` expected holder, `$5` reason.
pub(crate) const REVOKE_SQL: &str =
    "SELECT outcome, revoked_lease, revoked_epoch FROM ff_revoke_lease($1, $2, $3, $4, $5)";

/// `$1` id, `$2` partition, `$3` new priority, `$4` expected lane.
pub(crate) const CHANGE_PRIORITY_SQL: &str = "SELECT outcome, old_priority FROM ff_change_priority($1, $2, $3, $4)";

/// `$1` id, `$2` partition, `$3` replay cap when the policy names none.
pub(crate) const REPLAY_SQL: &str = "SELECT outcome, replays, parked FROM ff_replay_execution($1, $2, $3)";

/// The state vector of execution `$1`, read back after a replay.
pub(crate) const REPLAYED_STATE_SQL: &str = "SELECT lifecycle_phase::text AS lifecycle_phase, \
     ownership_state::text AS ownership_state, eligibility_state::text AS eligibility_state, \
     blocking_reason::text AS blocking_reason, terminal_outcome::text AS terminal_outcome, \
     attempt_state::text AS attempt_state FROM ff_execution WHERE execution_id = $1";

/// Expired leases at or before `$1` (NULL = now), after (`$2`, `$3`), of namespace `$5` when
/// given, at most `$4`: live-but-lapsed leases the reconciler has not recorded yet, and recorded
/// ones awaiting reclaim, each read in order from its own partial index.
pub(crate) const LIST_EXPIRED_LEASES_SQL: &str = "\
WITH bound AS (SELECT coalesce($1::bigint, ff_now_ms()) AS as_of)
SELECT * FROM (
    (SELECT x.execution_id, x.partition_key, x.lane_id, x.lease_id, x.lease_epoch, x.worker_instance_id,
            x.lease_expires_at_ms, x.current_attempt_index, x.ownership_state::text AS ownership_state
     FROM ff_execution x, bound b
     WHERE x.ownership_state = 'leased' AND x.lifecycle_phase = 'active' AND x.lease_expires_at_ms <= b.as_of
       AND (x.lease_expires_at_ms, x.execution_id) > ($2::bigint, $3::uuid)
       AND ($5::text IS NULL OR x.namespace = $5)
     ORDER BY x.lease_expires_at_ms, x.execution_id LIMIT $4)
    UNION ALL
    (SELECT x.execution_id, x.partition_key, x.lane_id, x.lease_id, x.lease_epoch, x.worker_instance_id,
            x.lease_expires_at_ms, x.current_attempt_index, x.ownership_state::text AS ownership_state
     FROM ff_execution x, bound b
     WHERE x.ownership_state = 'lease_expired_reclaimable' AND x.lease_expires_at_ms <= b.as_of
       AND (x.lease_expires_at_ms, x.execution_id) > ($2::bigint, $3::uuid)
       AND ($5::text IS NULL OR x.namespace = $5)
     ORDER BY x.lease_expires_at_ms, x.execution_id LIMIT $4)
) u
ORDER BY lease_expires_at_ms, execution_id LIMIT $4";

/// A refusal named by a control function, as the typed error.
fn refusal(outcome: &str) -> EngineError {
    match outcome {
        "not_found" => EngineError::NotFound { entity: "execution" },
        "terminal" => EngineError::State(StateKind::Terminal),
        "not_terminal" => EngineError::State(StateKind::ExecutionNotTerminal),
        "max_replays" => EngineError::State(StateKind::MaxReplaysExhausted),
        "stale_lease" => EngineError::State(StateKind::StaleLease),
        "lease_expired" => EngineError::State(StateKind::LeaseExpired),
        "lease_revoked" => EngineError::State(StateKind::LeaseRevoked),
        "fence_required" => EngineError::validation(
            ValidationKind::FenceRequired,
            "the execution holds a lease: a source other than operator_override must present it",
        ),
        "lane_mismatch" => EngineError::invalid("the execution is not on the given lane"),
        other => EngineError::Internal(format!("unexpected operator outcome {other:?}")),
    }
}

fn expired_lease(row: &PgRow) -> Result<ExpiredLeaseInfo, EngineError> {
    let partition: i16 = col(row, "partition_key")?;
    let partition = u16::try_from(partition)
        .map_err(|_| EngineError::validation(ValidationKind::Corruption, format!("partition_key {partition}")))?;
    Ok(ExpiredLeaseInfo {
        execution_id: ExecutionId::from_parts(partition, col(row, "execution_id")?),
        lane_id: LaneId::try_new(col::<String>(row, "lane_id")?)?,
        lease_id: LeaseId(col(row, "lease_id")?),
        lease_epoch: LeaseEpoch(non_negative("lease_epoch", col::<i64>(row, "lease_epoch")?)?),
        worker_instance_id: WorkerInstanceId(col(row, "worker_instance_id")?),
        expires_at_ms: TimestampMs(col(row, "lease_expires_at_ms")?),
        attempt_index: AttemptIndex(u32_col(row, "current_attempt_index")?),
        ownership_state: OwnershipState::parse(&col::<String>(row, "ownership_state")?)?,
    })
}

#[async_trait]
impl OperatorBackend for PostgresBackend {
    async fn cancel_execution(&self, args: CancelExecutionArgs) -> Result<CancelExecutionResult, EngineError> {
        args.validate()?;
        check_id(&args.execution_id, &self.partitions)?;
        let fence = args.fence.as_ref();
        let outcome: String = sqlx::query_scalar(CANCEL_SQL)
            .bind(args.execution_id.uuid())
            .bind(args.execution_id.partition_index() as i16)
            .bind(args.reason.as_str())
            .bind(args.source.as_str())
            .bind(!args.source.overrides_fence())
            .bind(fence.map(|f| f.lease_id.0))
            .bind(fence.map(|f| f.lease_epoch.0 as i64))
            .bind(fence.map(|f| f.attempt_id.0))
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        match outcome.as_str() {
            "cancelled" => {
                self.announce_events();
                Ok(CancelExecutionResult::Cancelled {
                    execution_id: args.execution_id,
                    public_state: PublicState::Cancelled,
                })
            }
            other => Err(refusal(other)),
        }
    }

    async fn revoke_lease(&self, args: RevokeLeaseArgs) -> Result<RevokeLeaseResult, EngineError> {
        args.validate()?;
        check_id(&args.execution_id, &self.partitions)?;
        let (outcome, lease, epoch): (String, Option<Uuid>, Option<i64>) = sqlx::query_as(REVOKE_SQL)
            .bind(args.execution_id.uuid())
            .bind(args.execution_id.partition_index() as i16)
            .bind(args.expected_lease_id.map(|l| l.0))
            .bind(args.worker_instance_id.as_ref().map(WorkerInstanceId::as_str))
            .bind(args.reason.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let noop = |reason| Ok(RevokeLeaseResult::AlreadySatisfied { reason });
        match (outcome.as_str(), lease, epoch) {
            ("revoked", Some(lease), Some(epoch)) => {
                Metrics::add(&self.metrics.lease_revocations, 1);
                self.announce_events();
                Ok(RevokeLeaseResult::Revoked {
                    lease_id: LeaseId(lease),
                    lease_epoch: LeaseEpoch(non_negative("lease_epoch", epoch)?),
                })
            }
            ("no_active_lease", ..) => noop(RevokeNoopReason::NoActiveLease),
            ("already_revoked", ..) => noop(RevokeNoopReason::AlreadyRevoked),
            ("already_expired", ..) => noop(RevokeNoopReason::AlreadyExpired),
            (other, ..) => Err(refusal(other)),
        }
    }

    async fn change_priority(&self, args: ChangePriorityArgs) -> Result<ChangePriorityResult, EngineError> {
        args.validate()?;
        check_id(&args.execution_id, &self.partitions)?;
        let (outcome, old): (String, Option<i32>) = sqlx::query_as(CHANGE_PRIORITY_SQL)
            .bind(args.execution_id.uuid())
            .bind(args.execution_id.partition_index() as i16)
            .bind(args.new_priority)
            .bind(args.lane_id.as_ref().map(LaneId::as_str))
            .fetch_one(&self.pool)
            .await
            .map_err(map_sqlx)?;
        match (outcome.as_str(), old) {
            ("changed", Some(old_priority)) => {
                self.announce_events();
                Ok(ChangePriorityResult::Changed {
                    execution_id: args.execution_id,
                    old_priority,
                    new_priority: args.new_priority,
                })
            }
            (other, _) => Err(refusal(other)),
        }
    }

    async fn replay_execution(&self, args: ReplayExecutionArgs) -> Result<ReplayExecutionResult, EngineError> {
        check_id(&args.execution_id, &self.partitions)?;
        // One transaction, so the state read back is the replay's own (a flow member that waits
        // again for upstreams that run again is held back), not a later claim's.
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let (outcome, replays, parked): (String, Option<i32>, Option<bool>) = sqlx::query_as(REPLAY_SQL)
            .bind(args.execution_id.uuid())
            .bind(args.execution_id.partition_index() as i16)
            .bind(DEFAULT_MAX_REPLAY_COUNT as i32)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let replay_count = match (outcome.as_str(), replays, parked) {
            ("replayed", Some(n), Some(_)) => non_negative("replay_count", i64::from(n))?,
            (other, ..) => return Err(tx.abandon(refusal(other)).await),
        };
        let row = sqlx::query(REPLAYED_STATE_SQL)
            .bind(args.execution_id.uuid())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        let public_state = derive_public_state(&state_vector(&row)?);
        tx.commit().await.map_err(map_sqlx)?;
        self.announce_events();
        Ok(ReplayExecutionResult::Replayed { public_state, replay_count })
    }

    async fn list_expired_leases(&self, args: ListExpiredLeasesArgs) -> Result<ListExpiredLeasesResult, EngineError> {
        let limit = args.validate()?;
        let (after_at, after_id) = match &args.after {
            Some(c) => (c.expires_at_ms.0, c.execution_id.uuid()),
            None => (i64::MIN, Uuid::nil()),
        };
        let rows = sqlx::query(LIST_EXPIRED_LEASES_SQL)
            .bind(args.as_of.map(|t| t.0))
            .bind(after_at)
            .bind(after_id)
            .bind(limit as i64 + 1)
            .bind(args.namespace.as_ref().map(Namespace::as_str))
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        let more = rows.len() > limit;
        let entries = rows.iter().take(limit).map(expired_lease).collect::<Result<Vec<_>, _>>()?;
        let cursor = if more {
            entries.last().map(|e| ExpiredLeasesCursor { expires_at_ms: e.expires_at_ms, execution_id: e.execution_id })
        } else {
            None
        };
        Ok(ListExpiredLeasesResult { entries, cursor })
    }
}
