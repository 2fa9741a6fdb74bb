//! The worker registry: registering an instance of a worker pool, its heartbeats, marking it
//! dead (which revokes its leases at once), and listing live instances.
//!
//! An instance is addressed as `/v1/workers/{worker_id}/instances/{instance_id}`. The instance
//! id is unique across the registry, so the backend keys heartbeats and deaths on it (and the
//! namespace in the body); the `{worker_id}` segment is checked for shape only. Marking dead is a
//! `POST .../dead` with a JSON body (namespace, reason) rather than a `DELETE`, whose bodies
//! proxies and clients handle unevenly. The claim route of a worker lives with the other lease
//! calls in `leases.rs`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ff_core::wire::{
    HeartbeatWorkerRequest, HeartbeatWorkerResponse, MarkWorkerDeadRequest, MarkWorkerDeadResponse,
    RegisterWorkerRequest,
};
use ff_core::{
    DEFAULT_WORKER_PAGE, HeartbeatWorkerArgs, HeartbeatWorkerOutcome, ListWorkersArgs, ListWorkersResult,
    MAX_WORKER_PAGE, MarkWorkerDeadArgs, MarkWorkerDeadOutcome, Namespace, RegisterWorkerOutcome, WorkerId,
    WorkerInstanceId,
};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT};
use crate::openapi::QuerySchema;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post(
            "/v1/workers/{worker_id}/instances",
            "Register a worker instance (201 registered, 200 refreshed)",
        )
        .body::<RegisterWorkerRequest>(SMALL_LIMIT)
        .responds::<RegisterWorkerOutcome>(201, "Registered (`status: registered`)")
        .responds::<RegisterWorkerOutcome>(200, "It was registered and alive: refreshed (`status: refreshed`)")
        .error(409, "The instance id is registered to another live worker id (`worker_instance_reassigned`)")
        .to(post(register)),
        ApiRoute::post(
            "/v1/workers/{worker_id}/instances/{instance_id}/heartbeat",
            "Extend a live registration by its TTL (404 worker_not_registered: register again)",
        )
        .body::<HeartbeatWorkerRequest>(SMALL_LIMIT)
        .responds::<HeartbeatWorkerResponse>(200, "Alive until the new expiry")
        .error(404, "Not registered in that namespace: register again (`worker_not_registered`)")
        .to(post(heartbeat)),
        ApiRoute::post(
            "/v1/workers/{worker_id}/instances/{instance_id}/dead",
            "Mark a worker instance dead, revoking its leases at once (404 worker_not_registered)",
        )
        .body::<MarkWorkerDeadRequest>(SMALL_LIMIT)
        .responds::<MarkWorkerDeadResponse>(200, "Removed from the registry; its leases were revoked")
        .error(404, "Not registered in that namespace (`worker_not_registered`)")
        .to(post(mark_dead)),
        ApiRoute::get("/v1/workers", "List live worker instances in instance-id order")
            .query::<Namespace>("namespace", false, "Only this namespace (default: every namespace)")
            .query::<WorkerInstanceId>(
                "after",
                false,
                "Exclusive instance id to continue after (the previous page's cursor)",
            )
            .query_schema(
                "limit",
                false,
                format!("Page size, 1..={MAX_WORKER_PAGE} (default {DEFAULT_WORKER_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_WORKER_PAGE})),
            )
            .responds::<ListWorkersResult>(200, "One page")
            .to(get(list)),
    ]
}

/// The `{worker_id}` path segment.
#[derive(Deserialize)]
struct PoolSegment {
    worker_id: String,
}

/// The `{worker_id}` and `{instance_id}` path segments.
#[derive(Deserialize)]
struct InstanceSegments {
    worker_id: String,
    instance_id: String,
}

impl InstanceSegments {
    /// The instance, after checking the pool's id has the shape of one.
    fn instance(self) -> Result<WorkerInstanceId, ApiError> {
        WorkerId::new(self.worker_id).validate()?;
        Ok(WorkerInstanceId::new(self.instance_id))
    }
}

async fn register(
    State(state): State<AppState>,
    ApiPath(PoolSegment { worker_id }): ApiPath<PoolSegment>,
    ApiJson(req): ApiJson<RegisterWorkerRequest>,
) -> Result<Response, ApiError> {
    let outcome = state.backend().register_worker(req.into_args(WorkerId::new(worker_id))).await?;
    let status = match outcome {
        RegisterWorkerOutcome::Registered { .. } => StatusCode::CREATED,
        RegisterWorkerOutcome::Refreshed { .. } => StatusCode::OK,
    };
    Ok((status, Json(outcome)).into_response())
}

async fn heartbeat(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<InstanceSegments>,
    ApiJson(req): ApiJson<HeartbeatWorkerRequest>,
) -> Result<Json<HeartbeatWorkerResponse>, ApiError> {
    let args = HeartbeatWorkerArgs { worker_instance_id: path.instance()?, namespace: req.namespace };
    match state.backend().heartbeat_worker(args).await? {
        HeartbeatWorkerOutcome::Refreshed { next_expiry_ms } => Ok(Json(HeartbeatWorkerResponse { next_expiry_ms })),
        HeartbeatWorkerOutcome::NotRegistered => Err(ApiError::worker_not_registered()),
    }
}

async fn mark_dead(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<InstanceSegments>,
    ApiJson(req): ApiJson<MarkWorkerDeadRequest>,
) -> Result<Json<MarkWorkerDeadResponse>, ApiError> {
    let args =
        MarkWorkerDeadArgs { worker_instance_id: path.instance()?, namespace: req.namespace, reason: req.reason };
    match state.backend().mark_worker_dead(args).await? {
        MarkWorkerDeadOutcome::Marked { revoked_leases } => Ok(Json(MarkWorkerDeadResponse { revoked_leases })),
        MarkWorkerDeadOutcome::NotRegistered => Err(ApiError::worker_not_registered()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    namespace: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListWorkersResult>, ApiError> {
    let args = ListWorkersArgs {
        namespace: q.namespace.map(Namespace::new),
        after: q.after.map(WorkerInstanceId::new),
        limit: q.limit,
    };
    Ok(Json(state.backend().list_workers(args).await?))
}
