//! `inferd replay` and `inferd score`, run as the real binary on the committed models.

use std::io::Write;
use std::process::Output;

use serde_json::{json, Value};

use crate::helpers::{reference, TestApp};
use crate::process::inferd;

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The prediction log of a server that answered the 32 reference rows of house_price.
async fn logged_reference_traffic() -> tempfile::TempDir {
    let app = TestApp::spawn().await;
    let rows = reference("house_price.reference.json", "onnxruntime_price").instances;
    assert_eq!(app.predict(&rows).await.status(), 200);
    app.stop().await.expect("a temporary prediction log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_compares_every_logged_answer_and_fails_on_drift() {
    let logs = logged_reference_traffic().await;
    let out = inferd().arg("replay").arg(logs.path()).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("replayed 32 instances of house_price"), "{stdout}");
    assert!(stdout.contains("identical         32"), "{stdout}");

    // The same lines, three of them with a price 1% off, gzipped.
    let file = std::fs::read_dir(logs.path()).unwrap().next().unwrap().unwrap().path();
    let mut lines: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in lines.iter_mut().take(3) {
        let price = line["outputs"]["price"].as_f64().unwrap();
        line["outputs"]["price"] = json!(price * 1.01);
    }
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("drifted.jsonl.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    for line in &lines {
        writeln!(encoder, "{line}").unwrap();
    }
    writeln!(encoder, "a line that is not a log line").unwrap();
    encoder.finish().unwrap();

    let out = inferd().args(["replay", "--format", "json"]).arg(&gz).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "differences fail the run: {stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!((report["replayed"].as_u64(), report["identical"].as_u64()), (Some(32), Some(29)), "{report}");
    assert_eq!((report["different"].as_u64(), report["unreadable"].as_u64()), (Some(3), Some(1)), "{report}");
    let worst = report["worst"].as_array().unwrap();
    assert_eq!(worst.len(), 3, "{report}");
    assert_eq!(worst[0]["output"], "price");
    assert_eq!(worst[0]["request_id"], lines[0]["request_id"]);
    let relative = report["outputs"]["price"]["max_relative"].as_f64().unwrap();
    assert!((0.0098..0.0100).contains(&relative), "1% over the replayed price: {relative}");
    assert!(report["rows_per_second"].as_f64().unwrap() > 0.0);

    // Within a 2% tolerance: passes; outside the time range or of another model: nothing.
    let out = inferd().args(["replay", "--relative", "0.02", "--format", "json"]).arg(&gz).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["within_tolerance"], 3);
    let glob = format!("{}/*.gz", dir.path().display());
    let out = inferd().args(["replay", "--since", "2999-01-01T00:00:00Z", "--format", "json", &glob]).output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["lines"], 0, "{report}");
    let out = inferd().args(["replay", "--model", "house_price_linear", "--format", "json", &glob]).output().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["lines"], 0);

    let out = inferd().args(["replay", "--version", "9"]).arg(&gz).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("version '9' is not in runtime.toml"), "{stderr}");
}

#[test]
fn score_writes_predictions_in_order_and_reports_bad_rows_by_line() {
    let reference = reference("house_price.reference.json", "onnxruntime_price");
    let dir = tempfile::tempdir().unwrap();
    let mut jsonl: Vec<String> = reference.instances.iter().map(Value::to_string).collect();
    jsonl.insert(3, r#"{"lotsize": 5000, "bedrooms": 99}"#.into());
    jsonl.insert(5, "not json".into());
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, jsonl.join("\n") + "\n").unwrap();
    let out = inferd().arg("score").arg("--input").arg(&input).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "refused rows fail the run: {stderr}");
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(answers.len(), 32, "{stdout}");
    let lines: Vec<u64> = answers.iter().map(|a| a["line"].as_u64().unwrap()).collect();
    let expected_lines: Vec<u64> = (1..=34).filter(|l| ![4, 6].contains(l)).collect();
    assert_eq!(lines, expected_lines, "input order, by line");
    for (answer, want) in answers.iter().zip(&reference.expected) {
        let got = answer["outputs"]["price"].as_f64().unwrap();
        assert!((got - want).abs() <= want.abs() * 1e-5, "{got} vs {want}");
    }
    let line4 = stderr.lines().find(|l| l.starts_with("line 4: ")).expect("line 4 reported");
    assert!(line4.contains("/bedrooms: must be <= 10, got 99") && line4.contains("/bathrms: is required"), "{line4}");
    assert!(stderr.contains("line 6: not JSON"), "{stderr}");
    assert!(stderr.contains("32 rows scored, 2 refused"), "{stderr}");

    // CSV in (typed by the schema), CSV out.
    let fields: Vec<String> = reference.instances[0].as_object().unwrap().keys().cloned().collect();
    let mut csv = fields.join(",") + "\n";
    for row in &reference.instances[..4] {
        let cells: Vec<String> = fields
            .iter()
            .map(|f| match &row[f] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        csv += &(cells.join(",") + "\n");
    }
    let input = dir.path().join("rows.csv");
    std::fs::write(&input, csv).unwrap();
    let output = dir.path().join("out.csv");
    let out = inferd().arg("score").arg("--input").arg(&input).arg("--output").arg(&output).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let written = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows[0], "line,price");
    assert_eq!(rows.len(), 5, "{written}");
    assert!(rows[1].starts_with("2,"), "the header is line 1: {written}");
}
