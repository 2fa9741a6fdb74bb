//! Edge groups: how a downstream execution's inbound edges combine into one decision.
//!
//! Every downstream has one group. Its policy says when the group is satisfied (the downstream
//! may run) or impossible (it never can, and is skipped). [`evaluate`] is the one definition of
//! that decision, a pure function of the policy and the group's counters; the Postgres schema
//! mirrors it in `ff_edge_group_verdict`, and a test holds the two equal over every counter
//! combination. An upstream that ends in anything but success (failed, cancelled, expired)
//! counts as a failure; a skipped upstream counts as skipped; both count against the group.

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// What happens to the still-running upstreams of an any-of or quorum group once it is decided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSatisfied {
    /// Cancel them: their result can no longer matter to this group.
    #[default]
    CancelRemaining,
    /// Let them run to their end.
    LetRun,
}

impl OnSatisfied {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CancelRemaining => "cancel_remaining",
            Self::LetRun => "let_run",
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "cancel_remaining" => Ok(Self::CancelRemaining),
            "let_run" => Ok(Self::LetRun),
            other => Err(crate::error::EngineError::validation(
                crate::error::ValidationKind::Corruption,
                format!("unknown on_satisfied literal {other:?}"),
            )),
        }
    }
}

/// How a downstream's inbound edges combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EdgeDependencyPolicy {
    /// Every upstream must succeed (the default).
    #[default]
    AllOf,
    /// One successful upstream suffices.
    AnyOf {
        /// What happens to the other upstreams once decided.
        on_satisfied: OnSatisfied,
    },
    /// `k` successful upstreams suffice.
    Quorum {
        /// Successes needed, at least 1.
        k: u32,
        /// What happens to the other upstreams once decided.
        on_satisfied: OnSatisfied,
    },
}

impl EdgeDependencyPolicy {
    /// The policy's kind literal: `all_of`, `any_of` or `quorum`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AllOf => "all_of",
            Self::AnyOf { .. } => "any_of",
            Self::Quorum { .. } => "quorum",
        }
    }

    /// The quorum size (1 for any-of; none for all-of).
    pub fn k(&self) -> Option<u32> {
        match self {
            Self::AllOf => None,
            Self::AnyOf { .. } => Some(1),
            Self::Quorum { k, .. } => Some(*k),
        }
    }

    /// What happens to undecided upstreams once the group is decided.
    pub fn on_satisfied(&self) -> OnSatisfied {
        match self {
            Self::AllOf => OnSatisfied::LetRun,
            Self::AnyOf { on_satisfied } | Self::Quorum { on_satisfied, .. } => *on_satisfied,
        }
    }

    /// Rebuilds a policy from its stored parts.
    pub fn from_parts(kind: &str, k: Option<i32>, on_satisfied: &str) -> Result<Self, EngineError> {
        let corrupt = || {
            EngineError::validation(crate::error::ValidationKind::Corruption, format!("edge group policy {kind}/{k:?}"))
        };
        match kind {
            "all_of" => Ok(Self::AllOf),
            "any_of" => Ok(Self::AnyOf { on_satisfied: OnSatisfied::parse(on_satisfied)? }),
            "quorum" => Ok(Self::Quorum {
                k: k.and_then(|k| u32::try_from(k).ok()).ok_or_else(corrupt)?,
                on_satisfied: OnSatisfied::parse(on_satisfied)?,
            }),
            _ => Err(corrupt()),
        }
    }

    /// Checks the policy against the flow it applies to: a quorum needs `1 <= k` and at most as
    /// many upstreams as the flow has other members (`max_upstreams`).
    pub fn validate(&self, max_upstreams: u32) -> Result<(), EngineError> {
        if let Self::Quorum { k, .. } = self {
            if *k == 0 {
                return Err(EngineError::invalid("quorum k must be at least 1"));
            }
            if *k > max_upstreams {
                return Err(EngineError::invalid(format!(
                    "quorum k = {k} exceeds the {max_upstreams} other members of the flow"
                )));
            }
        }
        Ok(())
    }
}

