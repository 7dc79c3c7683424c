//! Tests of the real binary as a process: exit codes, start-up errors and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{repo, schema_example, send_signal};

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
    // Its own prediction log folder: the checkout's `logs/` may not be writable (another user's).
    let logs = tempfile::tempdir().unwrap();
    let out = inferd()
        .args(["--port", "0", "--host", "127.0.0.1"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .env("INFERD_PREDICTION_LOG_DIR", logs.path())
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
    pub prediction_log: tempfile::TempDir,
}

/// Starts the binary on an ephemeral port and waits for its "ready" log line.
pub(crate) fn start(extra: &[&str]) -> Server {
    start_with(extra, &[])
}

/// [`start`] with extra environment variables.
pub(crate) fn start_with(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
    let mut command = inferd();
    command.args(["serve", "--host", "127.0.0.1", "--port", "0"]).args(extra).envs(env.iter().copied());
    launch(command)
}

/// Runs `command` (a `serve`) with a fresh prediction log folder and waits for "ready".
pub(crate) fn launch(mut command: Command) -> Server {
    let prediction_log = tempfile::tempdir().unwrap();
    let mut child = command
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
    send_signal(&server.child, libc::SIGTERM);

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
    send_signal(&server.child, libc::SIGTERM);
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
    let signal = match name {
        "TERM" => libc::SIGTERM,
        "HUP" => libc::SIGHUP,
        _ => panic!("no signal {name} in these tests"),
    };
    send_signal(&server.child, signal);
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
    logged_within(server, prefix, Duration::from_secs(20)).unwrap_or_else(|| panic!("no log line starting {prefix:?}"))
}

fn logged_within(server: &Server, prefix: &str, within: Duration) -> Option<Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let line = server.logs.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).ok()?;
        if line["message"].as_str().is_some_and(|m| m.starts_with(prefix)) {
            return Some(line);
        }
    }
}

/// The first SIGHUP after "ready", sent again each second until the server says it received
/// it: the server subscribes to SIGHUP just after it logs "ready" (src/startup.rs), so one sent
/// at once can be lost.
fn first_hangup(server: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        signal(server, "HUP");
        if logged_within(server, "SIGHUP received", Duration::from_secs(1)).is_some() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no log line starting \"SIGHUP received\"");
    }
}

