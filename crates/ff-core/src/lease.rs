//! Claiming, renewing and reclaiming leases.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capability::CapabilitySet;
use crate::error::EngineError;

use crate::handle::{Handle, LeaseFence};
use crate::id::{AttemptIndex, ExecutionId, LaneId, LeaseEpoch, TimestampMs, WorkerId, WorkerInstanceId};

/// How a worker claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimPolicy {
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Worker process.
    pub worker_instance_id: WorkerInstanceId,
    /// Lease TTL in ms (10 ms ..= 24 h); renewals extend by the same amount.
    pub lease_ttl_ms: u64,
    /// Wait up to this long for work before returning `None` (`None` = return at once).
    #[serde(default)]
    pub max_wait: Option<Duration>,
}

impl ClaimPolicy {
    /// A policy with no long-poll.
    pub fn new(worker_id: impl Into<String>, worker_instance_id: impl Into<String>, lease_ttl_ms: u64) -> Self {
        Self {
            worker_id: WorkerId::new(worker_id),
            worker_instance_id: WorkerInstanceId::new(worker_instance_id),
            lease_ttl_ms,
            max_wait: None,
        }
    }

    /// Checks the lease TTL, the worker ids and the long-poll bound.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::policy::validate_lease_ttl_ms(self.lease_ttl_ms)?;
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        if let Some(w) = self.max_wait
            && w > MAX_CLAIM_WAIT
        {
            return Err(EngineError::invalid(format!("max_wait {w:?} exceeds {MAX_CLAIM_WAIT:?}")));
        }
        Ok(())
    }
}

/// Checks how many executions one batch call (claim or complete) names: 1..=[`MAX_CLAIM_BATCH`].
pub fn validate_claim_batch(n: usize) -> Result<(), EngineError> {
    if n == 0 || n > MAX_CLAIM_BATCH {
        return Err(EngineError::invalid(format!("batch size {n} outside 1..={MAX_CLAIM_BATCH}")));
    }
    Ok(())
}

/// Every check a claim of up to `max` executions makes before it touches the database: the
/// policy (TTL, long-poll), the capability tokens and the batch size. The backend's claims and
/// the server's complete-and-claim (which must refuse a bad claim before it completes) share it.
pub fn validate_claim(policy: &ClaimPolicy, capabilities: &CapabilitySet, max: usize) -> Result<(), EngineError> {
    policy.validate()?;
    crate::capability::validate_tokens(&capabilities.0)?;
    validate_claim_batch(max)
}

/// Longest long-poll a claim may ask for, in milliseconds.
pub const MAX_CLAIM_WAIT_MS: u64 = 60_000;
/// Longest long-poll a claim may ask for.
pub const MAX_CLAIM_WAIT: Duration = Duration::from_millis(MAX_CLAIM_WAIT_MS);
/// Most executions one batch claim returns.
pub const MAX_CLAIM_BATCH: usize = 1000;

/// A lease plus what its handler needs, from one claim round trip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeasedExecution {
    /// The lease.
    pub handle: Handle,
    /// Kind, input and tags of the claimed execution.
    pub context: crate::execution::ExecutionContext,
}

/// Result of a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeaseRenewal {
    /// New expiry.
    pub expires_at_ms: TimestampMs,
    /// Epoch (unchanged by renewal).
    pub lease_epoch: LeaseEpoch,
}

/// Arguments of `issue_reclaim_grant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssueReclaimGrantArgs {
    /// Execution whose lease expired or was revoked.
    pub execution_id: ExecutionId,
    /// Worker pool that will reclaim it.
    pub worker_id: WorkerId,
    /// Worker process that will reclaim it.
    pub worker_instance_id: WorkerInstanceId,
    /// Lane the worker serves (must be the execution's lane).
    pub lane_id: LaneId,
    /// The worker's capabilities (must cover the execution's requirements).
    pub worker_capabilities: CapabilitySet,
    /// How long the grant stays valid (1 ms ..= 60 s).
    pub grant_ttl_ms: u64,
}

/// Longest grant TTL.
pub const MAX_GRANT_TTL_MS: u64 = 60_000;

