//! Worker routes: claim, complete-and-claim (a busy worker's one request per execution), every
//! lease-holder call (renew, progress, frames, complete, fail,
//! cancel, delay), their fence-triple peers, and reclaim grants. A lease-holder call carries its
//! handle token in the body; the handle must name the execution in the path, and the backend
//! fences it against the stored lease. The fence-triple peers
//! (`/v1/executions/{id}/attempts/{index}/renew|complete|fail`) are for service layers that keep
//! the lease fields instead of a handle: the body carries the fence (lease id, epoch, attempt
//! id), which the backend checks the same way. The holder's cancel shares its route with the
//! operator's (`operator.rs`), which calls [`cancel_as_holder`] for a body with a handle.
//! `/v1/executions/{id}/attempts/{index}/wait-children` is the holder's wait for the children
//! of a flow member: it carries the handle, which must name the execution and the attempt in
//! the path.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ff_core::wire::{
    AppendFrameRequest, CancelRequest, ClaimRequest, ClaimResponse, ClaimedExecution, CompleteAndClaimRequest,
    CompleteBatchRequest, CompleteBatchResponse, CompleteExecutionRequest, CompleteRequest, DelayRequest,
    FailExecutionRequest, FailRequest, HandleRequest, ProgressRequest, ReclaimGrantRequest, RenewLeaseRequest,
    decode_bytes, parse_handle_token,
};
use ff_core::{
    AppendFrameOutcome, AttemptIndex, CapabilitySet, ClaimPolicy, CompleteExecutionResult, EngineError, ExecutionId,
    FailOutcome, FailureReason, Frame, FrameKind, Handle, HandlePayload, IssueReclaimGrantOutcome, LaneId,
    LeaseRenewal, RenewLeaseResult,
};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, AttemptPath, ExecutionPath};
use super::route::ApiRoute;
use super::{AppState, BATCH_LIMIT, FRAME_LIMIT, SMALL_LIMIT, SUBMIT_LIMIT};

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post("/v1/workers/{worker_id}/claim", "Lease up to N executions of a lane, with their input")
            .body::<ClaimRequest>(SMALL_LIMIT)
            .responds::<ClaimResponse>(200, "The leases granted (possibly none)")
            .to(post(claim)),
        ApiRoute::post(
            "/v1/workers/{worker_id}/complete-and-claim",
            "Complete one execution, then lease up to N more of a lane, in one round trip",
        )
        .body::<CompleteAndClaimRequest>(SUBMIT_LIMIT)
        .responds::<ClaimResponse>(200, "Completed; the leases granted after it (possibly none)")
        .error(
            400,
            "The handle does not decode (`invalid_handle`) or the claim is invalid (`invalid_input`...): nothing \
             was written",
        )
        .error(404, "No such execution (`not_found`): nothing claimed")
        .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...): nothing claimed")
        .to(post(complete_and_claim)),
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
        ApiRoute::post("/v1/executions/{id}/delay", "Release and park until a time (same attempt resumes)")
            .body::<DelayRequest>(SMALL_LIMIT)
            .empty(204, "Released until the time")
            .error(400, "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
            .to(post(delay)),
        ApiRoute::post("/v1/executions/{id}/attempts/{index}/renew", "Extend the lease, named by its fence")
            .body::<RenewLeaseRequest>(SMALL_LIMIT)
            .responds::<RenewLeaseResult>(200, "Renewed (`status: renewed`) by the TTL stored with the lease")
            .error(400, "No fence (`fence_required`)")
            .error(404, "No such execution (`not_found`)")
            .error(409, FENCE_CONFLICTS)
            .to(post(renew_lease)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/complete",
            "Complete the attempt, named by its fence, with an optional result",
        )
        .body::<CompleteExecutionRequest>(SUBMIT_LIMIT)
        .responds::<CompleteExecutionResult>(200, "Completed (`status: completed`)")
        .error(400, "No fence from a source other than `operator_override` (`fence_required`)")
        .error(404, "No such execution (`not_found`)")
        .error(409, FENCE_CONFLICTS)
        .to(post(complete_execution)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/fail",
            "Fail the attempt, named by its fence (retried per the stored policy)",
        )
        .body::<FailExecutionRequest>(SMALL_LIMIT)
        .responds::<FailOutcome>(200, "Retry scheduled or failed for good")
        .error(400, "No fence from a source other than `operator_override` (`fence_required`)")
        .error(404, "No such execution (`not_found`)")
        .error(409, FENCE_CONFLICTS)
        .to(post(fail_execution)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/wait-children",
            "Release the lease until the execution's children (the upstreams of its edge group) end; the same \
             attempt resumes then",
        )
        .body::<HandleRequest>(SMALL_LIMIT)
        .empty(
            204,
            "Released: claimable again, same attempt, once its group is satisfied (at once when it is already); \
             skipped when the group can no longer be satisfied",
        )
        .error(
            400,
            "The handle does not decode (`invalid_handle`) or names another execution or attempt \
             (`handle_mismatch`)",
        )
        .error(404, "No such execution (`not_found`)")
        .error(409, "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)")
        .to(post(wait_children)),
        ApiRoute::post(
            "/v1/executions/{id}/reclaim",
            "Issue a grant admitting one worker to reclaim an execution whose lease expired or was revoked",
        )
        .body::<ReclaimGrantRequest>(SMALL_LIMIT)
        .responds::<IssueReclaimGrantOutcome>(
            200,
            "Granted (`status: granted`), not reclaimable (`status: not_reclaimable`), or the reclaim cap \
             was reached and the execution failed (`status: reclaim_cap_exceeded`)",
        )
        .error(
            400,
            "The execution is on another lane (`invalid_input`), or the worker lacks a capability it \
             requires (`capability_mismatch`)",
        )
        .error(404, "No such execution (`not_found`)")
        .to(post(issue_reclaim_grant)),
    ]
}

