//! Execution policies: retry with backoff, lease TTL, attempt timeout, execution deadline,
//! reclaim cap and capability routing.
//!
//! A policy is frozen onto the execution when it is created; backends read it from storage when
//! deciding a retry, never from the worker that reports the failure. Every bound is validated
//! here so that absurd values never reach storage.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};

/// Shortest lease a worker may ask for.
pub const LEASE_TTL_MIN_MS: u64 = 10;
/// Longest lease a worker may ask for (24 hours).
pub const LEASE_TTL_MAX_MS: u64 = 86_400_000;
/// Longest attempt timeout (7 days).
pub const ATTEMPT_TIMEOUT_MAX_MS: u64 = 7 * 86_400_000;
/// Longest single backoff delay (7 days).
pub const BACKOFF_MAX_MS: u64 = 7 * 86_400_000;
/// Most retries a policy may allow.
pub const MAX_RETRIES_LIMIT: u32 = 10_000;
/// Longest relative execution deadline (366 days).
pub const EXECUTION_DEADLINE_MAX_MS: u64 = 366 * 86_400_000;
/// Largest backoff multiplier.
pub const BACKOFF_MULTIPLIER_MAX: f64 = 100.0;
/// Default cap on lease reclaims per execution.
pub const DEFAULT_MAX_RECLAIM_COUNT: u32 = 100;
/// Replay cap when the policy names none.
pub const DEFAULT_MAX_REPLAY_COUNT: u32 = 10;
/// Highest priority; priorities are 0..=9000, higher first.
pub const PRIORITY_MAX: i32 = 9000;
/// Most capability tokens an execution may require or a worker may offer.
pub const MAX_CAPABILITIES: usize = 256;

/// Validates a lease TTL in milliseconds.
pub fn validate_lease_ttl_ms(ttl_ms: u64) -> Result<u64, EngineError> {
    if !(LEASE_TTL_MIN_MS..=LEASE_TTL_MAX_MS).contains(&ttl_ms) {
        return Err(EngineError::invalid(format!(
            "lease_ttl_ms {ttl_ms} outside {LEASE_TTL_MIN_MS}..={LEASE_TTL_MAX_MS}"
        )));
    }
    Ok(ttl_ms)
}

/// Validates a priority (0..=9000).
pub fn validate_priority(priority: i32) -> Result<i32, EngineError> {
    if !(0..=PRIORITY_MAX).contains(&priority) {
        return Err(EngineError::validation(
            crate::error::ValidationKind::PriorityOutOfRange,
            format!("priority {priority} outside 0..={PRIORITY_MAX}"),
        ));
    }
    Ok(priority)
}

/// Everything frozen onto an execution at creation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionPolicy {
    /// Retries after a failed attempt; `None` = no retries.
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
    /// Attempt timeout and relative execution deadline.
    #[serde(default)]
    pub timeout_policy: Option<TimeoutPolicy>,
    /// How many times an expired lease may be reclaimed before the execution fails.
    #[serde(default)]
    #[schemars(range(max = MAX_RETRIES_LIMIT))]
    pub max_reclaim_count: Option<u32>,
    /// How many times an operator may replay the execution once it is terminal (default 10).
    #[serde(default)]
    #[schemars(range(max = MAX_RETRIES_LIMIT))]
    pub max_replay_count: Option<u32>,
    /// Capabilities a worker needs to claim this execution.
    #[serde(default)]
    pub routing_requirements: Option<RoutingRequirements>,
    /// Budgets the execution draws on (at most [`MAX_BUDGETS_PER_EXECUTION`], no repeats): while
    /// any of them is exhausted in strict mode, the execution is not claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budget_ids: Vec<crate::id::BudgetId>,
    /// The quota policy that admits the execution (rate per window, concurrency, concurrency per
    /// key): it becomes claimable only within the policy's limits. Without one, the execution
    /// takes its lane's policy, if the lane has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_policy_id: Option<crate::id::QuotaPolicyId>,
    /// The execution's concurrency key (a customer, a tenant...): its quota policy's
    /// `max_concurrent_per_key` bounds how many executions of one key run at once. Needs a
    /// quota policy, its own or its lane's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_CONCURRENCY_KEY_BYTES))]
    pub concurrency_key: Option<String>,
}

