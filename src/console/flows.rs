//! The flow picture: each flow drawn as a graph (SVG) from the loaded flow files, each node
//! with the calls that reached it in the last 7 days, each way out with its key and label.

use super::{render, Layout, PageError, Signed};
use crate::flow::picture::{picture, Edge, NodeShape, Picture};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use quick_xml::escape::escape;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

const BOX_W: i64 = 210;
const BOX_H: i64 = 52;
const COL: i64 = 390;
const ROW: i64 = 78;
const PAD: i64 = 24;

/// One flow as drawn, with its nodes' figures.
struct Drawn {
    name: String,
    svg: String,
    nodes: Vec<(String, &'static str, u64)>,
}

#[derive(Template)]
#[template(path = "console/flows.html")]
struct FlowsPage {
    layout: Layout,
    version: String,
    since: String,
    flows: Vec<Drawn>,
}

/// Columns by distance from the start (nodes not reached from it last), rows in order.
fn place(ids: &[&str], start: Option<&str>, edges: &[&Edge]) -> BTreeMap<String, (i64, i64)> {
    let mut depth: BTreeMap<&str, i64> = BTreeMap::new();
    let mut queue = VecDeque::new();
    // From the start; a flow without one (shared nodes) from every node nothing leads to.
    let roots: Vec<&str> = match start.filter(|s| ids.contains(s)) {
        Some(s) => vec![s],
        None => ids
            .iter()
            .copied()
            .filter(|i| !edges.iter().any(|e| e.to == *i && e.from != *i))
            .collect(),
    };
    for s in roots {
        depth.insert(s, 0);
        queue.push_back(s);
    }
    while let Some(n) = queue.pop_front() {
        let d = depth[n];
        for e in edges.iter().filter(|e| e.from == n) {
            if let Some(to) = ids.iter().find(|i| **i == e.to) {
                if !depth.contains_key(to) {
                    depth.insert(to, d + 1);
                    queue.push_back(to);
                }
            }
        }
    }
    let last = depth.values().max().map_or(0, |m| m + 1);
    let mut rows: BTreeMap<i64, i64> = BTreeMap::new();
    let mut at = BTreeMap::new();
    let mut order: Vec<&str> = ids.to_vec();
    order.sort_by_key(|i| depth.get(i).copied().unwrap_or(last));
    for id in order {
        let col = depth.get(id).copied().unwrap_or(last);
        let row = rows.entry(col).or_insert(0);
        at.insert(id.to_string(), (PAD + col * COL, PAD + *row * ROW));
        *row += 1;
    }
    at
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// One flow's SVG: boxes for its nodes (and for nodes of other flows it leads to), curves
/// for the ways between them.
fn draw(flow: &str, p: &Picture, traffic: &BTreeMap<String, u64>) -> Drawn {
    let prefix = format!("{flow}.");
    let own: Vec<&NodeShape> = p
        .nodes
        .iter()
        .filter(|n| n.id.starts_with(&prefix))
        .collect();
    let edges: Vec<&Edge> = p
        .edges
        .iter()
        .filter(|e| e.from.starts_with(&prefix))
        .collect();
    let mut ids: Vec<&str> = own.iter().map(|n| n.id.as_str()).collect();
    for e in &edges {
        if !ids.contains(&e.to.as_str()) {
            ids.push(e.to.as_str());
        }
    }
    let at = place(&ids, p.starts.get(flow).map(String::as_str), &edges);
    let width = at.values().map(|(x, _)| x + BOX_W + PAD).max().unwrap_or(0) + 40;
    let height = at.values().map(|(_, y)| y + BOX_H + PAD).max().unwrap_or(0) + 40;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="flow" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>The {} flow: nodes, the calls that reached each in the last 7 days, and the ways between them</title><defs><marker id="arrow-{}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path class="arrow" d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>"#,
        escape(flow),
        escape(flow)
    );
    for e in &edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&e.from), at.get(&e.to)) else {
            continue;
        };
        let (sx, sy, tx, ty) = (x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2);
        let path = if tx > sx {
            format!(
                "M {sx} {sy} C {} {sy}, {} {ty}, {tx} {ty}",
                sx + 50,
                tx - 50
            )
        } else {
            // Back to an earlier column: around below.
            let below = sy.max(ty) + BOX_H;
            format!(
                "M {sx} {sy} C {} {below}, {} {below}, {tx} {ty}",
                sx + 80,
                tx - 80
            )
        };
        let label = match e.digit {
            Some(d) if e.label.is_empty() => d.to_string(),
            Some(d) => format!("{d}: {}", e.label),
            None => e.label.clone(),
        };
        let _ = write!(
            svg,
            r#"<path class="edge" d="{path}" marker-end="url(#arrow-{})"><title>{}</title></path>"#,
            escape(flow),
            escape(format!("{} → {}: {label}", e.from, e.to).as_str())
        );
        if !label.is_empty() {
            // Beside the arrow's head, so that the labels of one node's ways out spread
            // over the rows they go to.
            let (lx, ly, anchor) = if tx > sx {
                (tx - 12, ty - 7, "end")
            } else {
                ((sx + tx) / 2, sy.max(ty) + BOX_H / 2 + 8, "middle")
            };
            let _ = write!(
                svg,
                r#"<text class="edge-label" x="{lx}" y="{ly}" text-anchor="{anchor}">{}</text>"#,
                escape(short(&label, 26).as_str())
            );
        }
    }
    let mut nodes = Vec::new();
    for id in &ids {
        let Some(&(x, y)) = at.get(*id) else { continue };
        let shape = own.iter().find(|n| n.id == *id);
        let kind = shape.map_or("other flow", |n| n.kind);
        let calls = traffic.get(*id).copied().unwrap_or(0);
        let class = if shape.is_some() { "node" } else { "node away" };
        let _ = write!(
            svg,
            r#"<g class="{class}"><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/><text class="name" x="{}" y="{}">{}</text><text class="kind" x="{}" y="{}">{} · {calls} calls</text></g>"#,
            x + 10,
            y + 21,
            escape(short(id.strip_prefix(&prefix).unwrap_or(id), 26).as_str()),
            x + 10,
            y + 40,
            escape(kind),
        );
        if shape.is_some() {
            nodes.push((id.to_string(), kind, calls));
        }
    }
    svg.push_str("</svg>");
    Drawn {
        name: flow.to_string(),
        svg,
        nodes,
    }
}

/// `GET /console/flows`.
pub async fn page(
    State(state): State<AppState>,
    Extension(signed): Extension<Signed>,
) -> Result<Response, PageError> {
    let now = state.now();
    let schedule = &state.config.schedule;
    let today = schedule.local_date(now);
    let since = schedule.start_of_day(today - chrono::Duration::days(6));
    let until = schedule.start_of_day(today + chrono::Duration::days(1));
    let counts = state.insights.counts(since, until).await?;
    let traffic: BTreeMap<String, u64> = counts
        .nodes
        .into_iter()
        .map(|n| (n.node, n.reached))
        .collect();
    let p = picture(&state.flows);
    // The flows that answer a line first.
    let mut names: Vec<&String> = state.flows.flows.keys().collect();
    names.sort_by_key(|n| (!p.starts.contains_key(*n), (*n).clone()));
    let flows = names
        .into_iter()
        .map(|name| draw(name, &p, &traffic))
        .collect();
    Ok(render(&FlowsPage {
        layout: Layout::new(&signed, "flows"),
        version: p.version.clone(),
        since: super::local_time(&state, since),
        flows,
    }))
}