/// What a fenced write answers when the fence is not the current lease.
const FENCE_CONFLICTS: &str = "The fence is stale, or its lease expired or was revoked, or the execution moved on \
     (`stale_lease`, `lease_expired`, `lease_revoked`, `execution_not_active`...)";

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

/// Decodes a handle token and checks it names the execution and the attempt in the path.
pub(super) fn handle_for_attempt(id: &ExecutionId, attempt: AttemptIndex, token: &str) -> Result<Handle, ApiError> {
    let handle = handle_for(id, token)?;
    let named = HandlePayload::from_handle(&handle, handle.backend)?.attempt_index;
    if named != attempt {
        return Err(ApiError::bad_request(
            "handle_mismatch",
            format!("the handle belongs to attempt {}, not to attempt {}", named.0, attempt.0),
        ));
    }
    Ok(handle)
}

/// The `{worker_id}` path segment.
#[derive(Deserialize)]
struct WorkerSegment {
    worker_id: String,
}

/// A claim request checked whole: what the backend's claim takes.
struct CheckedClaim {
    lane: LaneId,
    capabilities: CapabilitySet,
    policy: ClaimPolicy,
    max: usize,
}

impl CheckedClaim {
    /// Every check the claim would make, so that a caller can refuse it before writing anything.
    fn new(worker_id: String, req: ClaimRequest) -> Result<Self, EngineError> {
        let mut policy = ClaimPolicy::new(worker_id, &req.worker_instance_id, req.lease_ttl_ms);
        policy.max_wait = req.max_wait();
        let lane = LaneId::try_new(req.lane_id)?;
        let capabilities = CapabilitySet::try_from_iter(req.capabilities)?;
        ff_core::validate_claim(&policy, &capabilities, req.max)?;
        Ok(Self { lane, capabilities, policy, max: req.max })
    }

    async fn run(self, state: &AppState) -> Result<Json<ClaimResponse>, ApiError> {
        let leased = state.backend().claim_with_context(&self.lane, &self.capabilities, self.policy, self.max).await?;
        let claimed = leased.into_iter().map(ClaimedExecution::from_leased).collect::<Result<_, _>>()?;
        Ok(Json(ClaimResponse { claimed }))
    }
}

async fn claim(
    State(state): State<AppState>,
    ApiPath(WorkerSegment { worker_id }): ApiPath<WorkerSegment>,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    CheckedClaim::new(worker_id, req)?.run(&state).await
}

async fn complete_and_claim(
    State(state): State<AppState>,
    ApiPath(WorkerSegment { worker_id }): ApiPath<WorkerSegment>,
    ApiJson(req): ApiJson<CompleteAndClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let next = CheckedClaim::new(worker_id, req.claim)?;
    let handle = parse_handle_token(&req.complete.handle)?;
    state.backend().complete(&handle, result_bytes(&req.complete)?).await?;
    next.run(&state).await
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
        mode: req.mode.unwrap_or_default(),
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

async fn renew_lease(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<RenewLeaseRequest>,
) -> Result<Json<RenewLeaseResult>, ApiError> {
    Ok(Json(state.backend().renew_lease(req.into_args(id, attempt_index)).await?))
}

async fn complete_execution(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<CompleteExecutionRequest>,
) -> Result<Json<CompleteExecutionResult>, ApiError> {
    Ok(Json(state.backend().complete_execution(req.into_args(id, attempt_index)?).await?))
}

async fn fail_execution(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<FailExecutionRequest>,
) -> Result<Json<FailOutcome>, ApiError> {
    Ok(Json(state.backend().fail_execution(req.into_args(id, attempt_index)).await?))
}

async fn issue_reclaim_grant(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<ReclaimGrantRequest>,
) -> Result<Json<IssueReclaimGrantOutcome>, ApiError> {
    Ok(Json(state.backend().issue_reclaim_grant(req.into_args(id)).await?))
}

/// The lease holder's cancel, fenced by its handle (the body of
/// `POST /v1/executions/{id}/cancel` that carries one).
pub(super) async fn cancel_as_holder(state: &AppState, id: &ExecutionId, req: &CancelRequest) -> Result<(), ApiError> {
    let handle = handle_for(id, &req.handle)?;
    state.backend().cancel(&handle, &req.reason).await?;
    Ok(())
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

async fn wait_children(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<HandleRequest>,
) -> Result<StatusCode, ApiError> {
    let handle = handle_for_attempt(&id, attempt_index, &req.handle)?;
    state.backend().wait_children(&handle).await?;
    Ok(StatusCode::NO_CONTENT)
}
