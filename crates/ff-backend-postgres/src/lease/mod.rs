//! Leases: claims (single through the group committer, batched, with context), renewal,
//! progress, lease expiry and reclaim grants. The [`LeaseBackend`] impl validates input and
//! delegates to the module that owns each statement.

pub(crate) mod claim;
pub(crate) mod expiry;
pub(crate) mod position;
pub(crate) mod reclaim;
pub(crate) mod renew;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use ff_core::backend::LeaseBackend;
use ff_core::*;

use crate::backend::PostgresBackend;
use crate::coalesce::ClaimGroups;
use crate::fence::check_id;
use crate::metrics::Metrics;
use crate::wakeup::LaneWakeups;

impl PostgresBackend {
    /// One claim through the group committer (concurrent single claims share a statement),
    /// long-polling per the policy.
    async fn claim_one(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        with_context: bool,
    ) -> Result<Option<claim::Claimed>, EngineError> {
        let key =
            claim::key(lane, capabilities, &policy, 1, self.synchronous_claims.load(Ordering::Relaxed), with_context)?;
        self.note_claimer(lane, capabilities).await?;
        let groups = self.claims.get_or_init(|| ClaimGroups::start(self.pool.clone(), self.positions.clone()));
        let mut poll = claim::Poll::new(policy.max_wait, self.lane_wakeup(lane, policy.max_wait));
        loop {
            let armed = poll.arm();
            if let Some(c) = groups.claim(key.clone(), policy.worker_instance_id.clone()).await? {
                Metrics::add(&self.metrics.claims, 1);
                self.announce_events();
                return Ok(Some(c));
            }
            if !poll.wait(armed).await {
                return Ok(None);
            }
        }
    }

    /// Up to `max` claims in one statement for one worker, long-polling per the policy.
    async fn claim_many(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
        with_context: bool,
    ) -> Result<Vec<claim::Claimed>, EngineError> {
        let key = claim::key(
            lane,
            capabilities,
            &policy,
            max,
            self.synchronous_claims.load(Ordering::Relaxed),
            with_context,
        )?;
        self.note_claimer(lane, capabilities).await?;
        let wake = self.lane_wakeup(lane, policy.max_wait);
        let claimed = claim::claim_lane(&self.pool, &key, &policy, max, wake, &self.positions).await?;
        Metrics::add(&self.metrics.claims, claimed.len() as u64);
        if !claimed.is_empty() {
            self.announce_events();
        }
        Ok(claimed)
    }

    /// The lane's wakeup when `max_wait` asks for a long-poll (starts the listener on first use).
    fn lane_wakeup(&self, lane: &LaneId, max_wait: Option<Duration>) -> Option<Arc<tokio::sync::Notify>> {
        max_wait?;
        Some(self.wakeups.get_or_init(|| LaneWakeups::start(self.pool.clone(), self.feeds.clone())).lane(lane.as_str()))
    }
}

#[async_trait]
impl LeaseBackend for PostgresBackend {
    async fn claim(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
    ) -> Result<Option<Handle>, EngineError> {
        Ok(self.claim_one(lane, capabilities, policy, false).await?.map(|(h, _)| h))
    }

    async fn claim_batch(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<Handle>, EngineError> {
        Ok(self.claim_many(lane, capabilities, policy, max, false).await?.into_iter().map(|(h, _)| h).collect())
    }

    async fn claim_with_context(
        &self,
        lane: &LaneId,
        capabilities: &CapabilitySet,
        policy: ClaimPolicy,
        max: usize,
    ) -> Result<Vec<LeasedExecution>, EngineError> {
        let claimed = if max == 1 {
            self.claim_one(lane, capabilities, policy, true).await?.into_iter().collect()
        } else {
            self.claim_many(lane, capabilities, policy, max, true).await?
        };
        claimed
            .into_iter()
            .map(|(handle, context)| {
                let context = context.ok_or_else(|| EngineError::Internal("claim returned no context".into()))?;
                Ok(LeasedExecution { handle, context })
            })
            .collect()
    }

    async fn renew(&self, handle: &Handle) -> Result<LeaseRenewal, EngineError> {
        let p = self.decode(handle)?;
        match renew::renew(&self.pool, &p).await? {
            Some(r) => Ok(r),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn renew_lease(&self, args: RenewLeaseArgs) -> Result<RenewLeaseResult, EngineError> {
        let fence = args.validate()?;
        let p = self.resolve_fence(&args.execution_id, args.attempt_index, Some(&fence)).await?;
        match renew::renew(&self.pool, &p).await? {
            Some(r) => Ok(RenewLeaseResult::Renewed { expires_at_ms: r.expires_at_ms, lease_epoch: r.lease_epoch }),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn progress(&self, handle: &Handle, percent: Option<u8>, message: Option<String>) -> Result<(), EngineError> {
        let p = self.decode(handle)?;
        if let Some(pct) = percent
            && pct > 100
        {
            return Err(EngineError::invalid(format!("progress percent {pct} exceeds 100")));
        }
        if let Some(m) = &message {
            ff_core::execution::validate_message("progress message", m)?;
        }
        match renew::progress(&self.pool, &p, percent, message.as_deref()).await? {
            Some(()) => Ok(()),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn issue_reclaim_grant(&self, args: IssueReclaimGrantArgs) -> Result<IssueReclaimGrantOutcome, EngineError> {
        check_id(&args.execution_id, &self.partitions)?;
        reclaim::issue_reclaim_grant(&self.pool, &args).await
    }

    async fn reclaim_execution(&self, args: ReclaimExecutionArgs) -> Result<ReclaimExecutionOutcome, EngineError> {
        check_id(&args.execution_id, &self.partitions)?;
        let out = reclaim::reclaim_execution(&self.pool, &args).await?;
        if matches!(out, ReclaimExecutionOutcome::Claimed { .. }) {
            Metrics::add(&self.metrics.claims, 1);
            self.announce_events();
        }
        Ok(out)
    }
}

/// The refusal of a call naming `lane` for an execution that is on `actual`.
pub(crate) fn wrong_lane(id: &ExecutionId, actual: &str, lane: &LaneId) -> EngineError {
    EngineError::invalid(format!("execution {id} is on lane {actual:?}, not {:?}", lane.as_str()))
}
