//! The execution state machine.
//!
//! An execution's state is a vector of six dimensions ([`StateVector`]); the user-facing
//! [`PublicState`] is derived from it by exactly one function, [`derive_public_state`], and is
//! never stored. [`apply`] is the transition function: given an operation and the current
//! vector it returns the next vector or the typed error for an illegal transition. Backends
//! write the vectors this function produces (their tests compare stored rows against it).
//!
//! Invariants ([`StateVector::check`], mirrored by CHECK constraints in the schema):
//! terminal <=> outcome set; a lease-bearing ownership only while active; an eligibility other
//! than `not_applicable` only while runnable; `running_attempt` only while active.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, StateKind, ValidationKind};
use crate::handle::HandleKind;

macro_rules! literal_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $lit:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The snake_case wire / database literal.
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$variant => $lit),+ }
            }

            /// Parses a stored literal; anything else is `Validation(Corruption)`.
            pub fn parse(s: &str) -> Result<Self, EngineError> {
                match s {
                    $($lit => Ok(Self::$variant),)+
                    other => Err(EngineError::validation(
                        ValidationKind::Corruption,
                        format!(concat!("unknown ", stringify!($name), " literal {:?}"), other),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

literal_enum!(
    /// Major phase of an execution.
    LifecyclePhase {
        /// Accepted but not yet placed (never persisted by this engine).
        Submitted => "submitted",
        /// Waiting to be claimed (possibly not yet eligible).
        Runnable => "runnable",
        /// Owned by an attempt.
        Active => "active",
        /// Waiting on waitpoints.
        Suspended => "suspended",
        /// Finished; see the terminal outcome.
        Terminal => "terminal",
    }
);

literal_enum!(
    /// Who may mutate the execution.
    OwnershipState {
        /// Nobody holds a lease.
        Unowned => "unowned",
        /// A live lease is held.
        Leased => "leased",
        /// The lease expired; the execution awaits reclaim by a new attempt.
        LeaseExpiredReclaimable => "lease_expired_reclaimable",
        /// The lease was revoked; the execution awaits reclaim.
        LeaseRevoked => "lease_revoked",
    }
);

literal_enum!(
    /// Whether a runnable execution may be claimed now.
    EligibilityState {
        /// Claimable now.
        EligibleNow => "eligible_now",
        /// Claimable once a time has passed (delay or retry backoff).
        NotEligibleUntilTime => "not_eligible_until_time",
        /// Waiting on dependencies.
        BlockedByDependencies => "blocked_by_dependencies",
        /// Blocked by a budget.
        BlockedByBudget => "blocked_by_budget",
        /// Blocked by a quota.
        BlockedByQuota => "blocked_by_quota",
        /// No capable worker.
        BlockedByRoute => "blocked_by_route",
        /// The lane is paused or draining.
        BlockedByLaneState => "blocked_by_lane_state",
        /// Held by an operator.
        BlockedByOperator => "blocked_by_operator",
        /// Not runnable, so eligibility does not apply.
        NotApplicable => "not_applicable",
    }
);

literal_enum!(
    /// The most specific reason an execution is not progressing.
    BlockingReason {
        /// Not blocked.
        None => "none",
        /// Eligible; waiting for a worker to claim it.
        WaitingForWorker => "waiting_for_worker",
        /// Waiting out a retry backoff.
        WaitingForRetryBackoff => "waiting_for_retry_backoff",
        /// Waiting out a resume delay.
        WaitingForResumeDelay => "waiting_for_resume_delay",
        /// Waiting for a requested delay.
        WaitingForDelay => "waiting_for_delay",
        /// Waiting for a signal.
        WaitingForSignal => "waiting_for_signal",
        /// Waiting for child executions.
        WaitingForChildren => "waiting_for_children",
        /// Waiting for a worker with the required capabilities.
        WaitingForCapableWorker => "waiting_for_capable_worker",
        /// Paused by an operator.
        PausedByOperator => "paused_by_operator",
        /// Suspended for a person's approval.
        WaitingForApproval => "waiting_for_approval",
        /// Suspended for an external system's callback.
        WaitingForCallback => "waiting_for_callback",
        /// Suspended for a tool's result.
        WaitingForToolResult => "waiting_for_tool_result",
        /// Suspended by a policy or a budget.
        PausedByPolicy => "paused_by_policy",
        /// Waiting for an exhausted budget to be reset or raised.
        WaitingForBudget => "waiting_for_budget",
        /// Waiting for its quota policy to admit it (a concurrency slot, a concurrency-key slot,
        /// or room in the rate window).
        WaitingForQuota => "waiting_for_quota",
    }
);

literal_enum!(
    /// How a terminal execution ended.
    TerminalOutcome {
        /// Not terminal.
        None => "none",
        /// Completed.
        Success => "success",
        /// Failed (retries exhausted, permanent failure, reclaim cap).
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
        /// Its attempt timeout or execution deadline passed.
        Expired => "expired",
        /// Skipped because a required dependency failed.
        Skipped => "skipped",
    }
);

literal_enum!(
    /// The attempt layer's view.
    AttemptState {
        /// No attempt concept applies.
        None => "none",
        /// The first attempt has not started.
        PendingFirstAttempt => "pending_first_attempt",
        /// An attempt holds the execution.
        RunningAttempt => "running_attempt",
        /// The current attempt was paused (delay); the next claim resumes the same attempt.
        AttemptInterrupted => "attempt_interrupted",
        /// A retry attempt is pending.
        PendingRetryAttempt => "pending_retry_attempt",
        /// A replay attempt is pending.
        PendingReplayAttempt => "pending_replay_attempt",
        /// The last attempt ended and the execution is terminal.
        AttemptTerminal => "attempt_terminal",
    }
);

literal_enum!(
    /// User-facing state label, always `derive_public_state(vector)`.
    PublicState {
        /// Eligible and waiting for a worker.
        Waiting => "waiting",
        /// Waiting for a time to pass.
        Delayed => "delayed",
        /// Held back by a budget or quota.
        RateLimited => "rate_limited",
        /// Waiting for child executions.
        WaitingChildren => "waiting_children",
        /// Owned by an attempt.
        Active => "active",
        /// Suspended on waitpoints.
        Suspended => "suspended",
        /// Suspended but ready to be resumed.
        Resumable => "resumable",
        /// Completed successfully.
        Completed => "completed",
        /// Failed.
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
        /// Expired.
        Expired => "expired",
        /// Skipped.
        Skipped => "skipped",
    }
);

impl PublicState {
    /// True for the terminal labels.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Expired | Self::Skipped)
    }
}

/// The stored state of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StateVector {
    /// Major phase.
    pub lifecycle_phase: LifecyclePhase,
    /// Lease ownership.
    pub ownership_state: OwnershipState,
    /// Eligibility (runnable only).
    pub eligibility_state: EligibilityState,
    /// Why no progress.
    pub blocking_reason: BlockingReason,
    /// Terminal outcome (terminal only).
    pub terminal_outcome: TerminalOutcome,
    /// Attempt-layer state.
    pub attempt_state: AttemptState,
}

impl StateVector {
    /// The user-facing label (see [`derive_public_state`]).
    pub fn public_state(&self) -> PublicState {
        derive_public_state(self)
    }

    /// Checks the structural invariants; `Err` names the first one violated.
    pub fn check(&self) -> Result<(), &'static str> {
        use LifecyclePhase as P;
        let terminal = self.lifecycle_phase == P::Terminal;
        if terminal != (self.terminal_outcome != TerminalOutcome::None) {
            return Err("terminal <=> terminal_outcome set");
        }
        if self.ownership_state != OwnershipState::Unowned && self.lifecycle_phase != P::Active {
            return Err("lease ownership only while active");
        }
        if self.lifecycle_phase == P::Active && self.ownership_state == OwnershipState::Unowned {
            return Err("active => owned");
        }
        if (self.eligibility_state != EligibilityState::NotApplicable) != (self.lifecycle_phase == P::Runnable) {
            return Err("eligibility applies exactly while runnable");
        }
        if (self.attempt_state == AttemptState::RunningAttempt) != (self.lifecycle_phase == P::Active) {
            return Err("running_attempt exactly while active");
        }
        if terminal && self.attempt_state != AttemptState::AttemptTerminal {
            return Err("terminal => attempt_terminal");
        }
        Ok(())
    }
}

/// Derives the user-facing label from the state vector. This is the only place it is computed.
pub fn derive_public_state(v: &StateVector) -> PublicState {
    use EligibilityState as E;
    match v.lifecycle_phase {
        LifecyclePhase::Terminal => match v.terminal_outcome {
            TerminalOutcome::Success => PublicState::Completed,
            TerminalOutcome::Cancelled => PublicState::Cancelled,
            TerminalOutcome::Expired => PublicState::Expired,
            TerminalOutcome::Skipped => PublicState::Skipped,
            TerminalOutcome::Failed | TerminalOutcome::None => PublicState::Failed,
        },
        LifecyclePhase::Suspended => PublicState::Suspended,
        LifecyclePhase::Active => PublicState::Active,
        LifecyclePhase::Runnable => match v.eligibility_state {
            E::NotEligibleUntilTime => PublicState::Delayed,
            E::BlockedByDependencies => PublicState::WaitingChildren,
            E::BlockedByBudget | E::BlockedByQuota => PublicState::RateLimited,
            E::EligibleNow | E::BlockedByRoute | E::BlockedByLaneState | E::BlockedByOperator | E::NotApplicable => {
                PublicState::Waiting
            }
        },
        LifecyclePhase::Submitted => PublicState::Waiting,
    }
}

/// An operation that changes an execution's state vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Create; `delayed` when `delay_until` is in the future.
    Create {
        /// Whether the execution starts delayed.
        delayed: bool,
    },
    /// A worker claims it (fresh, retry, resume of an interrupted attempt, or reclaim).
    Claim,
    /// The lease holder completes it.
    Complete,
    /// The lease holder fails it and the stored retry policy schedules another attempt.
    FailRetry,
    /// The lease holder fails it for good.
    FailTerminal,
    /// The lease holder cancels it.
    Cancel,
    /// The lease holder parks it until a time, releasing the lease.
    Delay,
    /// Its lease expired: it becomes reclaimable.
    ExpireLease,
    /// Its lease was revoked (its worker died or was marked dead): it becomes reclaimable.
    RevokeLease,
    /// Its lease expired (or was revoked) and its reclaim cap is reached: it fails.
    ReclaimCapExceeded,
    /// Its delay or backoff elapsed: it becomes eligible.
    PromoteDelayed,
    /// Its attempt timeout or execution deadline passed.
    Expire,
    /// It is eligible but requires capabilities no live worker offers: it is parked out of the
    /// claimable set instead of being skipped by every claim.
    ParkForRoute,
    /// A worker offering its required capabilities appeared: it is eligible again.
    UnparkRoute,
    /// Admission keeps an eligible execution out of the claimable set: its quota policy has no
    /// room, a budget it draws on is exhausted, or a scheduler blocked it.
    BlockForAdmission {
        /// What holds it.
        block: AdmissionBlock,
    },
    /// What held it back cleared (a slot was released, a budget reset or raised, a scheduler
    /// unblocked it): it is eligible again.
    Admit {
        /// What held it.
        block: AdmissionBlock,
    },
    /// An operator cancels it, whatever its state (a lease it holds ends with it).
    OperatorCancel,
    /// An operator runs a terminal execution again: its next claim starts a new attempt.
    Replay,
    /// A dependency edge was applied to a runnable flow member whose edge group is unresolved:
    /// it waits for its upstreams, outside the claimable set.
    BlockOnDependencies,
    /// Its edge group was satisfied: it becomes eligible, or waits for its own delay when that
    /// is still in the future (`delayed`).
    DependenciesSatisfied {
        /// Whether its eligible time is still in the future.
        delayed: bool,
    },
    /// Its edge group became impossible: it ends `skipped` without running.
    SkipForDependencies,
    /// The lease holder waits for its children (the upstreams of its edge group), releasing
    /// the lease; `pending` when the group is unresolved, else it is eligible again at once.
    WaitChildren {
        /// Whether the edge group is still unresolved.
        pending: bool,
    },
    /// The lease holder suspends on waitpoints, releasing the lease; `reason` is the blocking
    /// reason its suspension's reason code maps to.
    Suspend {
        /// Why it waits.
        reason: BlockingReason,
    },
    /// Its resume condition was satisfied (or an operator resumed it, or its timeout resumes
    /// it): the same attempt is claimable, at once or after a resume delay (`delayed`).
    Resume {
        /// Whether a resume delay holds it back.
        delayed: bool,
    },
    /// Its suspension timed out and ends it: failed, cancelled or expired.
    SuspensionTimeout {
        /// The outcome its timeout behaviour names.
        outcome: TerminalOutcome,
    },
    /// Its suspension timed out with the escalate behaviour: it stays suspended, paused for an
    /// operator.
    Escalate,
}

