//! Golden checks: answers a model must still give. A golden file lists instances and the
//! outputs expected for each, as `/predict` writes them, with a tolerance per output. They run
//! after a model loads (at start, on reload, in `inferd check`); a model whose answers drifted
//! is refused.
//!
//! ```json
//! {"tolerance": {"price": {"absolute": 1.0, "relative": 0.001}},
//!  "cases": [{"instance": {"lotsize": 5850, ...}, "outputs": {"price": 67994.12}}]}
//! ```
//! Float outputs without a tolerance get [`DEFAULT_TOLERANCE`]; integer, string and boolean
//! outputs (labels) must match exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use serde::Deserialize;
use serde_json::Value;

use super::{run, views, ModelSpec};
use crate::config::ModelConfig;
use crate::tensor::rows::{Batch, Rows};
use crate::tensor::signature::ElemType;

/// Largest golden file read, and most cases in one: a check must stay quick at start.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
const MAX_CASES: usize = 10_000;
/// Mismatches listed in a report; the rest are counted.
const MAX_LISTED: usize = 10;
/// For float outputs the file gives no tolerance for: a few f32 ulps.
pub const DEFAULT_TOLERANCE: Tolerance = Tolerance { absolute: 0.0, relative: 1e-6 };

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    #[serde(default)]
    pub absolute: f64,
    #[serde(default)]
    pub relative: f64,
}

impl Tolerance {
    pub fn accepts(&self, expected: f64, got: f64) -> bool {
        (got - expected).abs() <= self.absolute + self.relative * expected.abs()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenFile {
    /// Informative: the model the file was written for, and where its answers came from.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// By output name.
    #[serde(default)]
    pub tolerance: BTreeMap<String, Tolerance>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub instance: Value,
    /// Expected outputs by name; outputs not listed are not checked.
    pub outputs: serde_json::Map<String, Value>,
}

/// The golden file of a model: the config's `golden`, else the first that exists of
/// `<schema stem>.golden.json` and `<model name>.golden.json` beside its schema
/// (`schemas/house_price.json` -> `schemas/house_price.golden.json`). The schema's twin comes
/// first: it is the more specific when versions of one model have schemas of their own.
pub fn path_for(model: &ModelConfig) -> Option<PathBuf> {
    if let Some(path) = &model.golden {
        return Some(path.clone());
    }
    default_paths(model).into_iter().find(|p| p.is_file())
}

/// The files [`path_for`] looks for when the config names none, in order.
fn default_paths(model: &ModelConfig) -> Vec<PathBuf> {
    let Some(schema) = model.schema.as_ref() else { return Vec::new() };
    let mut paths: Vec<PathBuf> = schema
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|stem| schema.with_file_name(format!("{stem}.golden.json")))
        .into_iter()
        .collect();
    let named = schema.with_file_name(format!("{}.golden.json", model.name));
    if !paths.contains(&named) {
        paths.push(named);
    }
    paths
}

/// `*.golden.json` files beside the schema that look meant for the model (named, up to case
/// and `-` for `_`, like the model, its schema or its ONNX file) but are not the one read: a
/// check someone wrote and that silently never runs, which start-up warns about.
pub fn unread(model: &ModelConfig) -> Vec<PathBuf> {
    let Some(dir) = model.schema.as_ref().and_then(|s| s.parent()) else { return Vec::new() };
    let read = path_for(model);
    let normal = |s: &str| s.to_lowercase().replace('-', "_");
    let stem = |p: &Path| p.file_stem().and_then(|s| s.to_str()).map(normal);
    let mut meant = vec![normal(&model.name)];
    meant.extend(model.schema.as_deref().and_then(stem));
    meant.extend(stem(&model.path));
    let Ok(entries) = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let base = name.len().checked_sub(".golden.json".len()).filter(|&n| n > 0)?;
            let looks_meant = name.is_char_boundary(base)
                && name[base..].eq_ignore_ascii_case(".golden.json")
                && meant.contains(&normal(&name[..base]));
            looks_meant.then(|| dir.join(&name))
        })
        .filter(|p| read.as_ref().is_none_or(|r| !same_file(r, p)))
        .collect();
    found.sort();
    found
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub fn read(path: &Path) -> Result<GoldenFile, String> {
    crate::reading::note(path);
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!("{} has {size} bytes, more than {MAX_FILE_BYTES}", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: GoldenFile =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a golden file: {e}", path.display()))?;
    if file.cases.is_empty() || file.cases.len() > MAX_CASES {
        return Err(format!("{} must hold 1 to {MAX_CASES} cases, has {}", path.display(), file.cases.len()));
    }
    if let Some(i) = file.cases.iter().position(|c| c.outputs.is_empty()) {
        return Err(format!("{}: case {i} expects no outputs, so it checks nothing", path.display()));
    }
    Ok(file)
}

/// Runs every case through `session`; `Err` holds one line per problem, the first
/// [`MAX_LISTED`] mismatches named (case, output, expected, got) and the rest counted.
pub fn check(spec: &ModelSpec, session: &mut Session, golden: &GoldenFile) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for name in golden.tolerance.keys().filter(|n| output_elem(spec, n).is_none()) {
        problems.push(match renamed(spec, name) {
            Some(public) => format!("tolerance for output '{name}', which {}", answered_as(name, public)),
            None => format!("tolerance for output '{name}', which the model does not have"),
        });
    }
    let instances: Vec<Value> = golden.cases.iter().map(|c| c.instance.clone()).collect();
    let mut invalid = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        spec.schema.check(i, instance, &mut invalid);
    }
    for error in invalid.iter().take(MAX_LISTED) {
        let case = case_of(&error.path);
        let field = error.path.trim_start_matches("/instances/").trim_start_matches(case);
        let at = if field.is_empty() { String::new() } else { format!(" at {field}") };
        problems.push(format!("case {case}: the instance breaks the schema{at}: {}", error.message));
    }
    if invalid.len() > MAX_LISTED {
        problems.push(format!("and {} more schema errors", invalid.len() - MAX_LISTED));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let inputs = Rows::encode(&spec.plan, &instances, 0).map_err(|errors| {
        errors.iter().map(|e| format!("case {}: {}", case_of(&e.path), e.message)).collect::<Vec<_>>()
    })?;
    let outputs = run(spec, session, &inputs).map_err(|e| vec![format!("the cases do not run: {e}")])?;
    let batch = Batch { inputs, outputs };
    let mut mismatches = 0usize;
    for (row, case) in golden.cases.iter().enumerate() {
        let got = views::row_outputs_json(spec, &batch, row);
        for (name, expected) in &case.outputs {
            let Some(elem) = output_elem(spec, name) else {
                problems.push(match renamed(spec, name) {
                    Some(public) => format!("case {row}: output '{name}' {}", answered_as(name, public)),
                    None => format!("case {row}: the model has no output '{name}'"),
                });
                continue;
            };
            let tolerance = matches!(elem, ElemType::F16 | ElemType::F32 | ElemType::F64)
                .then(|| golden.tolerance.get(name).copied().unwrap_or(DEFAULT_TOLERANCE));
            let got = got.get(name).unwrap_or(&Value::Null);
            if let Some(at) = differs(expected, got, tolerance, "") {
                mismatches += 1;
                if mismatches <= MAX_LISTED {
                    let within = tolerance
                        .map(|t| format!(" (tolerance: absolute {}, relative {})", t.absolute, t.relative))
                        .unwrap_or_else(|| " (exact)".into());
                    let (expected, got) = (crate::error::shown(expected), crate::error::shown(got));
                    problems.push(format!("case {row}, output '{name}{at}': expected {expected}, got {got}{within}"));
                }
            }
        }
    }
    if mismatches > MAX_LISTED {
        problems.push(format!("and {} more mismatches", mismatches - MAX_LISTED));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The element type of the output answered as `name`.
fn output_elem(spec: &ModelSpec, name: &str) -> Option<ElemType> {
    spec.outputs.iter().find(|o| o.name == name).map(|o| o.elem)
}

fn answered_as(name: &str, public: &str) -> String {
    format!("is answered as '{public}' (the model's `outputs`); golden files name outputs as answers do, not '{name}'")
}

/// The public name of graph output `name`, when the config renames it.
fn renamed<'a>(spec: &'a ModelSpec, name: &str) -> Option<&'a str> {
    let i = spec.signature.outputs.iter().position(|o| o.name == name)?;
    Some(spec.outputs[i].name.as_str()).filter(|public| *public != name)
}

