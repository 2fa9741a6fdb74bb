//! The state machine's tables: every legal transition and the vector it produces, every
//! illegal one and its error code, public-state derivation, claim kinds, literals, invariants.

use super::*;
use AttemptState as A;
use BlockingReason as B;
use EligibilityState as E;
use LifecyclePhase as P;
use OwnershipState as O;
use TerminalOutcome as T;

const WAITING: StateVector =
    vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::PendingFirstAttempt);
const DELAYED_NEW: StateVector =
    vector(P::Runnable, O::Unowned, E::NotEligibleUntilTime, B::WaitingForDelay, T::None, A::PendingFirstAttempt);
const ACTIVE: StateVector = vector(P::Active, O::Leased, E::NotApplicable, B::None, T::None, A::RunningAttempt);
const RECLAIMABLE: StateVector =
    vector(P::Active, O::LeaseExpiredReclaimable, E::NotApplicable, B::None, T::None, A::RunningAttempt);
const REVOKED: StateVector = vector(P::Active, O::LeaseRevoked, E::NotApplicable, B::None, T::None, A::RunningAttempt);
const PARKED: StateVector =
    vector(P::Runnable, O::Unowned, E::BlockedByRoute, B::WaitingForCapableWorker, T::None, A::PendingFirstAttempt);
const RETRY_WAIT: StateVector = vector(
    P::Runnable,
    O::Unowned,
    E::NotEligibleUntilTime,
    B::WaitingForRetryBackoff,
    T::None,
    A::PendingRetryAttempt,
);
const RETRY_READY: StateVector =
    vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::PendingRetryAttempt);
const DELAYED_RUN: StateVector =
    vector(P::Runnable, O::Unowned, E::NotEligibleUntilTime, B::WaitingForDelay, T::None, A::AttemptInterrupted);
const COMPLETED: StateVector =
    vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::Success, A::AttemptTerminal);
const FAILED: StateVector = vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::Failed, A::AttemptTerminal);
const CANCELLED: StateVector =
    vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::Cancelled, A::AttemptTerminal);
const EXPIRED: StateVector = vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::Expired, A::AttemptTerminal);
const REPLAYED: StateVector =
    vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::PendingReplayAttempt);
const PARKED_REPLAY: StateVector =
    vector(P::Runnable, O::Unowned, E::BlockedByRoute, B::WaitingForCapableWorker, T::None, A::PendingReplayAttempt);

const BLOCKED: StateVector =
    vector(P::Runnable, O::Unowned, E::BlockedByDependencies, B::WaitingForChildren, T::None, A::PendingFirstAttempt);
const WAITING_CHILDREN: StateVector =
    vector(P::Runnable, O::Unowned, E::BlockedByDependencies, B::WaitingForChildren, T::None, A::AttemptInterrupted);
const SKIPPED: StateVector = vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::Skipped, A::AttemptTerminal);

const SUSPENDED: StateVector =
    vector(P::Suspended, O::Unowned, E::NotApplicable, B::WaitingForApproval, T::None, A::AttemptInterrupted);
const RESUMABLE: StateVector =
    vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted);

