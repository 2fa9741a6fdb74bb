//! The suspensions page: suspended executions, by suspension time, each with its open
//! waitpoints (key, state, the signals it waits for, expiry); tokens are never shown.

use axum::extract::{Query, State};
use axum::response::Html;
use ff_core::{ExecutionId, ListPendingWaitpointsArgs, SuspensionBackend};
use minijinja::context;
use serde::Deserialize;

use super::auth::Session;
use super::{DashboardState, PageError, percent_encode, render, session_ctx};

/// Suspended executions per page.
const PAGE: usize = 100;

#[derive(Deserialize)]
pub(super) struct SuspensionsQuery {
    after: Option<String>,
}

/// `GET /dashboard/suspensions`.
pub(super) async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Query(q): Query<SuspensionsQuery>,
) -> Result<Html<String>, PageError> {
    let after = q.after.filter(|a| !a.is_empty()).map(|a| ExecutionId::parse(&a)).transpose()?;
    let backend = state.backend();
    let page = backend.list_suspended(None, after, PAGE).await?;
    let mut rows = Vec::with_capacity(page.entries.len());
    for entry in page.entries {
        let waitpoints = backend
            .list_pending_waitpoints(ListPendingWaitpointsArgs {
                execution_id: entry.execution_id,
                after: None,
                limit: None,
            })
            .await?
            .entries;
        rows.push(context! {
            id => entry.execution_id.to_string(),
            id_path => percent_encode(&entry.execution_id.to_string()),
            entry => entry,
            waitpoints => waitpoints,
        });
    }
    let next = page.next_cursor.map(|c| format!("/dashboard/suspensions?after={}", percent_encode(&c.to_string())));
    render(
        "suspensions.html",
        context! { nav => "suspensions", session => session_ctx(&session), rows => rows, next => next },
    )
}
