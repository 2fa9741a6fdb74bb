//! [`ApiRoute`]: one entry of the route table, the handler together with what the OpenAPI
//! document says about it, built with a small builder:
//!
//! ```text
//! ApiRoute::post("/v1/executions", "Submit an execution")
//!     .body::<SubmitRequest>(SUBMIT_LIMIT)
//!     .responds::<CreateExecutionResult>(201, "Created")
//!     .responds::<CreateExecutionResult>(200, "Duplicate: the original execution")
//!     .error(409, "An execution with this id exists with other content")
//!     .to(post(submit))
//! ```
//!
//! The error statuses every route of a shape answers (400 for input, 401 behind auth, 413 and
//! 415 with a body, 500, 503 when it reaches the database) are added by the document; a route
//! names only its own (404, 409...).
//!
//! Whether a route requires the bearer token follows from its path (`/v1/*` and `/metrics`), so
//! a new route cannot forget it. The one exception is explicit: a route built with
//! [`RouteBuilder::waitpoint_token_auth`] also admits callers presenting a waitpoint token.

use axum::http::Method;
use axum::routing::MethodRouter;

use super::AppState;
use crate::openapi::{Auth, Operation, QueryParam, QuerySchema, RequestBody, Success, SuccessBody, schema_of};

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

    /// A `DELETE` route.
    pub fn delete(path: &'static str, summary: &'static str) -> RouteBuilder {
        RouteBuilder::new(Method::DELETE, path, summary)
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
                auth: if path.starts_with("/v1/") || path == "/metrics" { Auth::Bearer } else { Auth::Open },
                query: Vec::new(),
                request: None,
                successes: Vec::new(),
                errors: Vec::new(),
                backend: path.starts_with("/v1/"),
            },
        }
    }

    /// Takes a JSON body of type `T`, at most `limit` bytes.
    pub fn body<T: schemars::JsonSchema>(mut self, limit: usize) -> Self {
        self.operation.request = Some(RequestBody { schema: schema_of::<T>(), limit, required: true });
        self
    }

    /// Takes a JSON body of type `T`, at most `limit` bytes, that may be left out (an empty
    /// body is `T`'s default; the handler reads it with `ApiJsonOrEmpty`).
    pub fn optional_body<T: schemars::JsonSchema>(mut self, limit: usize) -> Self {
        self.operation.request = Some(RequestBody { schema: schema_of::<T>(), limit, required: false });
        self
    }

    /// Answers `status` with a JSON body of type `T`.
    pub fn responds<T: schemars::JsonSchema>(mut self, status: u16, description: &'static str) -> Self {
        self.operation.successes.push(Success { status, description, body: SuccessBody::Json(schema_of::<T>()) });
        self
    }

    /// Answers `status` with no body.
    pub fn empty(mut self, status: u16, description: &'static str) -> Self {
        self.operation.successes.push(Success { status, description, body: SuccessBody::Empty });
        self
    }

    /// Answers `status` with a body of media type `media` (not JSON).
    pub fn media(mut self, status: u16, media: &'static str, description: &'static str) -> Self {
        self.operation.successes.push(Success { status, description, body: SuccessBody::Media(media) });
        self
    }

    /// Also answers the error `status` (with the error body), meaning `description` here.
    pub fn error(mut self, status: u16, description: &'static str) -> Self {
        self.operation.errors.push((status, description));
        self
    }

    /// Opens the route to callers presenting the token of the waitpoint it names instead of the
    /// bearer token; the handler tells them apart with [`Caller`](super::Caller).
    pub fn waitpoint_token_auth(mut self) -> Self {
        self.operation.auth = Auth::BearerOrWaitpointToken;
        self
    }

    /// Marks whether the route reaches the database (by default: the `/v1/` routes).
    pub fn backend(mut self, backend: bool) -> Self {
        self.operation.backend = backend;
        self
    }

    /// Accepts the query parameter `name`, whose values follow the schema of `T`.
    pub fn query<T: schemars::JsonSchema>(
        self,
        name: &'static str,
        required: bool,
        description: impl Into<String>,
    ) -> Self {
        self.query_schema(name, required, description, QuerySchema::Of(schema_of::<T>()))
    }

    /// Accepts the query parameter `name` with an explicit schema.
    pub fn query_schema(
        mut self,
        name: &'static str,
        required: bool,
        description: impl Into<String>,
        schema: QuerySchema,
    ) -> Self {
        self.operation.query.push(QueryParam { name, required, description: description.into(), schema });
        self
    }

    /// Attaches the handler.
    pub fn to(self, handler: MethodRouter<AppState>) -> ApiRoute {
        ApiRoute { operation: self.operation, handler }
    }
}