/// Every legal transition this engine implements: (operation, from, expected to).
const LEGAL: &[(Transition, Option<StateVector>, StateVector)] = &[
    (Transition::Create { delayed: false }, None, WAITING),
    (Transition::Create { delayed: true }, None, DELAYED_NEW),
    (Transition::Claim, Some(WAITING), ACTIVE),
    (Transition::Claim, Some(RETRY_READY), ACTIVE),
    (
        Transition::Claim,
        Some(vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted)),
        ACTIVE,
    ),
    (Transition::Claim, Some(RECLAIMABLE), ACTIVE),
    (Transition::Claim, Some(REVOKED), ACTIVE),
    (Transition::RevokeLease, Some(ACTIVE), REVOKED),
    (Transition::ParkForRoute, Some(WAITING), PARKED),
    (Transition::UnparkRoute, Some(PARKED), WAITING),
    (Transition::Complete, Some(ACTIVE), COMPLETED),
    (Transition::FailRetry, Some(ACTIVE), RETRY_WAIT),
    (Transition::FailTerminal, Some(ACTIVE), FAILED),
    (Transition::Cancel, Some(ACTIVE), CANCELLED),
    (Transition::Delay, Some(ACTIVE), DELAYED_RUN),
    (Transition::ExpireLease, Some(ACTIVE), RECLAIMABLE),
    (Transition::ReclaimCapExceeded, Some(ACTIVE), FAILED),
    (Transition::PromoteDelayed, Some(DELAYED_NEW), WAITING),
    (Transition::PromoteDelayed, Some(RETRY_WAIT), RETRY_READY),
    (
        Transition::PromoteDelayed,
        Some(DELAYED_RUN),
        vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted),
    ),
    (Transition::Expire, Some(WAITING), EXPIRED),
    (Transition::Expire, Some(ACTIVE), EXPIRED),
    (Transition::Expire, Some(RETRY_WAIT), EXPIRED),
    (Transition::Expire, Some(RECLAIMABLE), EXPIRED),
    (Transition::OperatorCancel, Some(WAITING), CANCELLED),
    (Transition::OperatorCancel, Some(ACTIVE), CANCELLED),
    (Transition::OperatorCancel, Some(REVOKED), CANCELLED),
    (Transition::OperatorCancel, Some(RETRY_WAIT), CANCELLED),
    (Transition::OperatorCancel, Some(DELAYED_RUN), CANCELLED),
    (Transition::OperatorCancel, Some(PARKED), CANCELLED),
    (Transition::Replay, Some(COMPLETED), REPLAYED),
    (Transition::Replay, Some(FAILED), REPLAYED),
    (Transition::Replay, Some(CANCELLED), REPLAYED),
    (Transition::Replay, Some(EXPIRED), REPLAYED),
    (Transition::Claim, Some(REPLAYED), ACTIVE),
    (Transition::ParkForRoute, Some(REPLAYED), PARKED_REPLAY),
    (Transition::BlockOnDependencies, Some(WAITING), BLOCKED),
    (
        Transition::BlockOnDependencies,
        Some(DELAYED_NEW),
        vector(
            P::Runnable,
            O::Unowned,
            E::BlockedByDependencies,
            B::WaitingForChildren,
            T::None,
            A::PendingFirstAttempt,
        ),
    ),
    (Transition::BlockOnDependencies, Some(PARKED), BLOCKED),
    (Transition::DependenciesSatisfied { delayed: false }, Some(BLOCKED), WAITING),
    (Transition::DependenciesSatisfied { delayed: true }, Some(BLOCKED), DELAYED_NEW),
    (Transition::SkipForDependencies, Some(BLOCKED), SKIPPED),
    (Transition::SkipForDependencies, Some(WAITING), SKIPPED),
    (Transition::SkipForDependencies, Some(WAITING_CHILDREN), SKIPPED),
    (Transition::WaitChildren { pending: true }, Some(ACTIVE), WAITING_CHILDREN),
    (
        Transition::WaitChildren { pending: false },
        Some(ACTIVE),
        vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted),
    ),
    (
        Transition::DependenciesSatisfied { delayed: false },
        Some(WAITING_CHILDREN),
        vector(P::Runnable, O::Unowned, E::EligibleNow, B::WaitingForWorker, T::None, A::AttemptInterrupted),
    ),
    (Transition::OperatorCancel, Some(BLOCKED), CANCELLED),
    (Transition::Replay, Some(SKIPPED), REPLAYED),
    (Transition::Suspend { reason: B::WaitingForApproval }, Some(ACTIVE), SUSPENDED),
    (Transition::Resume { delayed: false }, Some(SUSPENDED), RESUMABLE),
    (
        Transition::Resume { delayed: true },
        Some(SUSPENDED),
        vector(
            P::Runnable,
            O::Unowned,
            E::NotEligibleUntilTime,
            B::WaitingForResumeDelay,
            T::None,
            A::AttemptInterrupted,
        ),
    ),
    (Transition::Claim, Some(RESUMABLE), ACTIVE),
    (Transition::SuspensionTimeout { outcome: T::Failed }, Some(SUSPENDED), FAILED),
    (Transition::SuspensionTimeout { outcome: T::Cancelled }, Some(SUSPENDED), CANCELLED),
    (Transition::SuspensionTimeout { outcome: T::Expired }, Some(SUSPENDED), EXPIRED),
    (Transition::Escalate, Some(SUSPENDED), StateVector { blocking_reason: B::PausedByOperator, ..SUSPENDED }),
    (Transition::OperatorCancel, Some(SUSPENDED), CANCELLED),
    (Transition::Expire, Some(SUSPENDED), EXPIRED),
];

