//! Each route answers errors in one shape, whoever refuses the request (the handler, a layer
//! before it, or an extractor), with status and `Retry-After` from one table.

use serde_json::{json, Value};

use crate::helpers::{schema_example, test_config, TestApp};

/// The protocol's shape: `{"error": "..."}` and nothing else.
async fn v2_shaped(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fields, ["error"], "{body}");
    body["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_repository_routes_answer_path_and_body_errors_in_the_protocols_shape() {
    let mut config = test_config();
    config.server.body_limit_bytes = 1024;
    let app = TestApp::spawn_with(config).await;
    // A path that is not UTF-8, refused by the path extractor before the handler runs.
    let bad_path = app.client.post(app.url("/v2/repository/models/%FF/load")).body("{}").send().await.unwrap();
    assert!(v2_shaped(bad_path, 400).await.contains("UTF-8"));
    // A declared body over the limit, refused by the layer in front of every route.
    let big = app.client.post(app.url("/v2/repository/models/house_price/load")).body(vec![b' '; 4096]);
    v2_shaped(big.send().await.unwrap(), 413).await;
    // A header refused by the deadline extractor.
    let header = app.client.post(app.url("/v2/models/house_price/infer")).header("x-request-timeout-ms", "soon");
    assert!(v2_shaped(header.body("{}").send().await.unwrap(), 400).await.contains("x-request-timeout-ms"));
    // The same refusals on our routes keep our shape.
    let ours = app.client.post(app.url("/models/house_price/predict")).body(vec![b' '; 4096]).send().await.unwrap();
    assert_eq!(ours.status(), 413);
    assert_eq!(ours.json::<Value>().await.unwrap()["error_type"], "payload_too_large");
    app.stop().await;
}

#[tokio::test]
async fn an_unloaded_model_is_503_with_the_same_retry_after_in_both_shapes() {
    let app = TestApp::spawn().await;
    let unloaded = app.post_json("/v2/repository/models/house_price/unload", &json!({})).await;
    assert_eq!(unloaded.status(), 200);
    let ours = app.predict(&[schema_example("house_price")]).await;
    assert_eq!(ours.status(), 503);
    assert_eq!(ours.headers()["retry-after"], "5");
    let v2 = app.client.post(app.url("/v2/models/house_price/infer")).body("{}").send().await.unwrap();
    assert_eq!(v2.headers()["retry-after"], "5", "the protocol's 503 reads the same table");
    assert!(v2_shaped(v2, 503).await.contains("unloaded"));
    app.stop().await;
}
