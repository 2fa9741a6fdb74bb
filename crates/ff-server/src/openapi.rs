//! The OpenAPI 3.1 document, generated from a list of [`Operation`]s. The HTTP layer builds the
//! router and this document from the same route table (see `http/mod.rs`), so every served route
//! is described and nothing else is. Body schemas are derived from the Rust types the handlers
//! read and write (`schemars`), so they cannot drift from what serde accepts.
//! `docs/openapi.json` is the committed copy; a test fails when it differs from this output.
//!
//! Every operation lists each status it can answer: its success statuses with their bodies, and
//! its error statuses with the one error body. Path and query parameters carry the same bounds
//! the handlers and the engine enforce, taken from `ff-core`'s constants; the execution-id
//! pattern names the partitions of the deployment the document describes.
//!
//! This module knows nothing of axum or the handlers: it describes operations.

use std::collections::BTreeMap;

use axum::http::Method;
use ff_core::PartitionConfig;
use ff_core::execution::{MAX_NAME_BYTES, NAME_PATTERN};
use ff_core::tag::{TAG_KEY_MAX_BYTES, TAG_KEY_PATTERN};
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// What the document says about one route.
#[derive(Clone, Debug)]
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path template (`{name}` parameters).
    pub path: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Who may call it (when a bearer token is configured).
    pub auth: Auth,
    /// Query parameters.
    pub query: Vec<QueryParam>,
    /// The JSON request body, for routes that take one.
    pub request: Option<RequestBody>,
    /// Success answers, in the order documented.
    pub successes: Vec<Success>,
    /// Error statuses this route answers besides the ones every route of its shape answers
    /// (see [`document`]), with what each means here.
    pub errors: Vec<(u16, &'static str)>,
    /// Whether the route reaches the database (and so may answer 503).
    pub backend: bool,
}

/// Who may call a route when the server is configured with a bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (`/healthz`, `/openapi.json`).
    Open,
    /// Holders of the bearer token.
    Bearer,
    /// Holders of the bearer token, or of the token of the waitpoint the route names (in the
    /// `X-Waitpoint-Token` header or the body): a signal from the outside world.
    BearerOrWaitpointToken,
}

/// One success answer.
#[derive(Clone, Debug)]
pub struct Success {
    /// Status.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// The body.
    pub body: SuccessBody,
}

