//! Budgets: limits on what executions spend, per dimension (tokens, dollars, calls...).
//!
//! Each dimension may have a hard and a soft limit. A usage report applies all of its deltas or
//! none: if any delta would take its dimension past the hard limit, nothing is applied and the
//! report is a [`ReportUsageResult::HardBreach`]. Reports carrying a dedup key apply at most once
//! (a replay returns the first outcome). In `strict` mode a hard breach, or usage reaching a hard
//! limit, exhausts the budget: the executions drawing on it are not claimed (they wait as
//! `blocked_by_budget`, `waiting_for_budget`) until the budget is reset (by hand or by its reset
//! interval) or its limits are raised. In `warn` mode breaches are reported and counted only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ValidationKind};
use crate::id::{BudgetId, ExecutionId, TimestampMs};

/// Most dimensions one budget or one report may name.
pub const MAX_BUDGET_DIMENSIONS: usize = 64;
/// Longest dimension name, in bytes.
pub const MAX_DIMENSION_BYTES: usize = 64;
/// Longest dedup key, in bytes.
pub const MAX_DEDUP_KEY_BYTES: usize = 256;
/// How long a usage report's dedup key is remembered, in milliseconds (one day).
pub const USAGE_DEDUP_TTL_MS: i64 = 86_400_000;

/// What a hard breach does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// An exhausted budget stops claims of the executions drawing on it.
    Strict,
    /// Breaches are reported and counted; nothing is stopped.
    Warn,
}

impl EnforcementMode {
    /// The snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Warn => "warn",
        }
    }

    /// Parses the label.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s {
            "strict" => Ok(Self::Strict),
            "warn" => Ok(Self::Warn),
            other => {
                Err(EngineError::validation(ValidationKind::Corruption, format!("unknown enforcement mode {other:?}")))
            }
        }
    }
}

/// Arguments of `create_budget`. The three arrays are parallel: `hard_limits[i]` and
/// `soft_limits[i]` limit `dimensions[i]`; 0 means no limit of that kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBudgetArgs {
    /// The budget's id (caller-minted, so creation is idempotent).
    pub budget_id: BudgetId,
    /// What the budget covers, e.g. `tenant`.
    pub scope_type: String,
    /// Which one, e.g. the tenant's id.
    pub scope_id: String,
    /// Strict (stop claims when exhausted) or warn.
    pub enforcement_mode: EnforcementMode,
    /// A label for what the operator intends on a hard breach, reported in the status.
    #[serde(default)]
    pub on_hard_limit: Option<String>,
    /// A label for what the operator intends on a soft breach, reported in the status.
    #[serde(default)]
    pub on_soft_limit: Option<String>,
    /// Usage resets to zero this often, in milliseconds (0 = only by hand).
    #[serde(default)]
    pub reset_interval_ms: u64,
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Hard limit per dimension (0 = none).
    pub hard_limits: Vec<u64>,
    /// Soft limit per dimension (0 = none).
    pub soft_limits: Vec<u64>,
}

impl CreateBudgetArgs {
    /// Checks names, labels and the limit arrays.
    pub fn validate(&self) -> Result<(), EngineError> {
        crate::execution::validate_name("scope_type", &self.scope_type, false)?;
        crate::execution::validate_name("scope_id", &self.scope_id, false)?;
        for label in [&self.on_hard_limit, &self.on_soft_limit].into_iter().flatten() {
            crate::execution::validate_name("limit action", label, false)?;
        }
        if self.reset_interval_ms > i64::MAX as u64 / 2 {
            return Err(spec(format!("reset_interval_ms {} is too large", self.reset_interval_ms)));
        }
        validate_limits(&self.dimensions, &self.hard_limits, &self.soft_limits)
    }

    /// The limits as `(dimension, hard, soft)` with 0 read as none.
    pub fn limits(&self) -> Vec<DimensionLimit> {
        limits(&self.dimensions, &self.hard_limits, &self.soft_limits)
    }
}

/// One dimension's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimensionLimit {
    /// Dimension.
    pub dimension: String,
    /// Hard limit, if any.
    pub hard: Option<u64>,
    /// Soft limit, if any.
    pub soft: Option<u64>,
}

