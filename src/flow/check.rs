//! Checks across nodes and files (every `{var.NAME}` set somewhere, every node reachable,
//! no loop that never waits for the caller), and the field checks each node's build uses.

use super::prompt::Prompt;
use super::*;

impl Loader<'_> {
    pub(super) fn problem(
        &mut self,
        file: &str,
        line: Option<usize>,
        node: Option<&str>,
        message: String,
    ) {
        self.problems.push(Problem {
            file: file.into(),
            line,
            node: node.map(str::to_owned),
            message,
        });
    }

    /// Every `{var.NAME}` must be set by some node.
    pub(super) fn check_vars(&mut self) {
        let uses = std::mem::take(&mut self.var_uses);
        for (name, at) in uses {
            if !self.var_defs.contains_key(&name) {
                let known: Vec<&str> = self.var_defs.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                self.problem(
                    &at.file,
                    Some(at.line),
                    Some(&at.node),
                    format!("uses {{var.{name}}}, which no node sets; set by the flows: {known}"),
                );
            }
        }
    }

    /// Checks what needs every flow: references, reachability, loops that never wait.
    pub(super) fn check_graph(
        &mut self,
        set: &FlowSet,
        lines: &BTreeMap<String, BTreeMap<String, usize>>,
    ) {
        let where_is = |r: &NodeRef| -> (String, Option<usize>) {
            let file = set
                .flows
                .get(&r.flow)
                .map(|f| f.file.display().to_string())
                .unwrap_or_else(|| format!("{}.toml", r.flow));
            let line = lines.get(&r.flow).and_then(|l| l.get(&r.node)).copied();
            (file, line)
        };
        // Unknown references, from built nodes and from nodes that failed to build.
        let exists = |r: &NodeRef| lines.get(&r.flow).is_some_and(|l| l.contains_key(&r.node));
        let mut refs: Vec<(NodeRef, NodeRef)> = Vec::new();
        for flow in set.flows.values() {
            for (id, node) in &flow.nodes {
                let from = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                refs.extend(node.exits().into_iter().map(|e| (from.clone(), e.clone())));
            }
        }
        for (from, exits) in &self.opaque {
            refs.extend(exits.iter().map(|e| (from.clone(), e.clone())));
        }
        for (from, exit) in refs {
            if !exists(&exit) {
                let (file, line) = where_is(&from);
                self.problem(
                    &file,
                    line,
                    Some(&from.node),
                    format!("refers to unknown node `{exit}`"),
                );
            }
        }
        // Entry points the server relies on.
        let mut roots: Vec<NodeRef> = Vec::new();
        for (what, flow) in [
            ("lines.guest_care_flow", &self.config.guest_care_flow),
            ("lines.store_flow", &self.config.store_flow),
        ] {
            match set.start(flow) {
                Some(r) => roots.push(r),
                None => self.problem(
                    &format!("{flow}.toml"),
                    None,
                    None,
                    format!("flow `{flow}` ({what}) must exist and have a `start` node"),
                ),
            }
        }
        match NodeRef::parse_qualified(ERROR_ENTRY) {
            Some(r) if set.node(&r).is_some() => roots.push(r),
            _ => self.problem(
                "common.toml",
                None,
                None,
                format!("node `{ERROR_ENTRY}` (the apology and safe route after an internal error) must exist"),
            ),
        }
        roots.extend(set.flows.keys().filter_map(|f| set.start(f)));
        // Reachability from every entry point, through nodes that failed to build too.
        let mut seen: BTreeSet<NodeRef> = BTreeSet::new();
        let mut stack = roots;
        while let Some(r) = stack.pop() {
            if !seen.insert(r.clone()) {
                continue;
            }
            if let Some(node) = set.node(&r) {
                stack.extend(node.exits().into_iter().cloned());
            } else if let Some(exits) = self.opaque.get(&r) {
                stack.extend(exits.iter().cloned());
            }
        }
        for flow in set.flows.values() {
            for id in flow.nodes.keys() {
                let r = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                if !seen.contains(&r) {
                    let (file, line) = where_is(&r);
                    self.problem(
                        &file,
                        line,
                        Some(id),
                        "is unreachable: no start node or other node leads to it".into(),
                    );
                }
            }
        }
        // A chain of nodes that never waits for the caller must end somewhere.
        for flow in set.flows.values() {
            for (id, node) in &flow.nodes {
                if node.immediate_exits().is_empty() {
                    continue;
                }
                let start = NodeRef {
                    flow: flow.name.clone(),
                    node: id.clone(),
                };
                if loops_without_waiting(set, &start) {
                    let (file, line) = where_is(&start);
                    self.problem(
                        &file,
                        line,
                        Some(id),
                        "has no way out: it loops back to itself without waiting for the caller"
                            .into(),
                    );
                }
            }
        }
    }
}