/// What admission holds an execution back for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdmissionBlock {
    /// An exhausted budget (`blocked_by_budget`, `waiting_for_budget`).
    Budget,
    /// Its quota policy (`blocked_by_quota`, `waiting_for_quota`).
    Quota,
    /// No capable worker (`blocked_by_route`, `waiting_for_capable_worker`).
    Route,
}

impl AdmissionBlock {
    /// The eligibility an execution blocked for this has.
    pub fn eligibility(self) -> EligibilityState {
        match self {
            Self::Budget => EligibilityState::BlockedByBudget,
            Self::Quota => EligibilityState::BlockedByQuota,
            Self::Route => EligibilityState::BlockedByRoute,
        }
    }

    /// The blocking reason an execution blocked for this has.
    pub fn blocking_reason(self) -> BlockingReason {
        match self {
            Self::Budget => BlockingReason::WaitingForBudget,
            Self::Quota => BlockingReason::WaitingForQuota,
            Self::Route => BlockingReason::WaitingForCapableWorker,
        }
    }

    /// The block a blocking reason names, if it is one admission uses.
    pub fn from_blocking_reason(reason: BlockingReason) -> Option<Self> {
        match reason {
            BlockingReason::WaitingForBudget => Some(Self::Budget),
            BlockingReason::WaitingForQuota => Some(Self::Quota),
            BlockingReason::WaitingForCapableWorker => Some(Self::Route),
            _ => None,
        }
    }
}

