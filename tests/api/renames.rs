//! `[[models]] outputs = { variable = "price" }`: a graph output answered under a public name on
//! every wire format, the prediction log and golden files; `/v2` only with `rename_v2`.

use std::path::Path;

use inferd::config::Config;
use serde_json::{json, Value};

use crate::helpers::{config_with_model, repo, schema_example, TestApp};
use crate::process::inferd;

/// The linear house-price model (its one output is `variable`) as `price`, from a config file,
/// with a golden file that names the output by its public name.
fn linear_config(dir: &Path, extra: &str) -> String {
    let golden = std::fs::read_to_string(repo().join("schemas/house_price_linear.golden.json")).unwrap();
    std::fs::write(dir.join("linear.golden.json"), golden.replace("\"variable\"", "\"price\"")).unwrap();
    format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n\n[[models]]\nname = \"linear\"\npath = \"{}\"\n\
         schema = \"{}\"\ngolden = \"linear.golden.json\"\noutputs = {{ variable = \"price\" }}\n{extra}",
        repo().join("models/house_price_linear.onnx").display(),
        repo().join("schemas/house_price_linear.json").display(),
    )
}

fn linear(dir: &Path, extra: &str) -> Config {
    Config::from_toml(&linear_config(dir, extra), dir).expect("valid config")
}

fn tensors(instance: &Value) -> Value {
    let columns = ["lotsize", "bedrooms", "bathrms", "stories", "garagepl"];
    let data: Vec<Value> = columns.iter().map(|c| json!(instance[c].as_f64().unwrap())).collect();
    json!({"inputs": [{"name": "features", "shape": [1, 5], "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn a_renamed_output_is_answered_and_logged_by_its_public_name_and_v2_keeps_the_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(linear(dir.path(), "")).await;
    let instance = schema_example("house_price_linear");
    let body = json!({"instances": [instance]});

    let response = app.post_json("/models/linear/predict", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let prediction = answer["predictions"][0].as_object().unwrap();
    let names: Vec<&String> = prediction.keys().collect();
    assert_eq!(names, ["price"], "{answer}");
    let price = prediction["price"].as_f64().unwrap();
    assert!(price > 0.0, "{answer}");

    // /v1 writes a lone output bare in rows; its column form names it.
    let v1: Value = app.post_json("/v1/models/linear:predict", &body).await.json().await.unwrap();
    assert_eq!(v1["predictions"][0].as_f64(), Some(price), "{v1}");
    let columns =
        json!({"inputs": {"lotsize": [5850], "bedrooms": [3], "bathrms": [1], "stories": [2], "garagepl": [1]}});
    let v1: Value = app.post_json("/v1/models/linear:predict", &columns).await.json().await.unwrap();
    assert_eq!(v1["outputs"][0].as_f64(), Some(price), "{v1}");

    let info = app.get_json("/models/linear").await;
    assert_eq!(info["outputs"][0]["name"], "price", "{info}");

    // Open Inference Protocol clients address tensors by the metadata's names: the graph's.
    let metadata = app.get_json("/v2/models/linear").await;
    assert_eq!(metadata["outputs"][0]["name"], "variable", "{metadata}");
    let v2: Value = app.post_json("/v2/models/linear/infer", &tensors(&instance)).await.json().await.unwrap();
    assert_eq!(v2["outputs"][0]["name"], "variable", "{v2}");
    let mut by_public = tensors(&instance);
    by_public["outputs"] = json!([{"name": "price"}]);
    assert_eq!(app.post_json("/v2/models/linear/infer", &by_public).await.status(), 400);

    let log = app.prediction_log_dir.clone();
    let _logs = app.stop().await;
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 4, "/predict, /v1 by rows and by columns, /v2: {lines:?}");
    for line in &lines {
        let outputs = line["outputs"].as_object().unwrap();
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["price"], "the log holds what clients saw: {line}");
    }
}

#[tokio::test]
async fn rename_v2_renames_the_v2_metadata_answers_and_requested_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(linear(dir.path(), "rename_v2 = true\n")).await;
    let instance = schema_example("house_price_linear");
    let metadata = app.get_json("/v2/models/linear").await;
    assert_eq!(metadata["outputs"][0]["name"], "price", "{metadata}");
    let v2: Value = app.post_json("/v2/models/linear/infer", &tensors(&instance)).await.json().await.unwrap();
    assert_eq!(v2["outputs"][0]["name"], "price", "{v2}");
    let mut request = tensors(&instance);
    request["outputs"] = json!([{"name": "price"}]);
    let response = app.post_json("/v2/models/linear/infer", &request).await;
    assert_eq!(response.status(), 200);
    let v2: Value = response.json().await.unwrap();
    assert_eq!(v2["outputs"][0]["name"], "price", "{v2}");
    request["outputs"] = json!([{"name": "variable"}]);
    let response = app.post_json("/v2/models/linear/infer", &request).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].as_str().unwrap().contains("unknown output 'variable'"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn a_classifiers_renamed_probabilities_stay_keyed_by_class() {
    let mut config = config_with_model("iris", "iris.onnx", "1", true);
    let model = config.models.last_mut().unwrap();
    model.schema = Some(repo().join("schemas/iris.json"));
    model.probabilities_by_class = true;
    model.outputs = [("probabilities".into(), "p".into()), ("label".into(), "species".into())].into();
    config.check().expect("valid config");
    let app = TestApp::spawn_with(config).await;
    let body = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]});
    for path in ["/models/iris/predict", "/v1/models/iris:predict"] {
        let answer: Value = app.post_json(path, &body).await.json().await.unwrap();
        let prediction = &answer["predictions"][0];
        assert_eq!(prediction["species"], "setosa", "{path}: {answer}");
        let classes: Vec<&String> = prediction["p"].as_object().expect("keyed by class").keys().collect();
        assert_eq!(classes, ["setosa", "versicolor", "virginica"], "{path}: {answer}");
        assert!(prediction.get("probabilities").is_none(), "{path}: {answer}");
    }
    app.stop().await;
}