/// Whether following exits taken within one webhook from `start` can come back to `start`.
pub(super) fn loops_without_waiting(set: &FlowSet, start: &NodeRef) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<NodeRef> = set
        .node(start)
        .map(|n| n.immediate_exits().into_iter().cloned().collect())
        .unwrap_or_default();
    while let Some(r) = stack.pop() {
        if &r == start {
            return true;
        }
        if !seen.insert(r.clone()) {
            continue;
        }
        if let Some(node) = set.node(&r) {
            stack.extend(node.immediate_exits().into_iter().cloned());
        }
    }
    false
}

pub(super) struct NodeCtx<'a, 'b> {
    pub(super) loader: &'a mut Loader<'b>,
    pub(super) file: &'a str,
    pub(super) flow: &'a str,
    pub(super) id: &'a str,
    pub(super) line: usize,
}

impl NodeCtx<'_, '_> {
    pub(super) fn err(&mut self, message: String) {
        self.loader
            .problem(self.file, Some(self.line), Some(self.id), message);
    }

    pub(super) fn place(&self) -> Place {
        Place {
            file: self.file.to_string(),
            line: self.line,
            node: self.id.to_string(),
        }
    }

    /// Declares a call variable this node sets; one name has one kind across the flows.
    pub(super) fn define_var(&mut self, name: &str, kind: VarKind, field: &str) -> Option<String> {
        if !is_ident(name) {
            self.err(format!(
                "`{field}` = {name:?}: a variable name may use only a-z, 0-9 and _"
            ));
            return None;
        }
        match self.loader.var_defs.get(name) {
            Some((k, at)) if *k != kind => {
                let message = format!(
                    "variable `{name}` is set here as {kind:?} but as {k:?} at {}:{}",
                    at.file, at.line
                );
                self.err(message);
                None
            }
            Some(_) => Some(name.to_string()),
            None => {
                let place = self.place();
                self.loader.var_defs.insert(name.to_string(), (kind, place));
                Some(name.to_string())
            }
        }
    }

    /// A variable this node reads; checked against the definitions once all are loaded.
    pub(super) fn use_var(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
    ) -> Option<String> {
        let v = self.required(value, field, kind)?;
        if !is_ident(&v) {
            self.err(format!(
                "`{field}` = {v:?}: a variable name may use only a-z, 0-9 and _"
            ));
            return None;
        }
        let place = self.place();
        self.loader.var_uses.push((v.clone(), place));
        Some(v)
    }

    pub(super) fn required(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
    ) -> Option<String> {
        match value {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.err(format!("a {kind} node needs `{field}`"));
                None
            }
        }
    }

    pub(super) fn text(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
        allowed: &[&str],
    ) -> Option<Prompt> {
        let v = self.required(value, field, kind)?;
        Some(self.prompt(&v, field, allowed))
    }

    /// Checks a text's placeholders against `allowed`, and compiles it.
    pub(super) fn prompt(&mut self, text: &str, field: &str, allowed: &[&str]) -> Prompt {
        self.placeholders(text, field, allowed);
        Prompt::compile(text, self.loader.config)
    }

    fn placeholders(&mut self, text: &str, field: &str, allowed: &[&str]) {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.err(format!("`{field}` has a `{{` without a closing `}}`"));
                return;
            };
            let name = &after[..close];
            if let Some(var) = name.strip_prefix("var.") {
                if is_ident(var) {
                    let place = self.place();
                    self.loader.var_uses.push((var.to_string(), place));
                } else {
                    self.err(format!(
                        "`{field}` uses {{{name}}}: a variable name may use only a-z, 0-9 and _"
                    ));
                }
            } else if !allowed.contains(&name) {
                self.err(format!(
                    "`{field}` uses unknown placeholder {{{name}}}; known: {}",
                    allowed.join(", ")
                ));
            }
            rest = &after[close + 1..];
        }
    }

    pub(super) fn reference(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
    ) -> Option<NodeRef> {
        let v = self.required(value, field, kind)?;
        self.parse_ref(&v, field)
    }

    pub(super) fn parse_ref(&mut self, v: &str, field: &str) -> Option<NodeRef> {
        let r = NodeRef::relative(v, self.flow);
        if is_ident(&r.flow) && is_ident(&r.node) {
            Some(r)
        } else {
            self.err(format!(
                "`{field}` = {v:?} is not a node id (`node` or `flow.node`)"
            ));
            None
        }
    }

    pub(super) fn default_ref(
        &mut self,
        value: Option<String>,
        field: &str,
        default: &str,
    ) -> Option<NodeRef> {
        let v = value.unwrap_or_else(|| default.into());
        self.parse_ref(&v, field)
    }

    pub(super) fn category(
        &mut self,
        value: Option<String>,
        field: &str,
        kind: &str,
    ) -> Option<String> {
        let c = self.required(value, field, kind)?;
        if CATEGORIES.contains(&c.as_str()) {
            Some(c)
        } else {
            self.err(format!(
                "unknown ticket category {c:?}; known: {}",
                CATEGORIES.join(", ")
            ));
            None
        }
    }

    /// Reports fields set on a node whose kind does not use them.
    pub(super) fn unused(&mut self, kind: &str, fields: &[(&str, bool)]) {
        for (name, set) in fields {
            if *set {
                self.err(format!("`{name}` does not apply to a {kind} node"));
            }
        }
    }
}
