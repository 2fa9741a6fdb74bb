//! Worker routes: claim, and every lease-holder call (renew, progress, frames, complete, fail,
//! cancel, delay). A lease-holder call carries its handle token in the body; the handle must
//! name the execution in the path, and the backend fences it against the stored lease.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ff_core::wire::{
    AppendFrameRequest, CancelRequest, ClaimRequest, ClaimResponse, ClaimedExecution, CompleteBatchRequest,
    CompleteBatchResponse, CompleteRequest, DelayRequest, FailRequest, HandleRequest, ProgressRequest, decode_bytes,
    parse_handle_token,
};
use ff_core::{
    AppendFrameOutcome, CapabilitySet, ClaimPolicy, EngineError, ExecutionId, FailOutcome, FailureReason, Frame,
    FrameKind, Handle, LaneId, LeaseRenewal,
};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ExecutionPath};
use super::route::ApiRoute;
use super::{AppState, BATCH_LIMIT, FRAME_LIMIT, SMALL_LIMIT, SUBMIT_LIMIT};

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/workers/{worker_id}/claim", "Lease up to N executions of a lane, with their input")
            .body::<ClaimRequest>(SMALL_LIMIT)
            .responds::<ClaimResponse>(200, "The leases granted (possibly none)")
            .to(post(claim)),
        ApiRoute::post("/v1/executions/{id}/renew", "Extend the lease")
            .body::<HandleRequest>(SMALL_LIMIT)
            .responds::<LeaseRenewal>(200, "Renewed")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(renew)),
        ApiRoute::post("/v1/executions/{id}/progress", "Report progress")
            .body::<ProgressRequest>(SMALL_LIMIT)
            .empty(204, "Recorded")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(progress)),
        ApiRoute::post("/v1/executions/{id}/frames", "Append a stream frame")
            .body::<AppendFrameRequest>(FRAME_LIMIT)
            .responds::<AppendFrameOutcome>(200, "Appended")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(append_frame)),
        ApiRoute::post("/v1/executions/{id}/complete", "Complete with an optional result")
            .body::<CompleteRequest>(SUBMIT_LIMIT)
            .empty(204, "Completed")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(complete)),
        ApiRoute::post("/v1/completions", "Complete many executions, each fenced alone")
            .body::<CompleteBatchRequest>(BATCH_LIMIT)
            .responds::<CompleteBatchResponse>(200, "One result per item: null when completed, else its error")
            .error(400, "An item's handle token is malformed (`invalid_handle`)")
            .to(post(complete_batch)),
        ApiRoute::post("/v1/executions/{id}/fail", "Fail the attempt (retried per the stored policy)")
            .body::<FailRequest>(SMALL_LIMIT)
            .responds::<FailOutcome>(200, "Retry scheduled or failed for good")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(fail)),
        ApiRoute::post("/v1/executions/{id}/cancel", "Cancel as the lease holder")
            .body::<CancelRequest>(SMALL_LIMIT)
            .empty(204, "Cancelled")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(cancel)),
        ApiRoute::post("/v1/executions/{id}/delay", "Release and park until a time (same attempt resumes)")
            .body::<DelayRequest>(SMALL_LIMIT)
            .empty(204, "Released until the time")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(delay)),
    ]
}

/// Decodes a handle token and checks it names the execution in the path. Only the execution id
/// is read here; the backend decodes the whole handle when it fences the write.
fn handle_for(id: &ExecutionId, token: &str) -> Result<Handle, ApiError> {
    let handle = parse_handle_token(token)?;
    let named = handle.execution_id()?;
    if named != *id {
        return Err(ApiError::bad_request("handle_mismatch", format!("the handle belongs to {named}, not to {id}")));
    }
    Ok(handle)
}

/// The `{worker_id}` path segment.
#[derive(Deserialize)]
struct WorkerSegment {
    worker_id: String,
}

async fn claim(
    State(state): State<AppState>,
    ApiPath(WorkerSegment { worker_id }): ApiPath<WorkerSegment>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let mut policy = ClaimPolicy::new(worker_id, &req.worker_instance_id, req.lease_ttl_ms);
    policy.max_wait = req.max_wait();
    let lane = LaneId::try_new(req.lane_id)?;
    let capabilities = CapabilitySet::try_from_iter(req.capabilities)?;
    let leased = state.backend().claim_with_context(&lane, &capabilities, policy, req.max).await?;
    let claimed = leased.into_iter().map(ClaimedExecution::from_leased).collect::<Result<_, _>>()?;
    Ok(Json(ClaimResponse { claimed }))
}

async fn renew(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<HandleRequest>,
) -> Result<Json<LeaseRenewal>, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    Ok(Json(state.backend().renew(&handle).await?))
}

async fn progress(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<ProgressRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().progress(&handle, req.percent, req.message).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn append_frame(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<AppendFrameRequest>,
) -> Result<Json<AppendFrameOutcome>, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    let bytes = match (req.text, req.bytes_base64) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("invalid_input", "give either text or bytes_base64")),
        (Some(t), None) => t.into_bytes(),
        (None, Some(b)) => decode_bytes("bytes_base64", &b)?,
        (None, None) => Vec::new(),
    };
    let frame = Frame {
        bytes,
        kind: req.kind.unwrap_or(FrameKind::Event),
        frame_type: req.frame_type,
        correlation_id: req.correlation_id,
    };
    Ok(Json(state.backend().append_frame(&handle, frame).await?))
}

fn result_bytes(req: &CompleteRequest) -> Result<Option<Vec<u8>>, EngineError> {
    req.result_base64.as_deref().map(|b| decode_bytes("result_base64", b)).transpose()
}

async fn complete(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().complete(&handle, result_bytes(&req)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn complete_batch(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompleteBatchRequest>,
) -> Result<Json<CompleteBatchResponse>, ApiError> {
    let items = req
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |e: EngineError| ApiError::bad_request(e.code(), format!("items[{i}]: {e}"));
            Ok((parse_handle_token(&item.handle).map_err(at)?, result_bytes(item).map_err(at)?))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let results = state.backend().complete_batch(items).await?;
    let results = results.into_iter().map(|r| r.err().map(|e| ApiError::from(e).parts().1)).collect();
    Ok(Json(CompleteBatchResponse { results }))
}

async fn fail(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<FailRequest>,
) -> Result<Json<FailOutcome>, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    let reason = FailureReason { message: req.message, detail: req.detail };
    Ok(Json(state.backend().fail(&handle, reason, req.classification).await?))
}

async fn cancel(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().cancel(&handle, &req.reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delay(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<DelayRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().delay(&handle, req.delay_until).await?;
    Ok(StatusCode::NO_CONTENT)
}
