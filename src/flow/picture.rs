//! The flows as a picture: each node with its kind, each way out with what takes it (a
//! menu option's key and label, "closed", "not answered", …). Drawn as Graphviz DOT by
//! `ivr flows draw`, and served as data by `GET /api/flows` for the console to draw.

use super::{FlowSet, Node, NodeRef, Whisper};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// A way from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// `flow.node` it leaves.
    pub from: String,
    /// `flow.node` it reaches.
    pub to: String,
    /// A menu option's key, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<char>,
    /// What takes it: a menu option's label, or the condition (`closed`, `no valid key`).
    pub label: String,
}

/// A node as drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeShape {
    /// `flow.node`.
    pub id: String,
    /// Its kind.
    pub kind: &'static str,
    /// Transfers: the target and what its agent hears first (`off`, `announce`, `screen`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<(String, &'static str)>,
}

/// The whole picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Picture {
    /// Content hash of the flows drawn.
    pub version: String,
    /// Start node of each flow that answers a line.
    pub starts: BTreeMap<String, String>,
    /// Every node.
    pub nodes: Vec<NodeShape>,
    /// Every way between them.
    pub edges: Vec<Edge>,
}

fn whisper_name(w: Whisper) -> &'static str {
    match w {
        Whisper::Off => "off",
        Whisper::Announce => "announce",
        Whisper::Screen => "screen",
    }
}

fn exits(node: &Node) -> Vec<(Option<char>, String, &NodeRef)> {
    let named = |label: &str, to| (None, label.to_string(), to);
    match node {
        Node::Menu(m) => m
            .options
            .iter()
            .map(|(digit, to)| {
                let label = m.labels.get(digit).cloned().unwrap_or_default();
                (Some(*digit), label, to)
            })
            .chain(std::iter::once(named("no valid key", &m.fallback)))
            .collect(),
        Node::Transfer(t) => {
            let failed = if t.whisper == Whisper::Screen {
                "not answered or declined"
            } else {
                "not answered"
            };
            [named("closed", &t.closed), named(failed, &t.failed)]
                .into_iter()
                .chain(t.abandoned.as_ref().map(|a| named("hung up waiting", a)))
                .collect()
        }
        Node::Hours { open, closed } => vec![named("open", open), named("closed", closed)],
        Node::Entry(e) => vec![
            named("confirmed", &e.next),
            named("no valid entry", &e.fallback),
        ],
        Node::ShoppingDollars(d) => vec![
            named("within the review period", &d.within_review),
            named("unpaid", &d.unpaid),
            named("within the grace days", &d.grace),
            named("overdue", &d.overdue),
        ],
        Node::ExternalTicket(t) => vec![
            named("new", &t.new),
            named("pending", &t.pending),
            named("overdue", &t.overdue),
            named("escalated", &t.escalated),
        ],
        other => other.exits().into_iter().map(|to| named("", to)).collect(),
    }
}

/// The picture of a flow set.
pub fn picture(set: &FlowSet) -> Picture {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let mut starts = BTreeMap::new();
    for (name, flow) in &set.flows {
        if let Some(s) = &flow.start {
            starts.insert(name.clone(), format!("{name}.{s}"));
        }
        for (id, node) in &flow.nodes {
            let from = format!("{name}.{id}");
            nodes.push(NodeShape {
                id: from.clone(),
                kind: node.kind(),
                transfer: match node {
                    Node::Transfer(t) => Some((t.target.clone(), whisper_name(t.whisper))),
                    _ => None,
                },
            });
            for (digit, label, to) in exits(node) {
                edges.push(Edge {
                    from: from.clone(),
                    to: to.to_string(),
                    digit,
                    label,
                });
            }
        }
    }
    Picture {
        version: set.version.clone(),
        starts,
        nodes,
        edges,
    }
}

fn quoted(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// The picture as Graphviz DOT: one cluster per flow, menu options labelled with their
/// key and label.
pub fn dot(set: &FlowSet) -> String {
    let p = picture(set);
    let mut out = String::from("digraph flows {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut by_flow: BTreeMap<&str, Vec<&NodeShape>> = BTreeMap::new();
    for n in &p.nodes {
        let flow = n.id.split('.').next().unwrap_or_default();
        by_flow.entry(flow).or_default().push(n);
    }
    for (flow, shapes) in by_flow {
        let _ = writeln!(
            out,
            "  subgraph {} {{\n    label={};",
            quoted(&format!("cluster_{flow}")),
            quoted(flow)
        );
        for n in shapes {
            let mut label = format!("{}\n{}", n.id, n.kind);
            if let Some((target, whisper)) = &n.transfer {
                let _ = write!(label, " to {target}, whisper: {whisper}");
            }
            let _ = writeln!(out, "    {} [label={}];", quoted(&n.id), quoted(&label));
        }
        out.push_str("  }\n");
    }
    for e in &p.edges {
        let label = match e.digit {
            Some(d) => format!("{d}: {}", e.label),
            None => e.label.clone(),
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quoted(&e.from),
            quoted(&e.to),
            quoted(&label)
        );
    }
    out.push_str("}\n");
    out
}
