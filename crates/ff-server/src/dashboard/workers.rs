//! The workers page: live worker instances from the worker registry, in instance-id order,
//! one page at a time.

use axum::extract::{Query, State};
use axum::response::Html;
use ff_core::{EngineBackend, ListWorkersArgs, Namespace, WorkerInstanceId, WorkerRegistryBackend};
use minijinja::context;
use serde::Deserialize;

use super::auth::Session;
use super::{DashboardState, PageError, percent_encode, render, session_ctx};

/// Workers per page.
const PAGE: usize = 200;

#[derive(Deserialize)]
pub(super) struct WorkersQuery {
    #[serde(default)]
    namespace: String,
    after: Option<String>,
}

/// `GET /dashboard/workers`.
pub(super) async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Query(q): Query<WorkersQuery>,
) -> Result<Html<String>, PageError> {
    let namespace = Some(q.namespace.trim()).filter(|n| !n.is_empty()).map(Namespace::new);
    let args = ListWorkersArgs {
        namespace,
        after: q.after.filter(|a| !a.is_empty()).map(WorkerInstanceId::new),
        limit: Some(PAGE),
    };
    let workers = state.backend().list_workers(args).await?;
    let now = state.backend().server_time_ms().await? as i64;
    let next = workers.cursor.map(|c| {
        format!("/dashboard/workers?namespace={}&after={}", percent_encode(&q.namespace), percent_encode(c.as_str()))
    });
    render(
        "workers.html",
        context! {
            nav => "workers",
            session => session_ctx(&session),
            namespace => q.namespace,
            workers => workers.entries,
            now => now,
            next => next,
        },
    )
}
