//! The Open Inference Protocol as NVIDIA's own client speaks it (tritonclient, run by
//! tests/oip/triton_client.py from `.venv`). Behind the `external-tools` feature:
//! scripts/test.sh makes the venv.

use std::process::Command;

use crate::helpers::{repo, TestApp};

/// A client nobody here wrote: NVIDIA's tritonclient, installed into `.venv` by scripts/test.sh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged() {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/oip/requirements.txt",
        python.display()
    );
    let app = TestApp::spawn().await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let script = repo().join("tests/oip/triton_client.py");
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(host).arg(repo()).output())
        .await
        .unwrap()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks ok"), "{stdout}");
    println!("{stdout}");
    app.stop().await;
}
