//! [`ApiRoute`]: one entry of the route table, the handler together with what the OpenAPI
//! document says about it, built with a small builder:
//!
//! ```text
//! ApiRoute::post("/v1/executions", "Submit an execution")
//!     .body::<SubmitRequest>(SUBMIT_LIMIT)
//!     .responds::<CreateExecutionResult>(201)
//!     .to(post(submit))
//! ```
//!
//! Whether a route requires the bearer token follows from its path (`/v1/*` and `/metrics`), so
//! a new route cannot forget it.

use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use crate::openapi::{Operation, QueryParam, RequestBody, schema_of};

/// A served route and its description.
pub struct ApiRoute {
    operation: Operation,
    handler: MethodRouter<AppState>,
}

impl ApiRoute {
    /// A `GET` route.
    pub fn get(path: &'static str, summary: &'static str) -> RouteBuilder {
        RouteBuilder::new(Method::GET, path, summary)
    }

    /// A `POST` route.
    pub fn post(path: &'static str, summary: &'static str) -> RouteBuilder {
        RouteBuilder::new(Method::POST, path, summary)
    }

    /// A `PUT` route.
    pub fn put(path: &'static str, summary: &'static str) -> RouteBuilder {
        RouteBuilder::new(Method::PUT, path, summary)
    }

    /// What the OpenAPI document says about this route.
    pub fn operation(&self) -> &Operation {
        &self.operation
    }

    pub(super) fn into_parts(self) -> (Operation, MethodRouter<AppState>) {
        (self.operation, self.handler)
    }
}

/// An [`ApiRoute`] before its handler is attached.
pub struct RouteBuilder {
    operation: Operation,
}

impl RouteBuilder {
    fn new(method: Method, path: &'static str, summary: &'static str) -> Self {
        Self {
            operation: Operation {
                method,
                path,
                summary,
                auth: path.starts_with("/v1/") || path == "/metrics",
                query: Vec::new(),
                request: None,
                success: 200,
                response: None,
            },
        }
    }

    /// Takes a JSON body of type `T`, at most `limit` bytes.
    pub fn body<T: schemars::JsonSchema>(mut self, limit: usize) -> Self {
        self.operation.request = Some(RequestBody { schema: schema_of::<T>(), limit });
        self
    }

    /// Answers `status` with a JSON body of type `T`.
    pub fn responds<T: schemars::JsonSchema>(mut self, status: u16) -> Self {
        self.operation.response = Some(schema_of::<T>());
        self.operation.success = status;
        self
    }

    /// Answers `status` with no JSON body (empty, bytes or text).
    pub fn status(mut self, status: u16) -> Self {
        self.operation.response = None;
        self.operation.success = status;
        self
    }

    /// Accepts the query parameter `name`.
    pub fn query(mut self, name: &'static str, required: bool, description: impl Into<String>) -> Self {
        self.operation.query.push(QueryParam { name, required, description: description.into() });
        self
    }

    /// Attaches the handler.
    pub fn to(self, handler: MethodRouter<AppState>) -> ApiRoute {
        ApiRoute { operation: self.operation, handler }
    }
}
