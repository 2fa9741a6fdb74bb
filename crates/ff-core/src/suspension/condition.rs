//! Resume conditions: when the signals delivered to a suspended execution's waitpoints are
//! enough to resume it.
//!
//! A condition is a small tree: `Single` (a signal on one waitpoint whose name matches),
//! `OperatorOnly` and `TimeoutOnly` (never satisfied by signals: only an operator's resume or
//! the suspension timeout ends them), and the composites `AllOf` (every member) and `Count`
//! (at least n distinct waitpoints, signals or sources among the matching signals on the listed
//! waitpoints). [`ResumeCondition::validate`] bounds the tree (depth, non-empty members, n);
//! [`ResumeCondition::is_satisfied`] is the one evaluation, a pure function of the signals.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::execution::validate_name;

/// Deepest nesting of composite conditions accepted.
pub const MAX_CONDITION_DEPTH: usize = 4;
/// Most members one composite may have.
pub const MAX_CONDITION_MEMBERS: usize = 64;

/// Which signals a condition counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalMatcher {
    /// Only signals with this name.
    ByName(String),
    /// Any signal.
    Wildcard,
}

impl SignalMatcher {
    /// Whether a signal named `name` matches.
    pub fn accepts(&self, name: &str) -> bool {
        match self {
            Self::ByName(n) => n == name,
            Self::Wildcard => true,
        }
    }
}

/// What a `Count` condition counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountKind {
    /// Distinct waitpoints with a matching signal.
    DistinctWaitpoints,
    /// Distinct matching signals.
    DistinctSignals,
    /// Distinct `(source_type, source_identity)` pairs among matching signals (e.g. approvers).
    DistinctSources,
}

/// A composite condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompositeCondition {
    /// Every member is satisfied.
    AllOf {
        /// The members (at least one).
        members: Vec<ResumeCondition>,
    },
    /// At least `n` distinct waitpoints, signals or sources among the matching signals on
    /// `waitpoints`.
    Count {
        /// How many (at least 1).
        n: u32,
        /// What is counted.
        count_kind: CountKind,
        /// Which signals count (all when absent).
        #[serde(default)]
        matcher: Option<SignalMatcher>,
        /// The waitpoint keys whose signals count (at least one).
        waitpoints: Vec<String>,
    },
}

/// When a suspended execution resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeCondition {
    /// A matching signal on one waitpoint.
    Single {
        /// The waitpoint's key.
        waitpoint_key: String,
        /// Which signals satisfy it.
        matcher: SignalMatcher,
    },
    /// Only an operator's resume.
    OperatorOnly,
    /// Only the suspension's timeout.
    TimeoutOnly,
    /// A composite.
    Composite(CompositeCondition),
}

/// A delivered signal, as conditions see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSignal<'a> {
    /// The waitpoint it was delivered to.
    pub waitpoint_key: &'a str,
    /// Its id (distinct signals).
    pub signal_id: &'a str,
    /// Its name (matchers).
    pub signal_name: &'a str,
    /// Who sent it: type.
    pub source_type: &'a str,
    /// Who sent it: identity.
    pub source_identity: &'a str,
}

/// How a delivered signal relates to a condition (before asking whether it is satisfied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalRelevance {
    /// The condition names no such waitpoint.
    NotInCondition,
    /// The waitpoint is named, but no matcher on it accepts the signal.
    MatcherFailed,
    /// The signal counts toward the condition.
    Counts,
}

impl ResumeCondition {
    /// A single waitpoint satisfied by a signal named `name`.
    pub fn single(waitpoint_key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Single { waitpoint_key: waitpoint_key.into(), matcher: SignalMatcher::ByName(name.into()) }
    }

    /// Checks the tree: depth at most [`MAX_CONDITION_DEPTH`], composites non-empty and at most
    /// [`MAX_CONDITION_MEMBERS`] wide, `Count` n at least 1 (and, counting distinct waitpoints, at
    /// most the number of distinct waitpoints listed), keys and names well formed.
    pub fn validate(&self) -> Result<(), EngineError> {
        self.validate_at(1)
    }

