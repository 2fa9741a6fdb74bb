//! The worker registry: which worker instances are alive, what they serve, and until when.
//!
//! A worker instance registers with a liveness TTL and heartbeats within it. When it is marked
//! dead, or its TTL lapses, it leaves the registry and every lease it holds is revoked in the
//! same transaction, so its executions are claimable again at once. Times are the backend's.

use serde::{Deserialize, Serialize};

use crate::capability::CapabilitySet;
use crate::error::EngineError;
use crate::execution::validate_name;
use crate::id::{LaneId, Namespace, TimestampMs, WorkerId, WorkerInstanceId};

/// Shortest liveness TTL a worker may register with.
pub const WORKER_TTL_MIN_MS: u64 = 1_000;
/// Longest liveness TTL a worker may register with (24 h).
pub const WORKER_TTL_MAX_MS: u64 = 24 * 3_600_000;
/// Most lanes one worker registration names.
pub const MAX_WORKER_LANES: usize = 256;
/// Longest reason given when a worker is marked dead, in bytes.
pub const MAX_DEATH_REASON_BYTES: usize = 256;
/// Most workers one `list_workers` page returns.
pub const MAX_WORKER_PAGE: usize = 1_000;
/// Page size of `list_workers` when none is given.
pub const DEFAULT_WORKER_PAGE: usize = 100;

fn validate_ttl(ttl_ms: u64) -> Result<(), EngineError> {
    if !(WORKER_TTL_MIN_MS..=WORKER_TTL_MAX_MS).contains(&ttl_ms) {
        return Err(EngineError::invalid(format!(
            "liveness_ttl_ms {ttl_ms} outside {WORKER_TTL_MIN_MS}..={WORKER_TTL_MAX_MS}"
        )));
    }
    Ok(())
}

/// Arguments of `register_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegisterWorkerArgs {
    /// Worker pool.
    pub worker_id: WorkerId,
    /// This worker process; unique across the registry.
    pub worker_instance_id: WorkerInstanceId,
    /// Lanes it claims from (at most [`MAX_WORKER_LANES`]).
    #[serde(default)]
    pub lanes: Vec<LaneId>,
    /// Capabilities it offers.
    #[serde(default)]
    pub capabilities: CapabilitySet,
    /// How long it counts as alive after each registration or heartbeat
    /// ([`WORKER_TTL_MIN_MS`]..=[`WORKER_TTL_MAX_MS`]).
    pub liveness_ttl_ms: u64,
    /// Namespace it serves (may be empty).
    #[serde(default)]
    pub namespace: Namespace,
}

impl RegisterWorkerArgs {
    /// Checks ids, lanes, capability tokens and the TTL.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.worker_id.validate()?;
        self.worker_instance_id.validate()?;
        validate_name("namespace", self.namespace.as_str(), true)?;
        if self.lanes.len() > MAX_WORKER_LANES {
            return Err(EngineError::invalid(format!(
                "{} lanes exceed the limit of {MAX_WORKER_LANES}",
                self.lanes.len()
            )));
        }
        for lane in &self.lanes {
            LaneId::try_new(lane.as_str())?;
        }
        crate::capability::validate_tokens(&self.capabilities.0)?;
        validate_ttl(self.liveness_ttl_ms)
    }
}

/// Outcome of `register_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RegisterWorkerOutcome {
    /// A new registration (or one whose TTL had lapsed).
    Registered {
        /// When it stops counting as alive without a heartbeat.
        expires_at_ms: TimestampMs,
    },
    /// The instance was registered and alive; its details and TTL were refreshed.
    Refreshed {
        /// When it stops counting as alive without a heartbeat.
        expires_at_ms: TimestampMs,
    },
}

/// Arguments of `heartbeat_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HeartbeatWorkerArgs {
    /// The registered instance.
    pub worker_instance_id: WorkerInstanceId,
    /// The namespace it registered in.
    #[serde(default)]
    pub namespace: Namespace,
}

impl HeartbeatWorkerArgs {
    /// Checks the ids.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.worker_instance_id.validate()?;
        validate_name("namespace", self.namespace.as_str(), true)
    }
}

/// Outcome of `heartbeat_worker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HeartbeatWorkerOutcome {
    /// Alive until `next_expiry_ms`.
    Refreshed {
        /// The new expiry.
        next_expiry_ms: TimestampMs,
    },
    /// Not registered in that namespace (never, marked dead, or its TTL lapsed): register again.
    NotRegistered,
}

/// Arguments of `mark_worker_dead`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MarkWorkerDeadArgs {
    /// The registered instance.
    pub worker_instance_id: WorkerInstanceId,
    /// The namespace it registered in.
    #[serde(default)]
    pub namespace: Namespace,
    /// Why (1..=256 bytes, no control characters); recorded on the revoked executions.
    pub reason: String,
}

impl MarkWorkerDeadArgs {
    /// Checks the ids and the reason.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.worker_instance_id.validate()?;
        validate_name("namespace", self.namespace.as_str(), true)?;
        validate_name("reason", &self.reason, false)?;
        if self.reason.len() > MAX_DEATH_REASON_BYTES {
            return Err(EngineError::invalid(format!("reason exceeds {MAX_DEATH_REASON_BYTES} bytes")));
        }
        Ok(())
    }
}

/// Outcome of `mark_worker_dead`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MarkWorkerDeadOutcome {
    /// Removed from the registry; its leases were revoked.
    Marked {
        /// How many leases it lost.
        revoked_leases: u64,
    },
    /// Not registered in that namespace.
    NotRegistered,
}

/// Arguments of `list_workers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListWorkersArgs {
    /// Only this namespace (`None`: every namespace).
    #[serde(default)]
    pub namespace: Option<Namespace>,
    /// Continue after this instance id (exclusive).
    #[serde(default)]
    pub after: Option<WorkerInstanceId>,
    /// Page size, 1..=[`MAX_WORKER_PAGE`] (default [`DEFAULT_WORKER_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

impl ListWorkersArgs {
    /// Checks the filter and returns the page size.
    pub fn validate(&self) -> Result<usize, EngineError> {
        if let Some(ns) = &self.namespace {
            validate_name("namespace", ns.as_str(), true)?;
        }
        if let Some(after) = &self.after {
            after.validate()?;
        }
        let limit = self.limit.unwrap_or(DEFAULT_WORKER_PAGE);
        if limit == 0 || limit > MAX_WORKER_PAGE {
            return Err(EngineError::invalid(format!("limit {limit} outside 1..={MAX_WORKER_PAGE}")));
        }
        Ok(limit)
    }
}

/// One live worker instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkerInfo {
    /// Worker pool.
    pub worker_id: WorkerId,
    /// Instance.
    pub worker_instance_id: WorkerInstanceId,
    /// Namespace.
    pub namespace: Namespace,
    /// Lanes it claims from.
    pub lanes: Vec<LaneId>,
    /// Capabilities it offers.
    pub capabilities: CapabilitySet,
    /// Its liveness TTL.
    pub liveness_ttl_ms: u64,
    /// When it (last) registered.
    pub registered_at_ms: TimestampMs,
    /// Its last registration or heartbeat.
    pub last_heartbeat_at_ms: TimestampMs,
    /// When it stops counting as alive without a heartbeat.
    pub expires_at_ms: TimestampMs,
}

/// One page of `list_workers`, in instance-id order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListWorkersResult {
    /// Live workers.
    pub entries: Vec<WorkerInfo>,
    /// Pass as `after` for the next page; `None` on the last page.
    pub cursor: Option<WorkerInstanceId>,
}