#[test]
fn an_unknown_or_colliding_output_name_is_refused_at_load_naming_the_real_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("renames.toml");
    std::fs::write(&file, linear_config(dir.path(), "").replace("variable =", "varible =")).unwrap();
    let out = inferd().args(["check", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("outputs: 'varible' is not an output of the graph; its outputs are: variable"), "{stdout}");

    std::fs::write(&file, linear_config(dir.path(), "").replace("\"price\"", "\"a price\"")).unwrap();
    let out = inferd().args(["check", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(2), "a config fault: {stdout}");
    assert!(stdout.contains("a public name is 1 to 128 of A-Z a-z 0-9 _ . : -"), "{stdout}");

    // A golden file still naming the graph's output is told what the answers call it.
    std::fs::write(&file, linear_config(dir.path(), "")).unwrap();
    std::fs::copy(repo().join("schemas/house_price_linear.golden.json"), dir.path().join("linear.golden.json"))
        .unwrap();
    let out = inferd().args(["check", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("output 'variable', which is answered as 'price'"), "{stdout}");
}

fn log_lines(dir: &Path) -> Vec<Value> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_writes_and_replay_compares_under_the_public_names() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("renames.toml");
    std::fs::write(&file, linear_config(dir.path(), "")).unwrap();
    let app = TestApp::spawn_with(linear(dir.path(), "")).await;
    let rows = crate::helpers::reference("house_price_linear.reference.json", "onnxruntime_variable").instances;
    assert_eq!(app.post_json("/predict", &json!({"instances": rows})).await.status(), 200);
    let logs = app.prediction_log_dir.clone();
    app.stop().await;

    let out = inferd().args(["replay", "--format", "json", "--config"]).arg(&file).arg(&logs).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(
        (report["replayed"].as_u64(), report["identical"].as_u64()),
        (Some(rows.len() as u64), Some(rows.len() as u64)),
        "{report}"
    );
    // An .onnx file replayed for the model is compared under the model's public names too (and
    // checked against the golden file beside its schema, named `<model>.golden.json`).
    let schema = dir.path().join("schema.json");
    std::fs::copy(repo().join("schemas/house_price_linear.json"), &schema).unwrap();
    let out = inferd()
        .args(["replay", "--format", "json", "--config"])
        .arg(&file)
        .args(["--onnx", "models/house_price_linear.onnx", "--schema"])
        .arg(&schema)
        .arg(&logs)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["identical"], json!(rows.len()), "{report}");

    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, rows.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let out = inferd().args(["score", "--config"]).arg(&file).arg("--input").arg(&input).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let first: Value = serde_json::from_str(std::str::from_utf8(&out.stdout).unwrap().lines().next().unwrap()).unwrap();
    assert!(first["outputs"]["price"].as_f64().unwrap() > 0.0, "{first}");
    assert!(first["outputs"].get("variable").is_none(), "{first}");
}