fn limits(dimensions: &[String], hard: &[u64], soft: &[u64]) -> Vec<DimensionLimit> {
    let none_if_zero = |v: u64| (v > 0).then_some(v);
    dimensions
        .iter()
        .zip(hard.iter().zip(soft))
        .map(|(d, (h, s))| DimensionLimit { dimension: d.clone(), hard: none_if_zero(*h), soft: none_if_zero(*s) })
        .collect()
}

fn spec(detail: String) -> EngineError {
    EngineError::validation(ValidationKind::InvalidBudgetSpec, detail)
}

fn validate_limits(dimensions: &[String], hard: &[u64], soft: &[u64]) -> Result<(), EngineError> {
    if dimensions.len() != hard.len() || dimensions.len() != soft.len() {
        return Err(spec(format!(
            "{} dimensions, {} hard limits and {} soft limits: the arrays must have one entry per dimension",
            dimensions.len(),
            hard.len(),
            soft.len()
        )));
    }
    if dimensions.is_empty() || dimensions.len() > MAX_BUDGET_DIMENSIONS {
        return Err(spec(format!("a budget needs 1..={MAX_BUDGET_DIMENSIONS} dimensions")));
    }
    validate_dimensions(dimensions.iter())?;
    for (d, (h, s)) in dimensions.iter().zip(hard.iter().zip(soft)) {
        if *h > i64::MAX as u64 || *s > i64::MAX as u64 {
            return Err(spec(format!("limit of dimension {d:?} is too large")));
        }
        if *h > 0 && *s > *h {
            return Err(spec(format!("dimension {d:?}: soft limit {s} exceeds hard limit {h}")));
        }
    }
    Ok(())
}

fn validate_dimensions<'a>(dimensions: impl Iterator<Item = &'a String>) -> Result<(), EngineError> {
    let mut seen = std::collections::BTreeSet::new();
    for d in dimensions {
        if d.is_empty()
            || d.len() > MAX_DIMENSION_BYTES
            || !d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(spec(format!(
                "dimension {d:?} must be 1..={MAX_DIMENSION_BYTES} bytes of letters, digits, '_', '-', '.' or ':'"
            )));
        }
        if !seen.insert(d.as_str()) {
            return Err(spec(format!("dimension {d:?} is named twice")));
        }
    }
    Ok(())
}

fn validate_deltas<'a>(deltas: impl Iterator<Item = (&'a String, &'a i64)> + Clone) -> Result<(), EngineError> {
    let n = deltas.clone().count();
    if n == 0 || n > MAX_BUDGET_DIMENSIONS {
        return Err(spec(format!("a usage report needs 1..={MAX_BUDGET_DIMENSIONS} dimensions")));
    }
    validate_dimensions(deltas.clone().map(|(d, _)| d))?;
    if let Some((d, v)) = deltas.into_iter().find(|(_, v)| **v < 0) {
        return Err(spec(format!(
            "negative delta {v} for dimension {d:?}: usage only grows (reset or release to lower it)"
        )));
    }
    Ok(())
}

