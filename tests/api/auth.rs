//! Access control (issue 10): API keys and JWT bearer tokens, the scope each route needs, the
//! 401/403/429 answers and their headers, what is counted (`inferd_auth_failures_total`) and
//! logged (`principal`), that no credential is ever echoed, per-principal rate limits, and
//! `inferd key new`.
//!
//! Tokens and key pairs are made at test time by PyJWT and cryptography (tests/auth/mint.py, run
//! with `.venv/bin/python`; `pip install -r tests/auth/requirements.txt`), so that no private key
//! is committed and the tokens come from an implementation nobody here wrote.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use inferd::config::{ApiKeyConfig, Config, Secret};
use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{house_tensors, repo, schema_example, test_config, TestApp};

const REASONS: [&str; 11] = [
    "missing",
    "malformed",
    "unknown_key",
    "invalid_signature",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "invalid_token",
    "forbidden",
    "rate_limited",
];
/// The challenge when no usable credential was sent.
const CHALLENGE: &str = r#"Bearer realm="inferd""#;
/// The start of the challenge when a credential was sent but is not valid.
const INVALID_CHALLENGE: &str = r#"Bearer realm="inferd", error="invalid_token", error_description=""#;

const PREDICT_ROUTES: [&str; 5] = [
    "/predict",
    "/models/house_price/predict",
    "/models/house_price/versions/1/predict",
    "/v2/models/house_price/infer",
    "/v2/models/house_price/versions/1/infer",
];
const READ_ROUTES: [&str; 11] = [
    "/models",
    "/models/house_price",
    "/models/house_price/versions/1",
    "/v2",
    "/v2/models/house_price",
    "/v2/models/house_price/versions/1",
    "/v2/models/house_price/ready",
    "/v2/models/house_price/versions/1/ready",
    "/openapi.json",
    "/docs/",
    "/docs/swagger-initializer.js",
];
const PROBES: [&str; 4] = ["/health", "/ready", "/v2/health/live", "/v2/health/ready"];

// ---------------------------------------------------------------------------------------------
// Keys, configs, tokens

/// A fresh random API key; never JWT-shaped.
fn new_key() -> String {
    format!("inferd_test_{}", uuid::Uuid::new_v4().simple())
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn api_key(name: &str, key: &str, scopes: &[&str]) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        sha256: sha256_hex(key),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rate_limit: None,
    }
}

/// The committed runtime.toml plus `extra` (TOML tables), on an ephemeral loopback port; not
/// checked yet, since tests add the HS256 secret (an environment-only value) afterwards.
fn config_with(extra: &str) -> Config {
    let text = std::fs::read_to_string(repo().join("runtime.toml")).unwrap() + "\n" + extra;
    let mut config =
        Config::from_toml_unchecked(&text, &repo()).unwrap_or_else(|e| panic!("config does not parse: {e}\n{extra}"));
    config.server.host = [127, 0, 0, 1].into();
    config.server.port = 0;
    config
}

/// A path as a quoted TOML string.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh, or python3 -m venv .venv && .venv/bin/pip install -r tests/auth/requirements.txt",
        python.display()
    );
    python
}

fn mint_script() -> PathBuf {
    repo().join("tests/auth/mint.py")
}

/// Fresh key pairs (rsa1, rsa2, ec1, ec2: `NAME.pem` private, `NAME.pub.pem` public) and
/// `jwks.json` (rsa-1, rsa-2, ec-1) and `jwks_single.json` (ec2, no kid) in a new folder.
fn mint_keys() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python()).arg(mint_script()).arg("keys").arg(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "mint.py keys failed (pip install -r tests/auth/requirements.txt?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Tokens for the specs (see tests/auth/mint.py), in order.
fn mint(specs: &[Value]) -> Vec<String> {
    let mut child = std::process::Command::new(python())
        .arg(mint_script())
        .arg("tokens")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(Value::from(specs.to_vec()).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint.py tokens failed (pip install -r tests/auth/requirements.txt?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tokens.len(), specs.len());
    tokens
}

/// One token; `rel` holds claims relative to now (seconds), e.g. `{"exp": 300}`.
fn spec(alg: &str, signer: Value, claims: Value, rel: Value) -> Value {
    let mut spec = json!({"alg": alg, "claims": claims, "rel": rel});
    for (k, v) in signer.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// A request id naming a case.
fn slug(what: &str) -> String {
    what.chars().map(|c| if c.is_ascii_alphanumeric() || "._:-".contains(c) { c } else { '_' }).take(128).collect()
}

fn with(mut spec: Value, field: &str, value: Value) -> Value {
    spec[field] = value;
    spec
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

#[derive(Debug)]
struct Answer {
    what: String,
    path: String,
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text))
    }

    fn is_v2(&self) -> bool {
        self.path == "/v2" || self.path.starts_with("/v2/")
    }

    fn ok(&self) -> &Self {
        assert_eq!(self.status, 200, "{}: {} {:?}", self.what, self.text, self.headers);
        self
    }

    /// The one error shape, or `{"error": ...}` alone on /v2 routes; returns the message.
    fn error(&self, status: u16, error_type: &str) -> String {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text);
        assert_eq!(self.header("content-type"), Some("application/json"), "{}: error bodies are JSON", self.what);
        let body = self.json();
        let message = body["error"].as_str().filter(|s| !s.is_empty());
        let message = message.unwrap_or_else(|| panic!("{}: no error message: {body}", self.what)).to_owned();
        if self.is_v2() {
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["error"], "{}: /v2 routes answer {{\"error\": ...}}: {body}", self.what);
        } else {
            assert_eq!(body["error_type"], error_type, "{}: {body}", self.what);
            let id = self.header("x-request-id").expect("x-request-id");
            assert_eq!(body["request_id"], id, "{}: the body names the request, as the header does", self.what);
        }
        message
    }

    /// 401; `invalid`: a credential was sent and refused (`error="invalid_token"`).
    fn unauthorized(&self, invalid: bool) -> String {
        let message = self.error(401, "unauthorized");
        let challenge = self.header("www-authenticate").unwrap_or_else(|| panic!("{}: no WWW-Authenticate", self.what));
        if invalid {
            assert!(
                challenge.starts_with(INVALID_CHALLENGE)
                    && challenge.ends_with('"')
                    && challenge.len() > INVALID_CHALLENGE.len() + 1,
                "{}: a refused credential's challenge, got {challenge}",
                self.what
            );
        } else {
            assert_eq!(challenge, CHALLENGE, "{}: no credential: no error= in the challenge", self.what);
        }
        message
    }

    fn forbidden(&self, scope: &str) {
        let message = self.error(403, "forbidden");
        let want = format!("this route needs the '{scope}' scope");
        assert!(message.contains(&want), "{}: the message names the scope ({want}): {message}", self.what);
    }

    /// 429; returns `Retry-After` in seconds.
    fn rate_limited(&self) -> u64 {
        self.error(429, "rate_limited");
        let retry = self.header("retry-after").unwrap_or_else(|| panic!("{}: no Retry-After", self.what));
        let seconds: u64 =
            retry.parse().unwrap_or_else(|_| panic!("{}: Retry-After is whole seconds: {retry}", self.what));
        assert!(seconds >= 1, "{}: Retry-After at least 1, got {seconds}", self.what);
        seconds
    }
}

