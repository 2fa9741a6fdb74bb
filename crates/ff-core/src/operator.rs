//! Operator controls: acting on executions without holding their lease. Cancel any
//! non-terminal execution, take a lease away from its holder, change a priority, run a terminal
//! execution again, and list the leases that expired.
//!
//! Every control is one transaction that also appends its event to the event log, and every
//! refusal is a typed error that writes nothing: unknown execution (`not_found`), a terminal
//! execution where a live one is needed (`terminal`), a live one where a terminal one is needed
//! (`execution_not_terminal`), a lease other than the one expected (`stale_lease`), a priority
//! out of range (`priority_out_of_range`), the replay cap reached (`max_replays_exhausted`).

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::{validate_message, validate_name};
use crate::handle::LeaseFence;
use crate::id::{AttemptIndex, ExecutionId, LaneId, LeaseEpoch, LeaseId, Namespace, TimestampMs, WorkerInstanceId};
use crate::state::{OwnershipState, PublicState};

/// Who asks for a cancellation (or, for the fence-triple peers of `complete` and `fail`, who
/// ends the attempt). Only `operator_override` may act without presenting the lease fence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelSource {
    /// An operator; needs no lease fence.
    #[default]
    OperatorOverride,
    /// The lease holder; must present the current lease fence while the execution is leased.
    LeaseHolder,
    /// A flow cancellation reaching this member.
    FlowCascade,
    /// A timeout enforced by the system.
    SystemTimeout,
}

impl CancelSource {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OperatorOverride => "operator_override",
            Self::LeaseHolder => "lease_holder",
            Self::FlowCascade => "flow_cascade",
            Self::SystemTimeout => "system_timeout",
        }
    }

    /// True when the caller may act without the lease fence.
    pub fn overrides_fence(&self) -> bool {
        matches!(self, Self::OperatorOverride)
    }
}

/// Arguments of `cancel_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelExecutionArgs {
    /// Execution to cancel (any non-terminal state).
    pub execution_id: ExecutionId,
    /// Why (free text, at most 16 KiB); recorded as the execution's blocking detail.
    pub reason: String,
    /// Who cancels. Anyone but `operator_override` must present `fence` while the execution
    /// holds a lease (`fence_required`), and it must be the current lease (`stale_lease`).
    #[serde(default)]
    pub source: CancelSource,
    /// The current lease, when the source is not `operator_override`.
    #[serde(default)]
    pub fence: Option<LeaseFence>,
}

impl CancelExecutionArgs {
    /// An operator cancellation.
    pub fn new(execution_id: ExecutionId, reason: impl Into<String>) -> Self {
        Self { execution_id, reason: reason.into(), source: CancelSource::OperatorOverride, fence: None }
    }

    /// Checks the reason.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_message("reason", &self.reason)
    }
}

/// Outcome of `cancel_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CancelExecutionResult {
    /// The execution is terminal `cancelled`; a lease it held is gone, and the holder's next
    /// call is refused with `execution_not_active`.
    Cancelled {
        /// Execution.
        execution_id: ExecutionId,
        /// Its state now (`cancelled`).
        public_state: PublicState,
    },
}

/// Arguments of `revoke_lease`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RevokeLeaseArgs {
    /// Execution whose lease to revoke.
    pub execution_id: ExecutionId,
    /// Revoke only this lease; another current lease is `stale_lease`.
    #[serde(default)]
    pub expected_lease_id: Option<LeaseId>,
    /// Revoke only a lease held by this worker instance; another holder is `stale_lease`.
    #[serde(default)]
    pub worker_instance_id: Option<WorkerInstanceId>,
    /// Why (free text, at most 16 KiB); recorded as the execution's blocking detail.
    pub reason: String,
}

impl RevokeLeaseArgs {
    /// Revokes whatever lease the execution holds.
    pub fn new(execution_id: ExecutionId, reason: impl Into<String>) -> Self {
        Self { execution_id, expected_lease_id: None, worker_instance_id: None, reason: reason.into() }
    }

    /// Checks the reason and the worker instance id.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(w) = &self.worker_instance_id {
            w.validate()?;
        }
        validate_message("reason", &self.reason)
    }
}

/// Why a revocation had nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeNoopReason {
    /// The execution is waiting (or delayed): nobody holds a lease.
    NoActiveLease,
    /// The lease was already revoked; the execution awaits reclaim.
    AlreadyRevoked,
    /// The lease already expired; the execution awaits reclaim.
    AlreadyExpired,
}

/// Outcome of `revoke_lease`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RevokeLeaseResult {
    /// The lease is revoked: the execution is reclaimable at once (or failed, when its reclaim
    /// cap was reached), and the holder's next call is refused with `lease_revoked`.
    Revoked {
        /// The revoked lease.
        lease_id: LeaseId,
        /// Its epoch.
        lease_epoch: LeaseEpoch,
    },
    /// There was no live lease to revoke; nothing was written.
    AlreadySatisfied {
        /// Why.
        reason: RevokeNoopReason,
    },
}

/// Arguments of `change_priority`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangePriorityArgs {
    /// Execution (any non-terminal state; the new priority applies to its next claim).
    pub execution_id: ExecutionId,
    /// New priority, 0..=9000 (higher is claimed first).
    #[schemars(range(min = 0, max = crate::policy::PRIORITY_MAX))]
    pub new_priority: i32,
    /// When given, the execution's lane must be this one (`invalid_input` otherwise).
    #[serde(default)]
    pub lane_id: Option<LaneId>,
}

impl ChangePriorityArgs {
    /// Checks the priority range.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::policy::validate_priority(self.new_priority).map(|_| ())
    }
}

