//! Suspension: an execution stops and waits for the outside world without holding a worker.
//!
//! The lease holder suspends on one or more waitpoints (fresh ones, or pending ones it created
//! earlier with `create_waitpoint` and handed out), under a [`ResumeCondition`]. The lease is
//! released and the attempt interrupted; outsiders deliver signals to the waitpoints with their
//! [`token`]s; the signal that satisfies the condition makes the execution claimable (after the
//! policy's resume delay) in the same transaction, and the next claim resumes the same attempt,
//! which can read the signals that woke it. Signals are rows, deduplicated by idempotency key
//! within a TTL; a signal for a pending waitpoint is buffered until the suspension activates it
//! (and may satisfy the condition at once: `AlreadySatisfied`, the lease kept). A suspension
//! times out by its [`TimeoutBehavior`].

pub mod condition;
pub mod keystore;
pub mod signal;
pub mod token;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::{validate_message, validate_name};
use crate::id::{ExecutionId, SuspensionId, TimestampMs, WaitpointId};
use crate::state::{BlockingReason, PublicState, TerminalOutcome};

pub use condition::{CompositeCondition, CountKind, ResumeCondition, SignalMatcher};
pub use keystore::*;
pub use signal::*;

/// Most waitpoints one suspension binds.
pub const MAX_WAITPOINTS_PER_SUSPENSION: usize = 64;
/// Largest signal payload, in bytes.
pub const MAX_SIGNAL_PAYLOAD_BYTES: usize = 64 * 1024;
/// Signals one execution may receive unless a delivery sets its own cap.
pub const DEFAULT_MAX_SIGNALS_PER_EXECUTION: u32 = 10_000;
/// How long a signal's idempotency key deduplicates, unless a delivery sets its own TTL.
pub const DEFAULT_SIGNAL_DEDUP_TTL_MS: u64 = 24 * 3600 * 1000;
/// Longest resume delay or waitpoint lifetime accepted (7 days).
pub const MAX_SUSPENSION_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;

/// One waitpoint a suspension waits on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitpointBinding {
    /// A new waitpoint, created by the suspension.
    Fresh {
        /// Its id.
        waitpoint_id: WaitpointId,
        /// Its key, which conditions name.
        waitpoint_key: String,
    },
    /// A pending waitpoint this attempt created earlier; signals buffered on it count at once.
    UsePending {
        /// Its id.
        waitpoint_id: WaitpointId,
    },
}

impl WaitpointBinding {
    /// A fresh waitpoint with a new id.
    pub fn fresh(key: impl Into<String>) -> Self {
        Self::Fresh { waitpoint_id: WaitpointId::new(), waitpoint_key: key.into() }
    }

    /// The waitpoint's id.
    pub fn waitpoint_id(&self) -> WaitpointId {
        match self {
            Self::Fresh { waitpoint_id, .. } | Self::UsePending { waitpoint_id } => *waitpoint_id,
        }
    }
}

/// What happens when a suspension times out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutBehavior {
    /// The execution fails.
    #[default]
    Fail,
    /// The execution is cancelled.
    Cancel,
    /// The execution expires.
    Expire,
    /// The execution resumes with a `timeout` signal it can read.
    AutoResumeWithTimeoutSignal,
    /// The execution stays suspended, paused for an operator.
    Escalate,
}

impl TimeoutBehavior {
    /// The terminal outcome it ends the execution with, if it ends it.
    pub fn outcome(&self) -> Option<TerminalOutcome> {
        match self {
            Self::Fail => Some(TerminalOutcome::Failed),
            Self::Cancel => Some(TerminalOutcome::Cancelled),
            Self::Expire => Some(TerminalOutcome::Expired),
            Self::AutoResumeWithTimeoutSignal | Self::Escalate => None,
        }
    }

    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Cancel => "cancel",
            Self::Expire => "expire",
            Self::AutoResumeWithTimeoutSignal => "auto_resume_with_timeout_signal",
            Self::Escalate => "escalate",
        }
    }
}

