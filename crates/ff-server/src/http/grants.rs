//! Scheduling: claim grants (a scheduler reserves a lane's best eligible execution, or a chosen
//! one, for one worker instance, which then claims it with the grant's key), the operator's
//! immediate claim, the scan of a lane's eligible work, and blocking or unblocking one
//! execution for a route, a budget or its quota. Each handler is one backend call, whose
//! refusals (`invalid_claim_grant`, `claim_grant_expired`, `execution_not_eligible`,
//! `budget_exceeded`, `not_blocked`, `invalid_blocking_reason`...) write nothing.
//!
//! A claim with a grant answers what a worker's claim answers (the handle token, kind, input
//! and tags), so the worker runs what it claimed the same way: the execution's context is read
//! after the claim.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ff_core::wire::{
    BlockExecutionRequest, BlockRouteRequest, ClaimForWorkerRequest, ClaimWithGrantRequest, ClaimedExecution,
    EligibleExecutionsResponse, IssueClaimGrantRequest, OperatorClaimRequest, OperatorClaimResponse,
    UnblockExecutionRequest,
};
use ff_core::{
    BlockOutcome, ClaimExecutionResult, ClaimForWorkerOutcome, ClaimGrant, IssueClaimGrantOutcome, LeasedExecution,
    MAX_SCAN_LIMIT, ScanEligibleArgs, UnblockOutcome,
};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, ExecutionPath, LanePath};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};
use crate::openapi::QuerySchema;

/// Ids per scan when the request names no limit.
const DEFAULT_SCAN: u32 = 100;

/// What a grant or claim answers when the execution cannot be taken now.
const NOT_ELIGIBLE: &str = "The execution is not claimable now or is reserved for another worker \
     (`execution_not_eligible`); a budget it draws on is exhausted (`budget_exceeded`)";

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post(
            "/v1/lanes/{lane_id}/grants",
            "Reserve the lane's best eligible execution that the worker can run, for that worker instance",
        )
        .body::<ClaimForWorkerRequest>(SMALL_LIMIT)
        .responds::<ClaimGrant>(200, "Reserved: claim it with `grant_key` before `expires_at_ms`")
        .empty(204, "Nothing on the lane is eligible for this worker now")
        .error(400, "A grant TTL outside 1..=60000 ms, a malformed id or capability (`invalid_input`...)")
        .to(post(claim_for_worker)),
        ApiRoute::get(
            "/v1/lanes/{lane_id}/eligible",
            "Ids of a lane's eligible, unreserved executions, in claim order",
        )
        .query_schema(
            "partition",
            false,
            "Only executions of this partition (default: every one)",
            QuerySchema::Partition,
        )
        .query_schema(
            "limit",
            false,
            format!("Most ids, 1..={MAX_SCAN_LIMIT} (default {DEFAULT_SCAN})"),
            QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_SCAN_LIMIT})),
        )
        .responds::<EligibleExecutionsResponse>(200, "The ids")
        .to(get(scan_eligible)),
        ApiRoute::post("/v1/executions/{id}/grants", "Reserve a chosen eligible execution for a worker instance")
            .body::<IssueClaimGrantRequest>(SMALL_LIMIT)
            .responds::<IssueClaimGrantOutcome>(200, "Reserved (`status: granted`), with the grant key")
            .error(
                400,
                "The execution is on another lane (`invalid_input`); the worker lacks a capability it requires \
                 (`capability_mismatch`)",
            )
            .error(404, "No such execution (`not_found`)")
            .error(409, NOT_ELIGIBLE)
            .to(post(issue_claim_grant)),
        ApiRoute::post("/v1/executions/{id}/claim", "Claim an execution with a grant issued to this worker instance")
            .body::<ClaimWithGrantRequest>(SMALL_LIMIT)
            .responds::<ClaimedExecution>(200, "Leased, with what its handler needs (the grant is consumed)")
            .error(400, "The grant is for another lane (`invalid_input`)")
            .error(404, "No such execution (`not_found`)")
            .error(
                409,
                "The grant key does not verify, was used already or is another worker's (`invalid_claim_grant`); \
                 the grant lapsed (`claim_grant_expired`); the execution is no longer claimable \
                 (`execution_not_eligible`, `budget_exceeded`)",
            )
            .to(post(claim_execution)),
        ApiRoute::post(
            "/v1/executions/{id}/operator-claim",
            "Claim an eligible, reserved or reclaimable execution now, as the worker `operator`",
        )
        .body::<OperatorClaimRequest>(SMALL_LIMIT)
        .responds::<OperatorClaimResponse>(200, "Leased, with the handle to end what was claimed")
        .error(400, "The execution is on another lane (`invalid_input`)")
        .error(404, "No such execution (`not_found`)")
        .error(409, NOT_ELIGIBLE)
        .to(post(operator_claim)),
        ApiRoute::post(
            "/v1/executions/{id}/block",
            "Park an eligible execution for a budget, its quota or a route until it is unblocked",
        )
        .body::<BlockExecutionRequest>(SMALL_LIMIT)
        .responds::<BlockOutcome>(
            200,
            "Blocked with its blocking reason (`blocked`), or it was not eligible and nothing changed \
             (`not_eligible`)",
        )
        .error(
            400,
            "A reason that is not an admission block (`invalid_blocking_reason`); the execution is on another lane \
             (`invalid_input`)",
        )
        .error(404, "No such execution (`not_found`)")
        .to(post(block_execution)),
        ApiRoute::post("/v1/executions/{id}/block-route", "Park an eligible execution until a capable worker appears")
            .body::<BlockRouteRequest>(SMALL_LIMIT)
            .responds::<BlockOutcome>(
                200,
                "Blocked (`blocked`, `waiting_for_capable_worker`), or it was not eligible and nothing changed \
                 (`not_eligible`)",
            )
            .error(400, "The execution is on another lane, or a malformed reason (`invalid_input`)")
            .error(404, "No such execution (`not_found`)")
            .to(post(block_route)),
        ApiRoute::post(
            "/v1/executions/{id}/unblock",
            "Make a blocked execution claimable again; admission runs again, so it may wait for its quota or budget",
        )
        .body::<UnblockExecutionRequest>(SMALL_LIMIT)
        .responds::<UnblockOutcome>(200, "Unblocked, with its eligibility after admission ran again")
        .error(
            400,
            "A reason that is not an admission block (`invalid_blocking_reason`); the execution is on another lane \
             (`invalid_input`)",
        )
        .error(404, "No such execution (`not_found`)")
        .error(409, "The execution is not blocked for the expected reason (`not_blocked`)")
        .to(post(unblock_execution)),
    ]
}