    fn validate_at(&self, depth: usize) -> Result<(), EngineError> {
        let bad = |m: String| EngineError::invalid(format!("resume condition: {m}"));
        match self {
            Self::Single { waitpoint_key, matcher } => {
                validate_name("waitpoint_key", waitpoint_key, false)?;
                validate_matcher(matcher)
            }
            Self::OperatorOnly | Self::TimeoutOnly => Ok(()),
            Self::Composite(c) => {
                if depth > MAX_CONDITION_DEPTH {
                    return Err(bad(format!("composites nest deeper than {MAX_CONDITION_DEPTH}")));
                }
                match c {
                    CompositeCondition::AllOf { members } => {
                        if members.is_empty() {
                            return Err(bad("all_of needs at least one member".into()));
                        }
                        if members.len() > MAX_CONDITION_MEMBERS {
                            return Err(bad(format!("all_of has more than {MAX_CONDITION_MEMBERS} members")));
                        }
                        members.iter().try_for_each(|m| m.validate_at(depth + 1))
                    }
                    CompositeCondition::Count { n, count_kind, matcher, waitpoints } => {
                        if *n == 0 {
                            return Err(bad("count n must be at least 1".into()));
                        }
                        if waitpoints.is_empty() {
                            return Err(bad("count needs at least one waitpoint".into()));
                        }
                        if waitpoints.len() > MAX_CONDITION_MEMBERS {
                            return Err(bad(format!("count lists more than {MAX_CONDITION_MEMBERS} waitpoints")));
                        }
                        for k in waitpoints {
                            validate_name("waitpoint_key", k, false)?;
                        }
                        let distinct = waitpoints.iter().collect::<HashSet<_>>().len();
                        if *count_kind == CountKind::DistinctWaitpoints && *n as usize > distinct {
                            return Err(bad(format!("count of {n} distinct waitpoints among {distinct}")));
                        }
                        matcher.as_ref().map_or(Ok(()), validate_matcher)
                    }
                }
            }
        }
    }

    /// Every waitpoint key the condition names.
    pub fn waitpoint_keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::Single { waitpoint_key, .. } => out.push(waitpoint_key),
            Self::OperatorOnly | Self::TimeoutOnly => {}
            Self::Composite(CompositeCondition::AllOf { members }) => members.iter().for_each(|m| m.collect_keys(out)),
            Self::Composite(CompositeCondition::Count { waitpoints, .. }) => {
                out.extend(waitpoints.iter().map(String::as_str))
            }
        }
    }

    /// How a signal named `name` on waitpoint `key` relates to the condition.
    pub fn relevance(&self, key: &str, name: &str) -> SignalRelevance {
        match self {
            Self::Single { waitpoint_key, matcher } if waitpoint_key == key => {
                if matcher.accepts(name) {
                    SignalRelevance::Counts
                } else {
                    SignalRelevance::MatcherFailed
                }
            }
            Self::Single { .. } | Self::OperatorOnly | Self::TimeoutOnly => SignalRelevance::NotInCondition,
            Self::Composite(CompositeCondition::AllOf { members }) => members
                .iter()
                .map(|m| m.relevance(key, name))
                .max_by_key(|r| *r as u8)
                .unwrap_or(SignalRelevance::NotInCondition),
            Self::Composite(CompositeCondition::Count { matcher, waitpoints, .. }) => {
                if !waitpoints.iter().any(|w| w == key) {
                    SignalRelevance::NotInCondition
                } else if matcher.as_ref().is_none_or(|m| m.accepts(name)) {
                    SignalRelevance::Counts
                } else {
                    SignalRelevance::MatcherFailed
                }
            }
        }
    }

    /// Whether `signals` satisfy the condition. `OperatorOnly` and `TimeoutOnly` never are.
    pub fn is_satisfied(&self, signals: &[ConditionSignal<'_>]) -> bool {
        match self {
            Self::Single { waitpoint_key, matcher } => {
                signals.iter().any(|s| s.waitpoint_key == waitpoint_key && matcher.accepts(s.signal_name))
            }
            Self::OperatorOnly | Self::TimeoutOnly => false,
            Self::Composite(CompositeCondition::AllOf { members }) => {
                !members.is_empty() && members.iter().all(|m| m.is_satisfied(signals))
            }
            Self::Composite(CompositeCondition::Count { n, count_kind, matcher, waitpoints }) => {
                let matching = signals.iter().filter(|s| {
                    waitpoints.iter().any(|w| w == s.waitpoint_key)
                        && matcher.as_ref().is_none_or(|m| m.accepts(s.signal_name))
                });
                let distinct = match count_kind {
                    CountKind::DistinctWaitpoints => {
                        matching.map(|s| (s.waitpoint_key, "")).collect::<HashSet<_>>().len()
                    }
                    CountKind::DistinctSignals => matching.map(|s| (s.signal_id, "")).collect::<HashSet<_>>().len(),
                    CountKind::DistinctSources => {
                        matching.map(|s| (s.source_type, s.source_identity)).collect::<HashSet<_>>().len()
                    }
                };
                distinct >= *n as usize
            }
        }
    }
}

