//! The HTTP layer's only error type: every failure becomes one status and one JSON body
//! ([`ErrorBody`]) with a stable code. Server errors (5xx) are logged once here and their body
//! never carries internal text.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ff_core::wire::ErrorBody;
use ff_core::{EngineError, ValidationKind};

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// An engine error, mapped by case.
    Engine(EngineError),
    /// A request rejected before reaching the engine, or a health check that failed (a `503`
    /// is retryable).
    Request {
        /// Status.
        status: StatusCode,
        /// Stable code.
        code: &'static str,
        /// Message for the caller.
        message: String,
    },
}

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Request { status: StatusCode::BAD_REQUEST, code, message: message.into() }
    }

    /// The 401 for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::Request {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or invalid Authorization: Bearer token".into(),
        }
    }

    /// A 404 for an absent record.
    pub fn not_found(entity: &'static str) -> Self {
        Self::Engine(EngineError::NotFound { entity })
    }

    /// The 404 for a heartbeat or death of a worker instance that is not registered (never
    /// was, was marked dead, or let its liveness TTL lapse).
    pub fn worker_not_registered() -> Self {
        Self::Request {
            status: StatusCode::NOT_FOUND,
            code: "worker_not_registered",
            message: "this worker instance is not registered in that namespace; register it again".into(),
        }
    }

    /// The 413 for a body over its route's limit.
    pub fn payload_too_large() -> Self {
        Self::Request {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: "request body exceeds this route's limit".into(),
        }
    }

    /// The `503 server_busy` of a request whose body does not fit in the server's budget of
    /// request-body bytes in flight within the admission wait (retryable; the response carries
    /// `Retry-After`).
    pub fn server_busy() -> Self {
        Self::Request {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "server_busy",
            message: "the server is reading too many request bodies; retry after the Retry-After delay".into(),
        }
    }

    /// Status and body of this error.
    pub fn parts(&self) -> (StatusCode, ErrorBody) {
        match self {
            Self::Request { status, code, message } => (
                *status,
                ErrorBody {
                    code: (*code).to_owned(),
                    message: message.clone(),
                    retryable: *status == StatusCode::SERVICE_UNAVAILABLE,
                },
            ),
            Self::Engine(e) => engine_parts(e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

/// One status per engine case; validation kinds keep their own codes.
fn engine_parts(e: &EngineError) -> (StatusCode, ErrorBody) {
    let body = |message: String| ErrorBody { code: e.code().to_owned(), message, retryable: e.is_retryable() };
    match e {
        EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, body(e.to_string())),
        EngineError::Validation { kind: ValidationKind::PayloadTooLarge, .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, body(e.to_string()))
        }
        // Stored data the engine cannot decode is the engine's fault, not the caller's.
        EngineError::Validation { kind: ValidationKind::Corruption, .. } => {
            tracing::error!(error = %e, "stored data could not be decoded");
            (StatusCode::INTERNAL_SERVER_ERROR, body("internal server error".into()))
        }
        // The events after the reader's cursor were pruned: the position is gone for good.
        EngineError::Validation { kind: ValidationKind::CursorExpired, .. } => (StatusCode::GONE, body(e.to_string())),
        EngineError::Validation { .. } => (StatusCode::BAD_REQUEST, body(e.to_string())),
        EngineError::Contention(_) | EngineError::Conflict(_) | EngineError::State(_) => {
            (StatusCode::CONFLICT, body(e.to_string()))
        }
        EngineError::ResourceExhausted { .. } => {
            tracing::warn!(error = %e, "request refused: backend resource exhausted");
            (StatusCode::SERVICE_UNAVAILABLE, body("the server is overloaded; retry later".into()))
        }
        EngineError::Transport { .. } => {
            tracing::error!(error = %e, "backend transport error");
            (StatusCode::SERVICE_UNAVAILABLE, body("the database is unavailable; retry later".into()))
        }
        _ => {
            tracing::error!(error = %e, "internal error");
            (StatusCode::INTERNAL_SERVER_ERROR, body("internal server error".into()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use ff_core::{ConflictKind, ContentionKind, StateKind};

    use super::*;

    #[test]
    fn every_engine_case_has_one_status_and_a_stable_code() {
        let io = || Box::new(std::io::Error::other("connection refused to 10.0.0.7")) as _;
        let cases: Vec<(EngineError, u16, &str, bool)> = vec![
            (EngineError::NotFound { entity: "execution" }, 404, "not_found", false),
            (EngineError::invalid("bad"), 400, "invalid_input", false),
            (EngineError::validation(ValidationKind::Corruption, "column kind at row 17"), 500, "corruption", false),
            (EngineError::validation(ValidationKind::InvalidHandle, "x"), 400, "invalid_handle", false),
            (
                EngineError::validation(ValidationKind::HandleFromOtherBackend, "x"),
                400,
                "handle_from_other_backend",
                false,
            ),
            (EngineError::validation(ValidationKind::InvalidTagKey, "x"), 400, "invalid_tag_key", false),
            (EngineError::validation(ValidationKind::PayloadTooLarge, "x"), 413, "payload_too_large", false),
            (EngineError::validation(ValidationKind::CursorExpired, "x"), 410, "cursor_expired", false),
            (EngineError::Contention(ContentionKind::LeaseConflict), 409, "lease_conflict", true),
            (EngineError::Conflict(ConflictKind::ExecutionAlreadyExists), 409, "execution_already_exists", false),
            (EngineError::Conflict(ConflictKind::WorkerInstanceReassigned), 409, "worker_instance_reassigned", false),
            (EngineError::Contention(ContentionKind::StaleGraphRevision), 409, "stale_graph_revision", true),
            (EngineError::Conflict(ConflictKind::CycleDetected), 409, "cycle_detected", false),
            (EngineError::Conflict(ConflictKind::SelfReferencingEdge), 409, "self_referencing_edge", false),
            (EngineError::Conflict(ConflictKind::DependencyAlreadyExists), 409, "dependency_already_exists", false),
            (EngineError::Conflict(ConflictKind::ExecutionAlreadyInFlow), 409, "execution_already_in_flow", false),
            (EngineError::Conflict(ConflictKind::EdgeGroupPolicyFixed), 409, "edge_group_policy_already_fixed", false),
            (EngineError::State(StateKind::FlowAlreadyTerminal), 409, "flow_already_terminal", false),
            (EngineError::NotFound { entity: "flow" }, 404, "not_found", false),
            (EngineError::State(StateKind::StaleLease), 409, "stale_lease", false),
            (EngineError::State(StateKind::LeaseExpired), 409, "lease_expired", false),
            (EngineError::State(StateKind::Terminal), 409, "terminal", false),
            (EngineError::State(StateKind::ExecutionNotTerminal), 409, "execution_not_terminal", false),
            (EngineError::State(StateKind::MaxReplaysExhausted), 409, "max_replays_exhausted", false),
            (EngineError::validation(ValidationKind::PriorityOutOfRange, "x"), 400, "priority_out_of_range", false),
            (EngineError::validation(ValidationKind::FenceRequired, "x"), 400, "fence_required", false),
            (EngineError::ResourceExhausted { pool: "postgres", max: 4 }, 503, "resource_exhausted", true),
            (EngineError::Transport { backend: "postgres", source: io() }, 503, "transport", true),
            (EngineError::validation(ValidationKind::InvalidQuotaSpec, "x"), 400, "invalid_quota_spec", false),
            (EngineError::validation(ValidationKind::InvalidBudgetSpec, "x"), 400, "invalid_budget_spec", false),
            (
                EngineError::validation(ValidationKind::InvalidBlockingReason, "x"),
                400,
                "invalid_blocking_reason",
                false,
            ),
            (EngineError::Conflict(ConflictKind::QuotaPolicyAlreadyExists), 409, "quota_policy_already_exists", false),
            (EngineError::Conflict(ConflictKind::BudgetAlreadyExists), 409, "budget_already_exists", false),
            (EngineError::Contention(ContentionKind::ExecutionNotEligible), 409, "execution_not_eligible", true),
            (EngineError::Contention(ContentionKind::InvalidClaimGrant), 409, "invalid_claim_grant", true),
            (EngineError::Contention(ContentionKind::ClaimGrantExpired), 409, "claim_grant_expired", true),
            (EngineError::State(StateKind::NotBlocked), 409, "not_blocked", false),
            (EngineError::State(StateKind::BudgetExceeded), 409, "budget_exceeded", false),
            (EngineError::NotFound { entity: "budget" }, 404, "not_found", false),
            (EngineError::NotFound { entity: "quota_policy" }, 404, "not_found", false),
            (EngineError::Internal("invariant broken at row 17".into()), 500, "internal", false),
        ];
        for (e, status, code, retryable) in cases {
            let (s, body) = ApiError::from(e).parts();
            assert_eq!((s.as_u16(), body.code.as_str(), body.retryable), (status, code, retryable));
            if status >= 500 || status == 503 {
                assert!(!body.message.contains("10.0.0.7") && !body.message.contains("row 17"), "{}", body.message);
            }
        }
        let (s, body) = ApiError::unauthorized().parts();
        assert_eq!((s.as_u16(), body.code.as_str()), (401, "unauthorized"));
        let (s, body) = ApiError::worker_not_registered().parts();
        assert_eq!((s.as_u16(), body.code.as_str()), (404, "worker_not_registered"));
        let (s, body) = ApiError::server_busy().parts();
        assert_eq!((s.as_u16(), body.code.as_str(), body.retryable), (503, "server_busy", true));
        let (s, body) = ApiError::payload_too_large().parts();
        assert_eq!((s.as_u16(), body.code.as_str(), body.retryable), (413, "payload_too_large", false));
    }
}