/// Credentials for a request.
#[derive(Clone, Copy)]
enum Cred<'a> {
    None,
    Bearer(&'a str),
    Key(&'a str),
    /// The whole `Authorization` header value.
    Authorization(&'a str),
}

/// One app under test, with what every answer said (for the leak check) and a credential
/// that may read `/metrics`.
struct Ctx {
    app: TestApp,
    /// Bearer credential for `/metrics`; `None` when it is open (its own port, no token).
    metrics_cred: Option<String>,
    /// Credentials that must never come back in an answer or a log.
    secrets: Vec<String>,
    seen: Mutex<Vec<String>>,
}

impl Ctx {
    async fn spawn(config: Config, metrics_cred: Option<&str>, secrets: &[&str]) -> Self {
        config.check().expect("valid config");
        assert!(config.auth.enabled() || secrets.is_empty());
        Ctx {
            app: TestApp::spawn_with(config).await,
            metrics_cred: metrics_cred.map(str::to_owned),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn secret(&mut self, s: &str) {
        self.secrets.push(s.to_owned());
    }

    /// A request to `path` carrying a valid body for it (POST) and `cred`.
    fn request(&self, method: &str, path: &str, cred: Cred) -> RequestBuilder {
        let url = self.app.url(path);
        let mut rb = if method == "POST" {
            let row = schema_example("house_price");
            let body = if path.starts_with("/v2/") { house_tensors(&[row]) } else { json!({ "instances": [row] }) };
            self.app.client.post(url).json(&body)
        } else {
            self.app.client.request(method.parse().unwrap(), url)
        };
        rb = match cred {
            Cred::None => rb,
            Cred::Bearer(c) => rb.header("authorization", format!("Bearer {c}")),
            Cred::Key(k) => rb.header("x-api-key", k),
            Cred::Authorization(v) => rb.header("authorization", v),
        };
        rb
    }

    async fn send(&self, rb: RequestBuilder) -> Answer {
        let request = rb.build().unwrap();
        let path = request.url().path().to_owned();
        let id =
            request.headers().get("x-request-id").map(|v| format!(" [{}]", v.to_str().unwrap())).unwrap_or_default();
        let what = format!("{} {path}{id}", request.method());
        let response = self.app.client.execute(request).await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        self.seen.lock().unwrap().push(format!("{headers:?}\n{text}"));
        Answer { what, path, status, headers, text }
    }

    async fn call(&self, method: &str, path: &str, cred: Cred<'_>) -> Answer {
        self.send(self.request(method, path, cred)).await
    }

    /// `inferd_auth_failures_total` by reason.
    async fn failures(&self) -> BTreeMap<String, f64> {
        let base = self.app.metrics_base.as_deref().unwrap_or(&self.app.base);
        let mut rb = self.app.client.get(format!("{base}/metrics"));
        if let Some(cred) = &self.metrics_cred {
            rb = rb.bearer_auth(cred);
        }
        let response = rb.send().await.unwrap();
        assert_eq!(response.status(), 200, "/metrics with the test's metrics credential");
        failures_in(&response.text().await.unwrap())
    }

    /// Sends the request; returns the answer and what `inferd_auth_failures_total` counted for it.
    async fn counted_delta(&self, rb: RequestBuilder) -> (Answer, Vec<(String, f64)>) {
        let before = self.failures().await;
        let answer = self.send(rb).await;
        let after = self.failures().await;
        let mut delta: Vec<(String, f64)> = Vec::new();
        for (reason, n) in &after {
            let d = n - before.get(reason).copied().unwrap_or(0.0);
            if d != 0.0 {
                delta.push((reason.clone(), d));
            }
        }
        (answer, delta)
    }

    /// Sends the request and asserts which failure reason it counted: exactly one of
    /// `reasons`, by exactly one; none at all when `reasons` is empty.
    async fn counted(&self, rb: RequestBuilder, reasons: &[&str]) -> Answer {
        let (answer, delta) = self.counted_delta(rb).await;
        if let Err(e) = counts(&answer, &delta, reasons) {
            panic!("{e}");
        }
        answer
    }

    /// Sends the request and judges the answer against `want`; `Err` says how it differs
    /// (so that a table of cases can report every mismatch at once).
    async fn judged(&self, rb: RequestBuilder, what: &str, want: &Want) -> Result<(), String> {
        let (answer, delta) = self.counted_delta(rb).await;
        let (status, reasons): (u16, &[&str]) = match want {
            Want::Accept => (200, &[]),
            Want::Forbid(_) => (403, &["forbidden"]),
            Want::Refuse(r) => (401, r),
        };
        if answer.status != status {
            return Err(format!("{what}: {}: want {status}, got {} {}", answer.what, answer.status, answer.text));
        }
        counts(&answer, &delta, reasons).map_err(|e| format!("{what}: {e}"))?;
        match want {
            Want::Accept => {}
            Want::Forbid(scope) => answer.forbidden(scope),
            Want::Refuse(_) => {
                answer.unauthorized(true);
            }
        }
        Ok(())
    }

    async fn check(&self, method: &str, path: &str, cred: Cred<'_>, reasons: &[&str]) -> Answer {
        self.counted(self.request(method, path, cred), reasons).await
    }

    /// No credential came back in any answer (body or header).
    fn assert_no_leak(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for secret in &self.secrets {
            for answer in seen.iter() {
                assert!(!answer.contains(secret.as_str()), "a credential came back in an answer: {answer}");
                // The signature alone identifies a token.
                if let Some((_, signature)) = secret.rsplit_once('.').filter(|(_, s)| s.len() > 16) {
                    assert!(!answer.contains(signature), "a token's signature came back in an answer: {answer}");
                }
            }
        }
    }

    /// Stops the app and returns its prediction log lines, after checking that no credential
    /// is in the log files.
    async fn stop(self) -> Vec<Value> {
        self.assert_no_leak();
        let dir = self.app.prediction_log_dir.clone();
        let _logs = self.app.stop().await;
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for secret in &self.secrets {
                assert!(!text.contains(secret.as_str()), "a credential is in the prediction log: {text}");
            }
            lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
        lines
    }
}

/// What a case expects: 200; 403 naming the scope; 401 `invalid_token` counted as one of the reasons.
#[derive(Debug)]
enum Want {
    Accept,
    Forbid(&'static str),
    Refuse(&'static [&'static str]),
}

fn counts(answer: &Answer, delta: &[(String, f64)], reasons: &[&str]) -> Result<(), String> {
    if reasons.is_empty() && !delta.is_empty() {
        return Err(format!("{}: no auth failure expected, counted {delta:?} ({})", answer.what, answer.text));
    }
    let one_of = delta.len() == 1 && delta[0].1 == 1.0 && reasons.contains(&delta[0].0.as_str());
    if !reasons.is_empty() && !one_of {
        return Err(format!(
            "{}: inferd_auth_failures_total should count one of {reasons:?} once; counted {delta:?} ({})",
            answer.what, answer.text
        ));
    }
    Ok(())
}

fn failures_in(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("inferd_auth_failures_total")) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let labels = series.strip_prefix("inferd_auth_failures_total{").and_then(|l| l.strip_suffix('}'));
        let reason = labels.and_then(|l| l.strip_prefix("reason=\"")).and_then(|r| r.strip_suffix('"'));
        let reason = reason.unwrap_or_else(|| panic!("one label, reason: {line}"));
        assert!(REASONS.contains(&reason), "unknown reason in {line}");
        out.insert(reason.to_owned(), value.parse::<f64>().unwrap());
    }
    out
}

/// Prediction log lines by request id: the principal each names.
fn principals(lines: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        let id = line["request_id"].as_str().unwrap().to_owned();
        out.entry(id).or_default().push(line.get("principal").cloned().unwrap_or(Value::Null));
    }
    out
}

/// Writes `head` and `body` on a fresh connection and reads until the server closes it (or
/// 5 s pass); returns the status, the header block (lower-cased) and the body.
async fn raw(app: &TestApp, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(read.is_ok(), "the server did not answer and close within 5 s: {text}");
    let (headers, rest) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text}"));
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    (status, headers.to_ascii_lowercase(), rest.to_owned())
}