/// `/instances/3/bedrooms` -> `3`.
fn case_of(path: &str) -> &str {
    path.trim_start_matches("/instances/").split('/').next().unwrap_or(path)
}

/// Where `got` departs from `expected` (a JSON Pointer suffix, "" for the value itself).
/// Numbers compare within `tolerance` (exactly when `None`), arrays and objects element-wise.
fn differs(expected: &Value, got: &Value, tolerance: Option<Tolerance>, at: &str) -> Option<String> {
    match (expected, got) {
        (Value::Number(e), Value::Number(g)) => {
            let (e, g) = (e.as_f64()?, g.as_f64()?);
            let same = match tolerance {
                Some(t) => t.accepts(e, g),
                None => e == g,
            };
            (!same).then(|| at.to_owned())
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            e.iter().zip(g).enumerate().find_map(|(i, (e, g))| differs(e, g, tolerance, &format!("{at}/{i}")))
        }
        (Value::Object(e), Value::Object(g)) if e.len() == g.len() => e.iter().find_map(|(k, e)| match g.get(k) {
            Some(g) => differs(e, g, tolerance, &format!("{at}/{k}")),
            None => Some(format!("{at}/{k}")),
        }),
        _ => (expected != got).then(|| at.to_owned()),
    }
}

/// The (expected, got) number pairs of two answers of the same shape; `None` when they differ
/// in anything but numbers (a label, a key, a length).
pub fn numeric_pairs(expected: &Value, got: &Value) -> Option<Vec<(f64, f64)>> {
    fn walk(e: &Value, g: &Value, out: &mut Vec<(f64, f64)>) -> bool {
        match (e, g) {
            (Value::Number(e), Value::Number(g)) => match (e.as_f64(), g.as_f64()) {
                (Some(e), Some(g)) => {
                    out.push((e, g));
                    true
                }
                _ => false,
            },
            (Value::Array(e), Value::Array(g)) => e.len() == g.len() && e.iter().zip(g).all(|(e, g)| walk(e, g, out)),
            (Value::Object(e), Value::Object(g)) => {
                e.len() == g.len() && e.iter().all(|(k, e)| g.get(k).is_some_and(|g| walk(e, g, out)))
            }
            _ => e == g,
        }
    }
    let mut out = Vec::new();
    walk(expected, got, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str, schema: &Path) -> ModelConfig {
        ModelConfig { schema: Some(schema.to_owned()), ..ModelConfig::new(name, schema.with_file_name("model.onnx")) }
    }

    #[test]
    fn the_golden_file_is_found_by_schema_stem_then_model_name_and_the_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let schema = dir.path().join("features.json");
        let model = entry("house_gbr", &schema);
        assert_eq!(path_for(&model), None);
        assert!(unread(&model).is_empty());

        // Named after the model, as the README says.
        std::fs::write(dir.path().join("house_gbr.golden.json"), "{}").unwrap();
        std::fs::write(dir.path().join("other_model.golden.json"), "{}").unwrap();
        assert_eq!(path_for(&model), Some(dir.path().join("house_gbr.golden.json")));
        assert!(unread(&model).is_empty(), "the one read, and another model's, are not warned about");

        // The schema's twin wins; the model's name is then named as not read.
        std::fs::write(dir.path().join("features.golden.json"), "{}").unwrap();
        assert_eq!(path_for(&model), Some(dir.path().join("features.golden.json")));
        assert_eq!(unread(&model), vec![dir.path().join("house_gbr.golden.json")]);

        // Spelled differently, or named after the ONNX file: never read, so warned about.
        std::fs::remove_file(dir.path().join("features.golden.json")).unwrap();
        std::fs::write(dir.path().join("House-GBR.golden.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model.golden.json"), "{}").unwrap();
        assert_eq!(path_for(&model), Some(dir.path().join("house_gbr.golden.json")));
        assert_eq!(
            unread(&model),
            vec![dir.path().join("House-GBR.golden.json"), dir.path().join("model.golden.json")]
        );

        // The config's `golden` wins over them all.
        let chosen = ModelConfig { golden: Some(dir.path().join("other_model.golden.json")), ..model };
        assert_eq!(path_for(&chosen), chosen.golden);
        assert_eq!(unread(&chosen).len(), 3);
    }

    #[test]
    fn numbers_compare_within_tolerance_and_labels_exactly() {
        let t = Some(Tolerance { absolute: 0.5, relative: 0.01 });
        assert_eq!(differs(&json!(100.0), &json!(101.4), t, ""), None, "0.5 + 1% of 100");
        assert_eq!(differs(&json!(100.0), &json!(101.6), t, ""), Some(String::new()));
        assert_eq!(differs(&json!(3), &json!(3), None, ""), None);
        assert_eq!(differs(&json!(3), &json!(4), None, ""), Some(String::new()));
        assert_eq!(differs(&json!("setosa"), &json!("virginica"), None, ""), Some(String::new()));
        let probs = json!({"setosa": 0.9, "virginica": 0.1});
        let drifted = json!({"setosa": 0.7, "virginica": 0.3});
        let tight = Some(Tolerance { absolute: 0.01, relative: 0.0 });
        assert_eq!(differs(&probs, &drifted, tight, ""), Some("/setosa".into()));
        assert_eq!(differs(&json!([1.0, 2.0]), &json!([1.0, 2.5]), tight, ""), Some("/1".into()));
        assert_eq!(differs(&json!([1.0]), &json!([1.0, 2.0]), tight, ""), Some(String::new()), "lengths differ");
        assert_eq!(differs(&json!({"a": 1.0}), &json!({"b": 1.0}), tight, ""), Some("/a".into()));
    }

    #[test]
    fn numbers_are_paired_and_anything_else_must_match() {
        let pairs = numeric_pairs(&json!({"p": [1.0, 2.0], "l": "a"}), &json!({"p": [1.5, 2.0], "l": "a"}));
        assert_eq!(pairs, Some(vec![(1.0, 1.5), (2.0, 2.0)]));
        assert_eq!(numeric_pairs(&json!({"l": "a"}), &json!({"l": "b"})), None);
        assert_eq!(numeric_pairs(&json!([1.0]), &json!([1.0, 2.0])), None);
    }

    #[test]
    fn a_case_index_is_read_from_its_path() {
        assert_eq!(case_of("/instances/3/bedrooms"), "3");
        assert_eq!(case_of("/instances/12"), "12");
    }
}
