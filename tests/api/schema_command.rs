//! `inferd schema MODEL`: the instance schema of an .onnx file's inputs, which loads back as
//! the model's schema file.

use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::{repo, send_signal};
use crate::process::{inferd, launch};

fn schema(args: &[&str]) -> Output {
    inferd().arg("schema").args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_printed_schema_serves_and_passes_check_as_the_models_schema_file() {
    let out = schema(&["models/house_price_linear.onnx", "--name", "linear"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "the example runs: nothing to warn about");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(doc["title"], "linear instance");
    assert_eq!(doc["additionalProperties"], false);
    let columns: Vec<String> = (0..5).map(|i| format!("features_{i}")).collect();
    let properties: Vec<&String> = doc["properties"].as_object().unwrap().keys().collect();
    assert_eq!(properties, columns.iter().collect::<Vec<_>>());
    assert_eq!(doc["required"], json!(columns));
    assert_eq!(doc["properties"]["features_0"]["type"], "number");
    assert_eq!(doc["examples"].as_array().unwrap().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::write(dir.path().join("schemas/linear.json"), &out.stdout).unwrap();
    let config = dir.path().join("inferd.toml");
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = \"linear\"\npath = \"{}\"\nschema = \"schemas/linear.json\"\n",
            repo().join("models/house_price_linear.onnx").display()
        ),
    )
    .unwrap();
    let check = inferd().args(["check", "--config"]).arg(&config).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));

    let mut command = inferd();
    command.args(["serve", "--host", "127.0.0.1", "--port", "0", "--config"]).arg(&config);
    let mut server = launch(command);
    let client = reqwest::Client::new();
    let info: Value = client.get(format!("{}/models/linear", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["schema"], doc, "served as printed");
    let body = json!({"instances": [doc["examples"][0]]});
    let answer = client.post(format!("{}/predict", server.base)).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let wrong = json!({"instances": [{"features_0": 1}]});
    let answer = client.post(format!("{}/predict", server.base)).json(&wrong).send().await.unwrap();
    assert_eq!(answer.status(), 422, "the schema is enforced");
    send_signal(&server.child, libc::SIGTERM);
    assert!(server.child.wait().unwrap().success());
}

#[test]
fn integer_inputs_are_bounded_by_their_element_type_and_output_files_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    // A KServe folder holding model.onnx, named after the folder.
    let folder = dir.path().join("dtypes");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(repo().join("models/dtypes.onnx"), folder.join("model.onnx")).unwrap();
    let file = dir.path().join("dtypes.json");
    let (folder, file_arg) = (folder.display().to_string(), file.display().to_string());
    let out = schema(&[&folder, "--output", &file_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["title"], "dtypes instance");
    let range = |name: &str| (doc["properties"][name]["minimum"].clone(), doc["properties"][name]["maximum"].clone());
    assert_eq!(range("u8"), (json!(0), json!(255)));
    assert_eq!(range("i8"), (json!(-128), json!(127)));
    assert_eq!(range("i16"), (json!(-32768), json!(32767)));
    assert_eq!(range("u64"), (json!(0), Value::Null));

    std::fs::write(&file, "mine").unwrap();
    let out = schema(&[&folder, "--output", &file_arg]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("exists already; pass --force to overwrite it"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
    let out = schema(&[&folder, "--output", &file_arg, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&file).unwrap().contains("\"u8\""));
}

#[test]
fn string_inputs_take_a_category_the_graphs_encoders_know() {
    // The house-price pipeline's one-hot encoders refuse an empty string: the example takes
    // each encoder's first category instead, and the model runs it (no warning).
    let out = schema(&["models/house_price.onnx"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "", "the example runs");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["properties"]["driveway"]["type"], "string");
    let example = &doc["examples"][0];
    for field in ["driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"] {
        assert!(["yes", "no"].contains(&example[field].as_str().unwrap()), "{field}: {example}");
    }
    assert_eq!(example["lotsize"], json!(0.0));
}

#[test]
fn a_missing_file_or_one_that_is_not_onnx_is_one_line_and_exit_2() {
    for (model, says) in [("models/nope.onnx", "no such file or folder"), ("README.md", "README.md: ")] {
        let out = schema(&[model]);
        assert_eq!(out.status.code(), Some(2), "{model}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("inferd schema: ") && stderr.contains(says), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
