//! Operator controls: cancel an execution, revoke its lease, change its priority, replay it
//! once terminal, and list the leases that expired. None of these needs the lease; each is one
//! backend call whose refusals (`not_found`, `terminal`, `stale_lease`,
//! `execution_not_terminal`, `max_replays_exhausted`, `priority_out_of_range`...) write nothing.
//!
//! `POST /v1/executions/{id}/cancel` serves two callers with one route: a body carrying a
//! `handle` is the lease holder's cancel (`204`, fenced by the handle, see `leases.rs`); a body
//! without one is the operator's (`200` with the [`CancelExecutionResult`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use ff_core::wire::{CancelRequest, ChangePriorityRequest, OperatorCancelRequest, RevokeLeaseRequest};
use ff_core::{
    CancelExecutionResult, ChangePriorityResult, DEFAULT_EXPIRED_LEASES_PAGE, ExecutionId, ExpiredLeasesCursor,
    ListExpiredLeasesArgs, ListExpiredLeasesResult, MAX_EXPIRED_LEASES_PAGE, Namespace, ReplayExecutionArgs,
    ReplayExecutionResult, RevokeLeaseResult, TimestampMs,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{ApiJson, ApiJsonOrEmpty, ApiQuery, ExecutionPath};
use super::route::ApiRoute;
use super::{AppState, SMALL_LIMIT, leases};
use crate::openapi::QuerySchema;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::post(
            "/v1/executions/{id}/cancel",
            "Cancel: as the lease holder (body with `handle`, 204) or as an operator (body without, 200)",
        )
        .body::<CancelBody>(SMALL_LIMIT)
        .responds::<CancelExecutionResult>(200, "Cancelled by an operator (`status: cancelled`)")
        .empty(204, "Cancelled by the lease holder")
        .error(
            400,
            "The handle does not decode (`invalid_handle`) or names another execution (`handle_mismatch`); \
             a source other than `operator_override` gave no fence while a lease is held (`fence_required`); \
             NUL in the reason (`nul_in_text`)",
        )
        .error(404, "No such execution (`not_found`)")
        .error(
            409,
            "The execution is terminal (`terminal`); the lease or fence is stale, expired or revoked \
             (`stale_lease`, `lease_expired`, `lease_revoked`...)",
        )
        .to(post(cancel)),
        ApiRoute::put("/v1/executions/{id}/priority", "Change the priority of a non-terminal execution")
            .body::<ChangePriorityRequest>(SMALL_LIMIT)
            .responds::<ChangePriorityResult>(200, "Changed (`status: changed`), with the old and new priority")
            .error(
                400,
                "Priority outside 0..=9000 (`priority_out_of_range`); the execution is not on `lane_id` \
                 (`invalid_input`)",
            )
            .error(404, "No such execution (`not_found`)")
            .error(409, "The execution is terminal (`terminal`)")
            .to(put(change_priority)),
        ApiRoute::post("/v1/executions/{id}/replay", "Run a terminal execution again (body optional)")
            .optional_body::<ReplayRequest>(SMALL_LIMIT)
            .responds::<ReplayExecutionResult>(200, "Runnable again (`status: replayed`), with the replay count")
            .error(404, "No such execution (`not_found`)")
            .error(
                409,
                "The execution is not terminal (`execution_not_terminal`), or its policy's replay cap is \
                 reached (`max_replays_exhausted`)",
            )
            .to(post(replay)),
        ApiRoute::post(
            "/v1/executions/{id}/revoke-lease",
            "Take the live lease away from its holder (body optional): the execution is reclaimable at once",
        )
        .optional_body::<RevokeLeaseRequest>(SMALL_LIMIT)
        .responds::<RevokeLeaseResult>(
            200,
            "Revoked (`status: revoked`), or no live lease to revoke (`status: already_satisfied`)",
        )
        .error(400, "NUL in the reason (`nul_in_text`)")
        .error(404, "No such execution (`not_found`)")
        .error(
            409,
            "The execution is terminal (`terminal`); the lease or holder is not the one expected (`stale_lease`)",
        )
        .to(post(revoke_lease)),
        ApiRoute::get("/v1/leases/expired", "Active executions whose lease expired, by expiry then id")
            .query::<TimestampMs>("as_of", false, "Leases that expired at or before this time (default: now)")
            .query::<TimestampMs>(
                "after_expires_at_ms",
                false,
                "Cursor, with `after_execution_id`: continue after this expiry (the previous page's cursor)",
            )
            .query::<ExecutionId>(
                "after_execution_id",
                false,
                "Cursor, with `after_expires_at_ms`: continue after this execution",
            )
            .query_schema(
                "limit",
                false,
                format!("Page size, 1..={MAX_EXPIRED_LEASES_PAGE} (default {DEFAULT_EXPIRED_LEASES_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 1, "maximum": MAX_EXPIRED_LEASES_PAGE})),
            )
            .query::<Namespace>("namespace", false, "Only executions of this namespace (default: every namespace)")
            .responds::<ListExpiredLeasesResult>(200, "One page")
            .to(get(list_expired_leases)),
    ]
}

