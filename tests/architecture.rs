//! The explorer's module structure, checked from its source: no module of
//! `src/tui` imports (directly or round a circle) one that imports it back, and
//! nothing there imports the CLI. Adding a pane or a job keeps to this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name (`app`, `panes`, `panes/circuit`) → source, for every file under `src/tui`.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let name = rel.to_string_lossy().replace('\\', "/");
                let name = name.strip_suffix("/mod").or(name.strip_suffix("mod")).unwrap_or(&name).to_string();
                let source = std::fs::read_to_string(&path).unwrap();
                // A file's own tests (`super::*` there is the file itself) come last.
                let source = source.split("#[cfg(test)]").next().unwrap_or("");
                // Comments may name modules without using them.
                let code: String =
                    source.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
                out.insert(name, code);
            }
        }
    }
    let root: PathBuf = [env!("CARGO_MANIFEST_DIR"), "src", "tui"].iter().collect();
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// The longest module named by `base` followed by the path's segments.
fn resolve(modules: &BTreeMap<String, String>, base: &str, segments: &[&str]) -> Option<String> {
    let mut current = base.to_string();
    let mut found = None;
    for segment in segments {
        current = if current.is_empty() { segment.to_string() } else { format!("{current}/{segment}") };
        if !modules.contains_key(&current) {
            break;
        }
        found = Some(current.clone());
    }
    found
}

/// Every `prefix` path in `code`, as its `::`-separated identifiers.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    code.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &code[i + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            rest[..end].split("::").filter(|s| !s.is_empty()).collect()
        })
        .collect()
}

fn imports(modules: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (name, code) in modules {
        let is_dir = modules.keys().any(|other| other.starts_with(&format!("{name}/")));
        let parent_dir = if is_dir { name.as_str() } else { name.rsplit_once('/').map_or("", |(p, _)| p) };
        let grandparent = parent_dir.rsplit_once('/').map_or("", |(p, _)| p);
        let mut deps = BTreeSet::new();
        for path in paths_after(code, "crate::tui::") {
            deps.extend(resolve(modules, "", &path));
        }
        // `super::` from a file is its folder's module; from a folder's mod.rs, the folder above.
        let super_base = if is_dir { grandparent } else { parent_dir };
        for path in paths_after(code, "super::") {
            deps.insert(resolve(modules, super_base, &path).unwrap_or_else(|| super_base.to_string()));
        }
        for line in code.lines() {
            let line = line.trim_start().trim_start_matches("pub ");
            if let Some(path) = line.strip_prefix("use ") {
                let segments: Vec<&str> = path.split("::").collect();
                deps.extend(resolve(modules, if is_dir { name } else { parent_dir }, &segments[..1]));
            }
        }
        deps.remove(name);
        edges.insert(name.clone(), deps);
    }
    edges
}

fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), false);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    return Some([&stack[start..], std::slice::from_ref(next)].concat());
                }
                Some(true) => {}
                None => {
                    if let Some(circle) = visit(next, edges, state, stack) {
                        return Some(circle);
                    }
                }
            }
        }
        state.insert(node.to_string(), true);
        stack.pop();
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node)
            && let Some(circle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(circle);
        }
    }
    None
}

#[test]
fn the_explorer_has_no_import_circle_and_no_edge_to_the_cli() {
    let modules = modules();
    assert!(modules.len() > 20 && modules.contains_key("panes/circuit"), "{:?}", modules.keys());
    let edges = imports(&modules);
    // The parser sees real edges: the app uses the ledger; a pane uses the study.
    assert!(edges["app"].contains("jobs") && edges["panes/circuit"].contains("effect"), "{edges:?}");
    assert_eq!(find_circle(&edges), None, "an import circle in src/tui");
    let to_cli: Vec<&String> = modules.iter().filter(|(_, code)| code.contains("crate::cli")).map(|(n, _)| n).collect();
    assert!(to_cli.is_empty(), "src/tui imports the CLI in {to_cli:?}");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()])))
        .collect();
    assert_eq!(find_circle(&edges), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
