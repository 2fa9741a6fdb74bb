//! Quota policies: create one, read its limits and what it holds, and admit executions into it
//! outside the claim path (a service layer gating its own call) and release them. Each handler
//! is one backend call, whose refusals (`invalid_quota_spec`, `quota_policy_already_exists`,
//! `not_found`) write nothing. The policy is named by the path.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ff_core::wire::{CheckAdmissionRequest, LaneQuotaPolicy, ReleaseAdmissionRequest};
use ff_core::{
    CheckAdmissionResult, CreateQuotaPolicyArgs, CreateQuotaPolicyResult, QuotaPolicyLimits, QuotaPolicyStatus,
    ReleaseAdmissionResult, SetLaneQuotaPolicyResult,
};

use super::error::ApiError;
use super::extract::{ApiJson, LanePath, QuotaPolicyPath};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/quota-policies", "Create a quota policy (201 created, 200 the same limits exist)")
            .body::<CreateQuotaPolicyArgs>(SMALL_LIMIT)
            .responds::<CreateQuotaPolicyResult>(201, "Created (`created`)")
            .responds::<CreateQuotaPolicyResult>(
                200,
                "A policy with this id and these limits exists; nothing was written (`already_satisfied`)",
            )
            .error(
                400,
                "A cap of 0, a rate without its window, no limit at all, a value out of bounds \
                 (`invalid_quota_spec`)",
            )
            .error(409, "A policy with this id exists with other limits (`quota_policy_already_exists`)")
            .to(post(create_policy)),
        ApiRoute::get("/v1/quota-policies/{quota_policy_id}", "A quota policy's limits and what it holds now")
            .responds::<QuotaPolicyStatus>(200, "The policy")
            .error(404, "No such policy (`not_found`)")
            .to(get(policy_status)),
        ApiRoute::get("/v1/quota-policies/{quota_policy_id}/limits", "A quota policy's admission limits (0 = none)")
            .responds::<QuotaPolicyLimits>(200, "The limits")
            .error(404, "No such policy (`not_found`)")
            .to(get(policy_limits)),
        ApiRoute::post(
            "/v1/quota-policies/{quota_policy_id}/admissions",
            "Admit an execution into the policy outside the claim path; it holds its slot until released",
        )
        .body::<CheckAdmissionRequest>(SMALL_LIMIT)
        .responds::<CheckAdmissionResult>(
            200,
            "Admitted (`admitted`), held already (`already_admitted`), or refused for the rate window \
             (`rate_exceeded`, with `retry_after_ms`) or the concurrency cap (`concurrency_exceeded`)",
        )
        .error(400, "An override of 0 or out of bounds (`invalid_quota_spec`); a malformed dimension (`invalid_input`)")
        .error(404, "No such policy (`not_found`)")
        .to(post(check_admission)),
        ApiRoute::post(
            "/v1/quota-policies/{quota_policy_id}/admissions/release",
            "Give back a slot taken by an admission; waiting executions are admitted into it",
        )
        .body::<ReleaseAdmissionRequest>(SMALL_LIMIT)
        .responds::<ReleaseAdmissionResult>(200, "Released (`released`), or nothing was held (`not_held`)")
        .error(404, "No such policy (`not_found`)")
        .to(post(release_admission)),
        ApiRoute::put(
            "/v1/lanes/{lane_id}/quota-policy",
            "Set the lane's quota policy: executions created on the lane later without their own take it",
        )
        .body::<LaneQuotaPolicy>(SMALL_LIMIT)
        .responds::<SetLaneQuotaPolicyResult>(200, "Set; the lane's policy before")
        .error(404, "No such policy (`not_found`)")
        .to(put(set_lane_policy)),
        ApiRoute::get("/v1/lanes/{lane_id}/quota-policy", "The lane's quota policy (`null` for none)")
            .responds::<LaneQuotaPolicy>(200, "The lane's policy")
            .to(get(lane_policy)),
    ]
}

async fn set_lane_policy(
    State(state): State<AppState>,
    LanePath(lane): LanePath,
    ApiJson(req): ApiJson<LaneQuotaPolicy>,
) -> Result<Json<SetLaneQuotaPolicyResult>, ApiError> {
    Ok(Json(state.backend().set_lane_quota_policy(req.into_args(lane)).await?))
}

async fn lane_policy(
    State(state): State<AppState>,
    LanePath(lane): LanePath,
) -> Result<Json<LaneQuotaPolicy>, ApiError> {
    Ok(Json(LaneQuotaPolicy { quota_policy_id: state.backend().read_lane_quota_policy(&lane).await? }))
}

async fn create_policy(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<CreateQuotaPolicyArgs>,
) -> Result<Response, ApiError> {
    let result = state.backend().create_quota_policy(args).await?;
    let status = if result == CreateQuotaPolicyResult::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)).into_response())
}

async fn policy_status(
    State(state): State<AppState>,
    QuotaPolicyPath(id): QuotaPolicyPath,
) -> Result<Json<QuotaPolicyStatus>, ApiError> {
    Ok(Json(state.backend().get_quota_policy_status(&id).await?))
}

async fn policy_limits(
    State(state): State<AppState>,
    QuotaPolicyPath(id): QuotaPolicyPath,
) -> Result<Json<QuotaPolicyLimits>, ApiError> {
    let limits = state.backend().read_quota_policy_limits(&id).await?;
    Ok(Json(limits.ok_or(ApiError::not_found("quota_policy"))?))
}

async fn check_admission(
    State(state): State<AppState>,
    QuotaPolicyPath(id): QuotaPolicyPath,
    ApiJson(req): ApiJson<CheckAdmissionRequest>,
) -> Result<Json<CheckAdmissionResult>, ApiError> {
    let (dimension, args) = req.into_args();
    Ok(Json(state.backend().check_admission(&id, &dimension, args).await?))
}

async fn release_admission(
    State(state): State<AppState>,
    QuotaPolicyPath(id): QuotaPolicyPath,
    ApiJson(req): ApiJson<ReleaseAdmissionRequest>,
) -> Result<Json<ReleaseAdmissionResult>, ApiError> {
    Ok(Json(state.backend().release_admission(req.into_args(id)).await?))
}