#[tokio::test]
async fn sighup_reloads_the_config_and_the_server_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = house_config(dir.path(), &["1"], "");
    let mut server = start(&["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    first_hangup(&server);
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

/// The binary run as an unprivileged user (nobody, when the tests run as root as CI's do), from
/// a folder any user can read: a copy of the binary, the ONNX Runtime library beside it and
/// house_price with a config, since the checkout may sit where only root can enter. Such a
/// process lacks `CAP_NET_ADMIN`, which some kernels (6.18 here) require for a socket filter
/// on a TCP socket.
fn unprivileged(dir: &std::path::Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: std::path::PathBuf| {
        let to = dir.join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        to
    };
    let bin = copy(env!("CARGO_BIN_EXE_inferd").into());
    for entry in std::fs::read_dir(repo().join(".ort")).expect("scripts/fetch-onnxruntime.sh has run") {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("libonnxruntime.so") {
            copy(path);
        }
    }
    copy(repo().join("models/house_price.onnx"));
    copy(repo().join("schemas/house_price.json"));
    let config = "[prediction_log]\nenabled = false\n[[models]]\nname = \"house_price\"\n\
                  path = \"house_price.onnx\"\nschema = \"house_price.json\"\n";
    std::fs::write(dir.join("inferd.toml"), config).unwrap();
    let mut command = Command::new(&bin);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Set in the child before exec; std also clears the supplementary groups.
        command.uid(65534).gid(65534);
    }
    command.current_dir(dir).env_remove("PORT").env_remove("INFERD_CONFIG").env("RUST_LOG", "info").args([
        "serve",
        "--config",
        "inferd.toml",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]);
    command
}

/// A client that opens a connection per `GET /health`, as fast as it can until the server is
/// gone: handshakes land at any moment, the one when the listener closes included.
async fn hammer(addr: String, tally: Arc<crate::connections::Tally>, stop: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while !stop.load(Ordering::SeqCst) {
        let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&addr)).await
        else {
            // Refused, or a SYN left unanswered while the server drains: not a lost request.
            tally.refused.fetch_add(1, Ordering::SeqCst);
            return;
        };
        let sent = stream.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        if sent.is_ok() && read.is_ok() && answer.starts_with(b"HTTP/1.1 ") {
            tally.answered.fetch_add(1, Ordering::SeqCst);
        } else {
            eprintln!("lost: sent {:?} read {:?}", sent.err(), read.err());
            tally.lost.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The two 32-client SIGTERM tests of `connections`, at once, with 32 more clients opening a
/// connection per `GET /health` as fast as they can, against the binary run without
/// privileges: no request the kernel accepted is reset, whichever way the listener is shut.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_as_an_unprivileged_user_answers_every_connection_the_kernel_accepted() {
    use crate::connections::{connection_per_request, keep_alive_client, Tally};
    use std::sync::atomic::{AtomicBool, Ordering};
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut server = launch(unprivileged(dir.path()));
        let addr = server.base.trim_start_matches("http://").to_owned();
        let body = Arc::new(json!({"instances": [schema_example("house_price")]}).to_string());
        let (per_request, keep_alive) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
        let (hammered, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
        let mut clients = Vec::new();
        for _ in 0..32 {
            clients.push(tokio::spawn(hammer(addr.clone(), hammered.clone(), stop.clone())));
            let (addr, body) = (addr.clone(), body.clone());
            clients.push(tokio::spawn(connection_per_request(
                addr.clone(),
                body.clone(),
                per_request.clone(),
                stop.clone(),
            )));
            clients.push(tokio::spawn(keep_alive_client(addr, body, keep_alive.clone())));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while per_request.answered.load(Ordering::SeqCst) < 300 || keep_alive.answered.load(Ordering::SeqCst) < 300 {
            assert!(std::time::Instant::now() < deadline, "the clients were not answered within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        signal(&server, "TERM");
        let exit = tokio::task::block_in_place(|| server.child.wait()).unwrap();
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.unwrap();
        }
        let tallies = [&per_request, &keep_alive, &hammered];
        let lost: usize = tallies.iter().map(|t| t.lost.load(Ordering::SeqCst)).sum();
        let answered: usize = tallies.iter().map(|t| t.answered.load(Ordering::SeqCst)).sum();
        assert_eq!(lost, 0, "round {round}: {lost} requests were reset or cut off ({answered} answered)");
        assert_eq!(exit.code(), Some(0));
        let mut logs = tokio::task::block_in_place(|| server.logs.iter().collect::<Vec<_>>()).into_iter();
        let gate = logs.find(|l| l["message"] == "no new connections: the listener drops new handshakes");
        let gate = gate.expect("the listener was shut before the drain")["gate"].as_str().unwrap().to_owned();
        assert!(["socket_filter", "min_ttl"].contains(&gate.as_str()), "{gate}");
    }
}

/// A figure from `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

/// 200 clients each send a complete 1 MB body at once to a model that waits a second to fill
/// its batches, and keep their connection open until all are answered. Bodies count against
/// the 32 MiB budget for as long as they are held, and each connection's read buffer is held to
/// `server.max_header_bytes`, so the server's peak RSS (its high-water mark, reset before the
/// crowd) stays within idle + 32 MiB + a few dozen KiB per connection: +49 MiB measured, the
/// bound is +72. Before, a body left the budget once read, so every body that arrived while the
/// batch waited was held outside it: +122 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_of_uploads_stays_within_the_body_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CLIENTS: usize = 200;
    const BOUND_MIB: u64 = 72;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("inferd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nmax_body_bytes_in_flight = 33554432\nrequest_timeout_ms = 60000\n\
             [prediction_log]\nenabled = false\n\
             [[models]]\nname = \"house_price\"\npath = \"{}\"\nschema = \"{}\"\n",
            repo().join("models/house_price.onnx").display(),
            repo().join("schemas/house_price.json").display(),
        ),
    )
    .unwrap();
    let mut command = inferd();
    command
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--max-delay-ms",
            "1000",
            "--max-batch-rows",
            "256",
            "--config",
        ])
        .arg(&config);
    let server = launch(command);
    let addr = server.base.trim_start_matches("http://").to_owned();
    // One row, padded with spaces to 1 MB: the whole body is read and parsed, for little work.
    let mut body = json!({"instances": [schema_example("house_price")]}).to_string().into_bytes();
    body.pop();
    body.resize(1_000_000 - 1, b' ');
    body.push(b'}');
    let mut request = format!(
        "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let request = Arc::new(request);

    let pid = server.child.id();
    assert_eq!(reqwest::get(format!("{}/health", server.base)).await.unwrap().status(), 200);
    // Resets the high-water mark to the current RSS (see proc(5), clear_refs).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let idle = status_mib(pid, "VmRSS");
    let answered = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (addr, request, answered) = (addr.clone(), request.clone(), answered.clone());
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.write_all(&request).await.unwrap();
                let mut answer = Vec::new();
                let mut chunk = [0u8; 4096];
                while !answer.ends_with(b"}") {
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "closed before the answer: {}", String::from_utf8_lossy(&answer));
                    answer.extend_from_slice(&chunk[..n]);
                }
                assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
                // Held open, as a pooling client would, until every client has its answer.
                answered.wait().await;
            })
        })
        .collect();
    answered.wait().await;
    let peak = status_mib(pid, "VmHWM");
    eprintln!("{CLIENTS} uploads of 1 MB: RSS idle {idle} MiB, peak {peak} MiB");
    for client in clients {
        client.await.unwrap();
    }
    assert!(
        peak <= idle + BOUND_MIB,
        "{CLIENTS} uploads of 1 MB took the server from {idle} MiB to {peak} MiB (bound: +{BOUND_MIB} MiB)"
    );
    // Once the clients are gone, the memory goes back to the system (not at once: the allocator
    // purges freed pages after a delay).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status_mib(pid, "VmRSS") > idle + 32 {
        assert!(
            std::time::Instant::now() < deadline,
            "RSS {} MiB 10 s after the crowd left (idle {idle} MiB, peak {peak} MiB)",
            status_mib(pid, "VmRSS")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An array where a field takes one value is only quoted in the error (100 characters), so it
/// must not be kept whole: parsed into a JSON tree, `[[0],[0],...]` costs about 20 times its
/// text (16 bodies of 600 KB took the server from 53 to 274 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misplaced_nested_arrays_cost_no_more_than_their_bodies() {
    const BODIES: usize = 16;
    const BOUND_MIB: u64 = 48;
    let server = start(&[]);
    let mut instance = schema_example("house_price");
    let nested = format!("[{}]", vec!["[0]"; 150_000].join(","));
    instance["lotsize"] = serde_json::from_str(&nested).unwrap();
    let body = serde_json::to_vec(&json!({"instances": [instance]})).unwrap();
    let pid = server.child.id();
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/health", server.base)).send().await.unwrap().status(), 200);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let idle = status_mib(pid, "VmRSS");
    let requests: Vec<_> = (0..BODIES)
        .map(|_| {
            let request = client
                .post(format!("{}/predict", server.base))
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            tokio::spawn(async move {
                let error: Value = request.await.unwrap().json().await.unwrap();
                assert_eq!(error["error_type"], "validation_error", "{error}");
                let message = error["details"][0]["message"].as_str().unwrap();
                assert!(message.starts_with("must be a number, got array [[0],[0],"), "{message}");
                assert!(message.len() < 300, "quoted, not echoed: {} bytes", message.len());
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
    let peak = status_mib(pid, "VmHWM");
    eprintln!("{BODIES} bodies of {} KB of nested arrays: RSS {idle} MiB, peak {peak} MiB", body.len() / 1000);
    assert!(peak <= idle + BOUND_MIB, "from {idle} MiB to {peak} MiB (bound: +{BOUND_MIB} MiB)");
}

/// `/v2` parameters beyond the few inferd reads are ignored, so they must not be held: a
/// 1 MiB `{"x": [[0],[0],...]}` in them cost 99 MiB as a JSON tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignored_v2_parameters_cost_no_more_than_their_bodies() {
    const BODIES: usize = 8;
    const BOUND_MIB: u64 = 48;
    let server = start(&[]);
    let nested = format!("[{}]", vec!["[0]"; 250_000].join(","));
    let body = format!(r#"{{"parameters": {{"x": {nested}}}, "inputs": []}}"#);
    let pid = server.child.id();
    let client = reqwest::Client::new();
    assert_eq!(client.get(format!("{}/health", server.base)).send().await.unwrap().status(), 200);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let idle = status_mib(pid, "VmRSS");
    for _ in 0..BODIES {
        let url = format!("{}/v2/models/house_price/infer", server.base);
        let response = client.post(url).header("content-type", "application/json").body(body.clone()).send().await;
        assert_eq!(response.unwrap().status(), 400, "no inputs: refused, after the parameters were read");
    }
    let peak = status_mib(pid, "VmHWM");
    eprintln!("{BODIES} v2 bodies of {} KB of parameters: RSS {idle} MiB, peak {peak} MiB", body.len() / 1000);
    assert!(peak <= idle + BOUND_MIB, "from {idle} MiB to {peak} MiB (bound: +{BOUND_MIB} MiB)");
}
