//! Flows: the call menus as data. Loading and validation live here; the step function in `engine`.
//!
//! A flow file `ivr_flows/NAME.toml` holds `[nodes.ID]` tables, each with a `kind`. A node is
//! referred to as `ID` within its own flow or `FLOW.ID` from any flow.

mod build;
mod check;
pub mod engine;
mod model;
pub mod picture;
pub mod prompt;
mod raw;
mod speech;

pub use model::*;

use check::NodeCtx;
use raw::{RawFile, RawNode};

use crate::domain::is_ident;

use crate::config::{Config, Target};
use crate::domain::CATEGORIES;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Loads and validates every `*.toml` in `dir` against the configuration.
pub fn load_dir(dir: &Path, config: &Config) -> Result<FlowSet, Problems> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(Problems(vec![Problem {
                file: dir.display().to_string(),
                line: None,
                node: None,
                message: format!("cannot read the flows directory: {e}"),
            }]))
        }
    };
    files.sort();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => problems.push(Problem {
                file: path.display().to_string(),
                line: None,
                node: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    load_sources(&sources, config)
}

/// Loads flows from `(path, text)` pairs; the file stem names the flow.
pub fn load_sources(sources: &[(PathBuf, String)], config: &Config) -> Result<FlowSet, Problems> {
    let mut loader = Loader {
        problems: Vec::new(),
        opaque: BTreeMap::new(),
        var_defs: BTreeMap::new(),
        var_uses: Vec::new(),
        config,
    };
    let mut flows = BTreeMap::new();
    let mut lines: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut set_hash = Sha256::new();
    for (path, text) in sources {
        let file = path.display().to_string();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !is_ident(&name) {
            loader.problem(
                &file,
                None,
                None,
                "a flow file name may use only a-z, 0-9 and _".into(),
            );
            continue;
        }
        let raw: RawFile = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let line = e.span().map(|s| line_of(text, s.start));
                loader.problem(&file, line, None, e.message().to_string());
                continue;
            }
        };
        let file_hash = hex(&Sha256::digest(text.as_bytes()));
        set_hash.update(name.as_bytes());
        set_hash.update(file_hash.as_bytes());
        let mut node_lines = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for (id, spanned) in raw.nodes {
            let line = line_of(text, spanned.span().start);
            node_lines.insert(id.clone(), line);
            if !is_ident(&id) {
                loader.problem(
                    &file,
                    Some(line),
                    Some(&id),
                    "node ids may use only a-z, 0-9 and _".into(),
                );
                continue;
            }
            let mut ctx = NodeCtx {
                loader: &mut loader,
                file: &file,
                flow: &name,
                id: &id,
                line,
            };
            let raw_node = spanned.into_inner();
            let exits = raw_exits(&raw_node, &name);
            match ctx.build(raw_node) {
                Some(node) => {
                    nodes.insert(id, node);
                }
                None => {
                    // Keep its references, so what lies behind it is still checked.
                    loader.opaque.insert(
                        NodeRef {
                            flow: name.clone(),
                            node: id,
                        },
                        exits,
                    );
                }
            }
        }
        let start = raw.start.map(|s| {
            let line = line_of(text, s.span().start);
            (s.into_inner(), line)
        });
        if let Some((start, line)) = &start {
            if !node_lines.contains_key(start) {
                loader.problem(
                    &file,
                    Some(*line),
                    Some(start),
                    format!("start node `{start}` does not exist"),
                );
            }
        }
        let start = start.map(|(s, _)| s);
        lines.insert(name.clone(), node_lines);
        flows.insert(
            name.clone(),
            Flow {
                name,
                file: path.clone(),
                start,
                nodes,
                version: file_hash[..12].to_string(),
            },
        );
    }
    let set = FlowSet {
        flows,
        version: hex(&set_hash.finalize())[..12].to_string(),
        vars: loader
            .var_defs
            .iter()
            .map(|(k, v)| (k.clone(), v.0))
            .collect(),
    };
    loader.check_graph(&set, &lines);
    loader.check_vars();
    if loader.problems.is_empty() {
        Ok(set)
    } else {
        Err(Problems(loader.problems))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.bytes().filter(|b| *b == b'\n').count() + 1)
        .unwrap_or(1)
}

struct Loader<'a> {
    problems: Vec<Problem>,
    config: &'a Config,
    /// Nodes that failed to build, with the references their raw fields hold.
    opaque: BTreeMap<NodeRef, Vec<NodeRef>>,
    /// Call variables set by nodes: kind, and where first set.
    var_defs: BTreeMap<String, (VarKind, Place)>,
    /// `{var.NAME}` placeholders and where they are used.
    var_uses: Vec<(String, Place)>,
}

/// Prompt placeholders plus `{value}`, the entry being read back.
fn with_value<'p>(p: &[&'p str]) -> Vec<&'p str> {
    let mut v = p.to_vec();
    v.push("value");
    v
}

/// Where something is in the flow files.
#[derive(Debug, Clone)]
struct Place {
    file: String,
    line: usize,
    node: String,
}

/// The node references a raw node's fields hold, as written (defaults included).
fn raw_exits(raw: &RawNode, flow: &str) -> Vec<NodeRef> {
    let resolve = |v: &str| NodeRef::relative(v, flow);
    let mut refs: Vec<NodeRef> = [
        &raw.next,
        &raw.open,
        &raw.fallback,
        &raw.within_review,
        &raw.unpaid,
        &raw.grace,
        &raw.overdue,
        &raw.new,
        &raw.pending,
        &raw.escalated,
    ]
    .into_iter()
    .flatten()
    .map(|v| resolve(v))
    .collect();
    if raw.kind.as_deref() == Some("transfer") {
        refs.push(resolve(raw.closed.as_deref().unwrap_or("common.closed")));
        refs.push(resolve(
            raw.failed.as_deref().unwrap_or("common.transfer_failed"),
        ));
    } else {
        refs.extend(raw.closed.iter().chain(&raw.failed).map(|v| resolve(v)));
    }
    refs.extend(raw.abandoned.iter().map(|v| resolve(v)));
    refs.extend(raw.options.iter().flatten().map(|o| resolve(&o.next)));
    refs
}