/// The decision state of an edge group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeGroupState {
    /// Not decided yet.
    Pending,
    /// Enough upstreams succeeded: the downstream may run.
    Satisfied,
    /// Enough upstreams failed that it never can: the downstream is skipped.
    Impossible,
    /// The downstream ended (cancelled, expired, failed) before the group was decided.
    Cancelled,
}

impl EdgeGroupState {
    /// The snake_case literal, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Satisfied => "satisfied",
            Self::Impossible => "impossible",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored literal.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "pending" => Ok(Self::Pending),
            "satisfied" => Ok(Self::Satisfied),
            "impossible" => Ok(Self::Impossible),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(EngineError::validation(
                crate::error::ValidationKind::Corruption,
                format!("unknown edge group state {other:?}"),
            )),
        }
    }
}

/// An edge group's counters: applied inbound edges, and how their upstreams ended so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EdgeGroupCounts {
    /// Applied inbound edges.
    pub total: u32,
    /// Upstreams that succeeded.
    pub success: u32,
    /// Upstreams that failed, were cancelled or expired.
    pub failed: u32,
    /// Upstreams that were skipped.
    pub skipped: u32,
}

impl EdgeGroupCounts {
    /// Upstreams that have not ended yet.
    pub fn running(&self) -> u32 {
        self.total.saturating_sub(self.success + self.failed + self.skipped)
    }
}

