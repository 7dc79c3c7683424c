//! The documents: docs/configuration.md's reference is what `inferd config-reference` makes of
//! the config types now, and every relative link in README.md and docs/ leads somewhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use inferd::config::reference;

const REGENERATE: &str = "cargo run -- config-reference docs/configuration.md";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn config_reference_is_current() {
    let path = repo().join("docs/configuration.md");
    let committed = std::fs::read_to_string(&path).unwrap();
    let head = reference::hand_written(&committed)
        .unwrap_or_else(|| panic!("docs/configuration.md lost its marker line; put back:\n{}", reference::MARKER));
    let generated = reference::markdown().unwrap_or_else(|faults| panic!("config doc comments to fix:\n{faults}"));
    let expected = format!("{head}{generated}");
    if committed != expected {
        let line = committed.lines().zip(expected.lines()).position(|(a, b)| a != b).unwrap_or(0) + 1;
        panic!("docs/configuration.md is stale (from line {line} on): run `{REGENERATE}`");
    }
}

#[test]
fn config_reference_document_links_resolve() {
    let mut documents = vec![repo().join("README.md")];
    documents.extend(markdown_files(&repo().join("docs")));
    let mut broken = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if file.is_empty() { document.clone() } else { document.parent().unwrap().join(file) };
            let found = match (file.exists(), anchor) {
                (false, _) => false,
                (true, "") => true,
                (true, anchor) => anchors(&std::fs::read_to_string(&file).unwrap_or_default()).contains(anchor),
            };
            if !found {
                broken.push(format!("{}: ({target})", document.strip_prefix(repo()).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "links that lead nowhere:\n{}", broken.join("\n"));
}

fn markdown_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

/// Targets of `[text](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans are the odd-numbered pieces between backticks; a link's text may hold one.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    out
}

/// The anchors GitHub gives a document's headings: lower case, punctuation but `-` and `_`
/// dropped, spaces as `-`, and `-1`, `-2` ... after repeats.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !fenced) else { continue };
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while !seen.insert(unique.clone()) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
    }
    seen
}