fn validate_matcher(m: &SignalMatcher) -> Result<(), EngineError> {
    match m {
        SignalMatcher::ByName(name) => validate_name("signal_name", name, false),
        SignalMatcher::Wildcard => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig<'a>(key: &'a str, id: &'a str, name: &'a str, source: &'a str) -> ConditionSignal<'a> {
        ConditionSignal {
            waitpoint_key: key,
            signal_id: id,
            signal_name: name,
            source_type: "user",
            source_identity: source,
        }
    }

    fn count(n: u32, kind: CountKind, matcher: Option<SignalMatcher>, keys: &[&str]) -> ResumeCondition {
        ResumeCondition::Composite(CompositeCondition::Count {
            n,
            count_kind: kind,
            matcher,
            waitpoints: keys.iter().map(|k| k.to_string()).collect(),
        })
    }

    fn all_of(members: Vec<ResumeCondition>) -> ResumeCondition {
        ResumeCondition::Composite(CompositeCondition::AllOf { members })
    }

    #[test]
    fn evaluation_table() {
        let approved = ResumeCondition::single("approval", "approved");
        let any = ResumeCondition::Single { waitpoint_key: "cb".into(), matcher: SignalMatcher::Wildcard };
        let two_approvers =
            count(2, CountKind::DistinctSources, Some(SignalMatcher::ByName("approved".into())), &["approval"]);
        let two_waitpoints = count(2, CountKind::DistinctWaitpoints, None, &["a", "b", "c"]);
        let three_signals = count(3, CountKind::DistinctSignals, None, &["a"]);
        let both = all_of(vec![approved.clone(), any.clone()]);
        let cases: Vec<(&ResumeCondition, Vec<ConditionSignal>, bool)> = vec![
            (&approved, vec![], false),
            (&approved, vec![sig("approval", "1", "rejected", "ann")], false),
            (&approved, vec![sig("other", "1", "approved", "ann")], false),
            (&approved, vec![sig("approval", "1", "approved", "ann")], true),
            (&any, vec![sig("cb", "1", "whatever", "x")], true),
            (&ResumeCondition::OperatorOnly, vec![sig("cb", "1", "approved", "x")], false),
            (&ResumeCondition::TimeoutOnly, vec![sig("cb", "1", "approved", "x")], false),
            (
                &two_approvers,
                vec![sig("approval", "1", "approved", "ann"), sig("approval", "2", "approved", "ann")],
                false,
            ),
            (
                &two_approvers,
                vec![sig("approval", "1", "approved", "ann"), sig("approval", "2", "rejected", "bob")],
                false,
            ),
            (
                &two_approvers,
                vec![sig("approval", "1", "approved", "ann"), sig("approval", "2", "approved", "bob")],
                true,
            ),
            (&two_waitpoints, vec![sig("a", "1", "x", "s"), sig("a", "2", "x", "s")], false),
            (&two_waitpoints, vec![sig("a", "1", "x", "s"), sig("d", "2", "x", "s")], false),
            (&two_waitpoints, vec![sig("a", "1", "x", "s"), sig("c", "2", "x", "s")], true),
            (&three_signals, vec![sig("a", "1", "x", "s"), sig("a", "1", "x", "s"), sig("a", "2", "x", "s")], false),
            (&three_signals, vec![sig("a", "1", "x", "s"), sig("a", "2", "x", "s"), sig("a", "3", "x", "s")], true),
            (&both, vec![sig("approval", "1", "approved", "ann")], false),
            (&both, vec![sig("approval", "1", "approved", "ann"), sig("cb", "2", "done", "svc")], true),
        ];
        for (i, (c, signals, want)) in cases.iter().enumerate() {
            assert_eq!(c.is_satisfied(signals), *want, "case {i}: {c:?}");
        }
    }

    #[test]
    fn relevance_table() {
        let approved = ResumeCondition::single("approval", "approved");
        assert_eq!(approved.relevance("approval", "approved"), SignalRelevance::Counts);
        assert_eq!(approved.relevance("approval", "rejected"), SignalRelevance::MatcherFailed);
        assert_eq!(approved.relevance("other", "approved"), SignalRelevance::NotInCondition);
        let both = all_of(vec![approved, count(1, CountKind::DistinctSignals, None, &["cb"])]);
        assert_eq!(both.relevance("cb", "x"), SignalRelevance::Counts);
        assert_eq!(both.relevance("approval", "nope"), SignalRelevance::MatcherFailed);
        assert_eq!(both.relevance("zzz", "x"), SignalRelevance::NotInCondition);
        assert_eq!(ResumeCondition::OperatorOnly.relevance("a", "b"), SignalRelevance::NotInCondition);
        assert_eq!(both.waitpoint_keys(), ["approval", "cb"]);
    }

    #[test]
    fn invalid_trees_are_refused() {
        let leaf = ResumeCondition::single("a", "x");
        let mut deep = leaf.clone();
        for _ in 0..MAX_CONDITION_DEPTH {
            deep = all_of(vec![deep]);
        }
        assert!(deep.validate().is_ok(), "depth {MAX_CONDITION_DEPTH} is allowed");
        let too_deep = all_of(vec![deep]);
        let bad = [
            all_of(vec![]),
            too_deep,
            count(0, CountKind::DistinctSignals, None, &["a"]),
            count(1, CountKind::DistinctSignals, None, &[]),
            count(3, CountKind::DistinctWaitpoints, None, &["a", "b", "b"]),
            ResumeCondition::single("", "x"),
            ResumeCondition::single("a", ""),
            all_of(vec![leaf.clone(); MAX_CONDITION_MEMBERS + 1]),
        ];
        for c in bad {
            let err = c.validate().expect_err(&format!("{c:?} must be refused"));
            assert_eq!(err.code(), "invalid_input");
        }
        assert!(count(2, CountKind::DistinctWaitpoints, None, &["a", "b"]).validate().is_ok());
    }

    #[test]
    fn conditions_round_trip_as_json() {
        let c = all_of(vec![
            ResumeCondition::single("approval", "approved"),
            count(2, CountKind::DistinctSources, Some(SignalMatcher::Wildcard), &["review"]),
            ResumeCondition::TimeoutOnly,
        ]);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<ResumeCondition>(&json).unwrap(), c);
        let single = serde_json::to_value(ResumeCondition::single("a", "go")).unwrap();
        assert_eq!(single, serde_json::json!({"single": {"waitpoint_key": "a", "matcher": {"by_name": "go"}}}));
    }
}
