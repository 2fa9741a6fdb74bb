//! Worker routes: claim, and every lease-holder call (renew, progress, frames, complete, fail,
//! cancel, delay). A lease-holder call carries its handle token in the body; the handle must
//! name the execution in the path, and the backend fences it against the stored lease.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ff_core::wire::{
    AppendFrameRequest, CancelRequest, ClaimRequest, ClaimResponse, ClaimedExecution, CompleteBatchRequest,
    CompleteBatchResponse, CompleteRequest, DelayRequest, FailRequest, HandleRequest, ProgressRequest, decode_bytes,
    encode_bytes, handle_token, parse_handle_token,
};
use ff_core::{
    AppendFrameOutcome, CapabilitySet, ClaimPolicy, EngineError, FailOutcome, FailureReason, Frame, FrameKind, Handle,
    HandlePayload, LaneId, LeaseRenewal, LeasedExecution, MAX_CLAIM_BATCH,
};

use super::AppState;
use super::error::ApiError;
use super::executions::parse_id;
use super::extract::{ApiJson, ApiPath};

/// Decodes a handle token and checks it names the execution in the path.
fn handle_for(path_id: &str, token: &str) -> Result<Handle, ApiError> {
    let id = parse_id(path_id)?;
    let handle = parse_handle_token(token)?;
    let payload = HandlePayload::from_handle(&handle, handle.backend)?;
    if payload.execution_id != id {
        return Err(ApiError::bad_request(
            "handle_mismatch",
            format!("the handle belongs to {}, not to {id}", payload.execution_id),
        ));
    }
    Ok(handle)
}

pub(super) async fn claim(
    State(state): State<AppState>,
    ApiPath(worker_id): ApiPath<String>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    if req.max == 0 || req.max > MAX_CLAIM_BATCH {
        return Err(ApiError::bad_request("invalid_input", format!("max {} outside 1..={MAX_CLAIM_BATCH}", req.max)));
    }
    let lane = LaneId::try_new(req.lane_id)?;
    let capabilities = CapabilitySet::try_from_iter(req.capabilities)?;
    let mut policy = ClaimPolicy::new(worker_id, req.worker_instance_id, req.lease_ttl_ms);
    policy.max_wait = (req.wait_ms > 0).then(|| Duration::from_millis(req.wait_ms));
    let leased = state.backend().claim_with_context(&lane, &capabilities, policy, req.max).await?;
    let claimed = leased
        .into_iter()
        .map(|LeasedExecution { handle, context }| {
            let payload = HandlePayload::from_handle(&handle, handle.backend)?;
            Ok::<_, EngineError>(ClaimedExecution {
                handle: handle_token(&handle),
                execution_id: payload.execution_id,
                attempt_index: payload.attempt_index,
                claim_kind: handle.kind,
                lane_id: payload.lane_id,
                lease_ttl_ms: payload.lease_ttl_ms,
                execution_kind: context.execution_kind,
                input_base64: encode_bytes(&context.input_payload),
                tags: context.tags,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ClaimResponse { claimed }))
}

pub(super) async fn renew(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<HandleRequest>,
) -> Result<Json<LeaseRenewal>, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    Ok(Json(state.backend().renew(&handle).await?))
}

pub(super) async fn progress(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ProgressRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().progress(&handle, req.percent, req.message).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn append_frame(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
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

pub(super) async fn complete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CompleteRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().complete(&handle, result_bytes(&req)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn complete_batch(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CompleteBatchRequest>,
) -> Result<Json<CompleteBatchResponse>, ApiError> {
    if req.items.is_empty() || req.items.len() > MAX_CLAIM_BATCH {
        return Err(ApiError::bad_request(
            "invalid_input",
            format!("{} items outside 1..={MAX_CLAIM_BATCH}", req.items.len()),
        ));
    }
    let items = req
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |e: EngineError| ApiError::bad_request("invalid_input", format!("items[{i}]: {e}"));
            Ok((parse_handle_token(&item.handle).map_err(at)?, result_bytes(item).map_err(at)?))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let results = state.backend().complete_batch(items).await?;
    let results = results.into_iter().map(|r| r.err().map(|e| ApiError::from(e).parts().1)).collect();
    Ok(Json(CompleteBatchResponse { results }))
}

pub(super) async fn fail(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<FailRequest>,
) -> Result<Json<FailOutcome>, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    let reason = FailureReason { message: req.message, detail: req.detail };
    Ok(Json(state.backend().fail(&handle, reason, req.classification).await?))
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().cancel(&handle, &req.reason).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn delay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DelayRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for(&id, &req.handle)?;
    state.backend().delay(&handle, req.delay_until).await?;
    Ok(StatusCode::NO_CONTENT)
}
