//! `GET /metrics`: what the counters and histograms say after known traffic; `promtool`: that
//! Prometheus' own checker accepts the exposition (behind the `external-tools` feature).

use inferd::config::Secret;
use serde_json::json;

use crate::helpers::{assert_error, metric, schema_example, test_config, TestApp};

#[cfg(feature = "external-tools")]
mod promtool;

const HOUSE: [(&str, &str); 2] = [("model", "house_price"), ("version", "1")];

fn outcome(o: &'static str) -> [(&'static str, &'static str); 3] {
    [HOUSE[0], HOUSE[1], ("outcome", o)]
}

#[tokio::test]
async fn requests_rows_and_stages_are_counted_by_model_and_outcome() {
    let app = TestApp::spawn().await;
    let example = schema_example("house_price");
    for n in [1, 1, 3] {
        assert_eq!(app.predict(&vec![example.clone(); n]).await.status(), 200);
    }
    let mut bad = example.clone();
    bad["bedrooms"] = json!(14);
    assert_error(app.predict(&[bad]).await, 422, "validation_error").await;
    let malformed = app.client.post(app.url("/predict")).header("content-type", "application/json").body("{");
    assert_error(malformed.send().await.unwrap(), 400, "malformed_json").await;
    assert_error(app.post_json("/models/nope/predict", &json!({"instances": [{}]})).await, 404, "model_not_found")
        .await;
    assert_error(app.client.get(app.url("/nope")).send().await.unwrap(), 404, "not_found").await;

    let text = app.metrics().await;
    let get = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} in:\n{text}"))
    };
    assert_eq!(get("inferd_requests_total", &outcome("ok")), 3.0);
    assert_eq!(get("inferd_requests_total", &outcome("invalid")), 2.0, "schema violation and malformed body");
    assert_eq!(get("inferd_requests_total", &outcome("error")), 0.0);
    assert_eq!(get("inferd_request_duration_seconds_count", &HOUSE), 5.0);
    assert_eq!(get("inferd_rows_total", &HOUSE), 5.0, "warm-up rows are not counted");
    assert_eq!(get("inferd_queue_duration_seconds_count", &HOUSE), 3.0, "one job per accepted request");
    let batches = get("inferd_batch_size_count", &HOUSE);
    assert!((1.0..=3.0).contains(&batches), "{batches}");
    assert_eq!(get("inferd_batch_size_sum", &HOUSE), 5.0);
    assert_eq!(get("inferd_inference_duration_seconds_count", &HOUSE), batches);
    assert!(get("inferd_inference_duration_seconds_sum", &HOUSE) > 0.0);
    // Buckets start well below a millisecond.
    let fastest = [HOUSE[0], HOUSE[1], ("le", "0.00005")];
    assert!(metric(&text, "inferd_request_duration_seconds_bucket", &fastest).is_some(), "{text}");
    assert_eq!(get("inferd_queue_rows", &HOUSE), 0.0);
    assert_eq!(get("inferd_model_info", &HOUSE), 1.0);
    assert_eq!(get("inferd_model_info", &[("model", "house_price_linear"), ("version", "1")]), 1.0);
    assert_eq!(get("inferd_ready", &[]), 1.0);

    let http = |method: &str, route: &str, status: &str| {
        get("inferd_http_requests_total", &[("method", method), ("route", route), ("status", status)])
    };
    assert_eq!(http("POST", "/predict", "200"), 3.0);
    assert_eq!(http("POST", "/predict", "422"), 1.0);
    assert_eq!(http("POST", "/predict", "400"), 1.0);
    assert_eq!(http("POST", "/models/{name}/predict", "404"), 1.0, "labelled by template, not by raw path");
    assert_eq!(http("GET", "unmatched", "404"), 1.0);
    assert!(!text.contains("/models/nope"), "raw paths never become labels");
    assert_eq!(get("inferd_http_request_duration_seconds_count", &[("method", "POST"), ("route", "/predict")]), 5.0);

    assert!(get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(get("process_start_time_seconds", &[]) > 1.7e9);
    assert!(get("process_open_fds", &[]) > 0.0);
    assert!(metric(&text, "process_cpu_seconds_total", &[]).is_some());
    assert!(text.contains("# HELP inferd_queue_duration_seconds "), "metrics are described");
    app.stop().await;
}

#[tokio::test]
async fn timeouts_and_overload_have_their_own_outcome() {
    let mut config = test_config();
    // A long batching delay holds the lone row in the queue past the request's time limit.
    config.batching.max_delay_ms = 5000;
    config.server.request_timeout_ms = 50;
    let app = TestApp::spawn_with(config).await;
    let body = assert_error(app.predict(&[schema_example("house_price")]).await, 504, "timeout").await;
    assert!(body["error"].as_str().unwrap().contains("50 ms"), "{body}");
    let text = app.metrics().await;
    assert_eq!(metric(&text, "inferd_requests_total", &outcome("timeout")), Some(1.0), "{text}");
    app.stop().await;

    let app = std::sync::Arc::new(TestApp::spawn_with(crate::errors::tiny_queue()).await);
    let waiting = crate::errors::occupy_one_row(&app, 200).await;
    assert_error(app.predict(&vec![schema_example("house_price"); 2]).await, 503, "overloaded").await;
    assert_eq!(waiting.await.unwrap().status(), 504);
    let text = app.metrics().await;
    assert_eq!(metric(&text, "inferd_requests_total", &outcome("overloaded")), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "inferd_cancelled_rows_total", &[("model", "house_price"), ("version", "1")]),
        Some(1.0),
        "{text}"
    );
    std::sync::Arc::into_inner(app).unwrap().stop().await;
}

#[tokio::test]
async fn metrics_can_have_their_own_port_and_a_token() {
    let mut config = test_config();
    config.metrics.port = Some(0);
    config.metrics.token = Some(Secret("s3cret".into()));
    let app = TestApp::spawn_with(config).await;
    let metrics_base = app.metrics_base.clone().expect("a metrics port");
    assert_error(app.client.get(app.url("/metrics")).send().await.unwrap(), 404, "not_found").await;
    let url = format!("{metrics_base}/metrics");
    let response = app.client.get(&url).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"inferd\"");
    assert_error(response, 401, "unauthorized").await;
    assert_error(app.client.get(&url).bearer_auth("wrong").send().await.unwrap(), 401, "unauthorized").await;
    let response = app.client.get(&url).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(response.text().await.unwrap().contains("inferd_ready 1"));
    let openapi = app.get_json("/openapi.json").await;
    assert!(openapi["paths"].get("/metrics").is_none(), "not documented where not served");
    app.stop().await;

    let mut config = test_config();
    config.metrics.enabled = false;
    let app = TestApp::spawn_with(config).await;
    assert_error(app.client.get(app.url("/metrics")).send().await.unwrap(), 404, "not_found").await;
    assert_eq!(app.predict(&[schema_example("house_price")]).await.status(), 200, "serving does not need metrics");
    app.stop().await;
}
