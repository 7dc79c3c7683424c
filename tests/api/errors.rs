use axum::body::Body;
use axum::http::{Request, StatusCode};
use inferd::http::{router, AppState};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

use crate::helpers::{assert_error, eventually, instance_with, schema_example, test_config, TestApp};

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/predict"))
        .header("content-type", "application/json")
        .body("{\"instances\": [")
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "malformed_json").await;
    assert!(body["error"].as_str().unwrap().contains("line 1"), "{body}");
    app.stop().await;
}

/// One rule on every JSON predict route: no content type, or a JSON one, is read as JSON;
/// so is `curl -d`'s form encoding; anything else is refused in the route's error shape with
/// a message that says which header to send.
#[tokio::test]
async fn every_predict_route_reads_the_same_content_types() {
    let app = TestApp::spawn().await;
    let rows = json!({"instances": [schema_example("house_price")]}).to_string();
    let linear = json!({"instances": [[5850, 3, 1, 2, 1]]}).to_string();
    let tensors = crate::helpers::house_tensors(&[schema_example("house_price")]).to_string();
    let routes = [
        ("/predict", &rows),
        ("/models/house_price/predict", &rows),
        ("/models/house_price/versions/1/predict", &rows),
        ("/v1/models/house_price_linear:predict", &linear),
        ("/v1/models/house_price_linear/versions/1:predict", &linear),
        ("/v2/models/house_price/infer", &tensors),
        ("/v2/models/house_price/versions/1/infer", &tensors),
    ];
    let read = [
        None,
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/vnd.api+json"),
        Some("application/x-www-form-urlencoded"),
    ];
    let refused = ["text/plain", "application/octet-stream", "multipart/form-data; boundary=x"];
    for (path, body) in routes {
        let send = |content_type: Option<&str>| {
            let mut request = app.client.post(app.url(path)).body(body.to_string());
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.send()
        };
        for content_type in read {
            assert_eq!(send(content_type).await.unwrap().status(), 200, "{path} with {content_type:?}");
        }
        for content_type in refused {
            let response = send(Some(content_type)).await.unwrap();
            let error = if path.starts_with("/v2/") {
                // The protocol's shape: `{"error"}`, and 400 for whatever the request did wrong.
                assert_eq!(response.status(), 400, "{path} with {content_type}");
                response.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_owned()
            } else {
                let body = assert_error(response, 415, "unsupported_media_type").await;
                body["error"].as_str().unwrap().to_owned()
            };
            assert!(error.contains(&format!("`{content_type}`")), "{path}: names what was sent: {error}");
            assert!(error.contains("-H 'content-type: application/json'"), "{path}: says what to send: {error}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let mut config = test_config();
    config.server.body_limit_bytes = 1024;
    let app = TestApp::spawn_with(config).await;
    let instances = vec![schema_example("house_price"); 20];
    let response = app.predict(&instances).await;
    let body = assert_error(response, 413, "payload_too_large").await;
    assert!(body["error"].as_str().unwrap().contains("1024 bytes"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_model_and_unknown_route_are_404() {
    let app = TestApp::spawn().await;
    let response = app.post_json("/models/nope/predict", &json!({"instances": [{}]})).await;
    let body = assert_error(response, 404, "model_not_found").await;
    assert!(body["error"].as_str().unwrap().contains("'nope'"));
    let response = app.client.get(app.url("/nowhere")).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    let response = app.client.get(app.url("/predict")).send().await.unwrap();
    assert_error(response, 405, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn every_invalid_field_is_reported_with_its_path_rule_and_value() {
    let app = TestApp::spawn().await;
    let good = schema_example("house_price");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("stories");
    let instances = vec![
        good.clone(),
        instance_with(&good, "airco", json!("maybe")),
        missing,
        instance_with(&instance_with(&good, "bedrooms", json!(14)), "lotsize", json!("5000")),
        instance_with(&good, "colour", json!("red")),
    ];
    let response = app.predict(&instances).await;
    let body = assert_error(response, 422, "validation_error").await;
    let mut details: Vec<(String, String)> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap().to_owned(), d["message"].as_str().unwrap().to_owned()))
        .collect();
    details.sort();
    let want: Vec<(String, String)> = [
        ("/instances/1/airco", r#"must be one of ["yes","no"], got "maybe""#),
        ("/instances/2/stories", "is required"),
        ("/instances/3/bedrooms", "must be <= 10, got 14"),
        ("/instances/3/lotsize", r#"must be a number, got string "5000""#),
        ("/instances/4/colour", "is not a field of this model"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(details, want);
    app.stop().await;
}

#[tokio::test]
async fn instance_count_and_envelope_are_checked() {
    let mut config = test_config();
    config.server.max_instances_per_request = 3;
    let app = TestApp::spawn_with(config).await;
    let body = assert_error(app.predict(&[]).await, 422, "invalid_request").await;
    assert_eq!(body["details"][0]["path"], "/instances");
    let four = vec![schema_example("house_price"); 4];
    let body = assert_error(app.predict(&four).await, 422, "invalid_request").await;
    assert_eq!(body["details"][0]["message"], "must hold 1 to 3 instances, got 4");
    let body = assert_error(app.post_json("/predict", &json!({"instances": "x"})).await, 422, "invalid_request").await;
    assert!(body["error"].as_str().unwrap().contains("expected a sequence"), "{body}");
    assert_error(app.post_json("/predict", &json!({"rows": []})).await, 422, "invalid_request").await;
    app.stop().await;
}

/// A queue of two rows, and a batching delay that holds a lone row in it.
pub fn tiny_queue() -> inferd::config::Config {
    let mut config = test_config();
    config.batching.max_batch_rows = 2;
    config.batching.queue_capacity_rows = 2;
    config.batching.max_delay_ms = 5000;
    config.server.max_instances_per_request = 2;
    config
}

/// Sends one row that waits in the queue (until its own deadline, `wait_ms`), and returns once
/// the model reports it queued.
pub async fn occupy_one_row(app: &std::sync::Arc<TestApp>, wait_ms: u64) -> tokio::task::JoinHandle<reqwest::Response> {
    let waiting = {
        let app = app.clone();
        tokio::spawn(async move {
            let body = json!({"instances": [schema_example("house_price")]});
            let request = app.client.post(app.url("/predict")).header("x-request-timeout-ms", wait_ms.to_string());
            request.json(&body).send().await.unwrap()
        })
    };
    let queued = async || app.get_json("/models/house_price").await["queued_rows"] == 1;
    eventually(std::time::Duration::from_secs(10), "the row is queued", queued).await;
    waiting
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_an_expired_row_frees_its_room() {
    let app = std::sync::Arc::new(TestApp::spawn_with(tiny_queue()).await);
    let waiting = occupy_one_row(&app, 300).await;
    let two = vec![schema_example("house_price"); 2];
    let response = app.predict(&two).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = assert_error(response, 503, "overloaded").await;
    assert!(body["error"].as_str().unwrap().contains("1 of 2 rows"), "{body}");
    // The waiting row's deadline passes: 504, and its room is free again at once (a full batch
    // of two does not wait for the batching delay).
    let body = assert_error(waiting.await.unwrap(), 504, "timeout").await;
    assert!(body["error"].as_str().unwrap().contains("300 ms"), "{body}");
    assert_eq!(app.predict(&two).await.status(), 200);
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

/// Before models are loaded: `/health` is 200, `/ready` and predictions are 503.
#[tokio::test]
async fn not_ready_until_models_are_loaded() {
    let config = test_config();
    let metrics = inferd::observe::Metrics::new(&config.metrics).unwrap();
    let app = router(AppState::new(Arc::new(config), metrics, None));
    let call = |method: &str, path: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let health = app.clone().oneshot(call("GET", "/health", "")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    for (method, path, body) in [("GET", "/ready", ""), ("POST", "/predict", r#"{"instances":[{}]}"#)] {
        let response = app.clone().oneshot(call(method, path, body)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(response.headers().contains_key("retry-after"));
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error_type"], "not_ready");
    }
}

#[tokio::test]
async fn an_undecodable_path_is_a_json_400() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/models/%FF%FE")).send().await.unwrap();
    let body = assert_error(response, 400, "invalid_path").await;
    assert!(body["error"].as_str().unwrap().contains("UTF-8"), "{body}");
    let response = app.post_json("/models/%FF/predict", &json!({"instances": [{}]})).await;
    assert_error(response, 400, "invalid_path").await;
    app.stop().await;
}

#[tokio::test]
async fn null_is_named_once_and_long_values_are_cut_in_messages() {
    let app = TestApp::spawn().await;
    let good = schema_example("house_price");
    let long = "y".repeat(1_000_000);
    let instances = [instance_with(&instance_with(&good, "lotsize", Value::Null), "airco", json!(long))];
    let body = assert_error(app.predict(&instances).await, 422, "validation_error").await;
    assert_eq!(
        body["details"],
        json!([
            {"path": "/instances/0/lotsize", "message": "must be a number, got null"},
            {"path": "/instances/0/airco", "message": format!(r#"must be one of ["yes","no"], got "{}…" (1000000 chars)"#, "y".repeat(100))},
        ])
    );
    // serde's own message quotes the value too.
    let body = assert_error(app.post_json("/predict", &json!({"instances": long})).await, 422, "invalid_request").await;
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(&format!("\"{}… (1000000 chars)\", expected a sequence", "y".repeat(100))), "{error}");
    assert!(error.len() < 300, "{error}");
    assert_eq!(app.predict(&[good]).await.status(), 200, "still serving");
    app.stop().await;
}
