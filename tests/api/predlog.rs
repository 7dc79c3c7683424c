//! The prediction log: one line per prediction, none lost, flushed by the graceful shutdown;
//! only whole lines on disk, counted as written, whatever happens to the disk or the folder.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferd::config::Rotation;

use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::helpers::{house_tensors, metric, reference, test_config, TestApp};

#[cfg(feature = "external-tools")]
mod tmpfs;

/// Every line of every file in the folder, parsed.
fn read_lines(dir: &Path) -> Vec<Value> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("log folder exists") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with("predictions.") && name.ends_with(".jsonl"), "{name}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            lines.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("unparseable line ({e}): {line}")));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_concurrent_predictions_give_as_many_lines() {
    let mut config = test_config();
    // A small buffer makes requests wait for the writer: the lossless path under pressure.
    config.prediction_log.buffer_requests = 4;
    let app = Arc::new(TestApp::spawn_with(config).await);
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    let requests = 3000;
    let in_flight = Arc::new(Semaphore::new(256));
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let (app, in_flight) = (app.clone(), in_flight.clone());
            // Requests carry 1 to 3 instances; every fifth goes through the v2 protocol.
            let instances: Vec<Value> = (0..1 + i % 3).map(|k| rows[(i + k) % rows.len()].clone()).collect();
            tokio::spawn(async move {
                let _permit = in_flight.acquire().await.unwrap();
                let id = format!("load-{i}");
                let (path, body) = if i % 5 == 0 {
                    ("/v2/models/house_price/infer", house_tensors(&instances))
                } else {
                    ("/predict", json!({ "instances": instances }))
                };
                let response = app.client.post(app.url(path)).header("x-request-id", &id).json(&body).send().await;
                let response = response.expect("request sent");
                assert_eq!(response.status(), 200, "{id}");
                let body: Value = response.json().await.unwrap();
                let prices: Vec<f64> = if i % 5 == 0 {
                    body["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
                } else {
                    body["predictions"].as_array().unwrap().iter().map(|p| p["price"].as_f64().unwrap()).collect()
                };
                (id, instances, prices)
            })
        })
        .collect();
    let mut served = HashMap::new();
    for task in tasks {
        let (id, instances, prices) = task.await.unwrap();
        served.insert(id, (instances, prices));
    }
    let text = app.metrics().await;
    let dir = app.prediction_log_dir.clone();
    let _logs = Arc::into_inner(app).expect("all requests done").stop().await;

    let lines = read_lines(&dir);
    let predictions: usize = served.values().map(|(instances, _)| instances.len()).sum();
    assert_eq!(lines.len(), predictions, "one line per prediction, none lost, none repeated");
    let mut seen = HashMap::<String, Vec<u64>>::new();
    for line in &lines {
        let id = line["request_id"].as_str().expect("request id");
        let (instances, prices) = &served[id];
        let i = line["instance"].as_u64().unwrap() as usize;
        assert_eq!(line["inputs"], instances[i], "{id} instance {i}: its own inputs");
        assert_eq!(line["outputs"]["price"].as_f64().unwrap(), prices[i], "{id} instance {i}: the price it was sent");
        assert_eq!((line["model"].as_str(), line["version"].as_str()), (Some("house_price"), Some("1")));
        assert!(line["batch_size"].as_u64().unwrap() >= 1);
        assert!(line["queue_ms"].as_f64().unwrap() >= 0.0 && line["inference_ms"].as_f64().unwrap() > 0.0);
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        seen.entry(id.to_owned()).or_default().push(i as u64);
    }
    for (id, (instances, _)) in &served {
        let mut got = seen.remove(id).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (0..instances.len() as u64).collect::<Vec<_>>(), "{id}");
    }
    // Scraped before the shutdown, so the counter may trail the lines still being written.
    let written = metric(&text, "inferd_prediction_log_lines_total", &[]).unwrap();
    assert!(written <= predictions as f64, "{written}");
    println!("{requests} requests, {predictions} predictions, {} lines", lines.len());
}

