//! The engine's error taxonomy.
//!
//! Every backend maps its failures onto [`EngineError`]; the HTTP layer maps each case onto one
//! status and a stable code. Cases are semantic: validation (the caller's input, with a kind),
//! not found, conflict (permanent), contention (transient, retry), state (a legal but surprising
//! state, such as a stale lease), transport (the database or network).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{AttemptId, LeaseEpoch};
use crate::state::{LifecyclePhase, TerminalOutcome};

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The addressed record does not exist.
    #[error("not found: {entity}")]
    NotFound {
        /// Which kind of record: `execution`, `attempt`, `lane`, `grant`...
        entity: &'static str,
    },
    /// The caller's input was rejected (or, as `Corruption`, stored data could not be decoded).
    #[error("{}: {detail}", kind.code())]
    Validation {
        /// What was wrong.
        kind: ValidationKind,
        /// Human-readable detail naming the offending value.
        detail: String,
    },
    /// A transient race: re-read and retry.
    #[error("contention: {0}")]
    Contention(ContentionKind),
    /// A permanent conflict with an existing record.
    #[error("conflict: {0}")]
    Conflict(ConflictKind),
    /// A legal but surprising state (stale lease, expired lease...).
    #[error("state: {}", .0.code())]
    State(StateKind),
    /// The backend could not be reached or failed in transit.
    #[error("transport error ({backend}): {source}")]
    Transport {
        /// Backend label, e.g. `postgres`.
        backend: &'static str,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A backend resource ceiling (connection pool) was hit.
    #[error("resource exhausted: {pool} (max {max})")]
    ResourceExhausted {
        /// Which resource.
        pool: &'static str,
        /// Its ceiling.
        max: u32,
    },
    /// An internal invariant was broken; this is a bug in the engine.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Shorthand for `Validation { kind: InvalidInput, detail }`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Validation { kind: ValidationKind::InvalidInput, detail: detail.into() }
    }

    /// Shorthand for a validation error of a given kind.
    pub fn validation(kind: ValidationKind, detail: impl Into<String>) -> Self {
        Self::Validation { kind, detail: detail.into() }
    }

    /// True when retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Contention(_) | Self::ResourceExhausted { .. } | Self::Transport { .. })
    }

    /// Stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Validation { kind, .. } => kind.code(),
            Self::Contention(k) => k.code(),
            Self::Conflict(k) => k.code(),
            Self::State(k) => k.code(),
            Self::Transport { .. } => "transport",
            Self::ResourceExhausted { .. } => "resource_exhausted",
            Self::Internal(_) => "internal",
        }
    }
}

macro_rules! coded_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $code:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Stable snake_case code.
            pub fn code(&self) -> &'static str {
                match self { $(Self::$variant => $code),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}

coded_enum!(
    /// Why an input was rejected.
    ValidationKind {
        /// Malformed or out-of-range input.
        InvalidInput => "invalid_input",
        /// A text field contains a NUL character, which no stored text may hold.
        NulInText => "nul_in_text",
        /// Worker capabilities do not cover the execution's requirements.
        CapabilityMismatch => "capability_mismatch",
        /// A capability token is malformed.
        InvalidCapabilities => "invalid_capabilities",
        /// An execution policy is invalid.
        InvalidPolicyJson => "invalid_policy",
        /// A payload exceeds its documented size limit.
        PayloadTooLarge => "payload_too_large",
        /// A stream frame exceeds the frame size limit.
        RetentionLimitExceeded => "retention_limit_exceeded",
        /// A tag key does not match the caller-namespace pattern.
        InvalidTagKey => "invalid_tag_key",
        /// A stream frame type is malformed.
        InvalidFrameType => "invalid_frame_type",
        /// A stream cursor is malformed.
        InvalidOffset => "invalid_offset",
        /// Stored data could not be decoded: the engine's fault, never the caller's.
        Corruption => "corruption",
        /// A handle (or handle token) sent by a caller is malformed or damaged.
        InvalidHandle => "invalid_handle",
        /// A handle minted by a different backend family.
        HandleFromOtherBackend => "handle_from_other_backend",
        /// A priority outside 0..=9000.
        PriorityOutOfRange => "priority_out_of_range",
        /// The execution holds a lease and the caller, not an operator override, presented no
        /// lease fence.
        FenceRequired => "fence_required",
        /// A waitpoint token is malformed, signed by an unknown key, or not for this waitpoint.
        InvalidToken => "invalid_token",
        /// A waitpoint token's key was rotated out and its grace period has ended.
        TokenExpired => "token_expired",
        /// A quota policy's limits are malformed (a cap of 0, a rate without a window...).
        InvalidQuotaSpec => "invalid_quota_spec",
        /// A budget's definition or a usage report is malformed (mismatched arrays, negative
        /// or duplicate dimensions...).
        InvalidBudgetSpec => "invalid_budget_spec",
        /// A blocking reason that the operation does not accept.
        InvalidBlockingReason => "invalid_blocking_reason",
        /// An event-log cursor lies before the retention horizon: events after it were pruned,
        /// so reading on from it would skip them. Start again from `EventCursor::BEGINNING`
        /// (the oldest event retained) or from the head.
        CursorExpired => "cursor_expired",
    }
);

