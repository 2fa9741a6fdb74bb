//! Suspension: the lease holder suspends on waitpoints, mints pending waitpoints and reads the
//! signals that woke it; the outside world signals waitpoints; operators approve, reject and
//! resume, list what waits, read a waitpoint's token and rotate the signing keys. Each handler
//! is one backend call, whose refusals (`invalid_token`, `token_expired`, `waitpoint_closed`,
//! `target_not_signalable`, `signal_limit_exceeded`, `already_suspended`,
//! `execution_not_suspended`...) write nothing.
//!
//! The signal route is the one route reachable without the bearer token: a caller presenting
//! the waitpoint's token (in the `X-Waitpoint-Token` header or the body) is admitted, and the
//! backend verifies the token against the execution and waitpoint in the path. A caller
//! presenting the bearer token is trusted and may leave the waitpoint token out; a caller
//! presenting neither is `401 unauthorized`.
//!
//! The lease-holder calls (`/v1/executions/{id}/attempts/{index}/suspend|waitpoints|signals`)
//! carry the handle, which must name the execution and the attempt in the path.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use ff_core::wire::{
    ApprovalRequest, CreateWaitpointRequest, DeliverSignalRequest, HandleRequest, ObservedSignal, ResumeRequest,
    SuspendRequest, WAITPOINT_TOKEN_HEADER, WaitpointTokenResponse,
};
use ff_core::{
    DeliverSignalResult, ExecutionId, ListPendingWaitpointsArgs, ListPendingWaitpointsResult, ListSuspendedPage,
    PendingWaitpoint, ResumeExecutionArgs, ResumeExecutionResult, RotateWaitpointHmacSecretAllArgs,
    RotateWaitpointHmacSecretAllResult, SuspendOutcome, WaitpointId,
};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ApiJson, ApiJsonOrEmpty, ApiQuery, AttemptPath, ExecutionPath, WaitpointPath};
use super::leases::handle_for_attempt;
use super::route::ApiRoute;
use super::{AppState, Caller, FRAME_LIMIT, SMALL_LIMIT};
use crate::openapi::QuerySchema;

/// Page size of the listings when the request names none.
const DEFAULT_PAGE: usize = 100;
/// Largest page of the listings.
const MAX_PAGE: usize = 1000;

/// What a delivery answers when the waitpoint does not take signals.
const SIGNAL_CONFLICTS: &str = "The waitpoint is closed (`waitpoint_closed`); the execution is neither suspended on it \
     nor holding it pending (`target_not_signalable`); the execution has received as many signals as allowed \
     (`signal_limit_exceeded`)";

/// What a lease-holder call answers when the lease is not the current one.
const LEASE_CONFLICTS: &str =
    "The lease is stale, expired, revoked or gone, or the execution moved on (`stale_lease`, `lease_expired`...)";