impl IssueReclaimGrantArgs {
    /// Checks the grant TTL, the worker ids and the capability tokens.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.grant_ttl_ms == 0 || self.grant_ttl_ms > MAX_GRANT_TTL_MS {
            return Err(EngineError::invalid(format!(
                "grant_ttl_ms {} outside 1..={MAX_GRANT_TTL_MS}",
                self.grant_ttl_ms
            )));
        }
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        crate::capability::validate_tokens(&self.worker_capabilities.0)
    }
}

/// A grant admitting one worker to reclaim one execution until it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReclaimGrant {
    /// Execution.
    pub execution_id: ExecutionId,
    /// Lane.
    pub lane_id: LaneId,
    /// Opaque grant key to present to `reclaim_execution`.
    pub grant_key: String,
    /// Expiry.
    pub expires_at_ms: TimestampMs,
}

/// Outcome of `issue_reclaim_grant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IssueReclaimGrantOutcome {
    /// Granted.
    Granted(ReclaimGrant),
    /// The execution is not reclaimable (lease live, not active, terminal...).
    NotReclaimable {
        /// Execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
    /// The reclaim cap is reached; the execution was failed.
    ReclaimCapExceeded {
        /// Execution.
        execution_id: ExecutionId,
        /// Reclaims so far.
        reclaim_count: u32,
    },
}

/// Arguments of `reclaim_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReclaimExecutionArgs {
    /// Execution.
    pub execution_id: ExecutionId,
    /// Worker pool (must match the grant).
    pub worker_id: WorkerId,
    /// Worker process (must match the grant).
    pub worker_instance_id: WorkerInstanceId,
    /// Lane (must match the grant).
    pub lane_id: LaneId,
    /// The grant key from [`ReclaimGrant`].
    pub grant_key: String,
    /// TTL of the new lease.
    pub lease_ttl_ms: u64,
}

impl ReclaimExecutionArgs {
    /// Checks the lease TTL, the worker ids and that a grant key is present.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::policy::validate_lease_ttl_ms(self.lease_ttl_ms)?;
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        crate::execution::validate_name("grant_key", &self.grant_key, false)
    }
}

/// Outcome of `reclaim_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReclaimExecutionOutcome {
    /// A new attempt holds the lease.
    Claimed {
        /// Handle of kind `Reclaimed`.
        handle: Handle,
        /// New attempt index.
        attempt_index: AttemptIndex,
    },
    /// The execution stopped being reclaimable.
    NotReclaimable {
        /// Execution.
        execution_id: ExecutionId,
        /// Why.
        detail: String,
    },
    /// The reclaim cap was reached; the execution was failed.
    ReclaimCapExceeded {
        /// Execution.
        execution_id: ExecutionId,
        /// Reclaims so far.
        reclaim_count: u32,
    },
    /// No unexpired grant for this worker exists.
    GrantNotFound {
        /// Execution.
        execution_id: ExecutionId,
    },
}

/// Arguments of `renew_lease`: the fence-triple peer of `renew`, for service layers that keep
/// the lease fields rather than a handle. The renewal uses the TTL stored with the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RenewLeaseArgs {
    /// Execution.
    pub execution_id: ExecutionId,
    /// The leased attempt.
    pub attempt_index: AttemptIndex,
    /// The current lease; required (`fence_required` when absent).
    #[serde(default)]
    pub fence: Option<LeaseFence>,
}

impl RenewLeaseArgs {
    /// Checks that a fence is present; returns it.
    pub fn validate(&self) -> Result<LeaseFence, EngineError> {
        self.fence.ok_or_else(|| {
            EngineError::validation(crate::error::ValidationKind::FenceRequired, "renew_lease needs the lease fence")
        })
    }
}

/// Outcome of `renew_lease`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RenewLeaseResult {
    /// The lease runs until `expires_at_ms`.
    Renewed {
        /// New expiry.
        expires_at_ms: TimestampMs,
        /// Epoch (unchanged by renewal).
        lease_epoch: LeaseEpoch,
    },
}
