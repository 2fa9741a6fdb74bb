//! Quota policies: creating them, reading their limits and state, admissions outside the claim
//! path, and the counter reconciliation.

use async_trait::async_trait;

use crate::admission::ReconcileCounts;
use crate::admission::quota::*;
use crate::error::EngineError;
use crate::id::{LaneId, QuotaPolicyId};
use crate::partition::Partition;

/// Quota policies and admission.
#[async_trait]
pub trait QuotaBackend: Send + Sync {
    /// Creates a policy; the same id with the same limits again is `AlreadySatisfied`, with
    /// other limits `quota_policy_already_exists`.
    async fn create_quota_policy(&self, args: CreateQuotaPolicyArgs) -> Result<CreateQuotaPolicyResult, EngineError>;

    /// The policy's admission limits; `None` when no such policy exists.
    async fn read_quota_policy_limits(&self, id: &QuotaPolicyId) -> Result<Option<QuotaPolicyLimits>, EngineError>;

    /// The policy's limits and what it holds now (`not_found` when absent).
    async fn get_quota_policy_status(&self, id: &QuotaPolicyId) -> Result<QuotaPolicyStatus, EngineError>;

    /// Sets the policy of a lane: executions created on it later without a policy of their own
    /// are attached to it (`not_found` for an unknown policy). Executions already created keep
    /// what they had.
    async fn set_lane_quota_policy(
        &self,
        args: SetLaneQuotaPolicyArgs,
    ) -> Result<SetLaneQuotaPolicyResult, EngineError>;

    /// The lane's policy, if it has one.
    async fn read_lane_quota_policy(&self, lane: &LaneId) -> Result<Option<QuotaPolicyId>, EngineError>;

    /// Admits an execution into the policy outside the claim path: it holds a concurrency slot
    /// (and counts against the rate) until `release_admission`, or until the rate window ends
    /// when the policy has one. `dimension` names what is admitted, for the caller's records.
    async fn check_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        dimension: &str,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError>;

    /// Gives back a slot taken by `check_admission`; waiting executions are admitted into it.
    async fn release_admission(&self, args: ReleaseAdmissionArgs) -> Result<ReleaseAdmissionResult, EngineError>;

    /// Recounts the slots of every policy in `partition` (a quota partition) from the
    /// executions and admissions that hold them, drops lapsed admissions and window entries,
    /// and admits waiters where there is room. A backstop: the counters are kept exact by the
    /// transactions that take and release slots.
    async fn reconcile_quota_counters(&self, partition: Partition) -> Result<ReconcileCounts, EngineError>;
}