fn validate_dedup(key: Option<&str>) -> Result<(), EngineError> {
    if let Some(k) = key {
        crate::execution::validate_name("dedup_key", k, false)?;
        if k.len() > MAX_DEDUP_KEY_BYTES {
            return Err(EngineError::invalid(format!("dedup_key exceeds {MAX_DEDUP_KEY_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Outcome of `create_budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateBudgetResult {
    /// Created now.
    Created,
    /// A budget with this id and this definition exists already.
    AlreadySatisfied,
}

/// Arguments of `set_budget_limits`: replaces the limits of the named dimensions (others keep
/// theirs). Raising a limit above the usage ends an exhaustion it caused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetLimitsArgs {
    /// The budget.
    pub budget_id: BudgetId,
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Hard limit per dimension (0 = none).
    pub hard_limits: Vec<u64>,
    /// Soft limit per dimension (0 = none).
    pub soft_limits: Vec<u64>,
}

impl SetBudgetLimitsArgs {
    /// Checks the limit arrays.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_limits(&self.dimensions, &self.hard_limits, &self.soft_limits)
    }

    /// The limits with 0 read as none.
    pub fn limits(&self) -> Vec<DimensionLimit> {
        limits(&self.dimensions, &self.hard_limits, &self.soft_limits)
    }
}

/// Outcome of `set_budget_limits` and `reset_budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetChangeResult {
    /// Whether the budget is still exhausted.
    pub exhausted: bool,
    /// Executions made claimable again.
    pub unblocked: u64,
    /// The next automatic reset.
    pub next_reset_at: Option<TimestampMs>,
}

/// Usage reported by a lease holder (`report_usage`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageDimensions {
    /// Amount used per dimension (never negative).
    pub deltas: BTreeMap<String, i64>,
    /// Applies the report at most once per budget.
    #[serde(default)]
    pub dedup_key: Option<String>,
}

impl UsageDimensions {
    /// Checks the dimensions, the deltas and the dedup key.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_deltas(self.deltas.iter())?;
        validate_dedup(self.dedup_key.as_deref())
    }
}

/// Arguments of `report_usage_admin`: usage reported without a lease (parallel arrays).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportUsageAdminArgs {
    /// Dimension names.
    pub dimensions: Vec<String>,
    /// Amount used per dimension (never negative).
    pub deltas: Vec<i64>,
    /// Applies the report at most once per budget.
    #[serde(default)]
    pub dedup_key: Option<String>,
}

impl ReportUsageAdminArgs {
    /// Checks the arrays, the deltas and the dedup key.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.dimensions.len() != self.deltas.len() {
            return Err(spec(format!(
                "{} dimensions and {} deltas: the arrays must have one entry per dimension",
                self.dimensions.len(),
                self.deltas.len()
            )));
        }
        validate_deltas(self.dimensions.iter().zip(self.deltas.iter()))?;
        validate_dedup(self.dedup_key.as_deref())
    }
}

/// Arguments of `record_spend`: usage attributed to one execution, so `release_budget` can give
/// it back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordSpendArgs {
    /// The budget.
    pub budget_id: BudgetId,
    /// The execution that spent it.
    pub execution_id: ExecutionId,
    /// Amount per dimension (never negative).
    pub deltas: BTreeMap<String, i64>,
    /// Applies the spend at most once per budget.
    pub idempotency_key: String,
}

impl RecordSpendArgs {
    /// Checks the deltas and the key.
    pub fn validate(&self) -> Result<(), EngineError> {
        validate_deltas(self.deltas.iter())?;
        validate_dedup(Some(&self.idempotency_key))
    }
}

/// Outcome of a usage report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReportUsageResult {
    /// Applied; no limit crossed.
    Ok,
    /// Applied; `dimension` is past its soft limit.
    SoftBreach {
        /// The first dimension (in report order) past its soft limit.
        dimension: String,
        /// Its usage after the report.
        current_usage: u64,
        /// Its soft limit.
        soft_limit: u64,
    },
    /// Not applied: `dimension` would pass its hard limit.
    HardBreach {
        /// The first dimension (in report order) that would pass its hard limit.
        dimension: String,
        /// Its usage, unchanged by the report.
        current_usage: u64,
        /// Its hard limit.
        hard_limit: u64,
    },
    /// A spend with this idempotency key was recorded already; nothing changed.
    AlreadyApplied,
}

/// Arguments of `release_budget`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBudgetArgs {
    /// The budget.
    pub budget_id: BudgetId,
    /// The execution whose recorded spend is given back.
    pub execution_id: ExecutionId,
}

/// Outcome of `release_budget` (idempotent: a second release gives back nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReleaseBudgetResult {
    /// What was given back, per dimension.
    pub released: BTreeMap<String, u64>,
}

/// Arguments of `reset_budget`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBudgetArgs {
    /// The budget.
    pub budget_id: BudgetId,
}

