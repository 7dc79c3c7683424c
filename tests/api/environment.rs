//! Faults of the environment, on the real binary: a stdout nobody reads, a prediction log on a
//! disk that hangs, a configuration file that never finishes reading. None may hold a request
//! past its deadline or the process past its grace period.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{eventually, metric, repo, schema_example, send_signal};
use crate::process::inferd;

/// How long the binary may take to log "ready".
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The binary started with a config file, its stdout read until "ready" and then left unread
/// unless a test reads it; stderr is collected.
struct Proc {
    child: Child,
    base: String,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn start(config: &Path) -> Self {
        let mut child = inferd()
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut base = None;
        let mut line = String::new();
        // The reads below block: a watchdog kills a server that is not ready in time, which
        // ends them.
        let (ready, not_ready) = std::sync::mpsc::channel::<()>();
        let pid = child.id() as libc::pid_t;
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = not_ready.recv_timeout(READY_WITHIN) {
                // SAFETY: kill(2) touches no memory; the child is reaped only after `ready` is
                // sent or dropped, so its id is still its own.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("the server ended before it was ready (killed after {READY_WITHIN:?}): {stderr}");
            }
            let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
            match value["message"].as_str() {
                Some("listening") => base = Some(format!("http://{}", value["addr"].as_str().unwrap())),
                Some("ready") => break,
                _ => {}
            }
        }
        let _ = ready.send(());
        Self { child, base: base.expect("listening is logged before ready"), stdout: Some(stdout) }
    }

    /// Reads stdout from now on (and throws it away), for tests about something else.
    fn drain_stdout(&mut self) {
        let mut stdout = self.stdout.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for the exit, at most `within`; returns the exit code, the time
    /// it took and what the process wrote on stderr.
    fn terminate(&mut self, within: Duration) -> (Option<i32>, Duration, String) {
        let sent = Instant::now();
        send_signal(&self.child, libc::SIGTERM);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(sent.elapsed() < within, "the process is still alive {within:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = sent.elapsed();
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (code, took, stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config serving house_price from the repository, plus `extra` sections.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "[[models]]\nname = \"house_price\"\npath = \"{}\"\nschema = \"{}\"\n\n{extra}\n",
        repo().join("models/house_price.onnx").display(),
        repo().join("schemas/house_price.json").display(),
    );
    let path = dir.join("inferd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in a temporary path");
    // SAFETY: c_path is a NUL-terminated string that outlives the call.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o666) };
    assert_eq!(made, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

async fn metrics(client: &reqwest::Client, server: &Proc) -> String {
    client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stdout_nobody_reads_drops_log_lines_and_never_holds_a_request_or_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "[logging]\nbuffer_lines = 64\n[server]\nshutdown_grace_seconds = 3\n[prediction_log]\ndirectory = \"{}\"\n",
            dir.path().join("predictions").display()
        ),
    );
    let mut server = Proc::start(&config);
    // From here on nobody reads stdout: the pipe's buffer (64 KiB) fills, then the log's queue.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut slowest = Duration::ZERO;
    for round in 0..20 {
        let requests = (0..100).map(|i| {
            let client = client.clone();
            // Unmatched routes are access-logged, one line each (about 400 bytes).
            let url = server.url(&format!("/no-such-route/{round}/{i}"));
            async move {
                let sent = Instant::now();
                let status = client.get(url).send().await.expect("answered while stdout is not read").status();
                (status, sent.elapsed())
            }
        });
        for (status, took) in futures_join_all(requests).await {
            assert_eq!(status, 404);
            slowest = slowest.max(took);
        }
    }
    let sent = Instant::now();
    let health = client.get(server.url("/health")).send().await.expect("/health answers").status();
    assert_eq!(health, 200);
    println!(
        "2000 access-logged requests with stdout unread: slowest {slowest:?}; /health then took {:?}",
        sent.elapsed()
    );
    eventually(Duration::from_secs(10), "the access log's drops are counted", || async {
        let text = metrics(&client, &server).await;
        metric(&text, "inferd_log_lines_dropped_total", &[("log", "access")]).is_some_and(|n| n > 0.0)
    })
    .await;

    let (code, took, stderr) = server.terminate(Duration::from_secs(3 + 2));
    println!("exit {took:?} after SIGTERM with stdout unread");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the service log was not flushed"), "said on stderr: {stderr}");
    assert!(stderr.contains("Lines dropped: access "), "{stderr}");
    drop(server.stdout.take());
}

/// `join_all` without a futures dependency: every future spawned, then awaited in order.
async fn futures_join_all<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A server whose prediction log file is a FIFO nobody reads: writes go through until the
/// pipe's 64 KiB buffer is full, then hang, as on a hung NFS or FUSE mount.
fn stuck_log_server(dir: &Path) -> Proc {
    let logs = dir.join("predictions");
    std::fs::create_dir_all(&logs).unwrap();
    mkfifo(&logs.join("predictions.jsonl"));
    let config = config(
        dir,
        &format!(
            "[server]\nshutdown_grace_seconds = 3\n[prediction_log]\ndirectory = \"{}\"\nrotation = \"never\"\n\
             buffer_requests = 2\nstall_ms = 300\n",
            logs.display()
        ),
    );
    let mut server = Proc::start(&config);
    server.drain_stdout();
    server
}

/// Predicts until the log refuses one (it must, once the FIFO is full); every answer comes
/// within the 1 s deadline the client asked for, plus a margin.
async fn predict_until_refused(client: &reqwest::Client, server: &Proc) -> Value {
    let body = json!({"instances": [schema_example("house_price")]});
    for _ in 0..2000 {
        let sent = Instant::now();
        let response = client
            .post(server.url("/predict"))
            .header("x-request-timeout-ms", "1000")
            .json(&body)
            .send()
            .await
            .expect("answered while the prediction log hangs");
        let took = sent.elapsed();
        assert!(took < Duration::from_secs(3), "an answer past the request's deadline: {took:?}");
        match response.status().as_u16() {
            200 => continue,
            503 => {
                assert_eq!(response.headers()["retry-after"], "5");
                let error: Value = response.json().await.unwrap();
                assert_eq!(error["error_type"], "prediction_log_unavailable", "{error}");
                return error;
            }
            other => panic!("unexpected status {other}: {}", response.text().await.unwrap()),
        }
    }
    panic!("2000 predictions answered 200 while their log lines could not be written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prediction_log_that_hangs_is_a_503_and_an_unready_instance_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = stuck_log_server(dir.path());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let started = Instant::now();
    predict_until_refused(&client, &server).await;
    println!("first 503 after {:?}", started.elapsed());
    eventually(Duration::from_secs(5), "/ready says 503 while the log is stalled", || async {
        let response = client.get(server.url("/ready")).send().await.unwrap();
        response.status() == 503
            && response.json::<Value>().await.unwrap()["error_type"] == "prediction_log_unavailable"
    })
    .await;
    // Refused at once now, before any model time is spent.
    let sent = Instant::now();
    let response = client
        .post(server.url("/predict"))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(sent.elapsed() < Duration::from_millis(500), "refused at once: {:?}", sent.elapsed());
    eventually(Duration::from_secs(5), "the stall is in the metrics", || async {
        let text = metrics(&client, &server).await;
        metric(&text, "inferd_prediction_log_stalled", &[]) == Some(1.0)
            && metric(&text, "inferd_prediction_log_stalls_total", &[]) == Some(1.0)
            && metric(&text, "inferd_prediction_log_dropped_total", &[("reason", "unavailable")])
                .is_some_and(|n| n >= 1.0)
    })
    .await;

    // SIGTERM with the writer stuck: the process ends within its grace period and says how
    // many answered predictions' lines it could not write.
    let (code, took, stderr) = server.terminate(Duration::from_secs(3 + 2));
    println!("exit {took:?} after SIGTERM with the prediction log stuck");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("prediction log line(s) could not be written"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prediction_log_that_writes_again_makes_the_instance_ready_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = stuck_log_server(dir.path());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    predict_until_refused(&client, &server).await;
    eventually(Duration::from_secs(5), "/ready says 503", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 503
    })
    .await;
    // The disk comes back: the FIFO is read, and what was queued is written.
    let fifo = dir.path().join("predictions/predictions.jsonl");
    let reader = std::thread::spawn(move || {
        let mut lines = 0;
        for line in BufReader::new(std::fs::File::open(fifo).unwrap()).lines() {
            serde_json::from_str::<Value>(&line.unwrap()).expect("whole JSON lines");
            lines += 1;
        }
        lines
    });
    eventually(Duration::from_secs(10), "/ready says 200 again", || async {
        client.get(server.url("/ready")).send().await.unwrap().status() == 200
    })
    .await;
    let response = client
        .post(server.url("/predict"))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(5), "the metrics say it writes again", || async {
        metric(&metrics(&client, &server).await, "inferd_prediction_log_stalled", &[]) == Some(0.0)
    })
    .await;
    drop(server);
    // The server is gone: the reader sees the end of the FIFO.
    assert!(reader.join().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_stuck_reading_a_file_fails_in_time_and_holds_neither_the_lock_nor_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "[server]\nshutdown_grace_seconds = 3\n[reload]\ntimeout_ms = 2000\n[prediction_log]\ndirectory = \"{}\"\n",
            dir.path().join("predictions").display()
        ),
    );
    let mut server = Proc::start(&config);
    server.drain_stdout();
    // The configuration becomes a FIFO nobody writes: opening it for reading never returns.
    std::fs::remove_file(&config).unwrap();
    mkfifo(&config);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let sent = Instant::now();
    let response = client.post(server.url("/admin/reload")).send().await.expect("the reload is answered");
    assert!(sent.elapsed() < Duration::from_secs(2 + 3), "answered at its timeout: {:?}", sent.elapsed());
    assert_eq!(response.status(), 409);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error_type"], "reload_failed");
    let message = error["error"].as_str().unwrap();
    assert!(message.contains(&format!("still reading {}", config.display())), "names the file: {message}");

    // The lock is free: the next reload and a repository unload are answered at once, told
    // that the earlier reload's thread is still stuck.
    for path in ["/admin/reload", "/v2/repository/models/house_price/unload"] {
        let sent = Instant::now();
        let response = client.post(server.url(path)).send().await.expect("answered");
        assert!(sent.elapsed() < Duration::from_secs(1), "{path}: {:?}", sent.elapsed());
        assert_eq!(response.status(), 409, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("is still reading"), "{path}: {text}");
    }
    // Predictions go on with the models loaded before.
    let response = client
        .post(server.url("/predict"))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (code, took, stderr) = server.terminate(Duration::from_secs(3 + 2));
    println!("exit {took:?} after SIGTERM with a reload stuck on a FIFO");
    assert_eq!(code, Some(0), "{stderr}");
}