/// Outcome of `change_priority`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChangePriorityResult {
    /// The priority is changed.
    Changed {
        /// Execution.
        execution_id: ExecutionId,
        /// Priority before.
        old_priority: i32,
        /// Priority now.
        new_priority: i32,
    },
}

/// Arguments of `replay_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplayExecutionArgs {
    /// A terminal execution.
    pub execution_id: ExecutionId,
}

/// Outcome of `replay_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReplayExecutionResult {
    /// The execution is runnable again; its next claim starts a new attempt with its retry and
    /// reclaim counts reset, its result and execution deadline cleared.
    Replayed {
        /// Its state now (`waiting`).
        public_state: PublicState,
        /// Replays so far, this one included.
        replay_count: u32,
    },
}

/// Default page size of `list_expired_leases`.
pub const DEFAULT_EXPIRED_LEASES_PAGE: usize = 1_000;
/// Largest page of `list_expired_leases`.
pub const MAX_EXPIRED_LEASES_PAGE: usize = 10_000;

/// Where a page of `list_expired_leases` resumes: after this (expiry, execution) pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpiredLeasesCursor {
    /// Expiry of the last entry returned.
    pub expires_at_ms: TimestampMs,
    /// Execution of the last entry returned.
    pub execution_id: ExecutionId,
}

/// Arguments of `list_expired_leases`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListExpiredLeasesArgs {
    /// Leases that expired at or before this time (default: the backend's now).
    #[serde(default)]
    pub as_of: Option<TimestampMs>,
    /// Resume after this entry.
    #[serde(default)]
    pub after: Option<ExpiredLeasesCursor>,
    /// Page size (default 1,000, at most 10,000).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_EXPIRED_LEASES_PAGE))]
    pub limit: Option<usize>,
    /// Only executions of this namespace.
    #[serde(default)]
    pub namespace: Option<Namespace>,
}

impl ListExpiredLeasesArgs {
    /// Checks the page size, the time and the namespace; returns the effective page size.
    pub fn validate(&self) -> Result<usize, EngineError> {
        if let Some(t) = self.as_of {
            t.validate("as_of")?;
        }
        if let Some(c) = &self.after {
            c.expires_at_ms.validate("after.expires_at_ms")?;
        }
        if let Some(ns) = &self.namespace {
            validate_name("namespace", ns.as_str(), true)?;
        }
        let limit = self.limit.unwrap_or(DEFAULT_EXPIRED_LEASES_PAGE);
        if limit == 0 || limit > MAX_EXPIRED_LEASES_PAGE {
            return Err(EngineError::invalid(format!("limit {limit} outside 1..={MAX_EXPIRED_LEASES_PAGE}")));
        }
        Ok(limit)
    }
}

/// One expired lease: the execution is still active, no attempt holds it, and it waits to be
/// reclaimed (or for the lease-expiry reconciler, when its expiry is not yet recorded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpiredLeaseInfo {
    /// Execution.
    pub execution_id: ExecutionId,
    /// Lane.
    pub lane_id: LaneId,
    /// The expired lease.
    pub lease_id: LeaseId,
    /// Its epoch.
    pub lease_epoch: LeaseEpoch,
    /// Its last holder.
    pub worker_instance_id: WorkerInstanceId,
    /// When it expired.
    pub expires_at_ms: TimestampMs,
    /// The attempt it belonged to.
    pub attempt_index: AttemptIndex,
    /// `leased` (expired, not yet recorded) or `lease_expired_reclaimable`.
    pub ownership_state: OwnershipState,
}

/// One page of `list_expired_leases`, by expiry then execution id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListExpiredLeasesResult {
    /// Entries.
    pub entries: Vec<ExpiredLeaseInfo>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub cursor: Option<ExpiredLeasesCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ExecutionId {
        ExecutionId::in_partition(0)
    }

    #[test]
    fn validation_codes() {
        let mut cancel = CancelExecutionArgs::new(id(), "stop");
        assert!(cancel.validate().is_ok());
        cancel.reason = "a\0b".into();
        assert_eq!(cancel.validate().unwrap_err().code(), "nul_in_text");

        let prio = |p| ChangePriorityArgs { execution_id: id(), new_priority: p, lane_id: None };
        assert!(prio(0).validate().is_ok());
        assert!(prio(9000).validate().is_ok());
        assert_eq!(prio(9001).validate().unwrap_err().code(), "priority_out_of_range");
        assert_eq!(prio(-1).validate().unwrap_err().code(), "priority_out_of_range");

        let mut revoke = RevokeLeaseArgs::new(id(), "hung");
        revoke.worker_instance_id = Some(WorkerInstanceId::new(""));
        assert_eq!(revoke.validate().unwrap_err().code(), "invalid_input");

        let list = |limit| ListExpiredLeasesArgs { limit, ..Default::default() };
        assert_eq!(list(None).validate().unwrap(), DEFAULT_EXPIRED_LEASES_PAGE);
        assert_eq!(list(Some(MAX_EXPIRED_LEASES_PAGE)).validate().unwrap(), MAX_EXPIRED_LEASES_PAGE);
        assert!(list(Some(0)).validate().is_err());
        assert!(list(Some(MAX_EXPIRED_LEASES_PAGE + 1)).validate().is_err());
    }

    #[test]
    fn only_the_operator_overrides_the_fence() {
        assert!(CancelSource::OperatorOverride.overrides_fence());
        for s in [CancelSource::LeaseHolder, CancelSource::FlowCascade, CancelSource::SystemTimeout] {
            assert!(!s.overrides_fence(), "{s:?}");
        }
        assert_eq!(CancelSource::default(), CancelSource::OperatorOverride);
    }
}