/// Why an execution is suspended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionReasonCode {
    /// Any signal.
    #[default]
    WaitingForSignal,
    /// A person's approval.
    WaitingForApproval,
    /// An external system's callback.
    WaitingForCallback,
    /// A tool's result.
    WaitingForToolResult,
    /// An operator's review.
    WaitingForOperatorReview,
    /// A policy paused it.
    PausedByPolicy,
    /// A budget paused it.
    PausedByBudget,
    /// A step boundary the handler chose.
    StepBoundary,
    /// A manual pause.
    ManualPause,
}

impl SuspensionReasonCode {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::WaitingForSignal => "waiting_for_signal",
            Self::WaitingForApproval => "waiting_for_approval",
            Self::WaitingForCallback => "waiting_for_callback",
            Self::WaitingForToolResult => "waiting_for_tool_result",
            Self::WaitingForOperatorReview => "waiting_for_operator_review",
            Self::PausedByPolicy => "paused_by_policy",
            Self::PausedByBudget => "paused_by_budget",
            Self::StepBoundary => "step_boundary",
            Self::ManualPause => "manual_pause",
        }
    }

    /// The blocking reason a suspension with this code shows.
    pub fn blocking_reason(&self) -> BlockingReason {
        match self {
            Self::WaitingForSignal | Self::StepBoundary => BlockingReason::WaitingForSignal,
            Self::WaitingForApproval => BlockingReason::WaitingForApproval,
            Self::WaitingForCallback => BlockingReason::WaitingForCallback,
            Self::WaitingForToolResult => BlockingReason::WaitingForToolResult,
            Self::WaitingForOperatorReview | Self::ManualPause => BlockingReason::PausedByOperator,
            Self::PausedByPolicy | Self::PausedByBudget => BlockingReason::PausedByPolicy,
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        [
            Self::WaitingForSignal,
            Self::WaitingForApproval,
            Self::WaitingForCallback,
            Self::WaitingForToolResult,
            Self::WaitingForOperatorReview,
            Self::PausedByPolicy,
            Self::PausedByBudget,
            Self::StepBoundary,
            Self::ManualPause,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| {
            EngineError::validation(crate::error::ValidationKind::Corruption, format!("unknown reason code {s:?}"))
        })
    }
}

/// How a satisfied suspension resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResumePolicy {
    /// Claimable this long after the condition is satisfied (0: at once).
    #[serde(default)]
    pub resume_delay_ms: u64,
    /// Close the suspension's waitpoints on resume (later signals to them are refused).
    #[serde(default = "yes")]
    pub close_waitpoint_on_resume: bool,
}

fn yes() -> bool {
    true
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self { resume_delay_ms: 0, close_waitpoint_on_resume: true }
    }
}

/// Arguments of `suspend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SuspendArgs {
    /// The suspension's id (minted when absent).
    #[serde(default)]
    #[schemars(transform = minted_when_absent)]
    pub suspension_id: SuspensionId,
    /// The waitpoints it waits on; the first is the primary one.
    pub waitpoints: Vec<WaitpointBinding>,
    /// When it resumes.
    pub resume_condition: ResumeCondition,
    /// How it resumes.
    #[serde(default)]
    pub resume_policy: ResumePolicy,
    /// Why.
    #[serde(default)]
    pub reason_code: SuspensionReasonCode,
    /// When it times out (never when absent, except that `TimeoutOnly` needs one).
    #[serde(default)]
    pub timeout_at: Option<TimestampMs>,
    /// What its timeout does.
    #[serde(default)]
    pub timeout_behavior: TimeoutBehavior,
    /// A second `suspend` with the same key returns the first outcome.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// JSON Schema transform: a default that is minted afresh each time is no default to document.
fn minted_when_absent(schema: &mut schemars::Schema) {
    schema.remove("default");
}