/// The vector for `(phase, ownership, eligibility, blocking, outcome, attempt)`.
pub const fn vector(
    lifecycle_phase: LifecyclePhase,
    ownership_state: OwnershipState,
    eligibility_state: EligibilityState,
    blocking_reason: BlockingReason,
    terminal_outcome: TerminalOutcome,
    attempt_state: AttemptState,
) -> StateVector {
    StateVector {
        lifecycle_phase,
        ownership_state,
        eligibility_state,
        blocking_reason,
        terminal_outcome,
        attempt_state,
    }
}

/// Which kind of claim a runnable or reclaimable execution admits, if any.
pub fn claim_kind(v: &StateVector) -> Option<HandleKind> {
    use EligibilityState as E;
    match (v.lifecycle_phase, v.ownership_state, v.eligibility_state) {
        (LifecyclePhase::Runnable, _, E::EligibleNow) => {
            if v.attempt_state == AttemptState::AttemptInterrupted {
                Some(HandleKind::Resumed)
            } else {
                Some(HandleKind::Fresh)
            }
        }
        (LifecyclePhase::Active, OwnershipState::LeaseExpiredReclaimable | OwnershipState::LeaseRevoked, _) => {
            Some(HandleKind::Reclaimed)
        }
        _ => None,
    }
}