/// What a lease-holder call answers when the handle does not fit the path.
const HANDLE_MISMATCH: &str =
    "The handle does not decode (`invalid_handle`) or names another execution or attempt (`handle_mismatch`)";

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post(
            "/v1/executions/{id}/waitpoints/{waitpoint_id}/signals",
            "Deliver a signal to a waitpoint: authorised by the bearer token or by the waitpoint's token \
             (`X-Waitpoint-Token` header or `waitpoint_token`)",
        )
        .waitpoint_token_auth()
        .body::<DeliverSignalRequest>(FRAME_LIMIT)
        .responds::<DeliverSignalResult>(
            200,
            "Recorded with its effect (`Accepted`), or its idempotency key was seen (`Duplicate`, nothing recorded)",
        )
        .error(
            400,
            "The waitpoint token does not verify for this execution and waitpoint (`invalid_token`), or its key's \
             grace after a rotation has ended (`token_expired`); the body and header tokens differ (`invalid_input`)",
        )
        .error(404, "No such execution or waitpoint (`not_found`)")
        .error(409, SIGNAL_CONFLICTS)
        .error(413, "The payload exceeds 64 KiB (`payload_too_large`)")
        .to(post(deliver_signal)),
        ApiRoute::post(
            "/v1/executions/{id}/waitpoints/{waitpoint_id}/approve",
            "Approve through a waitpoint as an operator (a signal named `approved`, no waitpoint token)",
        )
        .optional_body::<ApprovalRequest>(SMALL_LIMIT)
        .responds::<DeliverSignalResult>(200, "Recorded (`Accepted`), or already decided (`Duplicate`)")
        .error(400, "The execution is not on `lane_id` (`invalid_input`)")
        .error(404, "No such execution or waitpoint (`not_found`)")
        .error(409, SIGNAL_CONFLICTS)
        .to(post(approve)),
        ApiRoute::post(
            "/v1/executions/{id}/waitpoints/{waitpoint_id}/reject",
            "Reject through a waitpoint as an operator (a signal named `rejected`, no waitpoint token)",
        )
        .optional_body::<ApprovalRequest>(SMALL_LIMIT)
        .responds::<DeliverSignalResult>(200, "Recorded (`Accepted`), or already decided (`Duplicate`)")
        .error(400, "The execution is not on `lane_id` (`invalid_input`)")
        .error(404, "No such execution or waitpoint (`not_found`)")
        .error(409, SIGNAL_CONFLICTS)
        .to(post(reject)),
        ApiRoute::get("/v1/executions/{id}/waitpoints", "An execution's open (pending or active) waitpoints, by id")
            .query::<WaitpointId>("after", false, "Cursor: continue after this waitpoint (the previous page's)")
            .query_schema(
                "limit",
                false,
                format!("Page size, 1..={MAX_PAGE} (default {DEFAULT_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE})),
            )
            .responds::<ListPendingWaitpointsResult>(
                200,
                "One page; tokens are never listed, only their key id and fingerprint",
            )
            .to(get(list_waitpoints)),
        ApiRoute::get(
            "/v1/executions/{id}/waitpoints/{waitpoint_id}/token",
            "The token of an open waitpoint (for trusted callers that relay signals)",
        )
        .responds::<WaitpointTokenResponse>(200, "The token")
        .error(404, "No such waitpoint, or it is closed, or its signing key is gone (`not_found`)")
        .to(get(waitpoint_token)),
        ApiRoute::get("/v1/suspended", "Suspended executions, by suspension time then id")
            .query_schema("partition", false, "Only this execution partition (default: all)", QuerySchema::Partition)
            .query::<ExecutionId>("cursor", false, "Continue after this execution (the previous page's cursor)")
            .query_schema(
                "limit",
                false,
                format!("Page size, 1..={MAX_PAGE} (default {DEFAULT_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE})),
            )
            .responds::<ListSuspendedPage>(200, "One page")
            .to(get(list_suspended)),
        ApiRoute::post(
            "/v1/executions/{id}/resume",
            "Resume a suspended execution whatever its condition (operator; body optional)",
        )
        .optional_body::<ResumeRequest>(SMALL_LIMIT)
        .responds::<ResumeExecutionResult>(200, "Resumed: `waiting`, or `delayed` with a resume delay")
        .error(404, "No such execution (`not_found`)")
        .error(409, "The execution is not suspended (`execution_not_suspended`)")
        .to(post(resume)),
        ApiRoute::post(
            "/v1/admin/waitpoint-keys/rotate",
            "Make a new waitpoint signing key current; the keys it replaces verify for `grace_ms` more",
        )
        .body::<RotateWaitpointHmacSecretAllArgs>(SMALL_LIMIT)
        .responds::<RotateWaitpointHmacSecretAllResult>(
            200,
            "Rotated (`Rotated`), or this key and secret are current already (`Noop`)",
        )
        .error(400, "A malformed key id, a secret that is not 64 hex digits, a grace over a year (`invalid_input`)")
        .error(409, "The key id exists with another secret, or was retired (`rotation_conflict`)")
        .to(post(rotate_keys)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/suspend",
            "Suspend on waitpoints: the lease is released until the resume condition is met (same attempt resumes)",
        )
        .body::<SuspendRequest>(SMALL_LIMIT)
        .responds::<SuspendOutcome>(
            200,
            "Suspended with each waitpoint's token (`Suspended`), or signals buffered on its pending waitpoints \
             satisfy the condition already and the lease is kept (`AlreadySatisfied`)",
        )
        .error(400, HANDLE_MISMATCH)
        .error(404, "No such execution, or a pending waitpoint it names is absent (`not_found`)")
        .error(409, "The execution is suspended already (`already_suspended`); or the lease is not current")
        .to(post(suspend)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/waitpoints",
            "Mint a pending waitpoint before suspending, to hand its token out; signals to it are buffered",
        )
        .body::<CreateWaitpointRequest>(SMALL_LIMIT)
        .responds::<PendingWaitpoint>(201, "Created, with its token")
        .error(400, HANDLE_MISMATCH)
        .error(404, "No such execution (`not_found`)")
        .error(409, "An open waitpoint has this key (`waitpoint_already_exists`); or the lease is not current")
        .to(post(create_waitpoint)),
        ApiRoute::post(
            "/v1/executions/{id}/attempts/{index}/signals",
            "The signals of the attempt's latest suspension (before it suspends: those buffered on its pending \
             waitpoints), in delivery order",
        )
        .body::<HandleRequest>(SMALL_LIMIT)
        .responds::<Vec<ObservedSignal>>(
            200,
            "The signals, each payload as base64 (`payload_base64`) and, when its encoding is `json`, inline \
             (`payload`)",
        )
        .error(400, HANDLE_MISMATCH)
        .error(404, "No such execution (`not_found`)")
        .error(409, LEASE_CONFLICTS)
        .to(post(observe_signals)),
    ]
}