coded_enum!(
    /// Transient races; the caller should re-read and retry.
    ContentionKind {
        /// The lease belongs to someone else right now.
        LeaseConflict => "lease_conflict",
        /// The execution cannot be leased in its current state.
        ExecutionNotLeaseable => "execution_not_leaseable",
        /// A grant is missing or belongs to another worker.
        InvalidClaimGrant => "invalid_claim_grant",
        /// A grant has expired.
        ClaimGrantExpired => "claim_grant_expired",
        /// The execution is not in a reclaimable state.
        ExecutionNotReclaimable => "execution_not_reclaimable",
        /// Nothing holds a lease on the execution.
        NoActiveLease => "no_active_lease",
        /// The flow's graph changed since the caller read its revision: re-read and retry.
        StaleGraphRevision => "stale_graph_revision",
        /// The execution is not a resumed attempt waiting for a worker.
        NotAResumedExecution => "not_a_resumed_execution",
        /// The execution is not eligible to be claimed right now (blocked, delayed, granted to
        /// another worker...).
        ExecutionNotEligible => "execution_not_eligible",
    }
);

/// Details of an execution that is no longer active, returned when a worker replays an
/// operation after the execution moved on (for example "already completed by me").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecutionNotActiveDetail {
    /// Terminal outcome, if terminal.
    pub terminal_outcome: TerminalOutcome,
    /// Current lease epoch.
    pub lease_epoch: LeaseEpoch,
    /// Current lifecycle phase.
    pub lifecycle_phase: LifecyclePhase,
    /// The attempt the handle referred to.
    pub attempt_id: AttemptId,
}

coded_enum!(
    /// Permanent conflicts with existing records.
    ConflictKind {
        /// An execution with this id already exists with different content.
        ExecutionAlreadyExists => "execution_already_exists",
        /// The execution already has a running attempt.
        ActiveAttemptExists => "active_attempt_exists",
        /// The worker instance id is registered to another live worker id.
        WorkerInstanceReassigned => "worker_instance_reassigned",
        /// An edge with this id, or between these two members, already exists differently.
        DependencyAlreadyExists => "dependency_already_exists",
        /// The edge would close a cycle in the flow's graph.
        CycleDetected => "cycle_detected",
        /// An edge from an execution to itself.
        SelfReferencingEdge => "self_referencing_edge",
        /// The execution already belongs to another flow.
        ExecutionAlreadyInFlow => "execution_already_in_flow",
        /// The downstream's edge-group policy can no longer change: resolution has started.
        EdgeGroupPolicyFixed => "edge_group_policy_already_fixed",
        /// A waitpoint with this key (or id) exists already for the execution.
        WaitpointAlreadyExists => "waitpoint_already_exists",
        /// The key id is installed with a different secret.
        RotationConflict => "rotation_conflict",
        /// A quota policy with this id exists with other limits.
        QuotaPolicyAlreadyExists => "quota_policy_already_exists",
        /// A budget with this id exists with another definition.
        BudgetAlreadyExists => "budget_already_exists",
    }
);

/// Legal but surprising states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateKind {
    /// The handle's lease was superseded by a newer lease (another worker or a newer attempt).
    StaleLease,
    /// The handle's lease expired.
    LeaseExpired,
    /// The handle's lease was revoked.
    LeaseRevoked,
    /// The execution is not active any more (e.g. already completed by this very lease).
    ExecutionNotActive(Box<ExecutionNotActiveDetail>),
    /// The execution is terminal.
    Terminal,
    /// The stream's attempt has ended; no more frames may be appended.
    StreamClosed,
    /// The reclaim cap was reached.
    MaxReclaimsExceeded,
    /// The operation needs a terminal execution (a replay).
    ExecutionNotTerminal,
    /// The execution was replayed as often as its policy allows.
    MaxReplaysExhausted,
    /// The flow was cancelled; its graph and membership are closed.
    FlowAlreadyTerminal,
    /// The execution has an open suspension already.
    AlreadySuspended,
    /// The operation needs a suspended execution.
    ExecutionNotSuspended,
    /// The execution cannot take signals now (not suspended, and the waitpoint is not pending).
    TargetNotSignalable,
    /// The waitpoint is closed (resumed, expired or cancelled).
    WaitpointClosed,
    /// The execution has received as many signals as allowed.
    SignalLimitExceeded,
    /// The execution is not blocked for the reason the caller expected.
    NotBlocked,
    /// A budget the execution draws on is exhausted in strict mode.
    BudgetExceeded,
}

impl StateKind {
    /// Stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::StaleLease => "stale_lease",
            Self::LeaseExpired => "lease_expired",
            Self::LeaseRevoked => "lease_revoked",
            Self::ExecutionNotActive(_) => "execution_not_active",
            Self::Terminal => "terminal",
            Self::StreamClosed => "stream_closed",
            Self::MaxReclaimsExceeded => "max_reclaims_exceeded",
            Self::ExecutionNotTerminal => "execution_not_terminal",
            Self::MaxReplaysExhausted => "max_replays_exhausted",
            Self::FlowAlreadyTerminal => "flow_already_terminal",
            Self::AlreadySuspended => "already_suspended",
            Self::ExecutionNotSuspended => "execution_not_suspended",
            Self::TargetNotSignalable => "target_not_signalable",
            Self::WaitpointClosed => "waitpoint_closed",
            Self::SignalLimitExceeded => "signal_limit_exceeded",
            Self::NotBlocked => "not_blocked",
            Self::BudgetExceeded => "budget_exceeded",
        }
    }
}