/// The body of a success answer.
#[derive(Clone, Copy, Debug)]
pub enum SuccessBody {
    /// None.
    Empty,
    /// JSON of this schema.
    Json(SchemaFn),
    /// Bytes of this media type.
    Media(&'static str),
}

/// One query parameter.
#[derive(Clone, Debug)]
pub struct QueryParam {
    /// Name.
    pub name: &'static str,
    /// Whether the route rejects a request without it.
    pub required: bool,
    /// What it means, with its default and bounds.
    pub description: String,
    /// Its schema.
    pub schema: QuerySchema,
}

/// The schema of a query parameter.
#[derive(Clone, Debug)]
pub enum QuerySchema {
    /// This JSON Schema.
    Fixed(Value),
    /// A type's schema.
    Of(SchemaFn),
    /// An execution partition index of the deployment.
    Partition,
}

/// A JSON request body.
#[derive(Clone, Copy, Debug)]
pub struct RequestBody {
    /// Its schema.
    pub schema: SchemaFn,
    /// Largest accepted body in bytes.
    pub limit: usize,
    /// False when the body may be left out (an empty body means every field's default).
    pub required: bool,
}

/// Produces a JSON Schema (a `$ref` into the generator's definitions).
pub type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

/// The [`SchemaFn`] of `T`.
pub fn schema_of<T: schemars::JsonSchema>() -> SchemaFn {
    |g| g.subschema_for::<T>()
}

/// The document describing `operations` for a deployment with `partitions`.
pub fn document<'a>(operations: impl IntoIterator<Item = &'a Operation>, partitions: &PartitionConfig) -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    }));
    let error_ref = generator.subschema_for::<ff_core::wire::ErrorBody>();
    let id_ref = generator.subschema_for::<ff_core::ExecutionId>();
    let max_partition = partitions.num_flow_partitions.saturating_sub(1);
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES, "pattern": NAME_PATTERN});
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for op in operations {
        let path_names: Vec<&str> =
            op.path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let mut params: Vec<Value> = path_names
            .iter()
            .map(|&param| {
                let schema = match param {
                    "id" | "downstream_execution_id" => id_ref.clone().to_value(),
                    "flow_id" => generator.subschema_for::<ff_core::FlowId>().to_value(),
                    "edge_id" => generator.subschema_for::<ff_core::EdgeId>().to_value(),
                    "budget_id" => generator.subschema_for::<ff_core::BudgetId>().to_value(),
                    "quota_policy_id" => generator.subschema_for::<ff_core::QuotaPolicyId>().to_value(),
                    "lane_id" => generator.subschema_for::<ff_core::LaneId>().to_value(),
                    "index" => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
                    "key" => json!({"type": "string", "maxLength": TAG_KEY_MAX_BYTES, "pattern": TAG_KEY_PATTERN}),
                    _ => name.clone(),
                };
                json!({"name": param, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        params.extend(op.query.iter().map(|q| {
            let schema = match &q.schema {
                QuerySchema::Fixed(v) => v.clone(),
                QuerySchema::Of(f) => f(&mut generator).to_value(),
                QuerySchema::Partition => json!({"type": "integer", "minimum": 0, "maximum": max_partition}),
            };
            json!({"name": q.name, "in": "query", "required": q.required, "description": q.description,
                   "schema": schema})
        }));
        let mut responses = serde_json::Map::new();
        for success in &op.successes {
            let mut answer = json!({"description": success.description});
            match success.body {
                SuccessBody::Empty => {}
                SuccessBody::Json(schema) => {
                    answer["content"] = json!({"application/json": {"schema": schema(&mut generator)}});
                }
                SuccessBody::Media(media) => answer["content"] = json!({media: {"schema": {}}}),
            }
            responses.insert(success.status.to_string(), answer);
        }
        for (status, description) in error_statuses(op, !path_names.is_empty()) {
            responses.insert(
                status.to_string(),
                json!({"description": description, "content": {"application/json": {"schema": error_ref}}}),
            );
        }
        let operation_id = format!(
            "{}{}",
            op.method.as_str().to_lowercase(),
            op.path.replace(['{', '}'], "").replace(['/', '-', '.'], "_")
        );
        let mut entry = json!({
            "operationId": operation_id,
            "summary": op.summary,
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = op.request {
            entry["requestBody"] = json!({
                "required": body.required,
                "description": format!("Largest accepted body: {} bytes.", body.limit),
                "content": {"application/json": {"schema": (body.schema)(&mut generator)}},
            });
        }
        match op.auth {
            Auth::Open => {}
            Auth::Bearer => entry["security"] = json!([{"bearer": []}]),
            Auth::BearerOrWaitpointToken => entry["security"] = json!([{"bearer": []}, {"waitpoint_token": []}]),
        }
        paths.entry(op.path).or_default().insert(op.method.as_str().to_lowercase(), entry);
    }
    let mut schemas: BTreeMap<String, Value> = generator.take_definitions(true).into_iter().collect();
    if let Some(id) = schemas.get_mut("ExecutionId") {
        id["pattern"] = ff_core::id::execution_id_pattern(max_partition).into();
        id["description"] =
            format!("`{{fp:<partition>}}:<uuid>`, the partition in 0..={max_partition} on this deployment").into();
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "FlowFabric", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "waitpoint_token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Waitpoint-Token",
                    "description": "The token of the waitpoint the route names; it may travel in the body instead",
                },
            },
        },
    })
}

/// Every error status of `op`: the ones its shape implies (input, auth, body, database, and the
/// 500 any handler may answer) and its own, in status order.
fn error_statuses(op: &Operation, has_path_params: bool) -> BTreeMap<u16, String> {
    let mut statuses: BTreeMap<u16, String> = BTreeMap::new();
    if op.request.is_some() || has_path_params || !op.query.is_empty() {
        statuses.insert(400, "The request is malformed or out of bounds (`invalid_input` and the like)".into());
    }
    match op.auth {
        Auth::Open => {}
        Auth::Bearer => {
            statuses.insert(401, "Missing or wrong bearer token (`unauthorized`)".into());
        }
        Auth::BearerOrWaitpointToken => {
            statuses
                .insert(401, "Neither the bearer token nor a waitpoint token was presented (`unauthorized`)".into());
        }
    }
    if let Some(body) = op.request {
        statuses.insert(413, format!("Body larger than {} bytes (`payload_too_large`)", body.limit));
        statuses.insert(415, "Content-Type is not application/json (`unsupported_media_type`)".into());
    }
    statuses.insert(500, "Internal error; the body carries no detail (`internal`, `corruption`)".into());
    match (op.backend, op.request.is_some()) {
        (true, true) => statuses.insert(
            503,
            "The database is unavailable or overloaded, or the server is reading too many request bodies; retry \
             (`transport`, `resource_exhausted`, `server_busy` with `Retry-After`)"
                .into(),
        ),
        (true, false) => statuses
            .insert(503, "The database is unavailable or overloaded; retry (`transport`, `resource_exhausted`)".into()),
        (false, true) => statuses.insert(
            503,
            "The server is reading too many request bodies; retry after `Retry-After` (`server_busy`)".into(),
        ),
        (false, false) => None,
    };
    for (status, description) in &op.errors {
        let entry = statuses.entry(*status).or_default();
        *entry = if entry.is_empty() { (*description).to_owned() } else { format!("{entry}; {description}") };
    }
    statuses
}