/// Body of `POST /v1/executions/{id}/cancel`: with `handle`, the lease holder's cancel; without,
/// an operator's.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
enum CancelBody {
    /// The lease holder cancels, fenced by its handle.
    Holder(CancelRequest),
    /// An operator (or a service layer presenting a fence) cancels.
    Operator(OperatorCancelRequest),
}

impl<'de> Deserialize<'de> for CancelBody {
    /// Told apart by the presence of `handle`, so an error names the fields of the shape meant
    /// rather than "matched neither".
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let body = serde_json::Map::<String, Value>::deserialize(d)?;
        let holder = body.contains_key("handle");
        let body = Value::Object(body);
        if holder {
            serde_json::from_value(body).map(Self::Holder).map_err(D::Error::custom)
        } else {
            serde_json::from_value(body).map(Self::Operator).map_err(D::Error::custom)
        }
    }
}

/// `POST /v1/executions/{id}/replay`: no fields; the body may be empty or `{}`.
#[derive(Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {}

async fn cancel(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(body): ApiJson<CancelBody>,
) -> Result<Response, ApiError> {
    match body {
        CancelBody::Holder(req) => {
            leases::cancel_as_holder(&state, &id, &req).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        CancelBody::Operator(req) => {
            Ok(Json(state.backend().cancel_execution(req.into_args(id)).await?).into_response())
        }
    }
}

async fn change_priority(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJson(req): ApiJson<ChangePriorityRequest>,
) -> Result<Json<ChangePriorityResult>, ApiError> {
    Ok(Json(state.backend().change_priority(req.into_args(id)).await?))
}

async fn replay(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJsonOrEmpty(ReplayRequest {}): ApiJsonOrEmpty<ReplayRequest>,
) -> Result<Json<ReplayExecutionResult>, ApiError> {
    Ok(Json(state.backend().replay_execution(ReplayExecutionArgs { execution_id: id }).await?))
}

async fn revoke_lease(
    State(state): State<AppState>,
    ExecutionPath(id): ExecutionPath,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<RevokeLeaseRequest>,
) -> Result<Json<RevokeLeaseResult>, ApiError> {
    Ok(Json(state.backend().revoke_lease(req.into_args(id)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiredQuery {
    as_of: Option<i64>,
    after_expires_at_ms: Option<i64>,
    after_execution_id: Option<String>,
    limit: Option<usize>,
    namespace: Option<String>,
}

async fn list_expired_leases(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ExpiredQuery>,
) -> Result<Json<ListExpiredLeasesResult>, ApiError> {
    let after = match (q.after_expires_at_ms, q.after_execution_id) {
        (None, None) => None,
        (Some(expires_at_ms), Some(id)) => Some(ExpiredLeasesCursor {
            expires_at_ms: TimestampMs(expires_at_ms),
            execution_id: ExecutionId::parse(&id)?,
        }),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give both after_expires_at_ms and after_execution_id (the previous page's cursor), or neither",
            ));
        }
    };
    let args = ListExpiredLeasesArgs {
        as_of: q.as_of.map(TimestampMs),
        after,
        limit: q.limit,
        namespace: q.namespace.map(Namespace::new),
    };
    Ok(Json(state.backend().list_expired_leases(args).await?))
}
