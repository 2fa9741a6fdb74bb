//! The flows pages: the list of flows, and one flow drawn as a graph: its members laid out in
//! layers (a member one layer right of its deepest upstream), its edges as arrows, each member
//! coloured by public state and linked to its page. The SVG is rendered on the server.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::Html;
use ff_backend_postgres::dashboard::{ExecutionRow, ExecutionSearch, MAX_SEARCH_PAGE};
use ff_core::{EdgeDirection, EdgeSnapshot, FlowBackend, FlowId, ListFlowsArgs};
use minijinja::context;
use serde::Deserialize;

use super::auth::Session;
use super::{DashboardState, PageError, percent_encode, render, session_ctx};

/// Node box size and spacing, in SVG units.
const NODE_W: i64 = 190;
const NODE_H: i64 = 46;
const GAP_X: i64 = 70;
const GAP_Y: i64 = 24;
const MARGIN: i64 = 20;

#[derive(Deserialize)]
pub(super) struct FlowsQuery {
    after: Option<String>,
}

/// `GET /dashboard/flows`.
pub(super) async fn list(
    State(state): State<DashboardState>,
    session: Session,
    Query(q): Query<FlowsQuery>,
) -> Result<Html<String>, PageError> {
    let cursor = q.after.filter(|a| !a.is_empty()).map(|a| FlowId::parse(&a)).transpose()?;
    let page = state
        .backend()
        .list_flows(ListFlowsArgs { partition: None, namespace: None, cursor, limit: Some(200) })
        .await?;
    let next = page.next_cursor.map(|c| format!("/dashboard/flows?after={}", percent_encode(&c.0.to_string())));
    render(
        "flows.html",
        context! { nav => "flows", session => session_ctx(&session), flows => page.flows, next => next },
    )
}

/// `GET /dashboard/flows/{id}`.
pub(super) async fn page(
    State(state): State<DashboardState>,
    session: Session,
    Path(raw): Path<String>,
) -> Result<Html<String>, PageError> {
    let flow_id = FlowId::parse(&raw)?;
    let backend = state.backend();
    let Some(flow) = backend.describe_flow(&flow_id).await? else {
        return Err(PageError::not_found(format!("no flow {raw}")));
    };
    let search = ExecutionSearch { flow_id: Some(flow_id.0), limit: MAX_SEARCH_PAGE, ..Default::default() };
    let members = backend.search_executions(&search).await?.rows;
    let mut edges = Vec::new();
    for member in &members {
        let from = EdgeDirection::Outgoing { from_node: member.execution_id };
        edges.extend(backend.list_edges(&flow_id, from).await?);
    }
    let graph = layout(&members, &edges);
    render(
        "flow.html",
        context! {
            nav => "flows",
            session => session_ctx(&session),
            flow => flow,
            graph => graph,
            truncated => members.len() >= MAX_SEARCH_PAGE,
        },
    )
}

/// Positions members in layers by longest path from a root and draws each edge between them.
fn layout(members: &[ExecutionRow], edges: &[EdgeSnapshot]) -> minijinja::Value {
    let index: HashMap<String, usize> =
        members.iter().enumerate().map(|(i, m)| (m.execution_id.to_string(), i)).collect();
    let links: Vec<(usize, usize, &EdgeSnapshot)> = edges
        .iter()
        .filter_map(|e| {
            let up = *index.get(&e.upstream_execution_id.to_string())?;
            let down = *index.get(&e.downstream_execution_id.to_string())?;
            Some((up, down, e))
        })
        .collect();
    // Longest-path layering; a cycle (which the engine refuses) cannot loop: at most n rounds.
    let mut layer = vec![0usize; members.len()];
    for _ in 0..members.len() {
        let mut changed = false;
        for (up, down, _) in &links {
            if layer[*down] < layer[*up] + 1 {
                layer[*down] = layer[*up] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // Oldest first inside a layer, so the drawing is stable.
    let mut rows_in_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in (0..members.len()).rev() {
        rows_in_layer.entry(layer[i]).or_default().push(i);
    }
    let mut pos = vec![(0i64, 0i64); members.len()];
    for (l, nodes) in &rows_in_layer {
        for (row, i) in nodes.iter().enumerate() {
            pos[*i] = (MARGIN + *l as i64 * (NODE_W + GAP_X), MARGIN + row as i64 * (NODE_H + GAP_Y));
        }
    }
    let layers = rows_in_layer.keys().max().map_or(0, |m| m + 1) as i64;
    let tallest = rows_in_layer.values().map(Vec::len).max().unwrap_or(0) as i64;
    let nodes: Vec<minijinja::Value> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let id = m.execution_id.to_string();
            context! {
                x => pos[i].0, y => pos[i].1,
                href => format!("/dashboard/executions/{}", percent_encode(&id)),
                title => id,
                kind => m.execution_kind,
                state => m.public_state.as_str(),
            }
        })
        .collect();
    let arrows: Vec<minijinja::Value> = links
        .iter()
        .map(|(up, down, e)| {
            context! {
                x1 => pos[*up].0 + NODE_W, y1 => pos[*up].1 + NODE_H / 2,
                x2 => pos[*down].0 - 6, y2 => pos[*down].1 + NODE_H / 2,
                state => serde_json::to_value(e.edge_state).ok().and_then(|v| v.as_str().map(str::to_owned)),
                resolution => e.resolution.and_then(|r| serde_json::to_value(r).ok()).and_then(|v| v.as_str().map(str::to_owned)),
            }
        })
        .collect();
    context! {
        width => 2 * MARGIN + layers.max(1) * NODE_W + (layers - 1).max(0) * GAP_X,
        height => 2 * MARGIN + tallest.max(1) * NODE_H + (tallest - 1).max(0) * GAP_Y,
        node_w => NODE_W, node_h => NODE_H,
        nodes => nodes,
        arrows => arrows,
    }
}