impl SuspendArgs {
    /// A suspension on one fresh waitpoint `key`, resumed by a signal named `signal_name`.
    pub fn for_signal(key: impl Into<String>, signal_name: impl Into<String>) -> Self {
        let key = key.into();
        Self {
            suspension_id: SuspensionId::new(),
            waitpoints: vec![WaitpointBinding::fresh(key.clone())],
            resume_condition: ResumeCondition::single(key, signal_name),
            resume_policy: ResumePolicy::default(),
            reason_code: SuspensionReasonCode::WaitingForSignal,
            timeout_at: None,
            timeout_behavior: TimeoutBehavior::Fail,
            idempotency_key: None,
        }
    }

    /// Checks what needs no database: the condition, the bindings (at least one unless the
    /// condition waits only for an operator or the timeout, at most
    /// [`MAX_WAITPOINTS_PER_SUSPENSION`], distinct ids and fresh keys), a timeout when the
    /// condition is `TimeoutOnly`, the resume delay, the idempotency key.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.resume_condition.validate()?;
        let signal_free = matches!(self.resume_condition, ResumeCondition::OperatorOnly | ResumeCondition::TimeoutOnly);
        if self.waitpoints.is_empty() && !signal_free {
            return Err(EngineError::invalid("a suspension resumed by signals needs at least one waitpoint"));
        }
        if self.waitpoints.len() > MAX_WAITPOINTS_PER_SUSPENSION {
            return Err(EngineError::invalid(format!(
                "{} waitpoints exceed the {MAX_WAITPOINTS_PER_SUSPENSION} one suspension may bind",
                self.waitpoints.len()
            )));
        }
        let mut ids = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for w in &self.waitpoints {
            if !ids.insert(w.waitpoint_id()) {
                return Err(EngineError::invalid(format!("waitpoint {} is bound twice", w.waitpoint_id())));
            }
            if let WaitpointBinding::Fresh { waitpoint_key, .. } = w {
                validate_name("waitpoint_key", waitpoint_key, false)?;
                if !keys.insert(waitpoint_key.as_str()) {
                    return Err(EngineError::invalid(format!("waitpoint key {waitpoint_key:?} is bound twice")));
                }
            }
        }
        if matches!(self.resume_condition, ResumeCondition::TimeoutOnly) && self.timeout_at.is_none() {
            return Err(EngineError::invalid("a timeout_only condition needs timeout_at"));
        }
        if let Some(t) = self.timeout_at {
            t.validate("timeout_at")?;
        }
        if self.resume_policy.resume_delay_ms > MAX_SUSPENSION_DELAY_MS {
            return Err(EngineError::invalid(format!("resume_delay_ms exceeds {MAX_SUSPENSION_DELAY_MS}")));
        }
        if let Some(k) = &self.idempotency_key {
            validate_name("idempotency_key", k, false)?;
        }
        Ok(())
    }
}

/// One waitpoint of a suspension, with its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WaitpointTokenInfo {
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Its key.
    pub waitpoint_key: String,
    /// Its token (`<kid>:<hex>`), to hand to whoever will signal it.
    pub waitpoint_token: String,
}

/// What a suspension created or activated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SuspendOutcomeDetails {
    /// The suspension.
    pub suspension_id: SuspensionId,
    /// Its waitpoints, the primary one first.
    pub waitpoints: Vec<WaitpointTokenInfo>,
}

/// Outcome of `suspend`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SuspendOutcome {
    /// The execution is suspended; its lease is released.
    Suspended {
        /// The suspension.
        details: SuspendOutcomeDetails,
    },
    /// Signals already buffered on its pending waitpoints satisfy the condition: nothing was
    /// suspended and the lease is kept.
    AlreadySatisfied {
        /// The suspension that was not needed.
        details: SuspendOutcomeDetails,
    },
}

/// A waitpoint minted while holding the lease, before suspending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PendingWaitpoint {
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Its key.
    pub waitpoint_key: String,
    /// Its token.
    pub hmac_token: String,
    /// When it expires unless a suspension activates it.
    pub expires_at: TimestampMs,
}

/// Where a waitpoint is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitpointState {
    /// Created, not yet bound to a suspension; signals are buffered.
    Pending,
    /// Bound to the current suspension.
    Active,
    /// Closed: resumed, expired or cancelled; signals are refused.
    Closed,
}

