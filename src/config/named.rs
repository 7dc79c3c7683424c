//! Models named on `inferd serve`'s command line: `[NAME=]PATH`, a file or a KServe-style
//! folder, turned into `[[models]]` entries with the defaults (schema derived from the graph).

use std::path::{Path, PathBuf};

use super::ModelConfig;

/// What a model folder holds, as KServe lays out `/mnt/models`.
const MODEL_FILE: &str = "model.onnx";
const SCHEMA_FILE: &str = "schema.json";

/// The `[[models]]` entries for the arguments, in order; the first is the default model.
/// Relative paths are taken from the current folder.
pub fn models(arguments: &[String]) -> Result<Vec<ModelConfig>, String> {
    let mut models = Vec::new();
    for (i, argument) in arguments.iter().enumerate() {
        let (name, path) = split(argument);
        if path.contains("://") {
            let (url, stem) = url_model(path)
                .ok_or_else(|| format!("{argument}: cannot name a model after this URL; use NAME={argument}"))?;
            let name = name.map_or_else(|| clean(stem), str::to_owned);
            models.push(ModelConfig { default: i == 0 && arguments.len() > 1, ..ModelConfig::new(name, url) });
            continue;
        }
        let path = PathBuf::from(path);
        let name = match name {
            Some(name) => name.to_owned(),
            None => default_name(&path)
                .ok_or_else(|| format!("{argument}: cannot name a model after this path; use NAME={argument}"))?,
        };
        let versions = versions(&path).map_err(|e| format!("{argument}: {e}"))?;
        let newest = versions.len() - 1;
        for (v, (version, file, schema)) in versions.into_iter().enumerate() {
            models.push(ModelConfig {
                schema,
                version,
                default: i == 0 && arguments.len() > 1,
                default_version: v == newest && newest > 0,
                ..ModelConfig::new(name.clone(), file)
            });
        }
    }
    Ok(models)
}

/// `NAME=PATH` when what precedes `=` could be a model name (so `a=b/c.onnx` is named `a`,
/// while `./x=y.onnx` stays a path).
fn split(argument: &str) -> (Option<&str>, &str) {
    match argument.split_once('=') {
        Some((name, path))
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            (Some(name), path)
        }
        _ => (None, argument),
    }
}

/// The file's stem, or the folder's name, reduced to the characters a model name may hold.
fn default_name(path: &Path) -> Option<String> {
    let base =
        if path.is_dir() { path.canonicalize().ok()?.file_name()?.to_owned() } else { path.file_stem()?.to_owned() };
    let name = clean(&base.to_string_lossy());
    (!name.is_empty()).then_some(name)
}

fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
        .take(128)
        .collect()
}

/// The object a URL names, and the name it gives the model: `s3://b/m/house.onnx` is
/// `house`; a URL ending in `/` names a KServe-style prefix, whose `model.onnx` is served
/// under the prefix's last part (`s3://b/models/house/` is `house`).
fn url_model(url: &str) -> Option<(String, &str)> {
    let (_, rest) = url.split_once("://")?;
    if let Some(prefix) = rest.strip_suffix('/') {
        let last = prefix.rsplit('/').next().filter(|l| !l.is_empty() && prefix.contains('/'))?;
        return Some((format!("{url}{MODEL_FILE}"), last));
    }
    let last = rest.rsplit('/').next().filter(|l| !l.is_empty() && rest.contains('/'))?;
    Some((url.to_owned(), last.strip_suffix(".onnx").unwrap_or(last)))
}

/// (version, model file, schema file) for a file (version 1), a folder holding `model.onnx`
/// (version 1), or a folder of version folders each holding one, in version order.
fn versions(path: &Path) -> Result<Vec<(String, PathBuf, Option<PathBuf>)>, String> {
    if path.is_file() {
        return Ok(vec![("1".into(), path.to_owned(), None)]);
    }
    if !path.is_dir() {
        return Err("no such file or folder".into());
    }
    let schema = |dir: &Path| Some(dir.join(SCHEMA_FILE)).filter(|s| s.is_file());
    if path.join(MODEL_FILE).is_file() {
        return Ok(vec![("1".into(), path.join(MODEL_FILE), schema(path))]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| e.to_string())?;
    let mut found: Vec<(String, PathBuf, Option<PathBuf>)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|dir| dir.join(MODEL_FILE).is_file())
        .filter_map(|dir| {
            let version = dir.file_name()?.to_str()?.to_owned();
            Some((version, dir.join(MODEL_FILE), schema(&dir)))
        })
        .collect();
    if found.is_empty() {
        return Err(format!("the folder holds no {MODEL_FILE}, nor version folders holding one"));
    }
    // Numeric versions in number order (2 before 10), others after, by name.
    found.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.0.cmp(&b.0),
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_argument_the_file_or_the_folder() {
        assert_eq!(split("price=models/a.onnx"), (Some("price"), "models/a.onnx"));
        assert_eq!(split("./x=y.onnx"), (None, "./x=y.onnx"));
        assert_eq!(default_name(Path::new("models/house price.onnx")).unwrap(), "house_price");
    }

    #[test]
    fn a_kserve_folder_of_versions_serves_each_with_the_newest_by_default() {
        let dir = tempfile::tempdir().unwrap();
        for v in ["2", "10", "1"] {
            std::fs::create_dir(dir.path().join(v)).unwrap();
            std::fs::write(dir.path().join(v).join(MODEL_FILE), b"").unwrap();
        }
        std::fs::write(dir.path().join("10").join(SCHEMA_FILE), b"{}").unwrap();
        let arg = format!("m={}", dir.path().display());
        let models = models(&[arg]).unwrap();
        let got: Vec<(&str, bool, bool)> =
            models.iter().map(|m| (m.version.as_str(), m.default_version, m.schema.is_some())).collect();
        assert_eq!(got, [("1", false, false), ("2", false, false), ("10", true, true)]);
        let empty = tempfile::tempdir().unwrap();
        let err = super::models(&[empty.path().display().to_string()]).unwrap_err();
        assert!(err.contains("holds no model.onnx"), "{err}");
    }

    #[test]
    fn a_url_is_named_after_its_object_or_its_prefix() {
        let model =
            |arg: &str| super::models(&[arg.to_owned()]).map(|m| (m[0].name.clone(), m[0].path.display().to_string()));
        assert_eq!(model("s3://b/m/house.onnx").unwrap(), ("house".into(), "s3://b/m/house.onnx".into()));
        assert_eq!(
            model("https://h/models/house/").unwrap(),
            ("house".into(), "https://h/models/house/model.onnx".into())
        );
        assert_eq!(model("p=gs://b/x.onnx").unwrap(), ("p".into(), "gs://b/x.onnx".into()));
        assert!(model("s3://b").unwrap_err().contains("cannot name a model"));
    }
}