#[test]
fn legal_transitions_produce_expected_vectors() {
    for (t, from, to) in LEGAL {
        let got = apply(*t, from.as_ref()).unwrap_or_else(|e| panic!("{t:?} from {from:?}: {e}"));
        assert_eq!(&got, to, "{t:?} from {from:?}");
        got.check().unwrap_or_else(|e| panic!("{t:?} produced invalid vector: {e}"));
    }
}

/// Illegal transitions and the error code each must produce.
const ILLEGAL: &[(Transition, Option<StateVector>, &str)] = &[
    (Transition::Claim, None, "not_found"),
    (Transition::Create { delayed: false }, Some(WAITING), "execution_already_exists"),
    (Transition::Claim, Some(ACTIVE), "execution_not_leaseable"),
    (Transition::Claim, Some(DELAYED_NEW), "execution_not_leaseable"),
    (Transition::Claim, Some(RETRY_WAIT), "execution_not_leaseable"),
    (Transition::Claim, Some(DELAYED_RUN), "execution_not_leaseable"),
    (Transition::Claim, Some(PARKED), "execution_not_leaseable"),
    (Transition::RevokeLease, Some(RECLAIMABLE), "lease_expired"),
    (Transition::ParkForRoute, Some(ACTIVE), "execution_not_leaseable"),
    (Transition::UnparkRoute, Some(WAITING), "execution_not_leaseable"),
    (Transition::Claim, Some(COMPLETED), "terminal"),
    (Transition::Complete, Some(WAITING), "stale_lease"),
    (Transition::Complete, Some(RECLAIMABLE), "lease_expired"),
    (Transition::Complete, Some(COMPLETED), "terminal"),
    (Transition::FailRetry, Some(DELAYED_RUN), "stale_lease"),
    (Transition::FailTerminal, Some(FAILED), "terminal"),
    (Transition::Cancel, Some(CANCELLED), "terminal"),
    (Transition::Delay, Some(RETRY_WAIT), "stale_lease"),
    (Transition::ExpireLease, Some(RECLAIMABLE), "lease_expired"),
    (Transition::PromoteDelayed, Some(WAITING), "execution_not_leaseable"),
    (Transition::PromoteDelayed, Some(ACTIVE), "execution_not_leaseable"),
    (Transition::Expire, Some(EXPIRED), "terminal"),
    (Transition::OperatorCancel, Some(CANCELLED), "terminal"),
    (Transition::OperatorCancel, Some(COMPLETED), "terminal"),
    (Transition::OperatorCancel, None, "not_found"),
    (Transition::Replay, Some(WAITING), "execution_not_terminal"),
    (Transition::Replay, Some(ACTIVE), "execution_not_terminal"),
    (Transition::Replay, Some(RETRY_WAIT), "execution_not_terminal"),
    (Transition::Replay, None, "not_found"),
    (Transition::BlockOnDependencies, Some(ACTIVE), "execution_not_leaseable"),
    (Transition::BlockOnDependencies, Some(COMPLETED), "terminal"),
    (Transition::DependenciesSatisfied { delayed: false }, Some(WAITING), "execution_not_leaseable"),
    (Transition::SkipForDependencies, Some(ACTIVE), "execution_not_leaseable"),
    (Transition::SkipForDependencies, Some(SKIPPED), "terminal"),
    (Transition::WaitChildren { pending: true }, Some(WAITING), "stale_lease"),
    (Transition::WaitChildren { pending: true }, Some(RECLAIMABLE), "lease_expired"),
    (Transition::Suspend { reason: B::WaitingForSignal }, Some(SUSPENDED), "stale_lease"),
    (Transition::Suspend { reason: B::WaitingForSignal }, Some(WAITING), "stale_lease"),
    (Transition::Resume { delayed: false }, Some(ACTIVE), "execution_not_suspended"),
    (Transition::Resume { delayed: false }, Some(COMPLETED), "terminal"),
    (Transition::SuspensionTimeout { outcome: T::Success }, Some(SUSPENDED), "execution_not_suspended"),
    (Transition::Escalate, Some(WAITING), "execution_not_suspended"),
    (Transition::Claim, Some(SUSPENDED), "execution_not_leaseable"),
];