impl WaitpointState {
    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "closed" => Ok(Self::Closed),
            other => Err(EngineError::validation(
                crate::error::ValidationKind::Corruption,
                format!("unknown waitpoint state {other:?}"),
            )),
        }
    }
}

/// Arguments of `list_pending_waitpoints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListPendingWaitpointsArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Waitpoints after this id.
    #[serde(default)]
    pub after: Option<WaitpointId>,
    /// Page size, 1..=1000 (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// One open waitpoint, as listed: never its token, only the key id and a fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PendingWaitpointInfo {
    /// The waitpoint.
    pub waitpoint_id: WaitpointId,
    /// Its key.
    pub waitpoint_key: String,
    /// Pending or active.
    pub state: WaitpointState,
    /// Signal names the current condition accepts on it (empty: any).
    pub required_signal_names: Vec<String>,
    /// When created.
    pub created_at: TimestampMs,
    /// When a suspension activated it.
    pub activated_at: Option<TimestampMs>,
    /// When it expires.
    pub expires_at: Option<TimestampMs>,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The key that signed its token.
    pub token_kid: String,
    /// The first 16 hex digits of the token's SHA-256.
    pub token_fingerprint: String,
}

/// One page of `list_pending_waitpoints`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListPendingWaitpointsResult {
    /// The waitpoints, by id.
    pub entries: Vec<PendingWaitpointInfo>,
    /// Pass as `after` for the next page.
    pub next_cursor: Option<WaitpointId>,
}

/// Arguments of `resume_execution`: an operator (or an automation) resumes a suspended
/// execution whatever its condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResumeExecutionArgs {
    /// The execution.
    pub execution_id: ExecutionId,
    /// What triggered it, recorded (e.g. `operator`).
    #[serde(default = "operator")]
    pub trigger_type: String,
    /// Claimable this long after (0: at once).
    #[serde(default)]
    pub resume_delay_ms: u64,
}

fn operator() -> String {
    "operator".into()
}

impl ResumeExecutionArgs {
    /// Checks the trigger and the delay.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_message("trigger_type", &self.trigger_type)?;
        if self.resume_delay_ms > MAX_SUSPENSION_DELAY_MS {
            return Err(EngineError::invalid(format!("resume_delay_ms exceeds {MAX_SUSPENSION_DELAY_MS}")));
        }
        Ok(())
    }
}

/// Outcome of `resume_execution`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ResumeExecutionResult {
    /// Resumed: `waiting`, or `delayed` with a resume delay.
    Resumed {
        /// Its state now.
        public_state: PublicState,
    },
}

/// One suspended execution, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SuspendedExecutionEntry {
    /// The execution.
    pub execution_id: ExecutionId,
    /// When it suspended.
    pub suspended_at: TimestampMs,
    /// Why.
    pub reason: SuspensionReasonCode,
    /// When it times out.
    pub timeout_at: Option<TimestampMs>,
}

/// One page of `list_suspended`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListSuspendedPage {
    /// By suspension time, then id.
    pub entries: Vec<SuspendedExecutionEntry>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<ExecutionId>,
}

/// Arguments of `claim_resumed_execution`: claim one resumed execution's attempt by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClaimResumedExecutionArgs {
    /// The execution (resumed, waiting for a worker).
    pub execution_id: ExecutionId,
    /// Who claims it, and the lease TTL.
    pub policy: crate::lease::ClaimPolicy,
}

/// Outcome of `claim_resumed_execution`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimResumedExecutionResult {
    /// The same attempt, under a new lease (a `Resumed` handle).
    Claimed {
        /// The lease.
        handle: crate::handle::Handle,
    },
}

/// A grant to claim one resumed attempt: it names the attempt, so it is void once the
/// execution moved on (claimed by someone else, or ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResumeToken {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The suspended attempt the grant resumes.
    pub attempt_index: crate::id::AttemptIndex,
    /// Who claims it, and the lease TTL.
    pub policy: crate::lease::ClaimPolicy,
}
