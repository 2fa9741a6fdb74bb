//! Budgets from the [`Client`]: [`Client::budget`] builds and creates one
//! (`client.budget(id).scope("tenant", "acme").dimension("tokens", 1000, 800).create()`), and
//! one method per `BudgetBackend` call the API serves, taking the same arguments and returning
//! the same result: status, usage and limits, usage reports (an administrator's, and the lease
//! holder's that the worker runtime's HTTP transport makes), limits, resets, spend and release.

use std::time::Duration;

use ff_core::wire::{RecordSpendRequest, ReleaseBudgetRequest, ReportUsageRequest, SetBudgetLimitsRequest};
use ff_core::{
    AttemptIndex, BudgetChangeResult, BudgetId, BudgetStatus, BudgetUsageAndLimits, CreateBudgetArgs,
    CreateBudgetResult, EnforcementMode, ExecutionId, RecordSpendArgs, ReleaseBudgetArgs, ReleaseBudgetResult,
    ReportUsageAdminArgs, ReportUsageResult, ResetBudgetArgs, SetBudgetLimitsArgs, UsageDimensions,
};
use reqwest::Method;

use super::{Client, enc};
use crate::error::SdkError;

/// A budget under construction, built by [`Client::budget`] and sent by
/// [`BudgetBuilder::create`]. A scope and at least one dimension are required; the mode is
/// strict unless [`warn`](Self::warn) is called, and usage is reset only by hand unless
/// [`reset_every`](Self::reset_every) is called.
#[must_use = "a budget builder does nothing until `create` is awaited"]
pub struct BudgetBuilder<'a> {
    client: &'a Client,
    args: CreateBudgetArgs,
}

impl BudgetBuilder<'_> {
    /// What the budget covers: `scope_type` (e.g. `tenant`) and which one (`scope_id`).
    pub fn scope(mut self, scope_type: impl Into<String>, scope_id: impl Into<String>) -> Self {
        self.args.scope_type = scope_type.into();
        self.args.scope_id = scope_id.into();
        self
    }

    /// Limits `dimension` (e.g. `tokens`) to `hard` (reports that would pass it are refused)
    /// and `soft` (reports past it are flagged); 0 means no limit of that kind.
    pub fn dimension(mut self, dimension: impl Into<String>, hard: u64, soft: u64) -> Self {
        self.args.dimensions.push(dimension.into());
        self.args.hard_limits.push(hard);
        self.args.soft_limits.push(soft);
        self
    }

    /// An exhausted budget stops claims of the executions drawing on it (the default).
    pub fn strict(mut self) -> Self {
        self.args.enforcement_mode = EnforcementMode::Strict;
        self
    }

    /// Breaches are reported and counted only; nothing is stopped.
    pub fn warn(mut self) -> Self {
        self.args.enforcement_mode = EnforcementMode::Warn;
        self
    }

    /// Resets the usage to zero every `interval` (whole milliseconds).
    pub fn reset_every(mut self, interval: Duration) -> Self {
        self.args.reset_interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// A label for what the operator intends on a hard breach, shown in the status.
    pub fn on_hard_limit(mut self, label: impl Into<String>) -> Self {
        self.args.on_hard_limit = Some(label.into());
        self
    }

    /// A label for what the operator intends on a soft breach, shown in the status.
    pub fn on_soft_limit(mut self, label: impl Into<String>) -> Self {
        self.args.on_soft_limit = Some(label.into());
        self
    }

    /// The arguments this builder sends.
    pub fn args(&self) -> &CreateBudgetArgs {
        &self.args
    }

    /// Creates the budget: `Created`, or `AlreadySatisfied` when this id has this definition
    /// already (another definition is `budget_already_exists`).
    pub async fn create(self) -> Result<CreateBudgetResult, SdkError> {
        self.client.create_budget(&self.args).await
    }
}

