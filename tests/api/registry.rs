use serde_json::{json, Value};

use crate::helpers::{assert_error, config_with_model, schema_example, TestApp};

/// `house_price_linear` version 1 (schema file) and version 2 (derived schema, the default).
fn two_versions() -> inferd::config::Config {
    config_with_model("house_price_linear", "house_price_linear.onnx", "2", true)
}

#[tokio::test]
async fn models_lists_every_model_with_its_versions() {
    let app = TestApp::spawn_with(two_versions()).await;
    let list = app.get_json("/models").await;
    assert_eq!(
        list["models"],
        json!([
            {"name": "house_price", "versions": ["1"], "default_version": "1", "default": true, "ready": true},
            {"name": "house_price_linear", "versions": ["1", "2"], "default_version": "2", "default": false, "ready": true},
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn versions_are_served_side_by_side() {
    let app = TestApp::spawn_with(two_versions()).await;
    // Version 1 has a schema file; version 2 of the same graph derives its own.
    let v1 = app.get_json("/models/house_price_linear/versions/1").await;
    let v2 = app.get_json("/models/house_price_linear").await;
    assert_eq!(
        (v1["version"].as_str(), v2["version"].as_str()),
        (Some("1"), Some("2")),
        "unversioned is the default version"
    );
    assert_eq!(v1["schema"]["properties"].as_object().unwrap().keys().next().unwrap(), "lotsize");
    assert_eq!(v2["schema"]["properties"].as_object().unwrap().keys().next().unwrap(), "features_0");
    assert_eq!(v1["example"], schema_example("house_price_linear"));
    assert_eq!(v1["inputs"], json!([{"name": "features", "elem": "f32", "shape": [-1, 5]}]));
    assert_eq!(v1["batching"]["max_batch_rows"], 64);

    let body = json!({"instances": [schema_example("house_price_linear")]});
    let r1: Value = app.post_json("/models/house_price_linear/versions/1/predict", &body).await.json().await.unwrap();
    assert_eq!(r1["version"], "1");
    let derived = json!({"instances": [{"features_0": 5850, "features_1": 3, "features_2": 1, "features_3": 2, "features_4": 1}]});
    let r2: Value = app.post_json("/models/house_price_linear/predict", &derived).await.json().await.unwrap();
    assert_eq!(r2["version"], "2");
    assert_eq!(r1["predictions"], r2["predictions"], "same graph, same answer");

    let missing = app.post_json("/models/house_price_linear/versions/3/predict", &body).await;
    assert_error(missing, 404, "version_not_found").await;
    let missing = app.client.get(app.url("/models/house_price/versions/3")).send().await.unwrap();
    assert_error(missing, 404, "version_not_found").await;
    app.stop().await;
}
