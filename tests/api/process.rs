//! Tests of the real binary as a process: exit codes, start-up errors and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{repo, schema_example};

pub(crate) fn inferd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_inferd"));
    command.current_dir(repo()).env_remove("PORT").env_remove("INFERD_CONFIG").env("RUST_LOG", "info");
    command
}

#[test]
fn a_bad_config_exits_2_with_one_readable_line() {
    let dir = std::env::temp_dir().join(format!("inferd-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[batching]\nmax_batch_rows = 0\n[[models]]\nname = \"m\"\npath = \"x.onnx\"\n").unwrap();
    let out = inferd().args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("batching.max_batch_rows: must be between 1 and 65536, got 0"), "{stderr}");

    let out = inferd().args(["--config", "does-not-exist.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("cannot read config file does-not-exist.toml"));
}

#[test]
fn a_missing_runtime_library_is_one_clear_error_not_a_panic() {
    let out = inferd()
        .args(["--port", "0", "--host", "127.0.0.1"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("ONNX Runtime library not found"), "{stderr}");
    assert!(stderr.contains("scripts/fetch-onnxruntime.sh"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

pub(crate) struct Server {
    pub child: Child,
    pub base: String,
    pub logs: std::sync::mpsc::Receiver<Value>,
    prediction_log: tempfile::TempDir,
}

/// Starts the binary on an ephemeral port and waits for its "ready" log line.
pub(crate) fn start(extra: &[&str]) -> Server {
    start_with(extra, &[])
}

/// [`start`] with extra environment variables.
pub(crate) fn start_with(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
    let prediction_log = tempfile::tempdir().unwrap();
    let mut child = inferd()
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .envs(env.iter().copied())
        .env("INFERD_PREDICTION_LOG_DIR", prediction_log.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let (tx, logs) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });
    let mut base = None;
    loop {
        let line = logs.recv_timeout(Duration::from_secs(60)).expect("server logs until ready");
        match line["message"].as_str() {
            Some("listening") => base = Some(format!("http://{}", line["addr"].as_str().unwrap())),
            Some("ready") => break,
            _ => {}
        }
    }
    Server { child, base: base.expect("listening is logged before ready"), logs, prediction_log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_every_accepted_request_then_exits_0() {
    // A long batching delay keeps the requests queued while the signal arrives.
    let mut server = start(&["--max-delay-ms", "5000", "--max-batch-rows", "64"]);
    let client = reqwest::Client::new();
    let base = Arc::new(server.base.clone());
    let clients = 40;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{base}/predict"))
                    .header("x-request-id", format!("term-{i}"))
                    .json(&json!({"instances": [schema_example("house_price")]}))
                    .send()
                    .await
            })
        })
        .collect();

    // Wait until every request is queued (the delay holds them), then signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info: Value = client.get(format!("{base}/models/house_price")).send().await.unwrap().json().await.unwrap();
        if info["queued_rows"] == clients {
            break;
        }
        assert_eq!(info["stats"]["batches"], 0, "a batch ran before all requests were queued: {info}");
        assert!(std::time::Instant::now() < deadline, "requests never all queued: {info}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());

    for task in tasks {
        let response = task.await.unwrap().expect("accepted request is answered");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body["predictions"][0]["price"].as_f64().is_some());
    }
    let exit = tokio::task::block_in_place(|| server.child.wait()).unwrap();
    assert_eq!(exit.code(), Some(0));
    let messages: Vec<String> =
        server.logs.try_iter().filter_map(|l| l["message"].as_str().map(str::to_owned)).collect();
    assert!(messages.iter().any(|m| m == "SIGTERM received"), "{messages:?}");
    assert!(messages.iter().any(|m| m == "stopped"), "{messages:?}");

    // Flushed before exit: one line per prediction served, each naming its request.
    let mut ids: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(server.prediction_log.path()).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            let line: Value = serde_json::from_str(line).expect("JSON line");
            ids.push(line["request_id"].as_str().unwrap().to_owned());
        }
    }
    ids.sort();
    let mut want: Vec<String> = (0..clients).map(|i| format!("term-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn service_logs_tie_each_request_together() {
    // The batching delay makes every prediction slower than the warning threshold.
    let mut server = start(&["--max-delay-ms", "60", "--slow-request-ms", "30"]);
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("{}/predict", server.base))
        .header("x-request-id", "trace-ok")
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client
        .post(format!("{}/models/house_price/predict", server.base))
        .header("x-request-id", "trace-bad")
        .json(&json!({"instances": [{"bedrooms": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await.unwrap()["request_id"], "trace-bad");
    for (path, id) in [("/health", "trace-health"), ("/ready", "trace-ready"), ("/metrics", "trace-metrics")] {
        let probe = client.get(format!("{}{path}", server.base)).header("x-request-id", id).send().await.unwrap();
        assert_eq!(probe.status(), 200);
    }
    // A graceful stop flushes the log writer; every line is in by the time stdout closes.
    assert!(Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap().success());
    assert_eq!(server.child.wait().unwrap().code(), Some(0));

    let lines: Vec<Value> = server.logs.iter().collect();
    // The request's span, and so its id, is in every line logged while serving it.
    let of = |id: &str| -> Vec<&Value> { lines.iter().filter(|l| l["span"]["request_id"] == id).collect() };
    let access = |id: &str| -> Value {
        let access: Vec<&Value> = of(id).into_iter().filter(|l| l["message"] == "request").collect();
        assert_eq!(access.len(), 1, "one access line per request: {lines:?}");
        access[0].clone()
    };
    let line = access("trace-ok");
    assert_eq!((line["level"].as_str(), line["route"].as_str()), (Some("INFO"), Some("/predict")));
    assert_eq!((line["status"].as_u64(), line["rows"].as_u64()), (Some(200), Some(1)));
    assert_eq!((line["model"].as_str(), line["version"].as_str()), (Some("house_price"), Some("1")));
    assert!(line["latency_ms"].as_f64().unwrap() >= 60.0, "{line}");
    let slow: Vec<&Value> = of("trace-ok").into_iter().filter(|l| l["message"] == "slow request").collect();
    assert_eq!(slow.len(), 1, "{lines:?}");
    assert_eq!(slow[0]["level"], "WARN");
    assert!(slow[0]["queue_ms"].as_f64().unwrap() >= 50.0, "the wait for a batch shows: {}", slow[0]);
    assert!(slow[0]["inference_ms"].as_f64().unwrap() > 0.0, "{}", slow[0]);
    assert!(slow[0]["other_ms"].as_f64().is_some(), "{}", slow[0]);

    // Probes and scrapes that succeed are not access-logged (`logging.log_probes` is off).
    for id in ["trace-health", "trace-ready", "trace-metrics"] {
        assert!(of(id).iter().all(|l| l["message"] != "request"), "{id} was access-logged: {lines:?}");
    }
    let line = access("trace-bad");
    assert_eq!((line["route"].as_str(), line["status"].as_u64()), (Some("/models/{name}/predict"), Some(422)));
    assert!(of("trace-bad").iter().all(|l| l["message"] != "slow request"), "rejected before queueing");
    // Lines outside any request (start-up, shutdown) are the only ones without an id.
    for line in &lines {
        let message = line["message"].as_str().unwrap_or_default();
        if ["request", "slow request"].contains(&message) {
            assert!(line["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        }
    }
}

impl Drop for Server {
    /// A test that fails midway must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn signal(server: &Server, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &server.child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// A config file serving house_price at `versions` (the last is the default version).
fn house_config(dir: &std::path::Path, versions: &[&str], extra: &str) -> std::path::PathBuf {
    let mut text = String::new();
    for (i, version) in versions.iter().enumerate() {
        text += &format!(
            "[[models]]\nname = \"house_price\"\nversion = \"{version}\"\npath = \"{}\"\nschema = \"{}\"\n\
             default_version = {}\n{extra}\n",
            repo().join("models/house_price.onnx").display(),
            repo().join("schemas/house_price.json").display(),
            i + 1 == versions.len(),
        );
    }
    let path = dir.join("inferd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits for a log line whose message starts with `prefix`.
fn logged(server: &Server, prefix: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line = server.logs.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
        let line = line.unwrap_or_else(|_| panic!("no log line starting {prefix:?}"));
        if line["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
            return line;
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_config_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = house_config(dir.path(), &["1"], "");
    let mut server = start(&["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    signal(&server, "HUP");
    logged(&server, "SIGHUP received");
    logged(&server, "reload: the models are unchanged");

    house_config(dir.path(), &["1", "2"], "");
    signal(&server, "HUP");
    let line = logged(&server, "reloaded");
    assert_eq!(line["trigger"], "sighup", "{line}");
    let answer: Value = client
        .post(format!("{}/models/house_price/predict", server.base))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .expect("still serving after SIGHUP")
        .json()
        .await
        .unwrap();
    assert_eq!(answer["version"], "2", "{answer}");

    // A config that no longer loads: logged, and the server keeps what it had.
    std::fs::write(&config, "[[models]]\nname = \"house_price\"\npath = \"/nonexistent.onnx\"\n").unwrap();
    signal(&server, "HUP");
    let line = logged(&server, "reload refused");
    assert!(line["error"].as_str().unwrap().contains("does not exist"), "{line}");
    let status = client.get(format!("{}/models/house_price/versions/2", server.base)).send().await.unwrap().status();
    assert_eq!(status, 200);
    signal(&server, "TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0), "SIGHUP did not end the process; SIGTERM did, cleanly");
}

#[test]
fn inferd_check_passes_the_committed_config_and_names_each_problem() {
    let out = inferd().arg("check").output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("ok: model 'house_price' version '1' (golden "), "{stdout}");
    assert!(stdout.contains("2 model version(s) ready to serve"), "{stdout}");

    // Two cases drifted by 1%: two lines, each naming case, output, expected and got.
    let dir = tempfile::tempdir().unwrap();
    let mut golden: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("schemas/house_price.golden.json")).unwrap())
            .unwrap();
    for case in [4, 9] {
        let price = &mut golden["cases"][case]["outputs"]["price"];
        *price = json!(price.as_f64().unwrap() * 1.01);
    }
    let file = dir.path().join("drifted.golden.json");
    std::fs::write(&file, golden.to_string()).unwrap();
    let config = house_config(dir.path(), &["1"], &format!("golden = \"{}\"", file.display()));
    let out = inferd().args(["check", "--config"]).arg(&config).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let problems: Vec<&str> = stdout.lines().filter(|l| l.starts_with("problem: ")).collect();
    assert_eq!(problems.len(), 2, "{stdout}");
    assert!(problems[0].contains("case 4, output 'price': expected "), "{stdout}");
    assert!(problems[1].contains("case 9, output 'price': expected "), "{stdout}");
    assert!(problems[0].contains(", got "), "{stdout}");

    let out = inferd().args(["check", "--config", "does-not-exist.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_soft_open_files_limit_is_raised_and_stdout_is_json_only() {
    use std::os::unix::process::CommandExt;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert!(hard > 256, "this test needs a hard open-files limit above 256, got {hard}");
    let logs = tempfile::tempdir().unwrap();
    let mut command = inferd();
    command
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        // A folder that does not exist yet: creating it must not print anything but JSON.
        .env("INFERD_PREDICTION_LOG_DIR", logs.path().join("new"))
        .stdout(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            rlimit::setrlimit(rlimit::Resource::NOFILE, 256, rlimit::getrlimit(rlimit::Resource::NOFILE)?.1)
        });
    }
    let mut child = command.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut limit = None;
    for line in stdout.lines().map_while(Result::ok) {
        let line: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout holds only JSON ({e}): {line}"));
        if line["message"] == "starting" {
            limit = line["open_files_limit"].as_u64();
        }
        if line["message"] == "listening" {
            assert!(line["max_connections"].as_u64().unwrap() > 256 - 128, "{line}");
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(limit, Some(hard), "started under a soft limit of 256");
}