#[tokio::test]
async fn redacted_fields_are_masked_and_sampling_is_counted() {
    let mut config = test_config();
    config.prediction_log.redact = vec!["lotsize".into(), "price".into()];
    let app = TestApp::spawn_with(config).await;
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    assert_eq!(app.predict(&rows[..2]).await.status(), 200);
    let dir = app.prediction_log_dir.clone();
    let _logs = app.stop().await;
    let lines = read_lines(&dir);
    assert_eq!(lines.len(), 2);
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(line["inputs"]["lotsize"], "[redacted]");
        assert_eq!(line["outputs"]["price"], "[redacted]");
        assert_eq!(line["inputs"]["bedrooms"], row["bedrooms"], "other fields are kept");
    }

    let mut config = test_config();
    config.prediction_log.sample_rate = 0.5;
    let app = TestApp::spawn_with(config).await;
    let total = 200;
    for chunk in rows.iter().cycle().take(total).collect::<Vec<_>>().chunks(10) {
        let chunk: Vec<Value> = chunk.iter().map(|v| (*v).clone()).collect();
        assert_eq!(app.predict(&chunk).await.status(), 200);
    }
    let text = app.metrics().await;
    let dir = app.prediction_log_dir.clone();
    let _logs = app.stop().await;
    let written = read_lines(&dir).len();
    let dropped = metric(&text, "inferd_prediction_log_dropped_total", &[("reason", "sampled_out")]).unwrap();
    assert_eq!(written + dropped as usize, total, "every prediction is written or counted as sampled out");
    assert!(written > 0 && written < total, "about half are kept: {written}");
}

const LINES: &str = "inferd_prediction_log_lines_total";
const DROPPED: &str = "inferd_prediction_log_dropped_total";

/// Lines written and lines dropped for write errors, once together they account for `made`
/// predictions (the writer is asynchronous); fails after 20 s with what the counters say.
async fn wait_for_accounted(app: &TestApp, made: usize) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = app.metrics().await;
        let written = metric(&text, LINES, &[]).unwrap_or(0.0) as usize;
        let dropped = metric(&text, DROPPED, &[("reason", "write_error")]).unwrap_or(0.0) as usize;
        if written + dropped == made {
            return (written, dropped);
        }
        assert!(Instant::now() < deadline, "{made} predictions made, {written} lines written, {dropped} dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn predict_as(app: &TestApp, id: &str, instances: &[Value]) {
    let body = json!({ "instances": instances });
    let response = app.client.post(app.url("/predict")).header("x-request-id", id).json(&body).send().await;
    assert_eq!(response.expect("request sent").status(), 200, "{id}");
}

fn rows(n: usize) -> Vec<Value> {
    reference("house_price.reference.json", "onnxruntime_price").instances.into_iter().cycle().take(n).collect()
}

#[tokio::test]
async fn a_deleted_folder_is_created_again_with_the_next_lines() {
    let app = TestApp::spawn().await;
    predict_as(&app, "before", &rows(3)).await;
    wait_for_accounted(&app, 3).await;
    let dir = app.prediction_log_dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    predict_as(&app, "after", &rows(2)).await;
    wait_for_accounted(&app, 5).await;
    let _logs = app.stop().await;
    let lines = read_lines(&dir);
    assert_eq!(lines.len(), 2, "the lines sent after the deletion");
    assert!(lines.iter().all(|l| l["request_id"] == "after"));
}

#[tokio::test]
async fn max_bytes_bounds_the_files_kept() {
    let mut config = test_config();
    config.prediction_log.rotation = Rotation::Minutely;
    config.prediction_log.max_files = 4;
    config.prediction_log.max_bytes = 16 * 1024;
    let app = TestApp::spawn_with(config).await;
    let batch = rows(10);
    let requests = 40;
    for i in 0..requests {
        predict_as(&app, &format!("cap-{i}"), &batch).await;
    }
    let text = app.metrics().await;
    let dir = app.prediction_log_dir.clone();
    let _logs = app.stop().await;

    let sizes: Vec<u64> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).collect();
    let total: u64 = sizes.iter().sum();
    assert!(total <= 16 * 1024, "{total} bytes in {sizes:?}");
    assert!(sizes.len() <= 4 && sizes.len() >= 2, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 4 * 1024), "each file within its share: {sizes:?}");
    let lines = read_lines(&dir);
    let last = format!("cap-{}", requests - 1);
    assert_eq!(lines.iter().filter(|l| l["request_id"] == last.as_str()).count(), batch.len(), "the newest are kept");
    let written = metric(&text, LINES, &[]).unwrap_or(0.0) as usize;
    assert!(lines.len() < written, "older lines were deleted: {} kept of {written}", lines.len());
}
