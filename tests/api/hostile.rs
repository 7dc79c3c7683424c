//! What a hostile or careless client controls (deadlines, sizes, methods, ids) stays bounded.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::errors::tiny_queue;
use crate::helpers::{assert_error, eventually, house_tensors, metric, schema_example, test_config, TestApp};

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

#[tokio::test]
async fn a_body_full_of_bad_fields_gets_a_bounded_answer() {
    let app = TestApp::spawn().await;
    let bad: Vec<Value> = (0..1024).map(|_| json!({"zz": 1})).collect();
    let body = assert_error(app.predict(&bad).await, 422, "validation_error").await;
    assert_eq!(body["details"].as_array().unwrap().len(), 100, "at most 100 field errors are listed");
    assert!(body["error"].as_str().unwrap().starts_with("more than 100 invalid fields"), "{body}");
    let few = vec![json!({"zz": 1})];
    let body = assert_error(app.predict(&few).await, 422, "validation_error").await;
    let listed = body["details"].as_array().unwrap().len();
    assert_eq!(body["error"], format!("{listed} invalid field(s) in the request"));
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_is_disconnected() {
    let mut config = test_config();
    config.server.write_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    // Swagger UI's bundle, ten times over, pipelined: far more than the socket buffers hold.
    let bundle = app.client.get(app.url("/docs/swagger-ui-bundle.js")).send().await.unwrap().bytes().await.unwrap();
    let request = "GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nhost: x\r\n\r\n".repeat(10);
    stream.write_all(request.as_bytes()).await.unwrap();
    // Not a wait for an event: this client reads nothing for five times the write timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(100)]));
    assert!(got.len() < 10 * bundle.len(), "the answers were cut off after {} bytes, not sent whole", got.len());
    app.stop().await;
}

#[tokio::test]
async fn bodies_in_flight_share_a_memory_budget() {
    let mut config = test_config();
    config.server.body_limit_bytes = 65536;
    config.server.max_body_bytes_in_flight = 65536;
    let app = TestApp::spawn_with(config).await;
    let head = |ms: u64| {
        format!(
            "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\
             x-request-timeout-ms: {ms}\r\n\r\n"
        )
    };
    // The first body takes the whole budget and stalls; the second finds no room.
    let mut first = TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    first.write_all(head(1500).as_bytes()).await.unwrap();
    first.write_all(b"{\"instances\": [").await.unwrap();
    // Held once less than the second body's 59 KiB is left: a probe for 6 KiB finds no room.
    let budget = app.state.body_budget();
    let held = async || tokio::time::timeout(Duration::ZERO, budget.reserve(6 * 1024)).await.is_err();
    eventually(Duration::from_secs(5), "the first body holds its room in the budget", held).await;
    let answer = raw(&app, &head(300), b"{", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many request bodies"), "{answer}");
    // Once the first gives up (408), the budget is free again.
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut out)).await;
    assert!(out.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
    assert_eq!(app.predict(&[schema_example("house_price")]).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_broken_chunked_body_is_unreadable_not_malformed_json() {
    let app = TestApp::spawn().await;
    let head =
        "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let answer = raw(&app, head, b"zz\r\n{}\r\n0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error_type\":\"unreadable_body\""), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_model_is_404_without_waiting_for_the_body() {
    let app = TestApp::spawn().await;
    for path in ["/models/nope/predict", "/v2/models/nope/infer"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
        );
        let started = Instant::now();
        let answer = raw(&app, &head, b"{\"inst", Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(answer.contains("connection: close"), "the unread body ends the connection: {answer}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path}: answered after {:?}", started.elapsed());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_keep_alive_client_is_told_when_its_unread_body_ends_the_connection() {
    // hyper closes a connection whose request body was not read; without `connection: close`
    // a pooling client sends its next request into the closed socket and gets an I/O error.
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let good = json!({"instances": [schema_example("house_price")]});
    for i in 0..40 {
        let (path, body) = match i % 4 {
            0 => ("/models/nope/predict", good.to_string()),
            1 => ("/v2/models/nope/infer", house_tensors(&[schema_example("house_price")]).to_string()),
            2 => ("/predict", good.to_string()),
            _ => ("/models/house_price/versions/9/predict", good.to_string()),
        };
        let json = i % 4 != 2 || i % 8 == 2;
        let request = client.post(app.url(path)).body(body);
        let request = request.header("content-type", if json { "application/json" } else { "text/plain" });
        let response = request.send().await.unwrap_or_else(|e| panic!("request {i} to {path} failed: {e}"));
        let status = response.status().as_u16();
        let close = response.headers().get("connection").is_some_and(|v| v == "close");
        match (i % 4, i % 8 == 2) {
            (2, true) => assert_eq!((status, close), (200, false), "a full answer keeps the connection"),
            (2, false) => assert_eq!((status, close), (415, true), "415 is answered before the body is read"),
            _ => assert_eq!((status, close), (404, true), "{path}"),
        }
    }
    // A body that was read through keeps the connection, errors included.
    let invalid = client.post(app.url("/predict")).json(&json!({"instances": [{"bedrooms": 1}]})).send().await.unwrap();
    assert_eq!(invalid.status(), 422);
    assert!(invalid.headers().get("connection").is_none());
    app.stop().await;
}