impl Client {
    /// A builder of the budget `budget_id` (caller-minted, so creating it again is idempotent).
    pub fn budget(&self, budget_id: BudgetId) -> BudgetBuilder<'_> {
        let args = CreateBudgetArgs {
            budget_id,
            scope_type: String::new(),
            scope_id: String::new(),
            enforcement_mode: EnforcementMode::Strict,
            on_hard_limit: None,
            on_soft_limit: None,
            reset_interval_ms: 0,
            dimensions: Vec::new(),
            hard_limits: Vec::new(),
            soft_limits: Vec::new(),
        };
        BudgetBuilder { client: self, args }
    }

    /// Creates a budget; `AlreadySatisfied` when this id has this definition already.
    pub async fn create_budget(&self, args: &CreateBudgetArgs) -> Result<CreateBudgetResult, SdkError> {
        self.post("/v1/budgets", args).await
    }

    /// A budget's definition, usage and breaches (`not_found` when absent).
    pub async fn get_budget_status(&self, budget_id: &BudgetId) -> Result<BudgetStatus, SdkError> {
        Self::json(self.request(Method::GET, &budget_path(budget_id, ""))).await
    }

    /// A budget's usage and its limits as flat maps; empty when no such budget exists.
    pub async fn read_budget_usage_and_limits(&self, budget_id: &BudgetId) -> Result<BudgetUsageAndLimits, SdkError> {
        let req = self.request(Method::GET, &budget_path(budget_id, "/usage-and-limits"));
        match Self::json(req).await {
            Err(SdkError::Api { status: 404, code, .. }) if code == "not_found" => Ok(BudgetUsageAndLimits::default()),
            other => other,
        }
    }

    /// Usage reported without a lease (an administrator, a billing import).
    pub async fn report_usage_admin(
        &self,
        budget_id: &BudgetId,
        args: &ReportUsageAdminArgs,
    ) -> Result<ReportUsageResult, SdkError> {
        self.post(&budget_path(budget_id, "/usage"), args).await
    }

    /// Replaces the limits of some dimensions; raising them above the usage ends an exhaustion
    /// they caused.
    pub async fn set_budget_limits(&self, args: &SetBudgetLimitsArgs) -> Result<BudgetChangeResult, SdkError> {
        let req = self
            .request(Method::PUT, &budget_path(&args.budget_id, "/limits"))
            .json(&SetBudgetLimitsRequest::from_args(args));
        Self::json(req).await
    }

    /// Zeroes the usage, ends an exhaustion and makes the executions waiting for the budget
    /// claimable.
    pub async fn reset_budget(&self, args: &ResetBudgetArgs) -> Result<BudgetChangeResult, SdkError> {
        Self::json(self.request(Method::POST, &budget_path(&args.budget_id, "/reset"))).await
    }

    /// Spend attributed to one execution, at most once per idempotency key.
    pub async fn record_spend(&self, args: &RecordSpendArgs) -> Result<ReportUsageResult, SdkError> {
        self.post(&budget_path(&args.budget_id, "/spend"), &RecordSpendRequest::from_args(args)).await
    }

    /// Gives back everything attributed to one execution (a repeat gives back nothing).
    pub async fn release_budget(&self, args: &ReleaseBudgetArgs) -> Result<ReleaseBudgetResult, SdkError> {
        self.post(&budget_path(&args.budget_id, "/release"), &ReleaseBudgetRequest::from_args(args)).await
    }

    /// Usage reported by the holder of the lease `handle` on attempt `attempt` of `id`,
    /// charged to `budget_id` (one the execution draws on).
    pub async fn report_usage(
        &self,
        id: &ExecutionId,
        attempt: AttemptIndex,
        handle: &str,
        budget_id: &BudgetId,
        usage: &UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError> {
        let path = format!("/v1/executions/{}/attempts/{}/usage", enc(&id.to_string()), attempt.0);
        self.post(&path, &ReportUsageRequest::new(handle.to_owned(), *budget_id, usage.clone())).await
    }
}

fn budget_path(id: &BudgetId, op: &str) -> String {
    format!("/v1/budgets/{}{op}", enc(&id.to_string()))
}
