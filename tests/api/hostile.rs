//! What a hostile or careless client controls (deadlines, sizes, methods, ids) stays bounded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::errors::tiny_queue;
use crate::helpers::{assert_error, house_tensors, metric, schema_example, test_config, TestApp};

/// Writes `head` (and `body`) on a fresh connection and reads until the server closes it or
/// `wait` passes; returns what was read.
async fn raw(app: &TestApp, head: &str, body: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_can_shorten_the_deadline_but_not_lengthen_it() {
    let mut config = tiny_queue();
    config.server.request_timeout_ms = 2000;
    let app = TestApp::spawn_with(config).await;
    let one = json!({"instances": [schema_example("house_price")]});
    // The batching delay (5 s) holds a lone row past any deadline here.
    let started = Instant::now();
    let response = app.client.post(app.url("/predict")).header("x-request-timeout-ms", "150").json(&one).send().await;
    let body = assert_error(response.unwrap(), 504, "timeout").await;
    assert!(body["error"].as_str().unwrap().contains("150 ms"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());

    let response = app.client.post(app.url("/predict")).header("x-request-timeout-ms", "60000").json(&one).send().await;
    let body = assert_error(response.unwrap(), 504, "timeout").await;
    assert!(body["error"].as_str().unwrap().contains("2000 ms"), "the server's limit holds: {body}");

    for bad in ["0", "soon", "-1"] {
        let response = app.client.post(app.url("/predict")).header("x-request-timeout-ms", bad).json(&one).send().await;
        let body = assert_error(response.unwrap(), 400, "invalid_header").await;
        assert!(body["error"].as_str().unwrap().contains("x-request-timeout-ms"), "{body}");
    }

    // The protocol's own timeout parameter, in microseconds.
    let mut v2 = house_tensors(&[schema_example("house_price")]);
    v2["parameters"] = json!({"timeout": 100_000});
    let response = app.post_json("/v2/models/house_price/infer", &v2).await;
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("100 ms"), "{body}");
    v2["parameters"] = json!({"timeout": "soon"});
    assert_eq!(app.post_json("/v2/models/house_price/infer", &v2).await.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_within_the_deadline() {
    let app = TestApp::spawn().await;
    let head = "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\nx-request-timeout-ms: 300\r\n\r\n";
    let started = Instant::now();
    let answer = raw(&app, head, b"{\"instances\": [", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error_type\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_413_before_the_body_is_sent() {
    let app = TestApp::spawn().await;
    for path in ["/predict", "/v2/models/house_price/infer"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n"
        );
        // No body at all: the answer must not wait for it.
        let answer = raw(&app, &head, b"", Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(answer.contains("1048576 bytes"), "{path}: {answer}");
    }
    app.stop().await;
}

#[tokio::test]
async fn client_chosen_methods_do_not_mint_metric_series() {
    let app = TestApp::spawn().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let response = app.client.request(method, app.url("/predict")).send().await.unwrap();
        assert_error(response, 405, "method_not_allowed").await;
    }
    let text = app.metrics().await;
    assert!(!text.contains("FOO"), "no series per method");
    let other = [("method", "_OTHER"), ("route", "/predict"), ("status", "405")];
    assert_eq!(metric(&text, "inferd_http_requests_total", &other), Some(50.0));
    app.stop().await;
}

#[tokio::test]
async fn only_a_short_plain_request_id_is_kept() {
    let app = TestApp::spawn().await;
    let send = async |id: &str| {
        let response = app.client.get(app.url("/nowhere")).header("x-request-id", id).send().await.unwrap();
        let echoed = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["request_id"], echoed.as_str(), "body and header agree");
        echoed
    };
    assert_eq!(send("order-42:retry.1_a").await, "order-42:retry.1_a");
    assert_eq!(send(&"a".repeat(128)).await, "a".repeat(128));
    for bad in ["a".repeat(129), "has space".into(), "semi;colon".into(), "\"quoted\"".into()] {
        let echoed = send(&bad).await;
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{bad:?} was replaced by a generated id, got {echoed}");
    }
    // Bytes that are not ASCII (allowed in a header value, unusable in logs).
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap())
        .send()
        .await
        .unwrap();
    let echoed = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(echoed).is_ok(), "{echoed}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_larger_than_the_queue_is_a_config_error_not_a_503_forever() {
    let mut config = test_config();
    config.batching.queue_capacity_rows = 100;
    let err = config.check().unwrap_err().to_string();
    assert!(err.contains("max_instances_per_request (1024) must be <= batching.queue_capacity_rows (100)"), "{err}");
}

#[tokio::test]
async fn a_long_value_in_a_body_that_does_not_parse_is_not_echoed_whole() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(100_000);
    let response = app.post_json("/v2/models/house_price/infer", &json!({ "inputs": long })).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.len() < 500 && error.contains("100000 chars"), "{error}");
    let response = app.post_json("/predict", &json!({ "instances": long })).await;
    let body = assert_error(response, 422, "invalid_request").await;
    assert!(body["error"].as_str().unwrap().len() < 500, "{body}");
    app.stop().await;
}
