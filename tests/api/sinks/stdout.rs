//! `sink = "stdout"`: one JSON line per logged instance on stdout, for a platform's log drain,
//! told apart from the service log by a first field `"log":"prediction"`; no files.

use std::time::Duration;

use serde_json::{json, Value};

use super::{assert_same_ids, assert_same_row, config, ok_ids, statuses, Load, SinkServer};
use crate::helpers::reference;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stdout_sink_prints_one_line_per_prediction_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("predictions");
    let config = config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        &format!("sink = \"stdout\"\ndirectory = \"{}\"\n", logs.display()),
    );
    let mut server = SinkServer::start(&config, &[]);
    let answers = Load::start(&server.base, 8, "stdout", Some(400)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 400, "every request answered 200: {:?}", statuses(&answers));

    // One request of three rows: three lines, instance 0, 1 and 2.
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    let response = reqwest::Client::new()
        .post(server.url("/predict"))
        .header("x-request-id", "stdout-three")
        .json(&json!({"instances": rows[..3]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    let stderr = server.stderr();
    assert_eq!(code, Some(0), "{stderr}");
    let lines = server.stdout_after_exit();

    let mut predictions: Vec<Value> = Vec::new();
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout holds only JSON ({e}): {line}"));
        if value.get("log").is_some() {
            assert_eq!(value["log"], "prediction", "{line}");
            assert!(line.starts_with(r#"{"log":"prediction""#), "\"log\" is the first field: {line}");
            predictions.push(value);
        } else {
            assert!(!line.contains(r#""log":"prediction""#), "a service line that looks like a prediction: {line}");
        }
    }
    let three: Vec<&Value> = predictions.iter().filter(|p| p["request_id"] == "stdout-three").collect();
    let instances: Vec<u64> = three.iter().map(|p| p["instance"].as_u64().expect("an instance number")).collect();
    assert_eq!(instances, vec![0, 1, 2], "one line per instance of a 3-row request");
    for (line, row) in three.iter().zip(&rows[..3]) {
        assert_same_row(&line["inputs"], row);
    }
    let held: Vec<String> = predictions
        .iter()
        .filter(|p| p["request_id"] != "stdout-three")
        .map(|p| p["request_id"].as_str().expect("a request id").to_owned())
        .collect();
    assert_same_ids(held, &answered, "stdout prediction lines");
    for line in &predictions {
        assert_eq!(line["model"], "house_price", "{line}");
        assert_eq!(line["version"], "1", "{line}");
        assert!(line["ts"].is_string(), "{line}");
        assert!(line["outputs"]["price"].is_f64(), "{line}");
        for field in ["batch_size", "queue_ms", "inference_ms"] {
            assert!(line[field].is_number(), "{field}: {line}");
        }
    }

    // No files: the folder is not made, or is left empty.
    let files: Vec<_> = std::fs::read_dir(&logs).into_iter().flatten().flatten().map(|e| e.path()).collect();
    assert!(files.is_empty(), "the stdout sink wrote files: {files:?}");
}

/// `redact` and `sample_rate` apply to the stdout sink as to the files: sampled-out lines are
/// counted, kept lines have the field written as "[redacted]".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_stdout_sink_applies_redact_and_sample_rate() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "shutdown_grace_seconds = 10",
        &format!(
            "sink = \"stdout\"\ndirectory = \"{}\"\nsample_rate = 0.5\nredact = [\"lotsize\"]\n",
            dir.path().join("predictions").display()
        ),
    );
    let mut server = SinkServer::start(&config, &[]);
    let answers = Load::start(&server.base, 4, "sampled", Some(200)).done().await;
    let answered = ok_ids(&answers);
    assert_eq!(answered.len(), 200, "{:?}", statuses(&answers));
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let sampled_out = crate::helpers::metric(&text, "inferd_prediction_log_dropped_total", &[("reason", "sampled_out")])
        .expect("sampled-out lines are counted") as usize;
    let (code, _) = tokio::task::block_in_place(|| server.terminate(Duration::from_secs(10 + 2)));
    assert_eq!(code, Some(0), "{}", server.stderr());
    let predictions: Vec<Value> = server
        .stdout_after_exit()
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["log"] == "prediction")
        .collect();
    assert_eq!(predictions.len() + sampled_out, 200, "every line printed or counted as sampled out");
    assert!((40..=160).contains(&predictions.len()), "about half of 200 kept: {}", predictions.len());
    for line in &predictions {
        assert!(answered.contains(&line["request_id"].as_str().unwrap().to_owned()), "{line}");
        assert_eq!(line["inputs"]["lotsize"], "[redacted]", "{line}");
        assert!(line["inputs"]["bedrooms"].is_number(), "{line}");
    }
}
