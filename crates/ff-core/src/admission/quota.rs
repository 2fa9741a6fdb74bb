//! Quota policies: rate and concurrency limits on the executions attached to them.
//!
//! A policy may limit (each optional, never zero):
//! - the rate: at most `max_requests_per_window` admissions in any sliding window of
//!   `window_seconds`;
//! - concurrency: at most `max_concurrent` executions admitted at once (eligible, running, or
//!   holding a lost lease that will be reclaimed);
//! - concurrency per key: at most `max_concurrent_per_key` of one `concurrency_key`.
//!
//! Admission happens when an execution becomes claimable (created, promoted, retried, resumed,
//! released by its dependencies, replayed, unblocked). One that does not fit waits outside the
//! claimable set, so claims never walk it; the slot it needs is handed to it by the transaction
//! that releases one (a completion, a failure, a cancellation, an expiry, a suspension), and
//! rate-limited waiters are admitted when the window moves on. Waiters of one key never hold
//! back waiters of another: each key queues separately for its own slots.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::id::{ExecutionId, QuotaPolicyId, TimestampMs};

/// Longest rate window, in seconds (one day).
pub const MAX_QUOTA_WINDOW_SECONDS: u32 = 86_400;
/// Largest rate, concurrency or per-key cap.
pub const MAX_QUOTA_CAP: u32 = 1_000_000;
/// Largest admission jitter, in milliseconds.
pub const MAX_QUOTA_JITTER_MS: u64 = 60_000;

/// Arguments of `create_quota_policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQuotaPolicyArgs {
    /// The policy's id (caller-minted, so creation is idempotent).
    pub quota_policy_id: QuotaPolicyId,
    /// Length of the rate window, in seconds; set together with `max_requests_per_window`.
    #[serde(default)]
    pub window_seconds: Option<u32>,
    /// Most admissions in any window of `window_seconds`.
    #[serde(default)]
    pub max_requests_per_window: Option<u32>,
    /// Most executions admitted at once.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Most executions of one concurrency key admitted at once.
    #[serde(default)]
    pub max_concurrent_per_key: Option<u32>,
    /// Extra delay added to a rate-limited waiter's retry time, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
}

impl CreateQuotaPolicyArgs {
    /// A policy limiting nothing yet (add limits with the fields).
    pub fn new(quota_policy_id: QuotaPolicyId) -> Self {
        Self {
            quota_policy_id,
            window_seconds: None,
            max_requests_per_window: None,
            max_concurrent: None,
            max_concurrent_per_key: None,
            jitter_ms: 0,
        }
    }

    /// Checks every limit: none is zero, the rate and its window come together, at least one
    /// limit is set, everything is within bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |detail: String| EngineError::validation(ValidationKind::InvalidQuotaSpec, detail);
        for (name, cap) in [
            ("max_requests_per_window", self.max_requests_per_window),
            ("max_concurrent", self.max_concurrent),
            ("max_concurrent_per_key", self.max_concurrent_per_key),
        ] {
            match cap {
                Some(0) => return Err(bad(format!("{name} of 0 would admit nothing; omit it for no limit"))),
                Some(n) if n > MAX_QUOTA_CAP => return Err(bad(format!("{name} {n} exceeds {MAX_QUOTA_CAP}"))),
                _ => {}
            }
        }
        match (self.window_seconds, self.max_requests_per_window) {
            (Some(0), _) => return Err(bad("window_seconds of 0".into())),
            (Some(w), _) if w > MAX_QUOTA_WINDOW_SECONDS => {
                return Err(bad(format!("window_seconds {w} exceeds {MAX_QUOTA_WINDOW_SECONDS}")));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad("window_seconds and max_requests_per_window come together".into()));
            }
            _ => {}
        }
        if self.jitter_ms > MAX_QUOTA_JITTER_MS {
            return Err(bad(format!("jitter_ms {} exceeds {MAX_QUOTA_JITTER_MS}", self.jitter_ms)));
        }
        if self.max_requests_per_window.is_none()
            && self.max_concurrent.is_none()
            && self.max_concurrent_per_key.is_none()
        {
            return Err(bad("a quota policy needs a rate, a concurrency cap or a per-key cap".into()));
        }
        Ok(())
    }
}

/// Outcome of `create_quota_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateQuotaPolicyResult {
    /// Created now.
    Created,
    /// A policy with this id and these limits exists already.
    AlreadySatisfied,
}

/// The admission limits of a policy, as `read_quota_policy_limits` returns them (0 = no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QuotaPolicyLimits {
    /// Most admissions per window (0 = no rate limit).
    pub max_requests_per_window: u32,
    /// The window, in seconds (0 = no rate limit).
    pub requests_per_window_seconds: u32,
    /// Most executions admitted at once (0 = no cap).
    pub active_concurrency_cap: u32,
    /// Most executions of one concurrency key admitted at once (0 = no cap).
    pub max_concurrent_per_key: u32,
    /// Jitter added to rate-limited retry times, in milliseconds.
    pub jitter_ms: u64,
}