/// Applies `t` to `from` (`None` for a create). Returns the next vector, or the typed error for
/// an illegal transition. Time-dependent guards (is the delay due? is the lease expired?) are the
/// backend's to check against database time; this function only checks the vector.
pub fn apply(t: Transition, from: Option<&StateVector>) -> Result<StateVector, EngineError> {
    use AttemptState as A;
    use BlockingReason as B;
    use EligibilityState as E;
    use LifecyclePhase as P;
    use OwnershipState as O;
    use TerminalOutcome as T;

    let Some(from) = from else {
        return match t {
            Transition::Create { delayed: false } => Ok(vector(
                P::Runnable,
                O::Unowned,
                E::EligibleNow,
                B::WaitingForWorker,
                T::None,
                A::PendingFirstAttempt,
            )),
            Transition::Create { delayed: true } => Ok(vector(
                P::Runnable,
                O::Unowned,
                E::NotEligibleUntilTime,
                B::WaitingForDelay,
                T::None,
                A::PendingFirstAttempt,
            )),
            _ => Err(EngineError::NotFound { entity: "execution" }),
        };
    };
    if matches!(t, Transition::Create { .. }) {
        return Err(EngineError::Conflict(crate::error::ConflictKind::ExecutionAlreadyExists));
    }
    if t == Transition::Replay {
        return if from.lifecycle_phase == P::Terminal {
            Ok(vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::PendingReplayAttempt))
        } else {
            Err(EngineError::State(StateKind::ExecutionNotTerminal))
        };
    }
    if from.lifecycle_phase == P::Terminal {
        return Err(EngineError::State(StateKind::Terminal));
    }
    let leased = from.lifecycle_phase == P::Active && from.ownership_state == O::Leased;
    let need_lease = || if leased { Ok(()) } else { Err(lease_error(from)) };
    let terminal = |outcome| vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, outcome, A::AttemptTerminal);
    match t {
        Transition::Create { .. } | Transition::Replay => unreachable!("handled above"),
        Transition::BlockOnDependencies => {
            if from.lifecycle_phase == P::Runnable {
                Ok(StateVector {
                    eligibility_state: E::BlockedByDependencies,
                    blocking_reason: B::WaitingForChildren,
                    ..*from
                })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            }
        }
        Transition::DependenciesSatisfied { delayed } => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == E::BlockedByDependencies {
                Ok(if delayed {
                    StateVector {
                        eligibility_state: E::NotEligibleUntilTime,
                        blocking_reason: B::WaitingForDelay,
                        ..*from
                    }
                } else {
                    StateVector { eligibility_state: E::EligibleNow, blocking_reason: B::WaitingForWorker, ..*from }
                })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            }
        }
        Transition::SkipForDependencies => {
            if from.lifecycle_phase == P::Active {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            } else {
                Ok(terminal(T::Skipped))
            }
        }
        Transition::Suspend { reason } => need_lease()
            .map(|_| vector(P::Suspended, O::Unowned, E::NotApplicable, reason, T::None, A::AttemptInterrupted)),
        Transition::Resume { delayed } => {
            if from.lifecycle_phase == P::Suspended {
                Ok(if delayed {
                    vector(
                        P::Runnable,
                        O::Unowned,
                        E::NotEligibleUntilTime,
                        B::WaitingForResumeDelay,
                        T::None,
                        A::AttemptInterrupted,
                    )
                } else {
                    vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted)
                })
            } else {
                Err(EngineError::State(StateKind::ExecutionNotSuspended))
            }
        }
        Transition::SuspensionTimeout { outcome } => {
            if from.lifecycle_phase == P::Suspended && outcome != T::None && outcome != T::Success {
                Ok(terminal(outcome))
            } else {
                Err(EngineError::State(StateKind::ExecutionNotSuspended))
            }
        }
        Transition::Escalate => {
            if from.lifecycle_phase == P::Suspended {
                Ok(StateVector { blocking_reason: B::PausedByOperator, ..*from })
            } else {
                Err(EngineError::State(StateKind::ExecutionNotSuspended))
            }
        }
        Transition::WaitChildren { pending } => need_lease().map(|_| {
            if pending {
                vector(
                    P::Runnable,
                    O::Unowned,
                    E::BlockedByDependencies,
                    B::WaitingForChildren,
                    T::None,
                    A::AttemptInterrupted,
                )
            } else {
                vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted)
            }
        }),
        Transition::OperatorCancel => Ok(terminal(T::Cancelled)),
        Transition::Claim => match claim_kind(from) {
            Some(_) => Ok(vector(P::Active, O::Leased, E::NotApplicable, B::None, T::None, A::RunningAttempt)),
            None => Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable)),
        },
        Transition::Complete => need_lease().map(|_| terminal(T::Success)),
        Transition::FailTerminal => need_lease().map(|_| terminal(T::Failed)),
        Transition::Cancel => need_lease().map(|_| terminal(T::Cancelled)),
        Transition::FailRetry => need_lease().map(|_| {
            vector(
                P::Runnable,
                O::Unowned,
                E::NotEligibleUntilTime,
                B::WaitingForRetryBackoff,
                T::None,
                A::PendingRetryAttempt,
            )
        }),
        Transition::Delay => need_lease().map(|_| {
            vector(P::Runnable, O::Unowned, E::NotEligibleUntilTime, B::WaitingForDelay, T::None, A::AttemptInterrupted)
        }),
        Transition::ExpireLease => {
            need_lease().map(|_| StateVector { ownership_state: O::LeaseExpiredReclaimable, ..*from })
        }
        Transition::RevokeLease => need_lease().map(|_| StateVector { ownership_state: O::LeaseRevoked, ..*from }),
        Transition::ReclaimCapExceeded => need_lease().map(|_| terminal(T::Failed)),
        Transition::PromoteDelayed => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == E::NotEligibleUntilTime {
                Ok(StateVector { eligibility_state: E::EligibleNow, blocking_reason: B::WaitingForWorker, ..*from })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            }
        }
        Transition::Expire => Ok(terminal(T::Expired)),
        Transition::ParkForRoute => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == E::EligibleNow {
                Ok(StateVector {
                    eligibility_state: E::BlockedByRoute,
                    blocking_reason: B::WaitingForCapableWorker,
                    ..*from
                })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            }
        }
        Transition::UnparkRoute => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == E::BlockedByRoute {
                Ok(StateVector { eligibility_state: E::EligibleNow, blocking_reason: B::WaitingForWorker, ..*from })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotLeaseable))
            }
        }
        Transition::BlockForAdmission { block } => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == E::EligibleNow {
                Ok(StateVector {
                    eligibility_state: block.eligibility(),
                    blocking_reason: block.blocking_reason(),
                    ..*from
                })
            } else {
                Err(EngineError::Contention(crate::error::ContentionKind::ExecutionNotEligible))
            }
        }
        Transition::Admit { block } => {
            if from.lifecycle_phase == P::Runnable && from.eligibility_state == block.eligibility() {
                Ok(StateVector { eligibility_state: E::EligibleNow, blocking_reason: B::WaitingForWorker, ..*from })
            } else {
                Err(EngineError::State(crate::error::StateKind::NotBlocked))
            }
        }
    }
}

fn lease_error(from: &StateVector) -> EngineError {
    match from.ownership_state {
        OwnershipState::LeaseExpiredReclaimable => EngineError::State(StateKind::LeaseExpired),
        OwnershipState::LeaseRevoked => EngineError::State(StateKind::LeaseRevoked),
        _ => EngineError::State(StateKind::StaleLease),
    }
}

#[cfg(test)]
mod tests;
