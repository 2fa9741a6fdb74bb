//! The executions page: a search over executions by lane, public state, kind, tag and
//! namespace, newest first, one page at a time (`before` continues after the previous page).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use ff_backend_postgres::dashboard::{ExecutionSearch, MAX_SEARCH_PAGE, SearchCursor};
use ff_core::PublicState;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::Session;
use super::{DashboardState, PageError, render, session_ctx};

/// Rows per page unless the query asks for another size.
const DEFAULT_PAGE: usize = 50;

/// The filters, as the page's form submits them (empty fields mean "any").
#[derive(Default, Deserialize, Serialize)]
pub(super) struct Filters {
    #[serde(default)]
    lane: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    /// `key` (any value) or `key=value`.
    #[serde(default)]
    tag: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

impl Filters {
    fn search(&self) -> Result<ExecutionSearch, PageError> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let state = match text(&self.state) {
            None => None,
            Some(s) => Some(
                PublicState::parse(&s)
                    .map_err(|_| PageError::status(StatusCode::BAD_REQUEST, format!("unknown state {s:?}")))?,
            ),
        };
        let tag = text(&self.tag).map(|t| match t.split_once('=') {
            Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
            None => (t, None),
        });
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_SEARCH_PAGE {
            return Err(PageError::status(
                StatusCode::BAD_REQUEST,
                format!("page size {limit} outside 1..={MAX_SEARCH_PAGE}"),
            ));
        }
        Ok(ExecutionSearch {
            lane_id: text(&self.lane),
            state,
            kind: text(&self.kind),
            tag,
            namespace: text(&self.namespace),
            flow_id: None,
            before: self.before.map(|seq| SearchCursor { seq }),
            limit,
        })
    }
}

/// `GET /dashboard/executions`.
pub(super) async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Result<Html<String>, PageError> {
    let search = filters.search()?;
    let page = state.backend().search_executions(&search).await?;
    let next = page.next.map(|cursor| {
        let mut query = vec![];
        for (k, v) in [
            ("lane", &filters.lane),
            ("state", &filters.state),
            ("kind", &filters.kind),
            ("tag", &filters.tag),
            ("namespace", &filters.namespace),
        ] {
            if !v.is_empty() {
                query.push(format!("{k}={}", super::percent_encode(v)));
            }
        }
        query.push(format!("before={}", cursor.seq));
        query.push(format!("limit={}", search.limit));
        format!("/dashboard/executions?{}", query.join("&"))
    });
    let states: Vec<&str> = [
        PublicState::Waiting,
        PublicState::Delayed,
        PublicState::RateLimited,
        PublicState::WaitingChildren,
        PublicState::Active,
        PublicState::Suspended,
        PublicState::Completed,
        PublicState::Failed,
        PublicState::Cancelled,
        PublicState::Expired,
        PublicState::Skipped,
    ]
    .iter()
    .map(PublicState::as_str)
    .collect();
    render(
        "executions.html",
        context! {
            nav => "executions",
            session => session_ctx(&session),
            filters => filters,
            states => states,
            rows => page.rows,
            next => next,
        },
    )
}
