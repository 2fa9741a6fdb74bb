//! The OpenAPI 3.1 document, generated from a list of [`Operation`]s. The HTTP layer builds the
//! router and this document from the same route table (see `http/mod.rs`), so every served route
//! is described and nothing else is. Body schemas are derived from the Rust types the handlers
//! read and write (`schemars`), so they cannot drift from what serde accepts.
//! `docs/openapi.json` is the committed copy; a test fails when it differs from this output.
//!
//! This module knows nothing of axum or the handlers: it describes operations.

use std::collections::BTreeMap;

use axum::http::Method;
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
    /// Whether the bearer token is required (when one is configured).
    pub auth: bool,
    /// Query parameters.
    pub query: Vec<QueryParam>,
    /// The JSON request body, for routes that take one.
    pub request: Option<RequestBody>,
    /// Success status.
    pub success: u16,
    /// Schema of the JSON success body (`None`: empty, bytes or text).
    pub response: Option<SchemaFn>,
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
}

/// A JSON request body.
#[derive(Clone, Copy, Debug)]
pub struct RequestBody {
    /// Its schema.
    pub schema: SchemaFn,
    /// Largest accepted body in bytes.
    pub limit: usize,
}

/// Produces a JSON Schema (a `$ref` into the generator's definitions).
pub type SchemaFn = fn(&mut SchemaGenerator) -> schemars::Schema;

/// The [`SchemaFn`] of `T`.
pub fn schema_of<T: schemars::JsonSchema>() -> SchemaFn {
    |g| g.subschema_for::<T>()
}

/// The document describing `operations`.
pub fn document<'a>(operations: impl IntoIterator<Item = &'a Operation>) -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    }));
    let error_ref = generator.subschema_for::<ff_core::wire::ErrorBody>();
    let id_ref = generator.subschema_for::<ff_core::ExecutionId>();
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for op in operations {
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = match name {
                    "id" => id_ref.clone().to_value(),
                    "index" => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
                    _ => json!({"type": "string", "minLength": 1}),
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        params.extend(op.query.iter().map(|q| {
            json!({"name": q.name, "in": "query", "required": q.required, "description": q.description,
                   "schema": {"type": "string"}})
        }));
        let mut responses = serde_json::Map::new();
        let success = match op.response {
            Some(schema) => json!({
                "description": "Success",
                "content": {"application/json": {"schema": schema(&mut generator)}},
            }),
            None => json!({"description": "Success"}),
        };
        responses.insert(op.success.to_string(), success);
        responses.insert(
            "default".into(),
            json!({"description": "Error", "content": {"application/json": {"schema": error_ref}}}),
        );
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
                "required": true,
                "description": format!("Largest accepted body: {} bytes.", body.limit),
                "content": {"application/json": {"schema": (body.schema)(&mut generator)}},
            });
        }
        if op.auth {
            entry["security"] = json!([{"bearer": []}]);
        }
        paths.entry(op.path).or_default().insert(op.method.as_str().to_lowercase(), entry);
    }
    let schemas: BTreeMap<String, Value> = generator.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "FlowFabric", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}