/// Most budgets one execution may draw on.
pub const MAX_BUDGETS_PER_EXECUTION: usize = 16;
/// Longest concurrency key, in bytes.
pub const MAX_CONCURRENCY_KEY_BYTES: usize = 256;

impl ExecutionPolicy {
    /// Validates every field.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(r) = &self.retry_policy {
            r.validate()?;
        }
        if let Some(t) = &self.timeout_policy {
            t.validate()?;
        }
        if let Some(rc) = &self.routing_requirements {
            crate::capability::validate_tokens(&rc.required_capabilities)?;
        }
        if let Some(n) = self.max_reclaim_count
            && n > MAX_RETRIES_LIMIT
        {
            return Err(policy_err(format!("max_reclaim_count {n} exceeds {MAX_RETRIES_LIMIT}")));
        }
        if let Some(n) = self.max_replay_count
            && n > MAX_RETRIES_LIMIT
        {
            return Err(policy_err(format!("max_replay_count {n} exceeds {MAX_RETRIES_LIMIT}")));
        }
        if self.budget_ids.len() > MAX_BUDGETS_PER_EXECUTION {
            return Err(policy_err(format!("{} budget_ids exceed {MAX_BUDGETS_PER_EXECUTION}", self.budget_ids.len())));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.budget_ids.iter().find(|b| !seen.insert(**b)) {
            return Err(policy_err(format!("budget {dup} is listed twice")));
        }
        if let Some(key) = &self.concurrency_key {
            crate::execution::validate_name("concurrency_key", key, false)?;
            if key.len() > MAX_CONCURRENCY_KEY_BYTES {
                return Err(policy_err(format!(
                    "concurrency_key of {} bytes exceeds {MAX_CONCURRENCY_KEY_BYTES}",
                    key.len()
                )));
            }
        }
        Ok(())
    }

    /// Effective replay cap.
    pub fn replay_cap(&self) -> u32 {
        self.max_replay_count.unwrap_or(DEFAULT_MAX_REPLAY_COUNT)
    }

    /// Effective reclaim cap.
    pub fn reclaim_cap(&self) -> u32 {
        self.max_reclaim_count.unwrap_or(DEFAULT_MAX_RECLAIM_COUNT)
    }

    /// Effective retry count (0 without a retry policy).
    pub fn max_retries(&self) -> u32 {
        self.retry_policy.as_ref().map_or(0, |r| r.max_retries)
    }

    /// Required capabilities (empty = any worker).
    pub fn required_capabilities(&self) -> Vec<String> {
        self.routing_requirements
            .as_ref()
            .map(|r| r.required_capabilities.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn policy_err(detail: String) -> EngineError {
    EngineError::validation(ValidationKind::InvalidPolicyJson, detail)
}

/// Capability routing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingRequirements {
    /// Every token here must be offered by the claiming worker.
    #[serde(default)]
    #[schemars(
        length(max = MAX_CAPABILITIES),
        inner(
            length(min = 1, max = crate::capability::CAPABILITY_TOKEN_MAX_BYTES),
            pattern(crate::capability::CAPABILITY_TOKEN_PATTERN)
        )
    )]
    pub required_capabilities: BTreeSet<String>,
}

/// How many times a failed execution is retried and how long it waits in between.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = fail on first failure).
    #[schemars(range(max = MAX_RETRIES_LIMIT))]
    pub max_retries: u32,
    /// Wait before each retry.
    pub backoff: BackoffPolicy,
}

impl RetryPolicy {
    /// Validates bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.max_retries > MAX_RETRIES_LIMIT {
            return Err(policy_err(format!("max_retries {} exceeds {MAX_RETRIES_LIMIT}", self.max_retries)));
        }
        self.backoff.validate()
    }

    /// Backoff before retry number `retry_count` (0 for the first retry). `jitter_sample` is a
    /// uniform random number in `[0, 1)`; it only matters for exponential backoff with jitter,
    /// which draws the delay uniformly from `[delay/2, delay]`.
    pub fn delay_for(&self, retry_count: u32, jitter_sample: f64) -> Duration {
        Duration::from_millis(self.backoff.delay_ms(retry_count, jitter_sample))
    }
}

