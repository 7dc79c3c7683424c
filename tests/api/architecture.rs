//! The layers of docs/architecture.md hold (no file imports from a layer above its own), and
//! there are no import cycles between the files of src/ (issue 19), a parent module and its own
//! children aside: a file may use its parent (`super::`) and a parent its children (`mod`, `pub use`),
//! since together they are one unit. Every other import is an edge of a graph without cycles.
//!
//! The graph is read from the source, not from the compiler: every path that starts with
//! `crate::`, `super::`, `self::`, a child module's name or a name a `use` brought in, in `use`
//! trees (grouped ones expanded) and in code, goes to the file of the deepest module it names.
//! src/main.rs belongs to the binary's crate, not the library's: it is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::helpers::repo;

/// A module's path from the crate root, e.g. `["http", "v2"]`.
type ModPath = Vec<String>;

/// Where a path was written, and what it was.
#[derive(Clone, Debug, PartialEq)]
struct Import {
    line: usize,
    text: String,
    target: ModPath,
}

/// The files of src/ by module, and from file to file the first import that makes the edge.
fn graph() -> (BTreeMap<ModPath, String>, BTreeMap<String, BTreeMap<String, Import>>) {
    let src = repo().join("src");
    let mut files = BTreeMap::new();
    collect(&src, &src, &mut files);
    let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeMap<String, Import>> = BTreeMap::new();
    for (module, file) in &files {
        let source = std::fs::read_to_string(src.join(file)).unwrap();
        for import in imports(&source, module, &modules) {
            let owner = owner(&import.target, &files);
            if owner != module && !parent_and_child(module, owner) {
                edges.entry(file.clone()).or_default().entry(files[owner].clone()).or_insert(import);
            }
        }
    }
    (files, edges)
}

/// The layers of docs/architecture.md, bottom first, by the top-level module (or file) of src/.
const LAYERS: [&[&str]; 6] = [
    &["error", "reading", "stdout", "objects", "config", "auth", "tensor", "observe", "telemetry"],
    &["schema", "model"],
    &["batch", "predlog", "decode", "registry"],
    &["service", "lifecycle"],
    &["http", "grpc"],
    &["startup", "serve", "cli", "check", "probe", "offline", "lib"],
];

fn layer(file: &str) -> Option<usize> {
    let top = file.split(['/', '.']).next().unwrap_or_default();
    LAYERS.iter().position(|layer| layer.contains(&top))
}

#[test]
fn each_layer_imports_only_its_own_and_those_below() {
    let (files, edges) = graph();
    let unplaced: Vec<&String> = files.values().filter(|f| layer(f).is_none()).collect();
    assert!(unplaced.is_empty(), "files in no layer (add them to LAYERS and docs/architecture.md): {unplaced:?}");
    let mut upward = String::new();
    for (from, targets) in &edges {
        for (to, import) in targets {
            if layer(to) > layer(from) {
                upward += &format!("  src/{from}:{}: {} (src/{to})\n", import.line, import.text);
            }
        }
    }
    assert!(upward.is_empty(), "imports from a lower layer into a higher one:\n{upward}");
}

#[test]
fn no_import_cycles_between_files() {
    let (_, owned) = graph();
    let edges: BTreeMap<&str, BTreeMap<&str, Import>> = owned
        .iter()
        .map(|(from, targets)| (from.as_str(), targets.iter().map(|(to, i)| (to.as_str(), i.clone())).collect()))
        .collect();
    let cycles = cycles(&edges);
    let mut report = String::new();
    for cycle in &cycles {
        report += &format!("  {}\n", cycle.iter().map(|f| format!("src/{f}")).collect::<Vec<_>>().join(" -> "));
        for pair in cycle.windows(2) {
            let import = &edges[pair[0]][pair[1]];
            report += &format!("      src/{}:{}: {}\n", pair[0], import.line, import.text);
        }
    }
    let count = if cycles.len() < MOST { cycles.len().to_string() } else { format!("at least {MOST}") };
    assert!(
        cycles.is_empty(),
        "{count} import cycle(s) between files of src/ (a parent module and its own children aside):\n{report}"
    );
}

/// Every `.rs` file under `dir` but the binary's main.rs, by module path.
fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<ModPath, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
        if path.is_dir() {
            collect(root, &path, files);
        } else if rel.ends_with(".rs") && rel != "main.rs" {
            files.insert(module_of(&rel), rel);
        }
    }
}

/// `lib.rs` is the crate root; `a/mod.rs` and `a.rs` are `a`; `a/b.rs` is `a::b`.
fn module_of(rel: &str) -> ModPath {
    let mut parts: ModPath = rel.trim_end_matches(".rs").split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The deepest module with a file of its own that `path` names (the crate root at worst).
fn owner<'a>(path: &[String], files: &'a BTreeMap<ModPath, String>) -> &'a ModPath {
    (0..=path.len()).rev().find_map(|n| files.get_key_value(&path[..n])).expect("lib.rs is the crate root").0
}

