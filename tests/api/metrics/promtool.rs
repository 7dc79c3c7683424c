//! Prometheus' own checker, `promtool check metrics` (Debian package `prometheus`), on a real
//! exposition. Behind the `external-tools` feature: scripts/test.sh installs promtool.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{schema_example, TestApp};

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let app = TestApp::spawn().await;
    for _ in 0..20 {
        assert_eq!(app.predict(&[schema_example("house_price")]).await.status(), 200);
    }
    let v2 = json!({"inputs": [{"name": "lotsize", "shape": [1], "datatype": "FP32", "data": [5000.0]}]});
    let _ = app.post_json("/v2/models/house_price/infer", &v2).await;
    let text = app.metrics().await;

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with `apt-get install prometheus` (scripts/test.sh does)")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool failed:\n{report}\n---\n{text}");
    assert_eq!(report.trim(), "", "promtool reports problems:\n{report}");
    app.stop().await;
}