/// Backoff shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BackoffPolicy {
    /// The same delay before every retry.
    Fixed {
        /// Delay in milliseconds.
        #[schemars(range(max = BACKOFF_MAX_MS))]
        delay_ms: u64,
    },
    /// `min(initial_delay_ms * multiplier^retry, max_delay_ms)`, optionally jittered.
    Exponential {
        /// First delay (at most `max_delay_ms`).
        #[schemars(range(max = BACKOFF_MAX_MS))]
        initial_delay_ms: u64,
        /// Ceiling.
        #[schemars(range(max = BACKOFF_MAX_MS))]
        max_delay_ms: u64,
        /// Growth factor.
        #[schemars(range(min = 1.0, max = BACKOFF_MULTIPLIER_MAX))]
        multiplier: f64,
        /// Draw the delay uniformly from `[delay/2, delay]`.
        #[serde(default)]
        jitter: bool,
    },
}

impl BackoffPolicy {
    /// Validates bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        match *self {
            Self::Fixed { delay_ms } if delay_ms > BACKOFF_MAX_MS => {
                Err(policy_err(format!("backoff delay_ms {delay_ms} exceeds {BACKOFF_MAX_MS}")))
            }
            Self::Fixed { .. } => Ok(()),
            Self::Exponential { initial_delay_ms, max_delay_ms, multiplier, .. } => {
                if max_delay_ms > BACKOFF_MAX_MS {
                    return Err(policy_err(format!("backoff max_delay_ms {max_delay_ms} exceeds {BACKOFF_MAX_MS}")));
                }
                if initial_delay_ms > max_delay_ms {
                    return Err(policy_err(format!(
                        "backoff initial_delay_ms {initial_delay_ms} exceeds max_delay_ms {max_delay_ms}"
                    )));
                }
                if !multiplier.is_finite() || !(1.0..=BACKOFF_MULTIPLIER_MAX).contains(&multiplier) {
                    return Err(policy_err(format!(
                        "backoff multiplier {multiplier} outside 1..={BACKOFF_MULTIPLIER_MAX}"
                    )));
                }
                Ok(())
            }
        }
    }

    /// Delay in ms before retry number `retry_count`; see [`RetryPolicy::delay_for`].
    pub fn delay_ms(&self, retry_count: u32, jitter_sample: f64) -> u64 {
        match *self {
            Self::Fixed { delay_ms } => delay_ms,
            Self::Exponential { initial_delay_ms, max_delay_ms, multiplier, jitter } => {
                let raw = initial_delay_ms as f64 * multiplier.powi(retry_count.min(1024) as i32);
                let capped = raw.min(max_delay_ms as f64);
                let delay = if jitter {
                    let s = jitter_sample.clamp(0.0, 1.0);
                    capped / 2.0 + capped / 2.0 * s
                } else {
                    capped
                };
                delay.round() as u64
            }
        }
    }
}

/// Time limits on attempts and on the execution as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutPolicy {
    /// An attempt running longer than this expires the execution.
    #[serde(default)]
    #[schemars(range(min = 1, max = ATTEMPT_TIMEOUT_MAX_MS))]
    pub attempt_timeout_ms: Option<u64>,
    /// The execution expires this long after creation (an absolute `execution_deadline_at` on the
    /// create arguments takes precedence).
    #[serde(default)]
    #[schemars(range(min = 1, max = EXECUTION_DEADLINE_MAX_MS))]
    pub execution_deadline_ms: Option<u64>,
}

