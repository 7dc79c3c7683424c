//! `inferd serve MODEL...`: models named on the command line, with or without a config file.

use serde_json::{json, Value};

use crate::helpers::{repo, schema_example, send_signal};
use crate::process::{inferd, launch};

/// `inferd serve MODEL...` run in `dir`, with `env` added; returns once it is ready.
pub(crate) fn serve_in(dir: &std::path::Path, models: &[String], env: &[(&str, &str)]) -> crate::process::Server {
    let mut command = inferd();
    command
        .current_dir(dir)
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(models)
        .envs(env.iter().copied());
    launch(command)
}

pub(crate) async fn stop(mut server: crate::process::Server) {
    send_signal(&server.child, libc::SIGTERM);
    assert!(server.child.wait().unwrap().success());
}

#[tokio::test]
async fn a_model_file_is_served_from_a_folder_with_no_config() {
    let empty = tempfile::tempdir().unwrap();
    let model = repo().join("models/house_price.onnx").display().to_string();
    let server = serve_in(empty.path(), &[model], &[]);
    let client = reqwest::Client::new();
    let models: Value = client.get(format!("{}/models", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["models"].as_array().unwrap().len(), 1, "{models}");
    assert_eq!(models["models"][0]["name"], "house_price");
    let answer = client
        .post(format!("{}/predict", server.base))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert!(answer["predictions"][0]["price"].as_f64().unwrap() > 0.0, "{answer}");
    stop(server).await;
}

#[tokio::test]
async fn a_kserve_folder_of_versions_is_served_with_the_newest_by_default() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("mnt/models");
    for (version, file) in [("1", "house_price_linear.onnx"), ("2", "house_price.onnx")] {
        std::fs::create_dir_all(models.join(version)).unwrap();
        std::fs::copy(repo().join("models").join(file), models.join(version).join("model.onnx")).unwrap();
    }
    let server = serve_in(root.path(), &[format!("price={}", models.display())], &[]);
    let client = reqwest::Client::new();
    let info: Value = client.get(format!("{}/models/price", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!((&info["version"], &info["default_version"]), (&json!("2"), &json!(true)), "{info}");
    // Version 1 (one [N, 5] input) has the derived schema: columns `features_0` to `features_4`.
    let row: Value = (0..5)
        .map(|i| (format!("features_{i}"), json!([5850, 3, 1, 2, 1][i])))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let body = json!({"instances": [row]});
    let old = client.post(format!("{}/models/price/versions/1/predict", server.base)).json(&body).send().await.unwrap();
    assert_eq!(old.status(), 200);
    let old: Value = old.json().await.unwrap();
    assert_eq!(old["version"], "1", "{old}");
    assert!(old["predictions"][0]["variable"].as_f64().unwrap() > 0.0, "{old}");
    stop(server).await;
}

#[tokio::test]
async fn models_named_in_the_checkout_replace_its_runtime_toml_models() {
    let server = serve_in(&repo(), &["models/house_price_linear.onnx".into()], &[]);
    let models: Value = reqwest::get(format!("{}/models", server.base)).await.unwrap().json().await.unwrap();
    let names: Vec<&str> = models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["house_price_linear"]);
    stop(server).await;
}

#[test]
fn a_named_config_with_models_and_model_arguments_is_refused() {
    let out = inferd().args(["serve", "--config", "runtime.toml", "models/house_price.onnx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("name them in one place"), "{stderr}");
    let out = inferd().args(["serve", "nowhere/model.onnx"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("nowhere/model.onnx: no such file or folder"), "{stderr}");
}
