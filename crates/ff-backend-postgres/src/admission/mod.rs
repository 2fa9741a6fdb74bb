//! Admission on Postgres: quota policies ([`quota`]), budgets ([`budget`]), claim grants
//! ([`grant`]) and the scheduler's block primitives ([`block`]). The admission rules that run
//! inside other operations' transactions (settling quota slots, the budget gate, the claim's
//! grant and budget checks) are the schema's, in `0009_admission.sql`.

pub(crate) mod block;
pub(crate) mod budget;
pub(crate) mod grant;
pub(crate) mod quota;

use async_trait::async_trait;
use ff_core::backend::{BudgetBackend, QuotaBackend, SchedulingBackend};
use ff_core::*;

use crate::backend::PostgresBackend;

#[async_trait]
impl QuotaBackend for PostgresBackend {
    async fn create_quota_policy(&self, args: CreateQuotaPolicyArgs) -> Result<CreateQuotaPolicyResult, EngineError> {
        quota::create(&self.pool, &self.partitions, &args).await
    }

    async fn read_quota_policy_limits(&self, id: &QuotaPolicyId) -> Result<Option<QuotaPolicyLimits>, EngineError> {
        Ok(quota::status(&self.pool, id).await?.map(|s| s.limits))
    }

    async fn get_quota_policy_status(&self, id: &QuotaPolicyId) -> Result<QuotaPolicyStatus, EngineError> {
        quota::status(&self.pool, id).await?.ok_or(EngineError::NotFound { entity: "quota_policy" })
    }

    async fn set_lane_quota_policy(
        &self,
        args: SetLaneQuotaPolicyArgs,
    ) -> Result<SetLaneQuotaPolicyResult, EngineError> {
        quota::set_lane_policy(&self.pool, &args).await
    }

    async fn read_lane_quota_policy(&self, lane: &LaneId) -> Result<Option<QuotaPolicyId>, EngineError> {
        quota::lane_policy(&self.pool, lane).await
    }

    async fn check_admission(
        &self,
        quota_policy_id: &QuotaPolicyId,
        dimension: &str,
        args: CheckAdmissionArgs,
    ) -> Result<CheckAdmissionResult, EngineError> {
        execution::validate_name("dimension", dimension, true)?;
        quota::check(&self.pool, quota_policy_id, &args).await
    }

    async fn release_admission(&self, args: ReleaseAdmissionArgs) -> Result<ReleaseAdmissionResult, EngineError> {
        quota::release(&self.pool, &args).await
    }

    async fn reconcile_quota_counters(&self, partition: Partition) -> Result<ReconcileCounts, EngineError> {
        quota::reconcile(&self.pool, &self.partitions, partition).await
    }
}

#[async_trait]
impl BudgetBackend for PostgresBackend {
    async fn create_budget(&self, args: CreateBudgetArgs) -> Result<CreateBudgetResult, EngineError> {
        budget::create(&self.pool, &self.partitions, &args).await
    }

    async fn set_budget_limits(&self, args: SetBudgetLimitsArgs) -> Result<BudgetChangeResult, EngineError> {
        budget::set_limits(&self.pool, &args).await
    }

    async fn report_usage(
        &self,
        handle: &Handle,
        budget: &BudgetId,
        dimensions: UsageDimensions,
    ) -> Result<ReportUsageResult, EngineError> {
        let p = self.decode(handle)?;
        match budget::report_held(&self.pool, &p, budget, &dimensions).await? {
            Some(r) => Ok(r),
            None => Err(self.rejected(&p).await),
        }
    }

    async fn report_usage_admin(
        &self,
        budget_id: &BudgetId,
        args: ReportUsageAdminArgs,
    ) -> Result<ReportUsageResult, EngineError> {
        budget::report_admin(&self.pool, budget_id, &args).await
    }

    async fn record_spend(&self, args: RecordSpendArgs) -> Result<ReportUsageResult, EngineError> {
        budget::record_spend(&self.pool, &args).await
    }

    async fn release_budget(&self, args: ReleaseBudgetArgs) -> Result<ReleaseBudgetResult, EngineError> {
        budget::release(&self.pool, &args).await
    }

    async fn reset_budget(&self, args: ResetBudgetArgs) -> Result<BudgetChangeResult, EngineError> {
        budget::reset(&self.pool, &args.budget_id).await
    }

    async fn get_budget_status(&self, id: &BudgetId) -> Result<BudgetStatus, EngineError> {
        budget::status(&self.pool, id).await?.ok_or(EngineError::NotFound { entity: "budget" })
    }

    async fn read_budget_usage_and_limits(&self, budget_id: &BudgetId) -> Result<BudgetUsageAndLimits, EngineError> {
        budget::usage_and_limits(&self.pool, budget_id).await
    }

    async fn reconcile_budget_counters(&self, partition: Partition) -> Result<ReconcileCounts, EngineError> {
        budget::reconcile(&self.pool, &self.partitions, partition).await
    }
}

#[async_trait]
impl SchedulingBackend for PostgresBackend {
    async fn claim_for_worker(&self, args: ClaimForWorkerArgs) -> Result<ClaimForWorkerOutcome, EngineError> {
        grant::claim_for_worker(&self.pool, &args).await
    }

    async fn scan_eligible_executions(&self, args: ScanEligibleArgs) -> Result<Vec<ExecutionId>, EngineError> {
        block::scan(&self.pool, &args).await
    }

    async fn issue_claim_grant(&self, args: IssueClaimGrantArgs) -> Result<IssueClaimGrantOutcome, EngineError> {
        grant::issue(&self.pool, &args).await
    }

    async fn claim_execution(&self, args: ClaimExecutionArgs) -> Result<ClaimExecutionResult, EngineError> {
        grant::claim_execution(&self.pool, &args).await
    }

    async fn issue_grant_and_claim(&self, args: IssueGrantAndClaimArgs) -> Result<ClaimGrantOutcome, EngineError> {
        grant::grant_and_claim(&self.pool, &args).await
    }

    async fn block_route(&self, args: BlockRouteArgs) -> Result<BlockOutcome, EngineError> {
        args.validate()?;
        let detail = match &args.reason_detail {
            Some(d) => format!("{}: {d}", args.reason_code),
            None => args.reason_code.clone(),
        };
        block::block(&self.pool, &args.execution_id, &args.lane_id, AdmissionBlock::Route, Some(&detail)).await
    }

    async fn block_execution_for_admission(
        &self,
        args: BlockExecutionForAdmissionArgs,
    ) -> Result<BlockOutcome, EngineError> {
        let b = args.validate()?;
        block::block(&self.pool, &args.execution_id, &args.lane_id, b, args.reason_detail.as_deref()).await
    }

    async fn unblock_execution(&self, args: UnblockExecutionArgs) -> Result<UnblockOutcome, EngineError> {
        block::unblock(&self.pool, &args).await
    }
}