fn head(path: &str, extra: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{extra}content-length: {length}\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// No auth

#[tokio::test]
async fn without_credentials_configured_every_route_is_open_as_before() {
    let config = test_config();
    assert!(!config.auth.enabled());
    let ctx = Ctx::spawn(config, None, &[]).await;
    let junk = [Cred::None, Cred::Bearer("whatever"), Cred::Key("whatever"), Cred::Authorization("Basic dTpw")];
    for cred in junk {
        for path in PREDICT_ROUTES {
            ctx.call("POST", path, cred).await.ok();
        }
        for path in READ_ROUTES.iter().chain(&PROBES).chain(&["/metrics"]) {
            ctx.call("GET", path, cred).await.ok();
        }
    }
    let text = ctx.call("GET", "/metrics", Cred::None).await.text;
    assert!(!text.lines().any(|l| l.starts_with("inferd_auth_failures_total")), "nothing refused, nothing counted");
    let doc = ctx.call("GET", "/openapi.json", Cred::None).await.json();
    assert!(doc["components"].get("securitySchemes").is_none(), "no security schemes with auth off");
    assert!(!doc.to_string().contains("\"security\""), "no operation needs a credential with auth off");
    ctx.app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// API keys

struct Keys {
    app: String,
    reader: String,
    predictor: String,
    ops: String,
}

fn keys_config() -> (Config, Keys) {
    let keys = Keys { app: new_key(), reader: new_key(), predictor: new_key(), ops: new_key() };
    // One key from the file, as an operator writes it; the others pushed as the env would add them.
    let mut config = config_with(&format!(
        "[[auth.api_keys]]\nname = \"web-app\"\nsha256 = \"{}\"\nscopes = [\"predict\", \"read\"]\n",
        sha256_hex(&keys.app)
    ));
    config.auth.api_keys.push(api_key("reader", &keys.reader, &["read"]));
    config.auth.api_keys.push(api_key("predictor", &keys.predictor, &["predict"]));
    config.auth.api_keys.push(api_key("ops", &keys.ops, &["metrics"]));
    (config, keys)
}

#[tokio::test]
async fn api_keys_open_each_route_to_its_scope_only() {
    let (config, k) = keys_config();
    let ctx = Ctx::spawn(config, Some(&k.ops), &[&k.app, &k.reader, &k.predictor, &k.ops]).await;
    let rows_served = async || {
        let info = ctx.call("GET", "/models/house_price", Cred::Bearer(&k.app)).await.json();
        info["stats"]["rows"].as_u64().unwrap()
    };
    let rows_before = rows_served().await;

    for path in PREDICT_ROUTES {
        ctx.check("POST", path, Cred::None, &["missing"]).await.unauthorized(false);
        ctx.check("POST", path, Cred::Bearer(&k.reader), &["forbidden"]).await.forbidden("predict");
        ctx.check("POST", path, Cred::Key(&k.ops), &["forbidden"]).await.forbidden("predict");
        ctx.check("POST", path, Cred::Bearer(&k.app), &[]).await.ok();
        ctx.check("POST", path, Cred::Key(&k.predictor), &[]).await.ok();
    }
    for path in READ_ROUTES {
        ctx.check("GET", path, Cred::None, &["missing"]).await.unauthorized(false);
        ctx.check("GET", path, Cred::Bearer(&k.predictor), &["forbidden"]).await.forbidden("read");
        ctx.check("GET", path, Cred::Key(&k.app), &[]).await.ok();
        ctx.check("GET", path, Cred::Bearer(&k.reader), &[]).await.ok();
    }
    // Swagger UI's own entry redirects; with no credential it is refused like the rest of /docs.
    ctx.check("GET", "/docs", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("GET", "/metrics", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("GET", "/metrics", Cred::Bearer(&k.app), &["forbidden"]).await.forbidden("metrics");
    let scrape = ctx.check("GET", "/metrics", Cred::Key(&k.ops), &[]).await;
    assert!(scrape.ok().text.contains("inferd_http_requests_total"), "{}", scrape.text);
    ctx.check("GET", "/metrics", Cred::Bearer(&k.ops), &[]).await.ok();
    // Probes are open always: whatever credential a prober sends (or none) is not checked.
    for path in PROBES {
        ctx.check("GET", path, Cred::None, &[]).await.ok();
        ctx.check("GET", path, Cred::Bearer("not-a-key"), &[]).await.ok();
    }
    for path in ["/nowhere", "/v2/nowhere", "/models/house_price/nowhere"] {
        for cred in [Cred::None, Cred::Bearer("not-a-key")] {
            let answer = ctx.check("GET", path, cred, &[]).await;
            assert_eq!(answer.status, 404, "{path}: unknown routes are 404 as before: {}", answer.text);
        }
    }

    // Refused requests never reached the model: only the accepted ones' rows were served.
    let rows = rows_served().await - rows_before;
    assert_eq!(rows, 2 * PREDICT_ROUTES.len() as u64, "one row per accepted prediction");
    let lines = ctx.stop().await;
    assert_eq!(lines.len(), 2 * PREDICT_ROUTES.len(), "one prediction log line per accepted prediction");
    let mut named: Vec<&str> = lines.iter().map(|l| l["principal"].as_str().unwrap_or("<none>")).collect();
    named.sort();
    let want: Vec<&str> = [["predictor"; 5], ["web-app"; 5]].concat();
    assert_eq!(named, want, "each prediction log line names the key that asked");
}

#[tokio::test]
async fn api_key_credentials_are_refused_precisely() {
    let (config, k) = keys_config();
    let mut ctx = Ctx::spawn(config, Some(&k.ops), &[&k.app, &k.reader, &k.predictor, &k.ops]).await;
    let unknown = new_key();
    let mut near = k.app.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'a' { 'b' } else { 'a' });
    // JWT-shaped, but no JWT is configured: looked up as a key.
    let jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl";
    for s in [&unknown, &near] {
        ctx.secret(s);
    }
    ctx.secret(jwt_like);

    for cred in [Cred::Bearer(&unknown), Cred::Key(&unknown), Cred::Bearer(&near), Cred::Bearer(jwt_like)] {
        let message = ctx.check("GET", "/models", cred, &["unknown_key"]).await.unauthorized(true);
        assert!(!message.is_empty());
        ctx.check("POST", "/v2/models/house_price/infer", cred, &["unknown_key"]).await.unauthorized(true);
    }
    // The key's hash is not a key.
    let hash = sha256_hex(&k.app);
    ctx.check("GET", "/models", Cred::Bearer(&hash), &["unknown_key"]).await.unauthorized(true);
    // An unusable Authorization header is no credential.
    for value in ["Basic d2ViLWFwcDpodW50ZXIy", "Digest username=\"x\""] {
        let answer = ctx.check("GET", "/models", Cred::Authorization(value), &["missing", "malformed"]).await;
        answer.unauthorized(false);
        ctx.check("GET", "/v2/models/house_price", Cred::Authorization(value), &["missing", "malformed"])
            .await
            .unauthorized(false);
    }
    // Both headers: Authorization is the one used.
    let both = ctx.request("POST", "/predict", Cred::Bearer(&k.reader)).header("x-api-key", &k.app);
    ctx.counted(both, &["forbidden"]).await.forbidden("predict");
    let both = ctx.request("GET", "/models", Cred::Bearer(&unknown)).header("x-api-key", &k.app);
    ctx.counted(both, &["unknown_key"]).await.unauthorized(true);
    let both = ctx.request("POST", "/predict", Cred::Bearer(&k.predictor)).header("x-api-key", &unknown);
    ctx.counted(both, &[]).await.ok();
    // The v2 answers: same statuses and headers, the protocol's error shape.
    ctx.check("GET", "/v2", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("POST", "/v2/models/house_price/versions/1/infer", Cred::Bearer(&k.reader), &["forbidden"])
        .await
        .forbidden("predict");

    // Answered before the body is read: a body that never comes does not hold the answer, and
    // the connection is closed rather than drained.
    let no_body = [
        (head("/predict", "", 1000), 401, "\"error_type\":\"unauthorized\""),
        (head("/v2/models/house_price/infer", "", 1000), 401, "{\"error\":"),
        (head("/predict", &format!("authorization: Bearer {}\r\n", k.reader), 1000), 403, "'predict' scope"),
        (head("/predict", &format!("x-api-key: {unknown}\r\n"), 1000), 401, "\"error_type\":\"unauthorized\""),
    ];
    for (head, status, body) in no_body {
        let started = Instant::now();
        let (got, headers, text) = raw(&ctx.app, &head, b"{\"instances\": [").await;
        assert_eq!(got, status, "{head}: {headers}\n{text}");
        assert!(headers.contains("\r\nconnection: close"), "{head}: an answer before the body closes: {headers}");
        assert!(text.contains(body), "{head}: {text}");
        assert!(!text.contains(&k.reader) && !text.contains(&unknown), "{text}");
        assert!(started.elapsed() < Duration::from_secs(3), "{head}: answered without waiting for the body");
    }
    // A whole body sent: still answered unread, still closed.
    let body = json!({"instances": [schema_example("house_price")]}).to_string();
    let (got, headers, _) = raw(&ctx.app, &head("/predict", "", body.len()), body.as_bytes()).await;
    assert_eq!(got, 401);
    assert!(headers.contains("\r\nconnection: close"), "{headers}");
    let www: Vec<&str> = headers.lines().filter(|l| l.starts_with("www-authenticate:")).collect();
    assert_eq!(www, ["www-authenticate: bearer realm=\"inferd\""], "{headers}");
    ctx.stop().await;
}

#[tokio::test]
async fn the_metrics_token_still_opens_metrics_and_nothing_else() {
    let (mut config, k) = keys_config();
    let token = format!("metrics-token-{}", uuid::Uuid::new_v4().simple());
    config.metrics.token = Some(Secret(token.clone()));
    let ctx = Ctx::spawn(config, Some(&token), &[&k.app, &k.ops, &token]).await;
    ctx.check("GET", "/metrics", Cred::Bearer(&token), &[]).await.ok();
    ctx.check("GET", "/metrics", Cred::Key(&k.ops), &[]).await.ok();
    ctx.check("GET", "/metrics", Cred::Bearer(&k.ops), &[]).await.ok();
    ctx.check("GET", "/metrics", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("GET", "/metrics", Cred::Bearer(&k.reader), &["forbidden"]).await.forbidden("metrics");
    ctx.check("GET", "/models", Cred::Bearer(&token), &["unknown_key"]).await.unauthorized(true);
    ctx.check("POST", "/predict", Cred::Bearer(&token), &["unknown_key"]).await.unauthorized(true);
    ctx.check("GET", "/models", Cred::Bearer(&k.app), &[]).await.ok();
    ctx.stop().await;
}

#[tokio::test]
async fn public_docs_open_the_docs_only_and_openapi_documents_the_security() {
    let key = new_key();
    let ops = new_key();
    let mut config = config_with("[auth]\npublic_docs = true\n");
    config.auth.api_keys.push(api_key("app", &key, &["predict", "read"]));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let ctx = Ctx::spawn(config, Some(&ops), &[&key, &ops]).await;
    for path in ["/openapi.json", "/docs/", "/docs/swagger-initializer.js"] {
        ctx.check("GET", path, Cred::None, &[]).await.ok();
    }
    ctx.check("GET", "/models", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("POST", "/predict", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("GET", "/metrics", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("GET", "/models", Cred::Key(&key), &[]).await.ok();

    let doc = ctx.call("GET", "/openapi.json", Cred::None).await.json();
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        (schemes["bearer"]["type"].as_str(), schemes["bearer"]["scheme"].as_str()),
        (Some("http"), Some("bearer")),
        "{schemes}"
    );
    assert_eq!(
        (schemes["api_key"]["type"].as_str(), schemes["api_key"]["in"].as_str(), schemes["api_key"]["name"].as_str()),
        (Some("apiKey"), Some("header"), Some("x-api-key")),
        "{schemes}"
    );
    // Every operation but the probes' is protected; these at least are documented.
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/predict",
        "/models/house_price/predict",
        "/models",
        "/models/{name}",
        "/v2",
        "/v2/models/{model}/infer",
        "/metrics",
    ] {
        assert!(paths.contains_key(path), "{path} is documented: {:?}", paths.keys());
    }
    let mut protected = 0;
    for (path, item) in paths.iter().filter(|(path, _)| !PROBES.contains(&path.as_str())) {
        for (method, op) in item.as_object().unwrap() {
            assert_eq!(op["security"], json!([{"bearer": []}, {"api_key": []}]), "{method} {path}");
            for status in ["401", "403", "429"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} documents {status}: {}",
                    op["responses"]
                );
            }
            protected += 1;
        }
    }
    assert!(protected >= 16, "{protected} protected operations");
    for path in PROBES {
        let op = &doc["paths"][path]["get"];
        assert!(op.is_object(), "GET {path} is documented");
        let effective = op.get("security").or_else(|| doc.get("security"));
        assert!(
            effective.is_none_or(|s| s == &json!([]) || s == &json!([{}])),
            "GET {path} needs no credential: {effective:?}"
        );
    }
    ctx.stop().await;
}

#[tokio::test]
async fn on_its_own_port_metrics_takes_the_metrics_token_only() {
    let ops = new_key();
    let token = format!("metrics-token-{}", uuid::Uuid::new_v4().simple());
    let mut config = test_config();
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics", "read"]));
    config.metrics.port = Some(0);
    config.metrics.token = Some(Secret(token.clone()));
    let ctx = Ctx::spawn(config, Some(&token), &[&ops, &token]).await;
    let metrics = format!("{}/metrics", ctx.app.metrics_base.as_deref().unwrap());
    let scrape = |cred: Option<&str>| {
        let rb = ctx.app.client.get(&metrics);
        let rb = match cred {
            Some(c) => rb.bearer_auth(c),
            None => rb,
        };
        ctx.send(rb)
    };
    scrape(Some(&token)).await.ok();
    assert_eq!(scrape(None).await.status, 401, "metrics.port with INFERD_METRICS_TOKEN set: the token is required");
    assert_eq!(scrape(Some(&ops)).await.status, 401, "an API key is not the metrics token there");
    let main = ctx.check("GET", "/metrics", Cred::Key(&ops), &[]).await;
    assert_eq!(main.status, 404, "not served on the main port: {}", main.text);
    ctx.check("GET", "/models", Cred::Key(&ops), &[]).await.ok();
    ctx.check("GET", "/models", Cred::Bearer(&token), &["unknown_key"]).await.unauthorized(true);
    ctx.stop().await;
}

#[tokio::test]
async fn a_rate_limited_key_gets_its_burst_then_429_and_others_are_unaffected() {
    let (limited, free, ops) = (new_key(), new_key(), new_key());
    let mut config = config_with(&format!(
        "[[auth.api_keys]]\nname = \"limited\"\nsha256 = \"{}\"\nscopes = [\"predict\", \"read\"]\n\
         rate_limit = {{ per_second = 1.0, burst = 2 }}\n",
        sha256_hex(&limited)
    ));
    config.auth.api_keys.push(api_key("free", &free, &["predict", "read"]));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let ctx = Ctx::spawn(config, Some(&ops), &[&limited, &free, &ops]).await;

    for _ in 0..3 {
        ctx.check("POST", "/predict", Cred::Bearer(&free), &[]).await.ok();
    }
    // From here until the 429s are seen is timed by the bucket (one token back per second):
    // as few requests as will do.
    ctx.call("GET", "/models", Cred::Bearer(&limited)).await.ok();
    ctx.call("POST", "/predict", Cred::Key(&limited)).await.ok();
    let retry = ctx.check("GET", "/models", Cred::Bearer(&limited), &["rate_limited"]).await.rate_limited();
    assert!(retry <= 2, "one request per second refills within a second or two, got Retry-After {retry}");
    // With a body: answered unread, the connection closed; the protocol's error shape on /v2.
    let body = house_tensors(&[schema_example("house_price")]).to_string();
    let head = head("/v2/models/house_price/infer", &format!("x-api-key: {limited}\r\n"), body.len());
    let (status, headers, text) = raw(&ctx.app, &head, body.as_bytes()).await;
    assert_eq!(status, 429, "{headers}\n{text}");
    assert!(headers.contains("\r\nretry-after: "), "{headers}");
    assert!(headers.contains("\r\nconnection: close"), "{headers}");
    let v2: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v2["error"].is_string() && v2.as_object().unwrap().len() == 1, "{text}");
    ctx.call("GET", "/v2/models/house_price", Cred::Key(&limited)).await.rate_limited();
    // Another key is unaffected meanwhile.
    ctx.call("GET", "/models", Cred::Bearer(&free)).await.ok();
    // Refilled after Retry-After.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    ctx.check("GET", "/models", Cred::Bearer(&limited), &[]).await.ok();
    ctx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT

const ISSUER: &str = "https://idp.test/";

#[tokio::test]
async fn hs256_tokens_are_checked_claim_by_claim() {
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    let hs = json!({"secret": secret});
    let base = json!({"sub": "alice", "iss": ISSUER, "aud": "inferd", "scope": "predict read"});
    let claims = |change: Value| {
        let mut c = base.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let ok = |change: Value| spec("HS256", hs.clone(), claims(change), json!({"exp": 300}));
    let keys = mint_keys();
    let rsa1 = json!({"key": keys.path().join("rsa1.pem")});

    // (what, spec, on /predict, on /models)
    use Want::*;
    let cases: Vec<(&str, Value, Want, Want)> = vec![
        ("valid", ok(json!({})), Accept, Accept),
        ("scope read only", ok(json!({"scope": "read"})), Forbid("predict"), Accept),
        ("scp list", ok(json!({"scope": null, "scp": ["predict"]})), Accept, Forbid("read")),
        ("scp string", ok(json!({"scope": null, "scp": "read predict"})), Accept, Accept),
        ("role analyst", ok(json!({"scope": null, "groups": ["analyst"]})), Accept, Accept),
        ("role viewer", ok(json!({"scope": null, "groups": ["viewer"]})), Forbid("predict"), Accept),
        (
            "roles claim not configured",
            ok(json!({"scope": null, "roles": ["analyst"]})),
            Forbid("predict"),
            Forbid("read"),
        ),
        ("unknown names ignored", ok(json!({"scope": "write predict", "groups": ["ghost"]})), Accept, Forbid("read")),
        ("aud list", ok(json!({"aud": ["other", "inferd"]})), Accept, Accept),
        ("wrong aud", ok(json!({"aud": "other"})), Refuse(&["wrong_audience"]), Refuse(&["wrong_audience"])),
        (
            "missing aud",
            ok(json!({"aud": null})),
            Refuse(&["wrong_audience", "invalid_token"]),
            Refuse(&["wrong_audience", "invalid_token"]),
        ),
        ("wrong iss", ok(json!({"iss": "https://evil.test/"})), Refuse(&["wrong_issuer"]), Refuse(&["wrong_issuer"])),
        (
            "missing iss",
            ok(json!({"iss": null})),
            Refuse(&["wrong_issuer", "invalid_token"]),
            Refuse(&["wrong_issuer", "invalid_token"]),
        ),
        (
            "missing sub",
            ok(json!({"sub": null})),
            Refuse(&["invalid_token", "malformed"]),
            Refuse(&["invalid_token", "malformed"]),
        ),
        (
            "tampered",
            with(ok(json!({"scope": "read"})), "tamper", json!({"scope": "predict read admin"})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        (
            "tampered sub",
            with(ok(json!({})), "tamper", json!({"sub": "mallory"})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        (
            "wrong secret",
            spec("HS256", json!({"secret": "not-the-secret-not-the-secret-0123"}), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_signature"]),
            Refuse(&["invalid_signature"]),
        ),
        // Leeway 20 s: past by 45 s is expired (a verifier's default 60 s leeway would let it through).
        (
            "expired",
            spec("HS256", hs.clone(), base.clone(), json!({"exp": -45})),
            Refuse(&["expired"]),
            Refuse(&["expired"]),
        ),
        ("exp within leeway", spec("HS256", hs.clone(), base.clone(), json!({"exp": -5})), Accept, Accept),
        (
            "nbf ahead",
            spec("HS256", hs.clone(), base.clone(), json!({"exp": 300, "nbf": 45})),
            Refuse(&["not_yet_valid"]),
            Refuse(&["not_yet_valid"]),
        ),
        ("nbf within leeway", spec("HS256", hs.clone(), base.clone(), json!({"exp": 300, "nbf": 5})), Accept, Accept),
        (
            "missing exp",
            spec("HS256", hs.clone(), base.clone(), json!({})),
            Refuse(&["invalid_token", "malformed"]),
            Refuse(&["invalid_token", "malformed"]),
        ),
        (
            "alg none",
            spec("none", json!({}), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_token", "malformed", "invalid_signature", "unknown_key"]),
            Refuse(&["invalid_token", "malformed", "invalid_signature", "unknown_key"]),
        ),
        (
            "alg none, signed",
            with(
                spec("none", json!({}), base.clone(), json!({"exp": 300})),
                "signature",
                json!("c2lnbmF0dXJlc2lnbmF0dXJl"),
            ),
            Refuse(&["invalid_token", "malformed", "invalid_signature"]),
            Refuse(&["invalid_token", "malformed", "invalid_signature"]),
        ),
        // RFC 7515 §4.1.6: a critical extension the server does not understand (none) refuses
        // the token, however well it is signed.
        (
            "critical extension",
            with(ok(json!({})), "headers", json!({"crit": ["x"], "x": "y"})),
            Refuse(&["invalid_token"]),
            Refuse(&["invalid_token"]),
        ),
        ("an extension not marked critical", with(ok(json!({})), "headers", json!({"x": "y"})), Accept, Accept),
        (
            "RS256 against HS256 only",
            spec("RS256", rsa1.clone(), base.clone(), json!({"exp": 300})),
            Refuse(&["invalid_token", "invalid_signature", "malformed"]),
            Refuse(&["invalid_token", "invalid_signature", "malformed"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);

    let ops = new_key();
    let app_key = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\nissuer = \"{ISSUER}\"\naudience = \"inferd\"\nleeway_seconds = 20\nroles_claim = \"groups\"\n\
         roles = {{ analyst = [\"predict\", \"read\"], viewer = [\"read\"] }}\n"
    ));
    config.auth.jwt_secret = Some(Secret(secret.clone()));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    config.auth.api_keys.push(api_key("app", &app_key, &["predict", "read"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&secret, &ops, &app_key]).await;
    for token in &tokens {
        ctx.secret(token);
    }
    let mut served = Vec::new();
    let mut wrong = Vec::new();
    for ((what, _, predict, read), token) in cases.iter().zip(&tokens) {
        for (method, path, want) in [("POST", "/predict", predict), ("GET", "/models", read)] {
            let id = format!("hs-{}-{method}", slug(what));
            let rb = ctx.request(method, path, Cred::Bearer(token)).header("x-request-id", &id);
            if let Err(e) = ctx.judged(rb, what, want).await {
                wrong.push(e);
            } else if matches!(want, Accept) && method == "POST" {
                served.push(id);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} checks went wrong:\n{}", wrong.len(), 2 * cases.len(), wrong.join("\n"));
    // An API key still works beside JWT; a token in x-api-key is looked up as a key.
    let rb =
        ctx.request("POST", "/v2/models/house_price/infer", Cred::Bearer(&app_key)).header("x-request-id", "hs-key");
    ctx.counted(rb, &[]).await.ok();
    ctx.check("GET", "/models", Cred::Key(&tokens[0]), &["unknown_key"]).await.unauthorized(true);
    // A malformed token-shaped credential.
    ctx.secret("eyJub3QiOiJqc29u.eyJub3QiOiJqc29u.c2lnbmF0dXJlc2lnbmF0dXJl");
    ctx.check(
        "GET",
        "/models",
        Cred::Bearer("eyJub3QiOiJqc29u.eyJub3QiOiJqc29u.c2lnbmF0dXJlc2lnbmF0dXJl"),
        &["malformed", "invalid_token"],
    )
    .await
    .unauthorized(true);
    ctx.check("POST", "/v2/models/house_price/infer", Cred::Bearer(&tokens[1]), &["forbidden"])
        .await
        .forbidden("predict");

    let lines = ctx.stop().await;
    let by_id = principals(&lines);
    for id in &served {
        assert_eq!(by_id.get(id), Some(&vec![json!("alice")]), "{id}: the token's sub is the principal: {by_id:?}");
    }
    assert_eq!(by_id.get("hs-key"), Some(&vec![json!("app")]), "{by_id:?}");
    assert_eq!(by_id.len(), served.len() + 1, "only accepted predictions are logged: {by_id:?}");
}

/// Runs each token against `/models` (read) and `/predict` (predict), with the same verdict on
/// both; reports every mismatch.
async fn expect_tokens(ctx: &Ctx, cases: &[(&str, Value, Want)], tokens: &[String]) {
    let mut wrong = Vec::new();
    for ((what, _, want), token) in cases.iter().zip(tokens) {
        for (method, path) in [("GET", "/models"), ("POST", "/predict")] {
            let rb = ctx.request(method, path, Cred::Bearer(token)).header("x-request-id", slug(what));
            if let Err(e) = ctx.judged(rb, what, want).await {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} checks went wrong:\n{}", wrong.len(), 2 * cases.len(), wrong.join("\n"));
}

#[tokio::test]
async fn rs256_with_a_public_key_refuses_algorithm_confusion() {
    let keys = mint_keys();
    let k = |name: &str| json!({"key": keys.path().join(name)});
    let claims = json!({"sub": "rs-user", "scope": "predict read", "aud": "anyone"});
    let exp = json!({"exp": 300});
    let public = keys.path().join("rsa1.pub.pem");
    const BAD: &[&str] = &["invalid_signature", "invalid_token", "malformed"];
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "RS256, no audience configured so aud is not checked",
            spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()),
            Want::Accept,
        ),
        (
            "RS256 with a kid (a single public key ignores it)",
            with(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "headers", json!({"kid": "x"})),
            Want::Accept,
        ),
        (
            "roles claim by default",
            spec("RS256", k("rsa1.pem"), json!({"sub": "r", "roles": ["analyst", "viewer"]}), exp.clone()),
            Want::Accept,
        ),
        (
            "another RSA key",
            spec("RS256", k("rsa2.pem"), claims.clone(), exp.clone()),
            Want::Refuse(&["invalid_signature"]),
        ),
        ("expired", spec("RS256", k("rsa1.pem"), claims.clone(), json!({"exp": -100})), Want::Refuse(&["expired"])),
        (
            "a critical extension",
            with(
                spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()),
                "headers",
                json!({"crit": ["b64"], "b64": "x"}),
            ),
            Want::Refuse(&["invalid_token"]),
        ),
        (
            "HS256 keyed with the public key PEM",
            spec("HS256", json!({"hmac_key_file": public}), claims.clone(), exp.clone()),
            Want::Refuse(BAD),
        ),
        (
            "HS256 with some secret, none configured",
            spec("HS256", json!({"secret": "some-secret-some-secret-some-secret"}), claims.clone(), exp.clone()),
            Want::Refuse(BAD),
        ),
        ("ES256 against an RSA key", spec("ES256", k("ec1.pem"), claims.clone(), exp.clone()), Want::Refuse(BAD)),
        (
            "alg none",
            spec("none", json!({}), claims.clone(), exp.clone()),
            Want::Refuse(&["invalid_signature", "invalid_token", "malformed", "unknown_key"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\npublic_key = {}\nroles = {{ analyst = [\"predict\"], viewer = [\"read\"] }}\n",
        toml_path(&public)
    ));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    assert!(config.auth.jwt_secret.is_none());
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

#[tokio::test]
async fn es256_with_a_public_key_and_a_rate_limit_per_subject() {
    let keys = mint_keys();
    let ec1 = json!({"key": keys.path().join("ec1.pem")});
    let claims = |sub: &str| json!({"sub": sub, "scope": "predict read"});
    let tokens = mint(&[
        spec("ES256", ec1.clone(), claims("es-once"), json!({"exp": 300})),
        spec("ES256", json!({"key": keys.path().join("ec2.pem")}), claims("es-once"), json!({"exp": 300})),
        spec("RS256", json!({"key": keys.path().join("rsa1.pem")}), claims("es-once"), json!({"exp": 300})),
        spec("ES256", ec1.clone(), claims("es-burst"), json!({"exp": 300})),
        // Another token of the same subject shares its bucket.
        spec("ES256", ec1.clone(), claims("es-burst"), json!({"exp": 200})),
        spec("ES256", ec1.clone(), claims("es-calm"), json!({"exp": 300})),
    ]);
    let ops = new_key();
    let mut config = config_with(&format!(
        "[auth.jwt]\npublic_key = {}\nrate_limit = {{ per_second = 1.0, burst = 2 }}\n",
        toml_path(&keys.path().join("ec1.pub.pem"))
    ));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    ctx.check("POST", "/predict", Cred::Bearer(&tokens[0]), &[]).await.ok();
    ctx.check("GET", "/models", Cred::Bearer(&tokens[1]), &["invalid_signature"]).await.unauthorized(true);
    ctx.check("GET", "/models", Cred::Bearer(&tokens[2]), &["invalid_signature", "invalid_token", "malformed"])
        .await
        .unauthorized(true);

    // Timed by the bucket from here until the 429s are seen: few requests.
    ctx.call("GET", "/models", Cred::Bearer(&tokens[3])).await.ok();
    ctx.call("POST", "/predict", Cred::Bearer(&tokens[3])).await.ok();
    let retry = ctx.check("GET", "/models", Cred::Bearer(&tokens[4]), &["rate_limited"]).await.rate_limited();
    ctx.call("POST", "/v2/models/house_price/infer", Cred::Bearer(&tokens[3])).await.rate_limited();
    // Another subject has its own bucket: its whole burst.
    for _ in 0..2 {
        ctx.check("GET", "/models", Cred::Bearer(&tokens[5]), &[]).await.ok();
    }
    tokio::time::sleep(Duration::from_secs(retry)).await;
    ctx.check("GET", "/models", Cred::Bearer(&tokens[3]), &[]).await.ok();
    ctx.stop().await;
}

#[tokio::test]
async fn a_jwks_file_picks_the_key_by_kid_beside_the_hs256_secret() {
    let keys = mint_keys();
    let k = |name: &str| json!({"key": keys.path().join(name)});
    let claims = json!({"sub": "jwks-user", "scope": "predict read"});
    let exp = json!({"exp": 300});
    let kid = |s: Value, kid: &str| with(s, "headers", json!({"kid": kid}));
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    const BAD: &[&str] = &["invalid_signature", "invalid_token", "malformed"];
    let cases: Vec<(&str, Value, Want)> = vec![
        ("rsa-1", kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "rsa-1"), Want::Accept),
        ("rsa-2", kid(spec("RS256", k("rsa2.pem"), claims.clone(), exp.clone()), "rsa-2"), Want::Accept),
        ("ec-1", kid(spec("ES256", k("ec1.pem"), claims.clone(), exp.clone()), "ec-1"), Want::Accept),
        (
            "HS256 with the secret, whatever its kid",
            kid(spec("HS256", json!({"secret": secret}), claims.clone(), exp.clone()), "rsa-1"),
            Want::Accept,
        ),
        (
            "rsa1's token under rsa-2's kid",
            kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "rsa-2"),
            Want::Refuse(&["invalid_signature"]),
        ),
        (
            "ec2's token under ec-1's kid",
            kid(spec("ES256", k("ec2.pem"), claims.clone(), exp.clone()), "ec-1"),
            Want::Refuse(&["invalid_signature"]),
        ),
        ("unknown kid", kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "nope"), Want::Refuse(BAD)),
        ("no kid among several keys", spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), Want::Refuse(BAD)),
        (
            "RS256 under an EC key's kid",
            kid(spec("RS256", k("rsa1.pem"), claims.clone(), exp.clone()), "ec-1"),
            Want::Refuse(BAD),
        ),
        (
            "HS256 keyed with rsa-1's PEM",
            kid(
                spec("HS256", json!({"hmac_key_file": keys.path().join("rsa1.pub.pem")}), claims.clone(), exp.clone()),
                "rsa-1",
            ),
            Want::Refuse(BAD),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config = config_with(&format!("[auth.jwt]\njwks_file = {}\n", toml_path(&keys.path().join("jwks.json"))));
    config.auth.jwt_secret = Some(Secret(secret.clone()));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops, &secret]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

#[tokio::test]
async fn a_jwks_file_with_one_key_needs_no_kid() {
    let keys = mint_keys();
    let claims = json!({"sub": "single", "scp": ["predict", "read"]});
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "the only key",
            spec("ES256", json!({"key": keys.path().join("ec2.pem")}), claims.clone(), json!({"exp": 300})),
            Want::Accept,
        ),
        (
            "another EC key",
            spec("ES256", json!({"key": keys.path().join("ec1.pem")}), claims.clone(), json!({"exp": 300})),
            Want::Refuse(&["invalid_signature"]),
        ),
    ];
    let specs: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let tokens = mint(&specs);
    let ops = new_key();
    let mut config =
        config_with(&format!("[auth.jwt]\njwks_file = {}\n", toml_path(&keys.path().join("jwks_single.json"))));
    config.auth.api_keys.push(api_key("ops", &ops, &["metrics"]));
    let mut ctx = Ctx::spawn(config, Some(&ops), &[&ops]).await;
    tokens.iter().for_each(|t| ctx.secret(t));
    expect_tokens(&ctx, &cases, &tokens).await;
    ctx.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary: its logs, its environment, `inferd key new`

/// The real binary, its stdout lines (all of them, raw) and its prediction log folder.
struct Proc {
    child: Child,
    base: String,
    lines: std::sync::mpsc::Receiver<String>,
    /// Lines read so far.
    seen: Vec<String>,
    prediction_log: tempfile::TempDir,
}

impl Proc {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let prediction_log = tempfile::tempdir().unwrap();
        let mut child = crate::process::inferd()
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env_remove("INFERD_API_KEYS")
            .env_remove("INFERD_JWT_SECRET")
            .env_remove("INFERD_METRICS_TOKEN")
            .envs(env.iter().copied())
            .env("INFERD_PREDICTION_LOG_DIR", prediction_log.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut proc = Proc { child, base: String::new(), lines, seen: Vec::new(), prediction_log };
        loop {
            let line = proc.lines.recv_timeout(Duration::from_secs(60)).expect("server logs until ready");
            proc.seen.push(line.clone());
            let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
            match value["message"].as_str() {
                Some("listening") => proc.base = format!("http://{}", value["addr"].as_str().unwrap()),
                Some("ready") => break,
                _ => {}
            }
        }
        assert!(!proc.base.is_empty(), "listening is logged before ready");
        proc
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, a clean exit, and every line it wrote.
    fn stop(mut self) -> (Vec<String>, tempfile::TempDir) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
        self.seen.extend(self.lines.iter());
        let seen = std::mem::take(&mut self.seen);
        let log = tempfile::tempdir().unwrap();
        (seen, std::mem::replace(&mut self.prediction_log, log))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parsed(lines: &[String]) -> Vec<Value> {
    lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test]
async fn with_auth_off_the_binary_says_so_once_at_start() {
    let server = Proc::start(&[], &[]);
    let (lines, _log) = server.stop();
    let warned: Vec<Value> =
        parsed(&lines).into_iter().filter(|l| l["message"] == "authentication is off: every route is open").collect();
    assert_eq!(warned.len(), 1, "{lines:?}");
    assert_eq!(warned[0]["level"], "WARN");
}

#[tokio::test]
async fn the_binary_logs_the_principal_and_never_the_credential() {
    let key = new_key();
    let ops_key = new_key();
    let wrong_key = new_key();
    let secret = format!("hs256-secret-{}", uuid::Uuid::new_v4().simple());
    let keys = format!("app:predict+read:{},ops:metrics:{}", sha256_hex(&key), sha256_hex(&ops_key));
    let claims = json!({"sub": "svc-7", "scope": "predict read"});
    let tokens = mint(&[
        spec("HS256", json!({"secret": secret}), claims.clone(), json!({"exp": 300})),
        spec("HS256", json!({"secret": "wrong-secret-wrong-secret-wrong-secret"}), claims.clone(), json!({"exp": 300})),
        spec("HS256", json!({"secret": secret}), claims.clone(), json!({"exp": -400})),
    ]);
    let basic = "d2ViLWFwcDpzM2NyM3QtcGFzc3dvcmQ=";
    let server = Proc::start(&[], &[("INFERD_API_KEYS", &keys), ("INFERD_JWT_SECRET", &secret)]);
    let client = reqwest::Client::new();
    let predict = json!({"instances": [schema_example("house_price")]});
    let v2 = house_tensors(&[schema_example("house_price")]);
    let requests: Vec<(&str, RequestBuilder, u16)> = vec![
        ("log-key", client.post(server.url("/predict")).bearer_auth(&key).json(&predict), 200),
        ("log-xkey", client.get(server.url("/models")).header("x-api-key", &key), 200),
        ("log-jwt", client.post(server.url("/v2/models/house_price/infer")).bearer_auth(&tokens[0]).json(&v2), 200),
        ("log-ops", client.get(server.url("/metrics")).bearer_auth(&ops_key), 200),
        ("log-wrong-key", client.post(server.url("/predict")).bearer_auth(&wrong_key).json(&predict), 401),
        ("log-wrong-secret", client.get(server.url("/models")).bearer_auth(&tokens[1]), 401),
        ("log-expired", client.post(server.url("/predict")).bearer_auth(&tokens[2]).json(&predict), 401),
        ("log-basic", client.get(server.url("/models")).header("authorization", format!("Basic {basic}")), 401),
        ("log-none", client.post(server.url("/predict")).json(&predict), 401),
        ("log-scope", client.post(server.url("/predict")).bearer_auth(&ops_key).json(&predict), 403),
    ];
    let mut bodies = Vec::new();
    for (id, rb, status) in requests {
        let response = rb.header("x-request-id", id).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{id}");
        let headers = format!("{:?}", response.headers());
        bodies.push(format!("{headers}\n{}", response.text().await.unwrap()));
    }
    let (lines, prediction_log) = server.stop();

    let secrets: Vec<&str> =
        [key.as_str(), ops_key.as_str(), wrong_key.as_str(), secret.as_str(), basic, "s3cr3t-password"]
            .into_iter()
            .chain(tokens.iter().map(String::as_str))
            .chain(tokens.iter().map(|t| t.rsplit_once('.').unwrap().1))
            .collect();
    let mut predlog = String::new();
    for entry in std::fs::read_dir(prediction_log.path()).unwrap() {
        predlog += &std::fs::read_to_string(entry.unwrap().path()).unwrap();
    }
    for secret in &secrets {
        for line in lines.iter().chain(&bodies) {
            assert!(!line.contains(secret), "a credential was logged or echoed: {line}");
        }
        assert!(!predlog.contains(secret), "a credential is in the prediction log: {predlog}");
    }
    let lines = parsed(&lines);
    assert!(!lines.iter().any(|l| l["message"] == "authentication is off: every route is open"), "auth is on");
    let access = |id: &str| -> Value {
        let found: Vec<&Value> =
            lines.iter().filter(|l| l["message"] == "request" && l["span"]["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "one access line for {id}: {lines:?}");
        found[0].clone()
    };
    let accepted = [("log-key", "app", "key"), ("log-xkey", "app", "key"), ("log-jwt", "svc-7", "jwt")];
    for (id, principal, kind) in accepted {
        let line = access(id);
        assert_eq!(line["principal"], principal, "{id}: {line}");
        assert_eq!(line["auth"], kind, "the kind of credential tells a key from a subject: {line}");
        assert_eq!(line["status"], 200, "{line}");
    }
    // A successful scrape is not access-logged (`logging.log_probes` is off).
    assert!(!lines.iter().any(|l| l["message"] == "request" && l["span"]["request_id"] == "log-ops"), "{lines:?}");
    for id in ["log-wrong-key", "log-wrong-secret", "log-expired", "log-basic", "log-none"] {
        let line = access(id);
        assert_eq!(line["status"], 401, "{line}");
        assert!(line.get("principal").is_none_or(Value::is_null), "{id}: nobody was accepted: {line}");
    }
    let predictions: Vec<Value> = predlog.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_id = principals(&predictions);
    assert_eq!(by_id.get("log-key"), Some(&vec![json!("app")]), "{by_id:?}");
    assert_eq!(by_id.get("log-jwt"), Some(&vec![json!("svc-7")]), "{by_id:?}");
    assert_eq!(by_id.len(), 2, "{by_id:?}");
}

/// `inferd key new`'s output: the key, its SHA-256, the `INFERD_API_KEYS` entry and the
/// `[[auth.api_keys]]` block.
fn new_key_from_cli(name: &str, scopes: &str) -> (String, String, String, String) {
    let out = crate::process::inferd().args(["key", "new", "--name", name, "--scopes", scopes]).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let b64url = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut keys: Vec<&str> =
        stdout.split(|c: char| !b64url(c)).filter(|w| w.starts_with("inferd_") && w.len() == 50).collect();
    keys.dedup();
    assert_eq!(keys.len(), 1, "one key, inferd_ + 43 base64url characters: {stdout}");
    let key = keys[0].to_owned();
    use base64::Engine;
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&key["inferd_".len()..]);
    assert_eq!(random.map(|r| r.len()).ok(), Some(32), "43 base64url characters are 32 random bytes: {key}");
    let hash = sha256_hex(&key);
    let hashes: Vec<&str> = stdout.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 64).collect();
    assert!(
        !hashes.is_empty() && hashes.iter().all(|h| *h == hash),
        "the printed sha256 is the key's: {hash}\n{stdout}"
    );

    // The [[auth.api_keys]] block, as TOML.
    let start = stdout.find("[[auth.api_keys]]").unwrap_or_else(|| panic!("an [[auth.api_keys]] block: {stdout}"));
    let block: String = stdout[start..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with("INFERD_API_KEYS") && !l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed: toml::Value = toml::from_str(&block).unwrap_or_else(|e| panic!("the block is TOML ({e}): {block}"));
    let entry = &parsed["auth"]["api_keys"][0];
    assert_eq!(entry["name"].as_str(), Some(name), "{block}");
    assert_eq!(entry["sha256"].as_str(), Some(hash.as_str()), "{block}");
    let want: Vec<toml::Value> = scopes.split(',').map(|s| toml::Value::String(s.into())).collect();
    assert_eq!(entry["scopes"].as_array(), Some(&want), "{block}");
    assert!(!block.contains(&key), "the block holds the hash, never the key: {block}");

    let env_entry = format!("{name}:{}:{hash}", scopes.replace(',', "+"));
    assert!(stdout.contains("INFERD_API_KEYS"), "{stdout}");
    assert!(stdout.contains(&env_entry), "the INFERD_API_KEYS entry {env_entry}: {stdout}");
    (key, hash, env_entry, block)
}

#[tokio::test]
async fn key_new_prints_a_working_key_and_only_its_hash_goes_in_the_config() {
    let (key, _, entry, _) = new_key_from_cli("app", "predict,read");
    let (other, _, _, block) = new_key_from_cli("batch-job.2", "predict");
    let (never, ..) = new_key_from_cli("app", "predict,read");
    assert!(key != other && key != never && other != never, "each key is fresh");
    let bad =
        crate::process::inferd().args(["key", "new", "--name", "app", "--scopes", "predict,write"]).output().unwrap();
    assert!(!bad.status.success(), "an unknown scope is refused");
    assert!(!String::from_utf8_lossy(&bad.stdout).contains("inferd_"), "and no key is printed");

    // One key in the file (its printed block), one from the environment: both let their holder in.
    let dir = tempfile::tempdir().unwrap();
    let runtime = std::fs::read_to_string(repo().join("runtime.toml")).unwrap();
    let root = repo().display().to_string();
    let runtime = runtime
        .replace("path = \"models/", &format!("path = \"{root}/models/"))
        .replace("schema = \"schemas/", &format!("schema = \"{root}/schemas/"));
    let config = dir.path().join("runtime.toml");
    std::fs::write(&config, format!("{runtime}\n{block}")).unwrap();
    let server = Proc::start(&["--config", config.to_str().unwrap()], &[("INFERD_API_KEYS", &entry)]);
    let client = reqwest::Client::new();
    let predict = json!({"instances": [schema_example("house_price")]});
    let status = async |rb: RequestBuilder| rb.send().await.unwrap().status().as_u16();
    assert_eq!(status(client.post(server.url("/predict")).bearer_auth(&key).json(&predict)).await, 200);
    assert_eq!(status(client.get(server.url("/models")).header("x-api-key", &key)).await, 200);
    assert_eq!(
        status(client.get(server.url("/metrics")).bearer_auth(&key)).await,
        403,
        "predict and read, not metrics"
    );
    assert_eq!(status(client.post(server.url("/predict")).header("x-api-key", &other).json(&predict)).await, 200);
    assert_eq!(status(client.get(server.url("/models")).bearer_auth(&other)).await, 403, "predict only");
    assert_eq!(status(client.get(server.url("/models")).bearer_auth(&never)).await, 401, "never configured");
    assert_eq!(status(client.get(server.url("/models"))).await, 401);
    let (lines, _log) = server.stop();
    let lines_text = lines.join("\n");
    for k in [&key, &other, &never] {
        assert!(!lines_text.contains(k.as_str()), "a key was logged: {lines_text}");
    }
    let access: Vec<Value> =
        parsed(&lines).into_iter().filter(|l| l["message"] == "request" && l["status"] == 200).collect();
    let mut principals: Vec<&str> = access.iter().map(|l| l["principal"].as_str().unwrap_or("<none>")).collect();
    principals.sort();
    assert_eq!(principals, ["app", "app", "batch-job.2"], "{access:?}");
}

#[tokio::test]
async fn reloading_needs_the_admin_scope() {
    let (mut config, k) = keys_config();
    let admin = new_key();
    config.auth.api_keys.push(api_key("operator", &admin, &["admin"]));
    let ctx = Ctx::spawn(config, Some(&k.ops), &[&k.app, &admin]).await;
    ctx.check("POST", "/admin/reload", Cred::None, &["missing"]).await.unauthorized(false);
    ctx.check("POST", "/admin/reload", Cred::Bearer(&k.app), &["forbidden"]).await.forbidden("admin");
    ctx.check("POST", "/admin/reload", Cred::Key(&k.ops), &["forbidden"]).await.forbidden("admin");
    // Past access control (and not held to loopback): this in-memory config has no file to read.
    let answer = ctx.check("POST", "/admin/reload", Cred::Bearer(&admin), &[]).await;
    assert_eq!(answer.status, 409, "{}", answer.text);
    assert!(answer.text.contains("not read from a file"), "{}", answer.text);
    ctx.stop().await;
}
