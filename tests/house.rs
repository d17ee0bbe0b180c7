//! The shape of the source tree: no file over 700 lines, and no import circle among the
//! top modules (`src/X.rs` or `src/X/`), read from the `crate::` paths in the code as a
//! plain `grep "use crate::"` would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 700;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top module a file belongs to: `src/flow/engine/walk.rs` → `flow`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src/");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_source_file_is_over_700_lines() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_top_modules_import_each_other_without_a_circle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top_module(file);
        if matches!(from.as_str(), "main" | "lib") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable");
        let targets = imports.entry(from.clone()).or_default();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != from {
                    targets.insert(name);
                }
            }
        }
    }
    // A depth-first search for a path back to where it started.
    fn back_to(
        start: &str,
        at: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in imports.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if back_to(start, next, imports, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for start in imports.keys() {
        let mut path = vec![start.clone()];
        let mut seen = BTreeSet::new();
        assert!(
            !back_to(start, start, &imports, &mut path, &mut seen),
            "an import circle: {}",
            path.join(" -> ")
        );
    }
    assert!(imports.len() >= 15, "the modules were read: {imports:?}");
}
