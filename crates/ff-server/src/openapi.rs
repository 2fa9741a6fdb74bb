//! The OpenAPI 3.1 document, generated from the same route table that builds the router
//! ([`crate::http::routes`]), so every served route is described and nothing else is. Body
//! schemas are derived from the Rust types the handlers read and write (`schemars`), so they
//! cannot drift from what serde accepts. `docs/openapi.json` is the committed copy; a test fails
//! when it differs from this output.

use std::collections::BTreeMap;

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::http::routes;

/// The document.
pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    }));
    let error_ref = generator.subschema_for::<ff_core::wire::ErrorBody>();
    let id_ref = generator.subschema_for::<ff_core::ExecutionId>();
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for (route, _) in routes() {
        let mut params: Vec<Value> = route
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
        params.extend(route.query.iter().map(|(name, required, description)| {
            json!({"name": name, "in": "query", "required": required, "description": description,
                   "schema": {"type": "string"}})
        }));
        let mut responses = serde_json::Map::new();
        let success = match route.response {
            Some(schema) => json!({
                "description": "Success",
                "content": {"application/json": {"schema": schema(&mut generator)}},
            }),
            None => json!({"description": "Success"}),
        };
        responses.insert(route.success.to_string(), success);
        responses.insert(
            "default".into(),
            json!({"description": "Error", "content": {"application/json": {"schema": error_ref}}}),
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
                "content": {"application/json": {"schema": schema(&mut generator)}},
            });
        }
        if route.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        paths.entry(route.path).or_default().insert(route.method.as_str().to_lowercase(), op);
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