async fn deliver_signal(
    State(state): State<AppState>,
    caller: Caller,
    ExecutionPath(id): ExecutionPath,
    WaitpointPath(waitpoint_id): WaitpointPath,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DeliverSignalRequest>,
) -> Result<Json<DeliverSignalResult>, ApiError> {
    let header_token = match headers.get(WAITPOINT_TOKEN_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid_token", "the X-Waitpoint-Token header is not text"))?
                .to_owned(),
        ),
    };
    let args = req.into_args(id, waitpoint_id, header_token)?;
    // An outside caller is admitted by the waitpoint token alone; the backend verifies it.
    if caller == Caller::Outside && args.waitpoint_token.is_none() {
        return Err(ApiError::Request {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "present the bearer token, or the waitpoint's token in X-Waitpoint-Token or waitpoint_token"
                .into(),
        });
    }
    Ok(Json(state.backend().deliver_signal(args).await?))
}

async fn approve(
    state: State<AppState>,
    id: ExecutionPath,
    waitpoint: WaitpointPath,
    body: ApiJsonOrEmpty<ApprovalRequest>,
) -> Result<Json<DeliverSignalResult>, ApiError> {
    decide(state, id, waitpoint, body, "approved").await
}

async fn reject(
    state: State<AppState>,
    id: ExecutionPath,
    waitpoint: WaitpointPath,
    body: ApiJsonOrEmpty<ApprovalRequest>,
) -> Result<Json<DeliverSignalResult>, ApiError> {
    decide(state, id, waitpoint, body, "rejected").await
}