#[test]
fn illegal_transitions_are_typed_errors() {
    for (t, from, code) in ILLEGAL {
        let err = apply(*t, from.as_ref()).expect_err(&format!("{t:?} from {from:?} must fail"));
        assert_eq!(err.code(), *code, "{t:?} from {from:?}");
    }
}

#[test]
fn public_state_derivation() {
    let cases = [
        (WAITING, PublicState::Waiting),
        (DELAYED_NEW, PublicState::Delayed),
        (RETRY_WAIT, PublicState::Delayed),
        (ACTIVE, PublicState::Active),
        (RECLAIMABLE, PublicState::Active),
        (COMPLETED, PublicState::Completed),
        (FAILED, PublicState::Failed),
        (CANCELLED, PublicState::Cancelled),
        (EXPIRED, PublicState::Expired),
        (
            vector(
                P::Runnable,
                O::Unowned,
                E::BlockedByDependencies,
                B::WaitingForChildren,
                T::None,
                A::AttemptInterrupted,
            ),
            PublicState::WaitingChildren,
        ),
        (
            vector(P::Runnable, O::Unowned, E::BlockedByBudget, B::None, T::None, A::PendingFirstAttempt),
            PublicState::RateLimited,
        ),
        (
            vector(P::Suspended, O::Unowned, E::NotApplicable, B::WaitingForSignal, T::None, A::AttemptInterrupted),
            PublicState::Suspended,
        ),
    ];
    for (v, want) in cases {
        assert_eq!(derive_public_state(&v), want, "{v:?}");
    }
}

#[test]
fn claim_kinds() {
    assert_eq!(claim_kind(&WAITING), Some(HandleKind::Fresh));
    assert_eq!(claim_kind(&RETRY_READY), Some(HandleKind::Fresh));
    let resumable = StateVector { eligibility_state: E::EligibleNow, ..DELAYED_RUN };
    assert_eq!(claim_kind(&resumable), Some(HandleKind::Resumed));
    assert_eq!(claim_kind(&RECLAIMABLE), Some(HandleKind::Reclaimed));
    assert_eq!(claim_kind(&REVOKED), Some(HandleKind::Reclaimed));
    // Delayed and parked work is claimable only once promoted or unparked.
    assert_eq!(claim_kind(&RETRY_WAIT), None);
    assert_eq!(claim_kind(&DELAYED_RUN), None);
    assert_eq!(claim_kind(&PARKED), None);
    assert_eq!(claim_kind(&ACTIVE), None);
    assert_eq!(claim_kind(&COMPLETED), None);
}

#[test]
fn literals_round_trip() {
    for p in LifecyclePhase::ALL {
        assert_eq!(LifecyclePhase::parse(p.as_str()).unwrap(), *p);
    }
    for p in PublicState::ALL {
        assert_eq!(PublicState::parse(p.as_str()).unwrap(), *p);
    }
    assert!(matches!(
        OwnershipState::parse("released"),
        Err(EngineError::Validation { kind: ValidationKind::Corruption, .. })
    ));
}

#[test]
fn invariants_reject_impossible_vectors() {
    let bad = [
        vector(P::Terminal, O::Unowned, E::NotApplicable, B::None, T::None, A::AttemptTerminal),
        vector(P::Runnable, O::Unowned, E::EligibleNow, B::None, T::Success, A::PendingFirstAttempt),
        vector(P::Runnable, O::Leased, E::EligibleNow, B::None, T::None, A::PendingFirstAttempt),
        vector(P::Active, O::Unowned, E::NotApplicable, B::None, T::None, A::RunningAttempt),
        vector(P::Active, O::Leased, E::EligibleNow, B::None, T::None, A::RunningAttempt),
    ];
    for v in bad {
        assert!(v.check().is_err(), "{v:?}");
    }
}