/// A budget's definition, usage and breaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetStatus {
    /// The budget.
    pub budget_id: BudgetId,
    /// Scope type.
    pub scope_type: String,
    /// Scope id.
    pub scope_id: String,
    /// Strict or warn.
    pub enforcement_mode: EnforcementMode,
    /// Hard-limit action label.
    pub on_hard_limit: Option<String>,
    /// Soft-limit action label.
    pub on_soft_limit: Option<String>,
    /// Usage per dimension.
    pub usage: BTreeMap<String, u64>,
    /// Hard limits (dimensions without one are absent).
    pub hard_limits: BTreeMap<String, u64>,
    /// Soft limits (dimensions without one are absent).
    pub soft_limits: BTreeMap<String, u64>,
    /// Whether it is exhausted (strict mode: its executions are not claimed).
    pub exhausted: bool,
    /// Reports refused for a hard breach.
    pub breach_count: u64,
    /// Reports that left a dimension past its soft limit.
    pub soft_breach_count: u64,
    /// Last hard breach.
    pub last_breach_at: Option<TimestampMs>,
    /// Dimension of the last hard breach.
    pub last_breach_dim: Option<String>,
    /// Reset interval in ms (0 = only by hand).
    pub reset_interval_ms: u64,
    /// Next automatic reset.
    pub next_reset_at: Option<TimestampMs>,
    /// Executions waiting for this budget.
    pub blocked_executions: u64,
    /// Creation time.
    pub created_at: TimestampMs,
}

/// A budget's limits and usage as flat maps: limits keyed `hard:<dim>` and `soft:<dim>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetUsageAndLimits {
    /// `hard:<dim>` and `soft:<dim>` → limit.
    pub limits: BTreeMap<String, u64>,
    /// Dimension → usage.
    pub usage: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(dims: &[&str], hard: &[u64], soft: &[u64]) -> CreateBudgetArgs {
        CreateBudgetArgs {
            budget_id: BudgetId::new(),
            scope_type: "tenant".into(),
            scope_id: "acme".into(),
            enforcement_mode: EnforcementMode::Strict,
            on_hard_limit: None,
            on_soft_limit: None,
            reset_interval_ms: 0,
            dimensions: dims.iter().map(|d| d.to_string()).collect(),
            hard_limits: hard.to_vec(),
            soft_limits: soft.to_vec(),
        }
    }

    #[test]
    fn budget_definitions_are_checked() {
        let cases = [
            (create(&["tokens"], &[100], &[80]), true),
            (create(&["tokens", "usd"], &[100, 0], &[0, 5]), true),
            (create(&["tokens"], &[100, 5], &[80]), false),
            (create(&["tokens"], &[100], &[]), false),
            (create(&[], &[], &[]), false),
            (create(&["tokens", "tokens"], &[1, 1], &[0, 0]), false),
            (create(&["to kens"], &[1], &[0]), false),
            (create(&["tokens"], &[10], &[11]), false),
        ];
        for (a, ok) in cases {
            let r = a.validate();
            assert_eq!(r.is_ok(), ok, "{a:?}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.code(), "invalid_budget_spec");
            }
        }
    }

    #[test]
    fn usage_reports_are_checked() {
        let ok = ReportUsageAdminArgs { dimensions: vec!["tokens".into()], deltas: vec![5], dedup_key: None };
        assert!(ok.validate().is_ok());
        let mismatched = ReportUsageAdminArgs { deltas: vec![5, 6], ..ok.clone() };
        assert_eq!(mismatched.validate().unwrap_err().code(), "invalid_budget_spec");
        let negative = ReportUsageAdminArgs { deltas: vec![-1], ..ok.clone() };
        assert_eq!(negative.validate().unwrap_err().code(), "invalid_budget_spec");
        let empty = ReportUsageAdminArgs { dimensions: vec![], deltas: vec![], dedup_key: None };
        assert_eq!(empty.validate().unwrap_err().code(), "invalid_budget_spec");
        let spend = RecordSpendArgs {
            budget_id: BudgetId::new(),
            execution_id: ExecutionId::in_partition(0),
            deltas: [("tokens".to_string(), -3)].into(),
            idempotency_key: "k".into(),
        };
        assert_eq!(spend.validate().unwrap_err().code(), "invalid_budget_spec");
    }
}
