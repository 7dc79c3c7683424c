//! The prediction log's sinks (issue 20) on the real binary: stdout for a log drain, and, behind
//! the `external-tools` feature, PostgreSQL (a throwaway cluster from Debian's package) and S3
//! (moto in server mode, from `.venv`). Each counts the 200 answers against the records the sink
//! holds afterwards and requires them equal, request id by request id; `inferd replay` reads
//! each back.
//!
//! The servers are started from a config file, not in process, so that these tests say nothing
//! about the config's Rust types: only the documented keys (`[prediction_log] sink`, ...).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::helpers::{reference, repo, send_signal};
use crate::process::inferd;

mod file_url;
#[cfg(feature = "external-tools")]
pub(crate) mod moto;
#[cfg(feature = "external-tools")]
mod object_store;
#[cfg(feature = "external-tools")]
mod pg_cluster;
#[cfg(feature = "external-tools")]
mod postgres;
mod stdout;

/// How long the binary may take to log "ready".
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A config file serving house_price and house_price_linear from the repository, with
/// `[server]` keys `server` and the `[prediction_log]` table `prediction_log` (its keys, then
/// any sub-tables such as `[prediction_log.postgres]`).
pub(crate) fn config(dir: &Path, server: &str, prediction_log: &str) -> PathBuf {
    let model = |name: &str| {
        format!(
            "[[models]]\nname = \"{name}\"\npath = \"{}\"\nschema = \"{}\"\nversion = \"1\"\n",
            repo().join(format!("models/{name}.onnx")).display(),
            repo().join(format!("schemas/{name}.json")).display(),
        )
    };
    let text = format!(
        "[server]\n{server}\n\n[prediction_log]\n{prediction_log}\n\n{}default = true\n\n{}",
        model("house_price"),
        model("house_price_linear"),
    );
    let path = dir.join("inferd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary, serving a config file on an ephemeral port. Every stdout line is kept (a reader
/// thread drains the pipe, so a full pipe never slows the server), and so is stderr.
pub(crate) struct SinkServer {
    pub child: Child,
    pub base: String,
    lines: mpsc::Receiver<String>,
    /// The stdout lines received so far, in order.
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl SinkServer {
    /// Starts `inferd serve --config <config>` with `env` added, and waits for "ready".
    pub fn start(config: &Path, env: &[(String, String)]) -> Self {
        let mut command = inferd();
        command
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--config"])
            .arg(config)
            .env_remove("INFERD_PREDICTION_LOG_DIR")
            .env_remove("INFERD_PREDICTION_LOG_SINK")
            .env_remove("INFERD_PREDICTION_LOG_URL")
            .env_remove("DATABASE_URL");
        // The machine's own AWS settings (a profile, a CA bundle, a region) are not the test's.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = Self { child, base: String::new(), lines, seen: Vec::new(), stderr };
        let until = Instant::now() + READY_WITHIN;
        let mut base = None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let Some(line) = server.next_line(left) else {
                // Its stdout closed (it is exiting) or the time is up.
                let mut exited = server.child.try_wait().unwrap();
                let settle = Instant::now() + Duration::from_secs(2);
                while exited.is_none() && Instant::now() < until.min(settle) {
                    std::thread::sleep(Duration::from_millis(20));
                    exited = server.child.try_wait().unwrap();
                }
                let _ = server.child.kill();
                let _ = server.child.wait();
                // The stderr reader may be a moment behind the exit.
                std::thread::sleep(Duration::from_millis(100));
                match exited {
                    Some(status) => {
                        panic!("the server exited ({status}) before it was ready; stderr:\n{}", server.stderr())
                    }
                    None => panic!("the server was not ready within {READY_WITHIN:?}; stderr:\n{}", server.stderr()),
                }
            };
            let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
            match value["message"].as_str() {
                Some("listening") => base = Some(format!("http://{}", value["addr"].as_str().unwrap())),
                Some("ready") => break,
                _ => {}
            }
        }
        server.base = base.expect("listening is logged before ready");
        server
    }

    fn next_line(&mut self, within: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(within).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits at most `within` for the exit; returns the exit code and the time
    /// it took. Blocks the thread (the callers' load is over by then).
    pub fn terminate(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        send_signal(&self.child, libc::SIGTERM);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if sent.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the process was still alive {within:?} after SIGTERM; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, sent.elapsed())
    }

    /// Every stdout line, once the process has exited (the pipe is closed and read to its end).
    pub fn stdout_after_exit(mut self) -> Vec<String> {
        assert!(self.child.try_wait().unwrap().is_some(), "stdout is complete only once the process has exited");
        while self.next_line(Duration::from_secs(10)).is_some() {}
        std::mem::take(&mut self.seen)
    }
}

impl Drop for SinkServer {
    /// A test that fails midway must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer of a [`Load`].
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub id: String,
    /// 0 when no answer came (the connection failed or the client's own timeout passed).
    pub status: u16,
    // Without `external-tools`, no test here looks at the time an answer took, nor stops a
    // load that runs until stopped, nor starts a server of its own.
    #[cfg_attr(not(feature = "external-tools"), allow(dead_code))]
    pub took: Duration,
}

/// Concurrent clients, each sending 1-row `/predict` requests one after the other (a reference
/// row each, a unique `x-request-id` each) until stopped or until `total` have been sent.
pub(crate) struct Load {
    #[cfg_attr(not(feature = "external-tools"), allow(dead_code))]
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Answer>>>,
}

impl Load {
    pub fn start(base: &str, clients: usize, prefix: &str, total: Option<usize>) -> Self {
        let rows = Arc::new(reference("house_price.reference.json", "onnxruntime_price").instances);
        // Far past any deadline the tests set: an answer that does not come is a hang, and shows.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let url = format!("{base}/predict");
        let tasks = (0..clients)
            .map(|c| {
                let (client, rows, stop, sent, url) =
                    (client.clone(), rows.clone(), stop.clone(), sent.clone(), url.clone());
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed)
                            || total.is_some_and(|t| sent.fetch_add(1, Ordering::Relaxed) >= t)
                        {
                            break;
                        }
                        let id = format!("{prefix}-{c}-{n}");
                        let body = json!({"instances": [rows[(c * 7 + n) % rows.len()]]});
                        let started = Instant::now();
                        let response = client.post(&url).header("x-request-id", &id).json(&body).send().await;
                        let status = match response {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body = response.bytes().await.unwrap_or_default();
                                if status == 200 {
                                    let body: Value = serde_json::from_slice(&body).expect("a 200 answer is JSON");
                                    assert!(body["predictions"][0]["price"].is_f64(), "{body}");
                                }
                                status
                            }
                            Err(_) => 0,
                        };
                        answers.push(Answer { id, status, took: started.elapsed() });
                    }
                    answers
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops the clients (each finishes the request it is in) and returns every answer.
    #[cfg_attr(not(feature = "external-tools"), allow(dead_code))]
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        for task in self.tasks {
            answers.extend(task.await.expect("a load client panicked"));
        }
        answers
    }

    /// Waits for a load started with a `total` to send it all.
    pub async fn done(self) -> Vec<Answer> {
        let mut answers = Vec::new();
        for task in self.tasks {
            answers.extend(task.await.expect("a load client panicked"));
        }
        answers
    }
}

/// The request ids of the 200 answers, sorted.
pub(crate) fn ok_ids(answers: &[Answer]) -> Vec<String> {
    let mut ids: Vec<String> = answers.iter().filter(|a| a.status == 200).map(|a| a.id.clone()).collect();
    ids.sort();
    ids
}

/// How many answers of each status, for failure messages.
pub(crate) fn statuses(answers: &[Answer]) -> BTreeMap<u16, usize> {
    let mut count = BTreeMap::new();
    for answer in answers {
        *count.entry(answer.status).or_default() += 1;
    }
    count
}

/// Compares the request ids a sink holds with the 200 answers' (both sorted): equal, or a
/// failure naming what is missing and what is extra or repeated.
pub(crate) fn assert_same_ids(mut held: Vec<String>, answered: &[String], what: &str) {
    held.sort();
    if held == answered {
        return;
    }
    let mut repeated: Vec<&String> = held.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    repeated.dedup();
    let held_set: std::collections::BTreeSet<&String> = held.iter().collect();
    let answered_set: std::collections::BTreeSet<&String> = answered.iter().collect();
    let missing: Vec<&&String> = answered_set.difference(&held_set).take(10).collect();
    let extra: Vec<&&String> = held_set.difference(&answered_set).take(10).collect();
    panic!(
        "{what}: {} records for {} answers of 200; missing (first 10) {missing:?}, not answered 200 (first 10) \
         {extra:?}, repeated (first 10) {:?}",
        held.len(),
        answered.len(),
        &repeated[..repeated.len().min(10)],
    );
}

/// A TCP port free on the loopback at the time of asking, for a server that binds it itself
/// later (PostgreSQL, moto). Taken below the kernel's ephemeral range: a port from there (what
/// binding port 0 gives) may be taken meanwhile as the local port of any outgoing connection,
/// and the tests make thousands.
#[cfg_attr(not(feature = "external-tools"), allow(dead_code))]
pub(crate) fn free_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(32768);
    if low <= 11000 {
        return std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    loop {
        let port = fastrand::u16(10000..low);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `inferd replay <args>` with `env` added and returns its JSON report (asserting exit
/// code 0: nothing different).
pub(crate) fn replay(args: &[&str], env: &[(String, String)]) -> Value {
    let mut command = inferd();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let out = command
        .env_remove("DATABASE_URL")
        .arg("replay")
        .args(["--format", "json"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "inferd replay {args:?}:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("inferd replay {args:?}: not a JSON report ({e}):\n{stdout}\n{stderr}"))
}

/// The name of this machine, as gethostname(2) gives it.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let done = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(done, 0, "gethostname: {}", std::io::Error::last_os_error());
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A logged row holds the fields sent, numbers compared as numbers (a float input is logged
/// as the model's type sees it: 5850 may come back as 5850.0).
pub(crate) fn assert_same_row(logged: &Value, sent: &Value) {
    let (Some(logged_fields), Some(sent_fields)) = (logged.as_object(), sent.as_object()) else {
        panic!("rows are objects: logged {logged}, sent {sent}");
    };
    assert_eq!(logged_fields.len(), sent_fields.len(), "logged {logged}, sent {sent}");
    for (field, want) in sent_fields {
        let got = &logged[field];
        match (got.as_f64(), want.as_f64()) {
            (Some(got), Some(want)) => {
                assert!((got - want).abs() <= want.abs() * 1e-6, "{field}: logged {logged}, sent {sent}")
            }
            _ => assert_eq!(got, want, "{field}: logged {logged}, sent {sent}"),
        }
    }
}