/// Decides a group from its policy and counters: `Satisfied`, `Impossible` or `Pending` (never
/// `Cancelled`, which only its downstream's own end sets).
///
/// - all-of: satisfied when every applied upstream succeeded (and there is one); impossible
///   as soon as one failed or was skipped.
/// - any-of: satisfied by one success; impossible when every upstream ended without one.
/// - quorum(k): satisfied by k successes; impossible when the successes plus the upstreams
///   still running can no longer reach k.
pub fn evaluate(policy: &EdgeDependencyPolicy, c: &EdgeGroupCounts) -> EdgeGroupState {
    let against = c.failed + c.skipped;
    match policy {
        EdgeDependencyPolicy::AllOf => {
            if against > 0 {
                EdgeGroupState::Impossible
            } else if c.total > 0 && c.success >= c.total {
                EdgeGroupState::Satisfied
            } else {
                EdgeGroupState::Pending
            }
        }
        EdgeDependencyPolicy::AnyOf { .. } | EdgeDependencyPolicy::Quorum { .. } => {
            let k = policy.k().unwrap_or(1);
            if c.success >= k {
                EdgeGroupState::Satisfied
            } else if c.total > 0 && c.success + c.running() < k {
                EdgeGroupState::Impossible
            } else {
                EdgeGroupState::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EdgeGroupState::*;

    const ANY: EdgeDependencyPolicy = EdgeDependencyPolicy::AnyOf { on_satisfied: OnSatisfied::CancelRemaining };
    const Q2: EdgeDependencyPolicy = EdgeDependencyPolicy::Quorum { k: 2, on_satisfied: OnSatisfied::LetRun };
    const Q3: EdgeDependencyPolicy = EdgeDependencyPolicy::Quorum { k: 3, on_satisfied: OnSatisfied::CancelRemaining };

    fn c(total: u32, success: u32, failed: u32, skipped: u32) -> EdgeGroupCounts {
        EdgeGroupCounts { total, success, failed, skipped }
    }

    /// One case: a policy, its group's counters (total, success, failed, skipped), the verdict.
    type Case = (EdgeDependencyPolicy, (u32, u32, u32, u32), EdgeGroupState);

    /// Every policy against every outcome mix that matters.
    const CASES: &[Case] = &[
        // all-of
        (EdgeDependencyPolicy::AllOf, (0, 0, 0, 0), Pending),
        (EdgeDependencyPolicy::AllOf, (3, 0, 0, 0), Pending),
        (EdgeDependencyPolicy::AllOf, (3, 2, 0, 0), Pending),
        (EdgeDependencyPolicy::AllOf, (3, 3, 0, 0), Satisfied),
        (EdgeDependencyPolicy::AllOf, (3, 1, 1, 0), Impossible),
        (EdgeDependencyPolicy::AllOf, (3, 0, 0, 1), Impossible),
        (EdgeDependencyPolicy::AllOf, (3, 2, 1, 0), Impossible),
        (EdgeDependencyPolicy::AllOf, (1, 1, 0, 0), Satisfied),
        // any-of
        (ANY, (0, 0, 0, 0), Pending),
        (ANY, (3, 0, 0, 0), Pending),
        (ANY, (3, 1, 0, 0), Satisfied),
        (ANY, (3, 1, 2, 0), Satisfied),
        (ANY, (3, 0, 2, 0), Pending),
        (ANY, (3, 0, 2, 1), Impossible),
        (ANY, (3, 0, 3, 0), Impossible),
        (ANY, (3, 0, 0, 3), Impossible),
        // quorum 2
        (Q2, (4, 1, 0, 0), Pending),
        (Q2, (4, 2, 0, 0), Satisfied),
        (Q2, (4, 1, 2, 0), Pending),
        (Q2, (4, 1, 2, 1), Impossible),
        (Q2, (4, 0, 2, 1), Impossible),
        (Q2, (4, 2, 2, 0), Satisfied),
        // quorum 3 of 10
        (Q3, (10, 2, 5, 0), Pending),
        (Q3, (10, 3, 0, 0), Satisfied),
        (Q3, (10, 2, 6, 0), Pending),
        (Q3, (10, 1, 8, 0), Impossible),
        (Q3, (10, 0, 7, 0), Pending),
        (Q3, (10, 0, 7, 1), Impossible),
        // a quorum larger than the applied edges can never be met once they have all ended
        (Q3, (2, 2, 0, 0), Impossible),
    ];

    #[test]
    fn verdicts_for_every_policy_and_outcome_mix() {
        for (policy, (t, s, f, k), want) in CASES {
            assert_eq!(
                evaluate(policy, &c(*t, *s, *f, *k)),
                *want,
                "{policy:?} total {t} ok {s} failed {f} skipped {k}"
            );
        }
    }

    #[test]
    fn a_decided_group_stays_decided_as_more_upstreams_end() {
        // Once satisfied or impossible, later outcomes never flip the verdict to the other side
        // (the stored group state keeps the first verdict; this checks the function agrees).
        for policy in [EdgeDependencyPolicy::AllOf, ANY, Q2, Q3] {
            for total in 1..=6u32 {
                for s in 0..=total {
                    for f in 0..=(total - s) {
                        let first = evaluate(&policy, &c(total, s, f, 0));
                        if first == Pending {
                            continue;
                        }
                        let running = total - s - f;
                        for more_s in 0..=running {
                            let later = evaluate(&policy, &c(total, s + more_s, f + running - more_s, 0));
                            assert!(
                                later == first || later == Pending || first == Satisfied && later == Satisfied,
                                "{policy:?} {total}/{s}/{f}: {first:?} then {later:?}"
                            );
                            if first == Satisfied {
                                assert_eq!(later, Satisfied, "{policy:?} {total}/{s}/{f}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn policies_validate_k_and_round_trip_through_storage() {
        assert!(EdgeDependencyPolicy::Quorum { k: 0, on_satisfied: OnSatisfied::LetRun }.validate(5).is_err());
        assert!(EdgeDependencyPolicy::Quorum { k: 6, on_satisfied: OnSatisfied::LetRun }.validate(5).is_err());
        assert!(Q3.validate(3).is_ok());
        for p in [EdgeDependencyPolicy::AllOf, ANY, Q2, Q3] {
            let back =
                EdgeDependencyPolicy::from_parts(p.kind(), p.k().map(|k| k as i32), p.on_satisfied().as_str()).unwrap();
            if p != EdgeDependencyPolicy::AllOf {
                assert_eq!(back, p);
            }
        }
        let json = serde_json::to_string(&Q3).unwrap();
        assert_eq!(json, r#"{"kind":"quorum","k":3,"on_satisfied":"cancel_remaining"}"#);
    }
}
