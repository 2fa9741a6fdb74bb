//! Budgets: definitions, usage reports (by a lease holder, an administrator, or attributed to
//! an execution), releases, resets, reads and the counter reconciliation.

use async_trait::async_trait;

use crate::admission::ReconcileCounts;
use crate::admission::budget::*;
use crate::error::EngineError;
use crate::handle::Handle;
use crate::id::BudgetId;
use crate::partition::Partition;

/// Budgets and usage.
#[async_trait]
pub trait BudgetBackend: Send + Sync {
    /// Creates a budget; the same id with the same definition again is `AlreadySatisfied`,
    /// with another definition `budget_already_exists`.
    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetResult, EngineError>;

    /// Replaces the limits of some dimensions; raising a strict budget's limits above its
    /// usage ends its exhaustion and makes its blocked executions claimable.
    async fn set_budget_limits(&self, args: SetBudgetLimitsArgs) -> Result<BudgetChangeResult, EngineError>;

    /// Usage reported by the holder of a live lease on an execution drawing on `budget`; the
    /// usage is attributed to that execution (see `release_budget`). A budget the execution
    /// does not draw on is `invalid_input` and nothing is applied.
    async fn report_usage(
        &self,
        handle: &Handle,
        budget: &BudgetId,
        dimensions: UsageDimensions,
    ) -> Result<ReportUsageResult, EngineError>;

    /// Usage reported without a lease (an administrator, a billing import).
    async fn report_usage_admin(
        &self,
        budget_id: &BudgetId,
        args: ReportUsageAdminArgs,
    ) -> Result<ReportUsageResult, EngineError>;

    /// Spend attributed to one execution, at most once per idempotency key.
    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError>;

    /// Gives back everything attributed to one execution (idempotent).
    async fn release_budget(&self, args: ReleaseBudgetArgs) -> Result<ReleaseBudgetResult, EngineError>;

    /// Zeroes the usage, ends an exhaustion, schedules the next automatic reset, and makes the
    /// executions waiting for the budget claimable.
    async fn reset_budget(&self, args: ResetBudgetArgs) -> Result<BudgetChangeResult, EngineError>;

    /// Definition, usage and breaches (`not_found` when absent).
    async fn get_budget_status(&self, id: &BudgetId) -> Result<BudgetStatus, EngineError>;

    /// Limits and usage as flat maps; empty when no such budget exists.
    async fn read_budget_usage_and_limits(&self, budget_id: &BudgetId) -> Result<BudgetUsageAndLimits, EngineError>;

    /// For every budget in `partition` (a budget partition): resets those whose reset time has
    /// come, re-derives exhaustion from usage and limits, blocks eligible executions of
    /// exhausted budgets that a race let through, and forgets lapsed dedup keys. A backstop.
    async fn reconcile_budget_counters(&self, partition: Partition) -> Result<ReconcileCounts, EngineError>;
}
