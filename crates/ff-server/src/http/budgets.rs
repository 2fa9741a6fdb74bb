//! Budgets: create one, read its status or its flat usage and limits, report usage as an
//! administrator, replace limits, reset it, record and release spend attributed to an
//! execution; and the lease holder's usage report. Each handler is one backend call, whose
//! refusals (`invalid_budget_spec`, `budget_already_exists`, `not_found`...) write nothing.
//!
//! The budget is named by the path. The limits body may repeat it as `budget_id`; one that
//! differs is `400 budget_id_mismatch`, so a request built for one budget never edits another.
//! The holder's report (`/v1/executions/{id}/attempts/{index}/usage`) carries the handle, which
//! must name the execution and the attempt in the path; the budget it charges is in the body.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ff_core::wire::{RecordSpendRequest, ReleaseBudgetRequest, ReportUsageRequest, SetBudgetLimitsRequest};
use ff_core::{
    BudgetChangeResult, BudgetId, BudgetStatus, BudgetUsageAndLimits, CreateBudgetArgs, CreateBudgetResult,
    ReleaseBudgetResult, ReportUsageAdminArgs, ReportUsageResult, ResetBudgetArgs,
};

use super::error::ApiError;
use super::extract::{ApiJson, AttemptPath, BudgetPath, ExecutionPath};
use super::leases::handle_for_attempt;
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};

/// What a malformed definition or report answers.
const BAD_SPEC: &str = "The arrays do not have one entry per dimension, a dimension is malformed or named twice, a \
     delta is negative, a soft limit exceeds its hard limit (`invalid_budget_spec`)";

/// What a report answers: applied, or refused for a hard limit, or a replay.
const REPORT_OUTCOMES: &str = "Applied (`ok`, or `soft_breach` past a soft limit), refused whole because a \
     dimension would pass its hard limit (`hard_breach`, nothing applied), or a replay of a dedup key \
     (`already_applied`)";

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/budgets", "Create a budget (201 created, 200 the same definition exists)")
            .body::<CreateBudgetArgs>(SMALL_LIMIT)
            .responds::<CreateBudgetResult>(201, "Created (`created`)")
            .responds::<CreateBudgetResult>(
                200,
                "A budget with this id and this definition exists; nothing was written (`already_satisfied`)",
            )
            .error(400, BAD_SPEC)
            .error(409, "A budget with this id exists with another definition (`budget_already_exists`)")
            .to(post(create_budget)),
        ApiRoute::get("/v1/budgets/{budget_id}", "A budget's definition, usage and breaches")
            .responds::<BudgetStatus>(200, "The budget")
            .error(404, "No such budget (`not_found`)")
            .to(get(budget_status)),
        ApiRoute::get(
            "/v1/budgets/{budget_id}/usage-and-limits",
            "A budget's usage per dimension and its limits keyed `hard:<dim>` and `soft:<dim>`",
        )
        .responds::<BudgetUsageAndLimits>(200, "Usage and limits")
        .error(404, "No such budget (`not_found`)")
        .to(get(usage_and_limits)),
        ApiRoute::post("/v1/budgets/{budget_id}/usage", "Report usage without a lease (an administrator, an import)")
            .body::<ReportUsageAdminArgs>(SMALL_LIMIT)
            .responds::<ReportUsageResult>(200, REPORT_OUTCOMES)
            .error(400, BAD_SPEC)
            .error(404, "No such budget (`not_found`)")
            .to(post(report_usage_admin)),
        ApiRoute::put(
            "/v1/budgets/{budget_id}/limits",
            "Replace the limits of some dimensions; raising them above the usage ends an exhaustion they caused",
        )
        .body::<SetBudgetLimitsRequest>(SMALL_LIMIT)
        .responds::<BudgetChangeResult>(200, "Set, with whether the budget is still exhausted")
        .error(
            400,
            "The body names another budget (`budget_id_mismatch`); or a malformed limit (`invalid_budget_spec`)",
        )
        .error(404, "No such budget (`not_found`)")
        .to(put(set_limits)),
        ApiRoute::post(
            "/v1/budgets/{budget_id}/reset",
            "Zero the usage, end an exhaustion and make the executions waiting for the budget claimable",
        )
        .responds::<BudgetChangeResult>(200, "Reset, with the executions made claimable and the next automatic reset")
        .error(404, "No such budget (`not_found`)")
        .to(post(reset_budget)),
        ApiRoute::post(
            "/v1/budgets/{budget_id}/spend",
            "Record spend attributed to one execution, at most once per idempotency key",
        )
        .body::<RecordSpendRequest>(SMALL_LIMIT)
        .responds::<ReportUsageResult>(200, REPORT_OUTCOMES)
        .error(400, BAD_SPEC)
        .error(404, "No such budget or execution (`not_found`)")
        .to(post(record_spend)),
        ApiRoute::post("/v1/budgets/{budget_id}/release", "Give back everything attributed to one execution")
            .body::<ReleaseBudgetRequest>(SMALL_LIMIT)
            .responds::<ReleaseBudgetResult>(200, "What was given back, per dimension (nothing on a repeat)")
            .error(404, "No such budget (`not_found`)")
            .to(post(release_budget)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/usage",
            "Report usage as the lease holder, charged to a budget the execution draws on",
        )
        .body::<ReportUsageRequest>(SMALL_LIMIT)
        .responds::<ReportUsageResult>(200, REPORT_OUTCOMES)
        .error(
            400,
            "The handle does not decode (`invalid_handle`) or names another execution or attempt \
             (`handle_mismatch`); a malformed report (`invalid_budget_spec`)",
        )
        .error(404, "No such execution or budget (`not_found`)")
        .error(
            409,
            "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, \
             `lease_expired`...)",
        )
        .to(post(report_usage)),
    ]
}

