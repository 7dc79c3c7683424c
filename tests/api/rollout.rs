//! Canary splits (`traffic`) and shadow versions (`shadow`) of one model.

use std::collections::BTreeMap;
use std::time::Duration;

use inferd::config::ShadowConfig;
use serde_json::{json, Value};

use crate::helpers::{config_with_model, repo, schema_example, TestApp};

#[tokio::test]
async fn traffic_splits_unversioned_requests_by_weight_sticky_per_request_id() {
    let mut config = config_with_model("house_price", "house_price.onnx", "2", false);
    let v1 = config.models.iter_mut().find(|m| m.name == "house_price" && m.version == "1").unwrap();
    v1.traffic = Some(BTreeMap::from([("1".into(), 80), ("2".into(), 20)]));
    config.check().unwrap();
    let app = TestApp::spawn_with(config).await;
    let body = json!({"instances": [schema_example("house_price")]});
    let send = |id: String, pin: Option<&'static str>| {
        let mut request =
            app.client.post(app.url("/models/house_price/predict")).header("x-request-id", id).json(&body);
        if let Some(pin) = pin {
            request = request.header("x-inferd-version", pin);
        }
        request.send()
    };
    let mut twos = 0;
    for i in 0..400 {
        let response = send(format!("canary-{i}"), None).await.unwrap();
        assert_eq!(response.status(), 200);
        let header = response.headers()["x-inferd-version"].to_str().unwrap().to_owned();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["version"], header.as_str(), "the header names the version that answered");
        twos += usize::from(header == "2");
    }
    assert!((40..=120).contains(&twos), "about 20% of 400 on version 2: {twos}");
    for i in 0..20 {
        let first: Value = send(format!("sticky-{i}"), None).await.unwrap().json().await.unwrap();
        let again: Value = send(format!("sticky-{i}"), None).await.unwrap().json().await.unwrap();
        assert_eq!(first["version"], again["version"], "the same request id, the same version");
    }
    let pinned: Value = send("pinned".into(), Some("2")).await.unwrap().json().await.unwrap();
    assert_eq!(pinned["version"], "2");
    let missing = send("pinned".into(), Some("9")).await.unwrap();
    assert_eq!(missing.status(), 404);
    // /predict serves the default model, split too; a versioned route is never split.
    for i in 0..40 {
        let answer: Value = app
            .client
            .post(app.url("/models/house_price/versions/1/predict"))
            .header("x-request-id", format!("canary-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["version"], "1");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_shadow_version_runs_sampled_requests_after_the_answer_and_counts_differences() {
    // Version 2 of iris answers probabilities keyed by class where version 1 gives an array:
    // the same model, a different answer for every row.
    let mut config = config_with_model("iris", "iris.onnx", "1", true);
    config.models.last_mut().unwrap().schema = Some(repo().join("schemas/iris.json"));
    let mut v2 = config.models.last().unwrap().clone();
    v2.version = "2".into();
    v2.default_version = false;
    v2.probabilities_by_class = true;
    config.models.push(v2);
    let v1 = config.models.iter_mut().find(|m| m.name == "iris" && m.version == "1").unwrap();
    v1.shadow = Some(ShadowConfig { version: "2".into(), sample_rate: 1.0, absolute: 0.0, relative: 1e-6 });
    config.check().unwrap();
    let app = TestApp::spawn_with(config).await;
    let example = schema_example("iris");
    let requests = 5;
    for _ in 0..requests {
        let answer = app.post_json("/models/iris/predict", &json!({"instances": [example, example]})).await;
        assert_eq!(answer.status(), 200);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["version"], "1");
        assert!(answer["predictions"][0]["probabilities"].is_array(), "answered by version 1: {answer}");
    }
    let series = r#"inferd_shadow_runs_total{model="iris",version="2",result="differs"}"#;
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = app.metrics().await;
        if metrics.lines().any(|l| l == format!("{series} {requests}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.lines().any(|l| l == format!("{series} {requests}")), "{metrics}");
    let diffs = r#"inferd_shadow_diffs_total{model="iris",version="2",output="probabilities"} 10"#;
    assert!(metrics.lines().any(|l| l == diffs), "two rows per request: {metrics}");
    assert!(!metrics.contains(r#"output="label"} "#), "the labels agree");
    // A request to the shadow version itself is not shadowed.
    let direct = app.post_json("/models/iris/versions/2/predict", &json!({"instances": [example]})).await;
    assert_eq!(direct.status(), 200);
    app.stop().await;
}
