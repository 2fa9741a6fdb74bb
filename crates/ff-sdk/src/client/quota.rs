//! Quota policies from the [`Client`]: [`Client::quota_policy`] builds and creates one
//! (`client.quota_policy(id).max_concurrent_per_key(1).rate(100, Duration::from_secs(60))`),
//! and one method per `QuotaBackend` call the API serves, taking the same arguments and
//! returning the same result: limits, status, and admissions outside the claim path.

use std::time::Duration;

use ff_core::wire::{CheckAdmissionRequest, LaneQuotaPolicy, ReleaseAdmissionRequest};
use ff_core::{
    CheckAdmissionArgs, CheckAdmissionResult, CreateQuotaPolicyArgs, CreateQuotaPolicyResult, LaneId, QuotaPolicyId,
    QuotaPolicyLimits, QuotaPolicyStatus, ReleaseAdmissionArgs, ReleaseAdmissionResult, SetLaneQuotaPolicyResult,
};
use reqwest::Method;

use super::{Client, enc};
use crate::error::SdkError;

/// A quota policy under construction, built by [`Client::quota_policy`] and sent by
/// [`QuotaPolicyBuilder::create`]. At least one limit is required.
#[must_use = "a quota policy builder does nothing until `create` is awaited"]
pub struct QuotaPolicyBuilder<'a> {
    client: &'a Client,
    args: CreateQuotaPolicyArgs,
}

impl QuotaPolicyBuilder<'_> {
    /// At most `n` executions of the policy admitted at once.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.args.max_concurrent = Some(n);
        self
    }

    /// At most `n` executions of one concurrency key admitted at once.
    pub fn max_concurrent_per_key(mut self, n: u32) -> Self {
        self.args.max_concurrent_per_key = Some(n);
        self
    }

    /// At most `n` admissions in any window of `window` (whole seconds, rounded up).
    pub fn rate(mut self, n: u32, window: Duration) -> Self {
        let secs = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        self.args.max_requests_per_window = Some(n);
        self.args.window_seconds = Some(u32::try_from(secs).unwrap_or(u32::MAX));
        self
    }

    /// Adds up to `jitter` to a rate-limited waiter's retry time.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.args.jitter_ms = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The arguments this builder sends.
    pub fn args(&self) -> &CreateQuotaPolicyArgs {
        &self.args
    }

    /// Creates the policy: `Created`, or `AlreadySatisfied` when this id has these limits
    /// already (other limits are `quota_policy_already_exists`).
    pub async fn create(self) -> Result<CreateQuotaPolicyResult, SdkError> {
        self.client.create_quota_policy(&self.args).await
    }
}

impl Client {
    /// A builder of the quota policy `quota_policy_id` (caller-minted, so creating it again is
    /// idempotent).
    pub fn quota_policy(&self, quota_policy_id: QuotaPolicyId) -> QuotaPolicyBuilder<'_> {
        QuotaPolicyBuilder { client: self, args: CreateQuotaPolicyArgs::new(quota_policy_id) }
    }

    /// Creates a quota policy; `AlreadySatisfied` when this id has these limits already.
    pub async fn create_quota_policy(&self, args: &CreateQuotaPolicyArgs) -> Result<CreateQuotaPolicyResult, SdkError> {
        self.post("/v1/quota-policies", args).await
    }

    /// The policy's admission limits; `None` when no such policy exists.
    pub async fn read_quota_policy_limits(&self, id: &QuotaPolicyId) -> Result<Option<QuotaPolicyLimits>, SdkError> {
        self.get_optional(&policy_path(id, "/limits")).await
    }

    /// The policy's limits and what it holds now (`not_found` when absent).
    pub async fn get_quota_policy_status(&self, id: &QuotaPolicyId) -> Result<QuotaPolicyStatus, SdkError> {
        Self::json(self.request(Method::GET, &policy_path(id, ""))).await
    }

    /// Admits an execution into the policy outside the claim path; it holds its slot until
    /// [`release_admission`](Self::release_admission). `dimension` names what is admitted.
    pub async fn check_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        dimension: &str,
        args: &CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, SdkError> {
        let body = CheckAdmissionRequest::from_args(dimension, args);
        self.post(&policy_path(quota_policy_id, "/admissions"), &body).await
    }

    /// Gives back a slot taken by an admission; waiting executions are admitted into it.
    pub async fn release_admission(&self, args: &ReleaseAdmissionArgs) -> Result<ReleaseAdmissionResult, SdkError> {
        let body = ReleaseAdmissionRequest::from_args(args);
        self.post(&policy_path(&args.quota_policy_id, "/admissions/release"), &body).await
    }
}

impl Client {
    /// Sets the lane's quota policy (`None` detaches it): executions created on the lane later
    /// without a policy of their own take it. Returns the lane's policy before.
    pub async fn set_lane_quota_policy(
        &self,
        lane: &LaneId,
        quota_policy_id: Option<QuotaPolicyId>,
    ) -> Result<SetLaneQuotaPolicyResult, SdkError> {
        let path = format!("/v1/lanes/{}/quota-policy", enc(lane.as_str()));
        Self::json(self.request(Method::PUT, &path).json(&LaneQuotaPolicy { quota_policy_id })).await
    }

    /// The lane's quota policy, if it has one.
    pub async fn read_lane_quota_policy(&self, lane: &LaneId) -> Result<Option<QuotaPolicyId>, SdkError> {
        let path = format!("/v1/lanes/{}/quota-policy", enc(lane.as_str()));
        let found: LaneQuotaPolicy = Self::json(self.request(Method::GET, &path)).await?;
        Ok(found.quota_policy_id)
    }
}

fn policy_path(id: &QuotaPolicyId, op: &str) -> String {
    format!("/v1/quota-policies/{}{op}", enc(&id.to_string()))
}
