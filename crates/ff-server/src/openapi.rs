//! The OpenAPI 3.1 document, generated from the same route table that builds the router
//! ([`crate::http::routes`]), so every served route is described and nothing else is.
//! `docs/openapi.json` is the committed copy; a test fails when it differs from this output.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::routes;

/// The document.
pub fn document() -> Value {
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for (route, _) in routes() {
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = serde_json::Map::new();
        responses.insert(route.success.to_string(), json!({"description": "Success"}));
        responses.insert(
            "default".into(),
            json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}),
        );
        let operation_id = format!(
            "{}{}",
            route.method.as_str().to_lowercase(),
            route.path.replace(['{', '}'], "").replace(['/', '-', '.'], "_")
        );
        let mut op = json!({
            "operationId": operation_id,
            "summary": route.summary,
            "parameters": params,
            "responses": responses,
        });
        if let Some(schema) = route.request {
            op["requestBody"] = json!({
                "required": true,
                "description": format!("Largest accepted body: {} bytes.", route.body_limit.unwrap_or_default()),
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
            });
        }
        if route.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        paths.entry(route.path).or_default().insert(route.method.as_str().to_lowercase(), op);
    }
    let mut schemas = serde_json::Map::new();
    schemas.insert(
        "ErrorBody".into(),
        json!({
            "type": "object",
            "required": ["code", "message", "retryable"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "message": {"type": "string"},
                "retryable": {"type": "boolean"},
            },
        }),
    );
    for (route, _) in routes() {
        if let Some(name) = route.request {
            schemas.insert(
                name.into(),
                json!({"type": "object", "description": format!("JSON body `ff_core::wire::{name}`.")}),
            );
        }
    }
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