impl TimeoutPolicy {
    /// Validates bounds.
    pub fn validate(&self) -> Result<(), EngineError> {
        if let Some(t) = self.attempt_timeout_ms
            && (t == 0 || t > ATTEMPT_TIMEOUT_MAX_MS)
        {
            return Err(policy_err(format!("attempt_timeout_ms {t} outside 1..={ATTEMPT_TIMEOUT_MAX_MS}")));
        }
        if let Some(t) = self.execution_deadline_ms
            && (t == 0 || t > EXECUTION_DEADLINE_MAX_MS)
        {
            return Err(policy_err(format!("execution_deadline_ms {t} outside 1..={EXECUTION_DEADLINE_MAX_MS}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_table() {
        let fixed = BackoffPolicy::Fixed { delay_ms: 500 };
        let exp =
            BackoffPolicy::Exponential { initial_delay_ms: 100, max_delay_ms: 1000, multiplier: 2.0, jitter: false };
        let jit =
            BackoffPolicy::Exponential { initial_delay_ms: 100, max_delay_ms: 1000, multiplier: 2.0, jitter: true };
        let cases: &[(&BackoffPolicy, u32, f64, u64)] = &[
            (&fixed, 0, 0.5, 500),
            (&fixed, 9, 0.5, 500),
            (&exp, 0, 0.0, 100),
            (&exp, 1, 0.0, 200),
            (&exp, 3, 0.0, 800),
            (&exp, 4, 0.0, 1000),
            (&exp, 4000, 0.0, 1000),
            (&jit, 2, 0.0, 200),
            (&jit, 2, 1.0, 400),
            (&jit, 2, 0.5, 300),
            (&jit, 10, 0.999_999, 1000),
        ];
        for (p, n, s, want) in cases {
            assert_eq!(p.delay_ms(*n, *s), *want, "{p:?} retry {n} sample {s}");
        }
    }

    #[test]
    fn invalid_policies_rejected() {
        let bad = [
            ExecutionPolicy {
                retry_policy: Some(RetryPolicy {
                    max_retries: 1_000_000,
                    backoff: BackoffPolicy::Fixed { delay_ms: 1 },
                }),
                ..Default::default()
            },
            ExecutionPolicy {
                retry_policy: Some(RetryPolicy {
                    max_retries: 1,
                    backoff: BackoffPolicy::Fixed { delay_ms: u64::MAX },
                }),
                ..Default::default()
            },
            ExecutionPolicy {
                retry_policy: Some(RetryPolicy {
                    max_retries: 1,
                    backoff: BackoffPolicy::Exponential {
                        initial_delay_ms: 10,
                        max_delay_ms: 5,
                        multiplier: 2.0,
                        jitter: false,
                    },
                }),
                ..Default::default()
            },
            ExecutionPolicy {
                retry_policy: Some(RetryPolicy {
                    max_retries: 1,
                    backoff: BackoffPolicy::Exponential {
                        initial_delay_ms: 1,
                        max_delay_ms: 5,
                        multiplier: f64::NAN,
                        jitter: false,
                    },
                }),
                ..Default::default()
            },
            ExecutionPolicy {
                timeout_policy: Some(TimeoutPolicy { attempt_timeout_ms: Some(0), execution_deadline_ms: None }),
                ..Default::default()
            },
            ExecutionPolicy {
                timeout_policy: Some(TimeoutPolicy { attempt_timeout_ms: Some(u64::MAX), execution_deadline_ms: None }),
                ..Default::default()
            },
        ];
        for p in bad {
            assert_eq!(p.validate().unwrap_err().code(), "invalid_policy", "{p:?}");
        }
        assert!(ExecutionPolicy::default().validate().is_ok());
    }

    #[test]
    fn lease_ttl_and_priority_bounds() {
        assert!(validate_lease_ttl_ms(0).is_err());
        assert!(validate_lease_ttl_ms(LEASE_TTL_MAX_MS + 1).is_err());
        assert!(validate_lease_ttl_ms(30_000).is_ok());
        assert!(validate_priority(-1).is_err());
        assert!(validate_priority(9001).is_err());
        assert!(validate_priority(0).is_ok());
    }

    #[test]
    fn policy_json_rejects_unknown_fields() {
        let err = serde_json::from_str::<ExecutionPolicy>(r#"{"retry_polcy": null}"#);
        assert!(err.is_err());
    }
}