/// An operator's decision `signal_name`. The lane the backend checks is the body's, else the
/// execution's own (read first).
async fn decide(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    WaitpointPath(waitpoint_id): WaitpointPath,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<ApprovalRequest>,
    signal_name: &str,
) -> Result<Json<DeliverSignalResult>, ApiError> {
    let lane = match &req.lane_id {
        Some(lane) => lane.clone(),
        None => state.backend().describe_execution(&id).await?.ok_or(ApiError::not_found("execution"))?.lane_id,
    };
    let args = req.into_args(id, waitpoint_id, signal_name, lane)?;
    Ok(Json(state.backend().deliver_approval_signal(args).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitpointsQuery {
    after: Option<String>,
    limit: Option<u32>,
}

async fn list_waitpoints(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiQuery(q): ApiQuery<WaitpointsQuery>,
) -> Result<Json<ListPendingWaitpointsResult>, ApiError> {
    let after = q.after.as_deref().map(WaitpointId::parse).transpose()?;
    let args = ListPendingWaitpointsArgs { execution_id: id, after, limit: q.limit };
    Ok(Json(state.backend().list_pending_waitpoints(args).await?))
}

/// The token is found by the waitpoint's id; it is bound to its own execution, so one read
/// under another execution's path verifies for that one only.
async fn waitpoint_token(
    State(state): State<AppState>,
    ExecutionPath(_): ExecutionPath,
    WaitpointPath(waitpoint_id): WaitpointPath,
) -> Result<Json<WaitpointTokenResponse>, ApiError> {
    let token = state.backend().read_waitpoint_token(&waitpoint_id).await?.ok_or(ApiError::not_found("waitpoint"))?;
    Ok(Json(WaitpointTokenResponse { waitpoint_token: token }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuspendedQuery {
    partition: Option<u16>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_suspended(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SuspendedQuery>,
) -> Result<Json<ListSuspendedPage>, ApiError> {
    if let Some(p) = q.partition {
        state.0.partitions.check_execution_partition(p)?;
    }
    let cursor = q.cursor.as_deref().map(ExecutionId::parse).transpose()?;
    Ok(Json(state.backend().list_suspended(q.partition, cursor, q.limit.unwrap_or(DEFAULT_PAGE)).await?))
}

async fn resume(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<ResumeRequest>,
) -> Result<Json<ResumeExecutionResult>, ApiError> {
    let args = ResumeExecutionArgs {
        execution_id: id,
        trigger_type: req.trigger_type.unwrap_or_else(|| "operator".into()),
        resume_delay_ms: req.resume_delay_ms.unwrap_or(0),
    };
    args.validate()?;
    Ok(Json(state.backend().resume_execution(args).await?))
}

async fn rotate_keys(
    State(state): State<AppState>,
    ApiJson(args): ApiJson<RotateWaitpointHmacSecretAllArgs>,
) -> Result<Json<RotateWaitpointHmacSecretAllResult>, ApiError> {
    Ok(Json(state.backend().rotate_waitpoint_hmac_secret_all(args).await?))
}

async fn suspend(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<SuspendRequest>,
) -> Result<Json<SuspendOutcome>, ApiError> {
    let handle = handle_for_attempt(&id, attempt_index, &req.handle)?;
    Ok(Json(state.backend().suspend(&handle, req.suspension).await?))
}

async fn create_waitpoint(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<CreateWaitpointRequest>,
) -> Result<(StatusCode, Json<PendingWaitpoint>), ApiError> {
    let handle = handle_for_attempt(&id, attempt_index, &req.handle)?;
    let expires_in = std::time::Duration::from_millis(req.expires_in_ms);
    let created = state.backend().create_waitpoint(&handle, &req.waitpoint_key, expires_in).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn observe_signals(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    AttemptPath(attempt_index): AttemptPath,
    ApiJson(req): ApiJson<HandleRequest>,
) -> Result<Json<Vec<ObservedSignal>>, ApiError> {
    let handle = handle_for_attempt(&id, attempt_index, &req.handle)?;
    let signals = state.backend().observe_signals(&handle).await?;
    Ok(Json(signals.into_iter().map(ObservedSignal::from_signal).collect()))
}