/// Whether one is the other's parent (a grandparent is not: its imports count).
fn parent_and_child(a: &[String], b: &[String]) -> bool {
    let is_parent = |p: &[String], c: &[String]| c.len() == p.len() + 1 && c.starts_with(p);
    is_parent(a, b) || is_parent(b, a)
}

/// Every path into this crate that `source`, the file of `module`, writes.
fn imports(source: &str, module: &[String], modules: &BTreeSet<ModPath>) -> Vec<Import> {
    let tokens = tokens(&strip(source));
    let text = |i: usize| tokens.get(i).map_or("", |(t, _)| t.as_str());
    let mut out = Vec::new();
    // Names bound by `use`, to the absolute paths they stand for.
    let mut aliases: BTreeMap<String, ModPath> = BTreeMap::new();
    // Inline modules (`mod tests { ... }`) open here, with the brace depth inside each.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth: usize = 0;
    let mut i = 0;
    while i < tokens.len() {
        let at: ModPath = module.iter().cloned().chain(inline.iter().map(|(name, _)| name.clone())).collect();
        let line = tokens[i].1;
        match text(i) {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|&(_, inside)| inside > depth) {
                    inline.pop();
                }
            }
            "mod" if text(i + 2) == "{" => inline.push((text(i + 1).to_owned(), depth + 1)),
            "use" => {
                let end = (i..tokens.len()).find(|&j| text(j) == ";").unwrap_or(tokens.len());
                let tree: Vec<&str> = (i + 1..end).map(text).collect();
                for (path, name) in use_leaves(&tree) {
                    if let Some(target) = absolute(&path, &at, &aliases, modules) {
                        out.push(Import { line, text: path.join("::"), target: target.clone() });
                        if name != "*" {
                            aliases.insert(name, target);
                        }
                    }
                }
                i = end;
            }
            first if text(i + 1) == "::" && text(i.wrapping_sub(1)) != "::" && is_ident(first) => {
                let mut path = vec![first.to_owned()];
                while text(i + 1) == "::" && is_ident(text(i + 2)) {
                    path.push(text(i + 2).to_owned());
                    i += 2;
                }
                if let Some(target) = absolute(&path, &at, &aliases, modules) {
                    out.push(Import { line, text: path.join("::"), target });
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is_ident(token: &str) -> bool {
    token.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// The absolute module path `path` names, seen from module `at`; `None` outside this crate.
fn absolute(
    path: &[String],
    at: &[String],
    aliases: &BTreeMap<String, ModPath>,
    modules: &BTreeSet<ModPath>,
) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    let child: ModPath = at.iter().chain([first]).cloned().collect();
    let mut out = match first.as_str() {
        "crate" => Vec::new(),
        "self" => at.to_vec(),
        "super" => at.split_last()?.1.to_vec(),
        name if aliases.contains_key(name) => aliases[name].clone(),
        _ if modules.contains(&child) => child,
        _ => return None,
    };
    for segment in rest {
        match segment.as_str() {
            "super" => {
                out.pop()?;
            }
            "self" => {}
            _ => out.push(segment.clone()),
        }
    }
    Some(out)
}

/// The leaves of a `use` tree (`crate::{a, b::{self, c as d}, e::*}`, as tokens): each path
/// and the name it binds (`*` for a glob).
fn use_leaves(tree: &[&str]) -> Vec<(ModPath, String)> {
    let mut out = Vec::new();
    let start = usize::from(tree.first() == Some(&"::"));
    leaves(tree, &mut { start }, &mut Vec::new(), &mut out);
    out
}

fn leaves(tree: &[&str], pos: &mut usize, prefix: &mut ModPath, out: &mut Vec<(ModPath, String)>) {
    let outer = prefix.len();
    while let Some(&token) = tree.get(*pos) {
        *pos += 1;
        match token {
            "{" => {
                while tree.get(*pos).is_some_and(|&t| t != "}") {
                    let before = *pos;
                    leaves(tree, pos, prefix, out);
                    if tree.get(*pos) == Some(&",") || *pos == before {
                        *pos += 1;
                    }
                }
                *pos += 1;
            }
            "*" => out.push((prefix.clone(), "*".to_owned())),
            segment if tree.get(*pos) == Some(&"::") => {
                *pos += 1;
                prefix.push(segment.to_owned());
                continue;
            }
            segment => {
                let mut path = prefix.clone();
                if segment != "self" {
                    path.push(segment.to_owned());
                }
                let mut name = path.last().cloned().unwrap_or_default();
                if tree.get(*pos) == Some(&"as") {
                    name = tree.get(*pos + 1).map_or(name, |&n| n.to_owned());
                    *pos += 2;
                }
                out.push((path, name));
            }
        }
        break;
    }
    prefix.truncate(outer);
}

/// Identifiers, `::` and single punctuation characters, each with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_alphanumeric() || c == '_' {
            while chars.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            i += 1;
            line += usize::from(c == '\n');
            if c.is_whitespace() {
                continue;
            }
        }
        out.push((chars[start..i].iter().collect(), line));
    }
    out
}

