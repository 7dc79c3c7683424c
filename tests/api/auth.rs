//! Access control (issue 10): API keys and JWT bearer tokens, the scope each route needs, the
//! 401/403/429 answers and their headers, what is counted (`inferd_auth_failures_total`) and
//! logged (`principal`), that no credential is ever echoed, per-principal rate limits, and
//! `inferd key new`.
//!
//! The JWT tests are in `jwt`, behind the `external-tools` feature: their tokens come from Python.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
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

#[cfg(feature = "external-tools")]
mod jwt;

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
    // Refilled after Retry-After: the window itself is under test, so it is waited out.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    ctx.check("GET", "/models", Cred::Bearer(&limited), &[]).await.ok();
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