async fn claim_for_worker(
    State(state): State<AppState>,
    LanePath(lane_id): LanePath,
    ApiJson(req): ApiJson<ClaimForWorkerRequest>,
) -> Result<Response, ApiError> {
    Ok(match state.backend().claim_for_worker(req.into_args(lane_id)).await? {
        ClaimForWorkerOutcome::Granted(grant) => Json(grant).into_response(),
        ClaimForWorkerOutcome::NoWork => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanQuery {
    partition: Option<u16>,
    limit: Option<u32>,
}

async fn scan_eligible(
    State(state): State<AppState>,
    LanePath(lane_id): LanePath,
    ApiQuery(q): ApiQuery<ScanQuery>,
) -> Result<Json<EligibleExecutionsResponse>, ApiError> {
    if let Some(p) = q.partition {
        state.0.partitions.check_execution_partition(p)?;
    }
    let args = ScanEligibleArgs { lane_id, partition: q.partition, limit: q.limit.unwrap_or(DEFAULT_SCAN) };
    Ok(Json(EligibleExecutionsResponse { executions: state.backend().scan_eligible_executions(args).await? }))
}

async fn issue_claim_grant(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<IssueClaimGrantRequest>,
) -> Result<Json<IssueClaimGrantOutcome>, ApiError> {
    Ok(Json(state.backend().issue_claim_grant(req.into_args(id)).await?))
}

async fn claim_execution(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<ClaimWithGrantRequest>,
) -> Result<Json<ClaimedExecution>, ApiError> {
    let ClaimExecutionResult::Claimed(claimed) = state.backend().claim_execution(req.into_args(id)).await?;
    let context = state.backend().read_execution_context(&id).await?;
    Ok(Json(ClaimedExecution::from_leased(LeasedExecution { handle: claimed.handle, context })?))
}

async fn operator_claim(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<OperatorClaimRequest>,
) -> Result<Json<OperatorClaimResponse>, ApiError> {
    let outcome = state.backend().issue_grant_and_claim(req.into_args(id)).await?;
    Ok(Json(OperatorClaimResponse::from_outcome(&outcome)))
}

async fn block_execution(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<BlockExecutionRequest>,
) -> Result<Json<BlockOutcome>, ApiError> {
    Ok(Json(state.backend().block_execution_for_admission(req.into_args(id)).await?))
}

async fn block_route(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<BlockRouteRequest>,
) -> Result<Json<BlockOutcome>, ApiError> {
    Ok(Json(state.backend().block_route(req.into_args(id)).await?))
}

async fn unblock_execution(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<UnblockExecutionRequest>,
) -> Result<Json<UnblockOutcome>, ApiError> {
    Ok(Json(state.backend().unblock_execution(req.into_args(id)).await?))
}