/// `source` with its comments, strings and character literals blanked out, line breaks kept.
fn strip(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let at = |i: usize, s: &str| s.chars().enumerate().all(|(k, ch)| c.get(i + k) == Some(&ch));
    let ident = |i: usize| c[i].is_alphanumeric() || c[i] == '_';
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let start = i;
        if at(i, "//") {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i, "/*") {
            let mut depth = 0;
            while i < c.len() {
                if at(i, "/*") {
                    (depth, i) = (depth + 1, i + 2);
                } else if at(i, "*/") {
                    (depth, i) = (depth - 1, i + 2);
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r' && (i == 0 || !ident(i - 1) || (c[i - 1] == 'b' && (i < 2 || !ident(i - 2)))) && {
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            c.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: r"...", r#"..."#, br"...".
            let hashes = c[i + 1..].iter().take_while(|&&h| h == '#').count();
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            i += hashes + 2;
            while i < c.len() && !at(i, &close) {
                i += 1;
            }
            i = (i + close.len()).min(c.len());
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\'', '\u{1F600}'); a lifetime ('a) stays.
            i += if c[i + 1] == '\\' { 3 } else { 2 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i = (i + 1).min(c.len());
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        }
        out.extend(c[start..i].iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    }
    out
}

/// At most this many cycles are listed: a tangle can have very many.
const MOST: usize = 200;

/// The elementary cycles of the graph (the first `MOST`), each from its smallest file and back.
fn cycles<'a>(edges: &BTreeMap<&'a str, BTreeMap<&'a str, Import>>) -> Vec<Vec<&'a str>> {
    let next = |from: &str| edges.get(from).into_iter().flat_map(|to| to.keys().copied());
    let mut out = Vec::new();
    for &start in edges.keys() {
        // Depth first, through files after `start` only, so that each cycle is found once.
        let mut stack: Vec<(&str, Vec<&str>)> = next(start).map(|n| (n, vec![start])).collect();
        while let Some((file, mut path)) = stack.pop().filter(|_| out.len() < MOST) {
            if file == start {
                path.push(start);
                out.push(path);
            } else if file > start && !path.contains(&file) {
                path.push(file);
                stack.extend(next(file).map(|n| (n, path.clone())));
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The reader itself

fn strings(items: &[&str]) -> ModPath {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn use_trees_expand_to_their_leaves() {
    let tree: Vec<String> = tokens("crate::{a, b::{self, c as d}, e::*, f}").into_iter().map(|(t, _)| t).collect();
    let tree: Vec<&str> = tree.iter().map(String::as_str).collect();
    let leaves: Vec<(String, String)> = use_leaves(&tree).into_iter().map(|(p, n)| (p.join("::"), n)).collect();
    let want = [("crate::a", "a"), ("crate::b", "b"), ("crate::b::c", "d"), ("crate::e", "*"), ("crate::f", "f")];
    assert_eq!(leaves, want.map(|(p, n)| (p.to_owned(), n.to_owned())));
}

#[test]
fn paths_resolve_from_the_module_that_writes_them() {
    let modules: BTreeSet<ModPath> =
        [vec![], strings(&["decode"]), strings(&["decode", "sink"]), strings(&["http"])].into_iter().collect();
    let source = r#"
use super::{sink::Sink, plan};
use crate::http as web;
// crate::nothing::here
fn f() { let _ = "crate::nor::here"; let _ = '"'; web::router::<u8>(); sink::x(); std::mem::take(&mut 1); }
mod tests { use super::*; fn g() { super::super::sink::y(); } }
"#;
    let found: Vec<(usize, String, String)> = imports(source, &strings(&["decode", "json"]), &modules)
        .into_iter()
        .map(|i| (i.line, i.text, i.target.join("::")))
        .collect();
    let want = [
        (2, "super::sink::Sink", "decode::sink::Sink"),
        (2, "super::plan", "decode::plan"),
        (3, "crate::http", "http"),
        (5, "web::router", "http::router"),
        (6, "super", "decode::json"),
        (6, "super::super::sink::y", "decode::sink::y"),
    ];
    assert_eq!(found, want.map(|(l, t, m)| (l, t.to_owned(), m.to_owned())));
    let files: BTreeMap<ModPath, String> = modules.iter().map(|m| (m.clone(), format!("{}.rs", m.join("/")))).collect();
    assert_eq!(owner(&strings(&["decode", "sink", "Sink", "new"]), &files), &strings(&["decode", "sink"]));
    assert_eq!(module_of("http/v2/mod.rs"), strings(&["http", "v2"]));
    assert!(parent_and_child(&strings(&["http"]), &strings(&["http", "v2"])));
    assert!(!parent_and_child(&strings(&["http"]), &strings(&["http", "v2", "types"])));
}

#[test]
fn cycles_are_listed_once_each() {
    let import = || Import { line: 1, text: String::new(), target: Vec::new() };
    let mut edges: BTreeMap<&str, BTreeMap<&str, Import>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.entry(from).or_default().insert(to, import());
    }
    assert_eq!(cycles(&edges), [vec!["a", "b", "a"], vec!["a", "b", "c", "a"]]);
}