/// A policy's limits and what it currently holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QuotaPolicyStatus {
    /// The policy.
    pub quota_policy_id: QuotaPolicyId,
    /// Its limits.
    pub limits: QuotaPolicyLimits,
    /// Executions (and explicit admissions) holding a concurrency slot now.
    pub active: u32,
    /// Admissions within the current rate window.
    pub requests_in_window: u32,
    /// Executions waiting for admission.
    pub waiting: u64,
    /// The most slots any one concurrency key holds now.
    pub busiest_key_active: u32,
    /// When rate-limited waiters may next be admitted.
    pub next_admission_at: Option<TimestampMs>,
    /// Creation time.
    pub created_at: TimestampMs,
}

/// Arguments of `check_admission`: admits an execution into a policy outside the claim path (a
/// service layer gating its own call). The policy's stored limits apply; a limit given here
/// can only tighten them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckAdmissionArgs {
    /// The execution being admitted (its admission is held until released).
    pub execution_id: ExecutionId,
    /// A tighter rate window, in seconds.
    #[serde(default)]
    pub window_seconds: Option<u32>,
    /// A tighter rate limit.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// A tighter concurrency cap.
    #[serde(default)]
    pub concurrency_cap: Option<u32>,
    /// Jitter for the retry time, in milliseconds.
    #[serde(default)]
    pub jitter_ms: Option<u64>,
}

impl CheckAdmissionArgs {
    /// Checks the overrides the way policy limits are checked.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |detail: String| EngineError::validation(ValidationKind::InvalidQuotaSpec, detail);
        for (name, v) in [
            ("window_seconds", self.window_seconds),
            ("rate_limit", self.rate_limit),
            ("concurrency_cap", self.concurrency_cap),
        ] {
            if v == Some(0) {
                return Err(bad(format!("{name} of 0")));
            }
        }
        if self.window_seconds.is_some_and(|w| w > MAX_QUOTA_WINDOW_SECONDS) {
            return Err(bad(format!("window_seconds exceeds {MAX_QUOTA_WINDOW_SECONDS}")));
        }
        if self.jitter_ms.is_some_and(|j| j > MAX_QUOTA_JITTER_MS) {
            return Err(bad(format!("jitter_ms exceeds {MAX_QUOTA_JITTER_MS}")));
        }
        Ok(())
    }
}

/// Outcome of `check_admission`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckAdmissionResult {
    /// Admitted now; release it with `release_admission`.
    Admitted,
    /// This execution holds an admission already.
    AlreadyAdmitted,
    /// The rate window is full.
    RateExceeded {
        /// When to try again, in milliseconds from now.
        retry_after_ms: u64,
    },
    /// The concurrency cap is reached.
    ConcurrencyExceeded,
}

/// Arguments of `release_admission`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseAdmissionArgs {
    /// The policy.
    pub quota_policy_id: QuotaPolicyId,
    /// The execution admitted by `check_admission`.
    pub execution_id: ExecutionId,
}

/// Outcome of `release_admission` (idempotent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseAdmissionResult {
    /// Its slot was given back.
    Released,
    /// It held no admission (never admitted, released already, or expired).
    NotHeld,
}

/// Arguments of `set_lane_quota_policy`: executions created on the lane from now on without a
/// quota policy of their own are attached to this one (`None` detaches the lane).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLaneQuotaPolicyArgs {
    /// The lane.
    pub lane_id: crate::id::LaneId,
    /// Its policy, or `None` for none.
    #[serde(default)]
    pub quota_policy_id: Option<QuotaPolicyId>,
}

/// Outcome of `set_lane_quota_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetLaneQuotaPolicyResult {
    /// The lane's policy before.
    pub previous: Option<QuotaPolicyId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> CreateQuotaPolicyArgs {
        CreateQuotaPolicyArgs::new(QuotaPolicyId::new())
    }

    #[test]
    fn a_policy_must_limit_something_and_never_to_zero() {
        let cases: Vec<(CreateQuotaPolicyArgs, bool)> = vec![
            (args(), false),
            (CreateQuotaPolicyArgs { max_concurrent: Some(0), ..args() }, false),
            (CreateQuotaPolicyArgs { max_concurrent_per_key: Some(0), ..args() }, false),
            (CreateQuotaPolicyArgs { max_concurrent: Some(5), ..args() }, true),
            (CreateQuotaPolicyArgs { max_concurrent_per_key: Some(2), ..args() }, true),
            (CreateQuotaPolicyArgs { max_requests_per_window: Some(10), ..args() }, false),
            (CreateQuotaPolicyArgs { window_seconds: Some(60), ..args() }, false),
            (CreateQuotaPolicyArgs { window_seconds: Some(60), max_requests_per_window: Some(10), ..args() }, true),
            (CreateQuotaPolicyArgs { window_seconds: Some(0), max_requests_per_window: Some(10), ..args() }, false),
            (CreateQuotaPolicyArgs { max_concurrent: Some(MAX_QUOTA_CAP + 1), ..args() }, false),
            (CreateQuotaPolicyArgs { max_concurrent: Some(1), jitter_ms: MAX_QUOTA_JITTER_MS + 1, ..args() }, false),
        ];
        for (a, ok) in cases {
            let r = a.validate();
            assert_eq!(r.is_ok(), ok, "{a:?}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.code(), "invalid_quota_spec");
            }
        }
    }
}
