//! Listing lanes.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use ff_core::{LaneId, ListLanesPage, MAX_LIST_LIMIT};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::route::ApiRoute;
use crate::openapi::QuerySchema;

/// Lanes per page when the request names no limit.
const DEFAULT_PAGE: usize = 100;

/// The routes of this resource.
pub(super) fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::get("/v1/lanes", "List lanes")
            .query::<LaneId>("cursor", false, "Exclusive lane name to continue after")
            .query_schema(
                "limit",
                false,
                format!("Page size, at most {MAX_LIST_LIMIT} (default {DEFAULT_PAGE})"),
                QuerySchema::Fixed(json!({"type": "integer", "minimum": 0, "maximum": MAX_LIST_LIMIT})),
            )
            .responds::<ListLanesPage>(200, "One page")
            .to(get(list_lanes)),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LanesQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_lanes(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LanesQuery>,
) -> Result<Json<ListLanesPage>, ApiError> {
    let cursor = q.cursor.map(LaneId::try_new).transpose()?;
    Ok(Json(state.backend().list_lanes(cursor, q.limit.unwrap_or(DEFAULT_PAGE)).await?))
}
