//! Budgets from a handler: [`TaskContext::report_usage`] charges what the handler used (tokens,
//! calls, dollars...) to a budget its execution draws on (`SubmitRequest::budget`), under its
//! lease.
//!
//! ```no_run
//! # use ff_core::{BudgetId, ReportUsageResult};
//! # use ff_sdk::{HandlerError, TaskContext};
//! async fn summarise(ctx: TaskContext<BudgetId>, text: String) -> Result<String, HandlerError> {
//!     let summary = text.chars().take(80).collect::<String>();
//!     match ctx.report_usage(*ctx.state(), [("tokens", text.len() as i64)]).await? {
//!         ReportUsageResult::HardBreach { dimension, .. } => {
//!             Err(HandlerError::permanent(format!("the budget has no {dimension} left")))
//!         }
//!         _ => Ok(summary),
//!     }
//! }
//! ```
//!
//! A report applies all of its deltas or none: one that would take a dimension past its hard
//! limit is answered `HardBreach` and changes nothing. In strict mode a budget whose usage
//! reaches a hard limit (or that refused a report) is exhausted: executions drawing on it are
//! not claimed (they wait as `rate_limited`, `waiting_for_budget`) until it is reset or raised.
//! The running handler is not stopped; what it does next is its own decision.

use ff_core::{BudgetId, ReportUsageResult, UsageDimensions};

use super::TaskContext;
use crate::error::SdkError;

impl<S> TaskContext<S> {
    /// Charges `deltas` (dimension, amount used; never negative) to `budget`:
    /// `ctx.report_usage(budget, [("tokens", 120)])`. Each call adds to the usage; a report the
    /// handler may repeat (it retries after a transport error) should carry a dedup key, with
    /// [`report_usage_with`](Self::report_usage_with).
    pub async fn report_usage<K: Into<String>>(
        &self,
        budget: BudgetId,
        deltas: impl IntoIterator<Item = (K, i64)>,
    ) -> Result<ReportUsageResult, SdkError> {
        let deltas = deltas.into_iter().map(|(k, v)| (k.into(), v)).collect();
        self.report_usage_with(budget, UsageDimensions { deltas, dedup_key: None }).await
    }

    /// Charges `usage` to `budget`; a report whose dedup key the budget has seen applies
    /// nothing and answers what the first one did.
    pub async fn report_usage_with(
        &self,
        budget: BudgetId,
        usage: UsageDimensions,
    ) -> Result<ReportUsageResult, SdkError> {
        self.inner.transport.report_usage(&self.inner.task, &budget, usage).await
    }
}
