//! Models named by URL (issue 21): fetched from S3 (moto's server) and from an HTTPS server
//! with a private CA, cached by hash so that a restart fetches nothing, refetched when the
//! object changes, and refused when they are not the file their `sha256` pins.

#![cfg_attr(not(feature = "external-tools"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{repo, schema_example};
use crate::process::inferd;
use crate::sinks::SinkServer;

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("models").join(name)).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A config serving one model from `path` (a URL), its schema from the repository, with the
/// cache in `dir`.
fn config(dir: &Path, path: &str, pin: Option<&str>) -> PathBuf {
    let pin = pin.map_or(String::new(), |p| format!("sha256 = \"{p}\"\n"));
    let text = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = 0\n\n[prediction_log]\ndirectory = \"{}\"\n\n[model_store]\ncache_dir = \"cache\"\n\n\
         [[models]]\nname = \"house_price\"\npath = \"{path}\"\nschema = \"{}\"\n{pin}",
        dir.join("logs").display(),
        repo().join("schemas/house_price.json").display(),
    );
    let file = dir.join("inferd.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Every stdout line of a server stopped by SIGTERM, as JSON.
fn stop(mut server: SinkServer) -> Vec<Value> {
    let (code, _) = server.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    server.stdout_after_exit().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn events<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

async fn predicts(server: &SinkServer) -> f64 {
    let body = json!({"instances": [schema_example("house_price")]});
    let answer = reqwest::Client::new().post(server.url("/predict")).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    answer["predictions"][0]["price"].as_f64().unwrap()
}

/// Runs `serve --config FILE` expecting it to refuse to start; returns stderr.
fn refused_start(config: &Path, env: &[(String, String)]) -> String {
    let out = inferd()
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("INFERD_PREDICTION_LOG_DIR")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    stderr
}

#[cfg(feature = "external-tools")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_in_s3_is_fetched_once_cached_refetched_when_changed_and_checked_against_its_pin() {
    let moto = crate::sinks::moto::Moto::start();
    moto.create_bucket("models").await;
    let gbr = model_bytes("house_price.onnx");
    moto.put("models", "house/model.onnx", gbr.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = "s3://models/house/model.onnx";
    let env = moto.env();

    // First start: fetched whole; second: the object is unchanged, nothing is fetched.
    let first = SinkServer::start(&config(dir.path(), url, None), &env);
    let price = predicts(&first).await;
    let lines = stop(first);
    let fetched = events(&lines, "model fetched");
    assert_eq!(fetched.len(), 1, "{lines:?}");
    assert_eq!(fetched[0]["fetched_bytes"], gbr.len() as u64);
    assert_eq!(fetched[0]["sha256"], sha256(&gbr));
    assert!(dir.path().join("cache/sha256").join(sha256(&gbr)).is_file());
    let second = SinkServer::start(&config(dir.path(), url, None), &env);
    assert_eq!(predicts(&second).await, price);
    let metrics = reqwest::get(second.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        !metrics.lines().any(|l| l.starts_with("inferd_model_fetched_bytes_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let lines = stop(second);
    assert!(events(&lines, "model fetched").is_empty(), "{lines:?}");
    assert_eq!(events(&lines, "model: unchanged since fetched").len(), 1, "{lines:?}");

    // A reload notices the object changed (another model, another answer), and loads it.
    let server = SinkServer::start(&config(dir.path(), url, None), &env);
    let client = reqwest::Client::new();
    // The same graph with a field ONNX does not define appended (field 1000, varint 1), which
    // protobuf readers skip: other bytes, the same answers.
    let changed = [gbr.clone(), vec![0xC0, 0x3E, 0x01]].concat();
    moto.put("models", "house/model.onnx", changed.clone()).await;
    let report = client.post(server.url("/admin/reload")).send().await.unwrap();
    assert_eq!(report.status(), 200);
    let report: Value = report.json().await.unwrap();
    assert_eq!(report["models"][0]["result"], "loaded", "{report}");
    let info: Value = client.get(server.url("/models/house_price")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["files"]["model_sha256"], sha256(&changed), "{info}");

    // A pin the object does not match: the reload is refused (409) naming both hashes, and
    // the version served stays.
    let wrong = "0".repeat(64);
    config(dir.path(), url, Some(&wrong));
    let refused = client.post(server.url("/admin/reload")).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    let text = refused.text().await.unwrap();
    assert!(text.contains(&format!("expected {wrong}, got {}", sha256(&changed))), "{text}");
    let info: Value = client.get(server.url("/models/house_price")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["files"]["model_sha256"], sha256(&changed), "{info}");
    assert_eq!(predicts(&server).await, price);
    stop(server);

    // At start, the same pin is exit 2 with the same message.
    let stderr = refused_start(&config(dir.path(), url, Some(&wrong)), &env);
    assert!(stderr.contains(&format!("sha256 mismatch: expected {wrong}, got {}", sha256(&changed))), "{stderr}");

    // A pin already in the cache is served without asking the store: moto is gone.
    drop(moto);
    let pinned = SinkServer::start(&config(dir.path(), url, Some(&sha256(&gbr))), &env);
    assert_eq!(predicts(&pinned).await, price);
    let lines = stop(pinned);
    assert_eq!(events(&lines, "model: the pinned file is cached").len(), 1, "{lines:?}");
}

/// A static HTTPS server (Python's http.server) over a folder, with a certificate signed by a
/// CA of its own; killed when dropped.
struct Https {
    child: Child,
    port: u16,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Https {
    fn serve(root: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let port = crate::sinks::free_port();
        let script = "import http.server, ssl, sys, functools\n\
                      handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])\n\
                      server = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), handler)\n\
                      context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
                      context.load_cert_chain(sys.argv[3], sys.argv[4])\n\
                      server.socket = context.wrap_socket(server.socket, server_side=True)\n\
                      server.serve_forever()\n";
        let child = Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .arg(root)
            .arg(dir.path().join("cert.pem"))
            .arg(dir.path().join("key.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (it is on every machine this builds on)");
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the HTTPS server did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, ca: dir.path().join("ca.pem"), _dir: dir }
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_an_https_url_trusting_the_ca_in_ssl_cert_file() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("house")).unwrap();
    std::fs::write(root.path().join("house/model.onnx"), model_bytes("house_price.onnx")).unwrap();
    let https = Https::serve(root.path());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://localhost:{}/house/", https.port);
    let ca = https.ca.display().to_string();

    // A KServe-style prefix: its model.onnx, named after the prefix, schema derived.
    let server = crate::named::serve_in(dir.path(), &[url], &[("SSL_CERT_FILE", &ca)]);
    let client = reqwest::Client::new();
    let models: Value = client.get(format!("{}/models", server.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["models"][0]["name"], "house", "{models}");
    let answer = client
        .post(format!("{}/predict", server.base))
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let cached = dir.path().join("model-cache/sha256").join(sha256(&model_bytes("house_price.onnx")));
    assert!(cached.is_file(), "cached under the current folder");
    crate::named::stop(server).await;

    // Without the CA, the certificate is refused: exit 2, naming the URL.
    let out = inferd()
        .current_dir(dir.path())
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .arg(format!("https://localhost:{}/house/model.onnx", https.port))
        .env("SSL_CERT_FILE", repo().join("Cargo.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("https://localhost:{}/house/model.onnx", https.port)), "{stderr}");
}
