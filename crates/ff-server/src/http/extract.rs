//! Request extractors whose rejections use the API's error shape: malformed JSON, a wrong
//! content type, an oversized body, a bad query string or path all answer [`ApiError`] JSON.
//! [`ApiJsonOrEmpty`] serves the routes whose body may be left out.
//! Typed path segments ([`ExecutionPath`], [`AttemptPath`], [`FlowPath`], [`EdgePath`],
//! [`DownstreamPath`], [`WaitpointPath`], [`BudgetPath`], [`QuotaPolicyPath`], [`LanePath`]) are
//! parsed here, so a handler only sees valid ids; a bad segment is `400 invalid_path`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use ff_core::{AttemptIndex, BudgetId, EdgeId, ExecutionId, FlowId, LaneId, QuotaPolicyId, WaitpointId};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body (requires `Content-Type: application/json`).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json(&req)?;
        parse_json(&read_body(req, state).await?).map(ApiJson)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`; a non-empty one is read
/// as [`ApiJson`] reads it (and needs its content type).
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = check_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Ok(ApiJsonOrEmpty(T::default()));
        }
        declared_json?;
        parse_json(&bytes).map(ApiJsonOrEmpty)
    }
}

/// `415 unsupported_media_type` unless the request says its body is JSON.
fn check_json(req: &Request) -> Result<(), ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::Request {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "expected Content-Type: application/json".into(),
        });
    }
    Ok(())
}

/// The whole body, within the route's limit (`413 payload_too_large` beyond it).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::bad_request("invalid_body", format!("could not read the request body: {}", r.body_text()))
        }
    })
}

/// Malformed JSON is `invalid_json`; well-formed JSON of the wrong shape is `invalid_input`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request("invalid_input", format!("invalid request: {e}")),
        _ => ApiError::bad_request("invalid_json", format!("malformed JSON: {e}")),
    })
}

/// A query string.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", format!("invalid query string: {}", e.body_text())))
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid path parameter: {}", e.body_text())))
    }
}

/// The execution named by the `{id}` path segment.
pub struct ExecutionPath(pub ExecutionId);

impl<S: Send + Sync> FromRequestParts<S> for ExecutionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            id: String,
        }
        let ApiPath(Segment { id }) = ApiPath::from_request_parts(parts, state).await?;
        ExecutionId::parse(&id)
            .map(ExecutionPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid execution id {id:?}: {e}")))
    }
}

/// The attempt named by the `{index}` path segment.
pub struct AttemptPath(pub AttemptIndex);

impl<S: Send + Sync> FromRequestParts<S> for AttemptPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            index: u32,
        }
        let ApiPath(Segment { index }) = ApiPath::from_request_parts(parts, state).await?;
        Ok(AttemptPath(AttemptIndex(index)))
    }
}

/// The flow named by the `{flow_id}` path segment.
pub struct FlowPath(pub FlowId);

impl<S: Send + Sync> FromRequestParts<S> for FlowPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            flow_id: String,
        }
        let ApiPath(Segment { flow_id }) = ApiPath::from_request_parts(parts, state).await?;
        FlowId::parse(&flow_id)
            .map(FlowPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid flow id {flow_id:?}: {e}")))
    }
}

/// The edge named by the `{edge_id}` path segment.
pub struct EdgePath(pub EdgeId);

impl<S: Send + Sync> FromRequestParts<S> for EdgePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            edge_id: String,
        }
        let ApiPath(Segment { edge_id }) = ApiPath::from_request_parts(parts, state).await?;
        EdgeId::parse(&edge_id)
            .map(EdgePath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid edge id {edge_id:?}: {e}")))
    }
}

/// The downstream member named by the `{downstream_execution_id}` path segment.
pub struct DownstreamPath(pub ExecutionId);

impl<S: Send + Sync> FromRequestParts<S> for DownstreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            downstream_execution_id: String,
        }
        let ApiPath(Segment { downstream_execution_id: id }) = ApiPath::from_request_parts(parts, state).await?;
        ExecutionId::parse(&id)
            .map(DownstreamPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid execution id {id:?}: {e}")))
    }
}

/// The waitpoint named by the `{waitpoint_id}` path segment.
pub struct WaitpointPath(pub WaitpointId);

impl<S: Send + Sync> FromRequestParts<S> for WaitpointPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            waitpoint_id: String,
        }
        let ApiPath(Segment { waitpoint_id: id }) = ApiPath::from_request_parts(parts, state).await?;
        WaitpointId::parse(&id)
            .map(WaitpointPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid waitpoint id {id:?}: {e}")))
    }
}

/// The budget named by the `{budget_id}` path segment.
pub struct BudgetPath(pub BudgetId);

impl<S: Send + Sync> FromRequestParts<S> for BudgetPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            budget_id: String,
        }
        let ApiPath(Segment { budget_id: id }) = ApiPath::from_request_parts(parts, state).await?;
        BudgetId::parse(&id)
            .map(BudgetPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid budget id {id:?}: {e}")))
    }
}

/// The quota policy named by the `{quota_policy_id}` path segment.
pub struct QuotaPolicyPath(pub QuotaPolicyId);

impl<S: Send + Sync> FromRequestParts<S> for QuotaPolicyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            quota_policy_id: String,
        }
        let ApiPath(Segment { quota_policy_id: id }) = ApiPath::from_request_parts(parts, state).await?;
        QuotaPolicyId::parse(&id)
            .map(QuotaPolicyPath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid quota policy id {id:?}: {e}")))
    }
}

/// The lane named by the `{lane_id}` path segment.
pub struct LanePath(pub LaneId);

impl<S: Send + Sync> FromRequestParts<S> for LanePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Segment {
            lane_id: String,
        }
        let ApiPath(Segment { lane_id: id }) = ApiPath::from_request_parts(parts, state).await?;
        LaneId::try_new(id.clone())
            .map(LanePath)
            .map_err(|e| ApiError::bad_request("invalid_path", format!("invalid lane {id:?}: {e}")))
    }
}