/// `400 budget_id_mismatch` when a body repeats a budget id other than the path's.
fn same_budget(path: BudgetId, body: Option<BudgetId>) -> Result<(), ApiError> {
    match body {
        Some(named) if named != path => Err(ApiError::bad_request(
            "budget_id_mismatch",
            format!("the body names budget {named}, the path budget {path}"),
        )),
        _ => Ok(()),
    }
}

async fn create_budget(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateBudgetArgs>,
) -> Result<Response, ApiError> {
    let result = state.backend().create_budget(args).await?;
    let status = if result == CreateBudgetResult::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)).into_response())
}

async fn budget_status(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
) -> Result<Json<BudgetStatus>, ApiError> {
    Ok(Json(state.backend().get_budget_status(&budget_id).await?))
}

/// Every budget has at least one dimension, and its usage lists each one: empty usage means
/// there is no such budget.
async fn usage_and_limits(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
) -> Result<Json<BudgetUsageAndLimits>, ApiError> {
    let read = state.backend().read_budget_usage_and_limits(&budget_id).await?;
    if read.usage.is_empty() {
        return Err(ApiError::not_found("budget"));
    }
    Ok(Json(read))
}

async fn report_usage_admin(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
    ApiJson(args): ApiJson<ReportUsageAdminArgs>,
) -> Result<Json<ReportUsageResult>, ApiError> {
    Ok(Json(state.backend().report_usage_admin(&budget_id, args).await?))
}

async fn set_limits(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
    ApiJson(req): ApiJson<SetBudgetLimitsRequest>,
) -> Result<Json<BudgetChangeResult>, ApiError> {
    same_budget(budget_id, req.budget_id)?;
    Ok(Json(state.backend().set_budget_limits(req.into_args(budget_id)).await?))
}

async fn reset_budget(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
) -> Result<Json<BudgetChangeResult>, ApiError> {
    Ok(Json(state.backend().reset_budget(ResetBudgetArgs { budget_id }).await?))
}

async fn record_spend(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
    ApiJson(req): ApiJson<RecordSpendRequest>,
) -> Result<Json<ReportUsageResult>, ApiError> {
    Ok(Json(state.backend().record_spend(req.into_args(budget_id)).await?))
}

async fn release_budget(
    State(state): State<AppState>,
    BudgetPath(budget_id): BudgetPath,
    ApiJson(req): ApiJson<ReleaseBudgetRequest>,
) -> Result<Json<ReleaseBudgetResult>, ApiError> {
    Ok(Json(state.backend().release_budget(req.into_args(budget_id)).await?))
}

async fn report_usage(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<ReportUsageRequest>,
) -> Result<Json<ReportUsageResult>, ApiError> {
    let handle = handle_for_attempt(&id, attempt_index, &req.handle)?;
    Ok(Json(state.backend().report_usage(&handle, &req.budget_id, req.usage()).await?))
}
