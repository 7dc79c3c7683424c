//! schemathesis (tests/openapi/requirements.txt, in `.venv`) against the served document.
//! Behind the `external-tools` feature: scripts/test.sh makes the venv.

use std::path::Path;
use std::time::{Duration, Instant};

use super::committed;
use crate::helpers::{repo, TestApp};

/// The checks schemathesis runs: no 5xx (504 aside: tests/openapi/schemathesis.toml says why),
/// every status documented for its operation, every answer in its documented schema.
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance";
/// Left out: the operations that change what is served (repository load/unload, reload); the
/// test counts the others the same way.
const STATE_CHANGING: &str = "^/(admin/|v2/repository/models/)";
/// For the second run: path parameters naming a served model and version, so that requests
/// get past the 404 to the headers and bodies.
const SERVED: &str =
    "\n[parameters]\n\"path.name\" = \"house_price\"\n\"path.model\" = \"house_price\"\n\"path.version\" = \"1\"\n";
/// Far above a run's length (about 30 s each here), so that only a hung run trips it.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(600);

/// schemathesis (tests/openapi/requirements.txt) generates requests from the served document,
/// valid and not, for every operation but the state-changing ones: twice, first with
/// generated path parameters (mostly unknown models), then with a served model and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_undocumented_answer() {
    let schemathesis = repo().join(".venv/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/openapi/requirements.txt",
        schemathesis.display()
    );
    let settings = std::fs::read_to_string(repo().join("tests/openapi/schemathesis.toml")).unwrap();
    let app = TestApp::spawn().await;
    let url = app.url("/openapi.json");
    let doc = committed();
    let paths = doc["paths"].as_object().unwrap();
    let state_changing = |path: &str| path.starts_with("/admin/") || path.starts_with("/v2/repository/models/");
    let tested: usize =
        paths.iter().filter(|(p, _)| !state_changing(p)).map(|(_, item)| item.as_object().unwrap().len()).sum();
    for (run, config) in [("generated names", settings.clone()), ("served names", settings + SERVED)] {
        let (schemathesis, url) = (schemathesis.clone(), url.clone());
        let (ok, output) =
            tokio::task::spawn_blocking(move || run_schemathesis(&schemathesis, &config, &url)).await.unwrap();
        assert!(ok, "schemathesis ({run}) found answers the document does not describe:\n{output}");
        assert!(output.contains(&format!("Tested: {tested}\n")), "{run}: not every operation was tested:\n{output}");
    }
    app.stop().await;
}

/// Runs schemathesis against `url` with `config` in a scratch folder (it keeps a `.hypothesis`
/// database where it runs); whether it passed, and its output.
fn run_schemathesis(schemathesis: &Path, config: &str, url: &str) -> (bool, String) {
    let scratch = tempfile::tempdir().unwrap();
    let (config_file, log) = (scratch.path().join("schemathesis.toml"), scratch.path().join("output.txt"));
    std::fs::write(&config_file, config).unwrap();
    let mut child = std::process::Command::new(schemathesis)
        .arg("--config-file")
        .arg(&config_file)
        .args(["--no-color", "run", url, "--checks", SCHEMATHESIS_CHECKS, "--exclude-path-regex", STATE_CHANGING])
        // Bounded so that a run takes about half a minute; a fixed seed, so that a failure comes
        // back on the next run (and a new finding is a change, not chance).
        .args(["--max-examples", "20", "--seed", "18", "--request-timeout", "30"])
        .current_dir(scratch.path())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("schemathesis starts");
    let deadline = Instant::now() + SCHEMATHESIS_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {SCHEMATHESIS_DEADLINE:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status.success(), std::fs::read_to_string(&log).unwrap_or_default())
}
