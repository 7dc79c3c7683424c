//! A real browser (headless Chromium) calling `POST /predict` from a page on another local
//! origin. Behind the `external-tools` feature: scripts/test.sh installs Chromium and runs these.
//!
//! They need Chromium at `/usr/bin/chromium` (Debian: `apt-get update && apt-get install -y
//! --no-install-recommends chromium`), or the path in `CHROMIUM`. Without it they fail and say
//! so; they never skip.
//!
//! The page's `fetch` goes through a small recording proxy in front of inferd, so that a test can
//! see what the browser really sent (its preflight) and what inferd answered to it, including when
//! the browser then blocks the call. The proxy passes requests and answers through unchanged.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, Response};
use axum::Router;
use inferd::config::ApiKeyConfig;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{config_with, cors, header_values, post_from, preflight, OTHER_ORIGIN};
use crate::helpers::{assert_error, schema_example, test_config, TestApp};

/// One Chromium run, page load to DOM dump, may take this long (wall clock).
const BROWSER_LIMIT: Duration = Duration::from_secs(15);
const INSTALL: &str = "apt-get update && apt-get install -y --no-install-recommends chromium";

/// One Chromium at a time: the machine is small and each run starts a whole browser.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        path.is_file(),
        "the CORS browser tests need Chromium at {} (or set CHROMIUM to its path); on Debian/Ubuntu: {INSTALL}",
        path.display()
    );
    path
}

/// A loopback HTTP server run by the test; stops when dropped.
struct Local {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(router: Router) -> Local {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback port");
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Local { origin, task }
}

/// One request the browser sent to inferd (through the proxy), and inferd's answer.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    origin: Option<String>,
    credential: bool,
    status: u16,
    allow_origin: Option<String>,
}

#[derive(Clone)]
struct Proxy {
    target: String,
    client: reqwest::Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

const HOP_BY_HOP: [header::HeaderName; 4] =
    [header::HOST, header::CONNECTION, header::CONTENT_LENGTH, header::TRANSFER_ENCODING];

async fn forward(State(proxy): State<Proxy>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let mut out = proxy.client.request(parts.method.clone(), format!("{}{path}", proxy.target)).body(body);
    for (name, value) in parts.headers.iter().filter(|(n, _)| !HOP_BY_HOP.contains(n)) {
        out = out.header(name, value);
    }
    let text = |h: &HeaderMap, n: &str| h.get(n).map(|v| v.to_str().unwrap_or("?").to_owned());
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        origin: text(&parts.headers, "origin"),
        credential: parts.headers.contains_key("x-api-key") || parts.headers.contains_key("authorization"),
        status: 502,
        allow_origin: None,
    };
    let answer = match out.send().await {
        Ok(answer) => answer,
        Err(e) => {
            proxy.seen.lock().unwrap().push(seen);
            return Response::builder().status(502).body(Body::from(format!("proxy: {e}"))).unwrap();
        }
    };
    seen.status = answer.status().as_u16();
    seen.allow_origin = text(answer.headers(), "access-control-allow-origin");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers().iter().filter(|(n, _)| !HOP_BY_HOP.contains(n)) {
        response = response.header(name, value);
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    proxy.seen.lock().unwrap().push(seen);
    response.body(Body::from(bytes)).unwrap()
}

async fn recording_proxy(target: &str) -> (Local, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = Proxy { target: target.to_owned(), client: reqwest::Client::new(), seen: seen.clone() };
    (serve(Router::new().fallback(forward).with_state(proxy)).await, seen)
}

/// The page: one cross-origin `fetch` of `POST {api}/predict` (a JSON body, so the browser sends
/// a preflight first), then its outcome written into `<pre id="out">`.
fn page(api: &str, api_key: Option<&str>) -> String {
    let instance = schema_example("house_price");
    let key = api_key.map_or("null".to_owned(), |k| json!(k).to_string());
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>inferd CORS</title></head>
<body><pre id="out">PENDING</pre><pre id="body"></pre>
<script>
const out = document.getElementById("out");
const headers = {{"content-type": "application/json", "x-request-id": "cors-1"}};
const key = {key};
if (key) headers["x-api-key"] = key;
fetch({api} + "/predict", {{
  method: "POST",
  headers,
  body: JSON.stringify({{instances: [{instance}]}}),
}}).then(async (r) => {{
  const text = await r.text();
  document.getElementById("body").textContent = text;
  let price = "none";
  try {{ price = JSON.parse(text).predictions[0].price; }} catch (e) {{}}
  out.textContent = "OK " + r.status + " " + price + " " + r.headers.get("x-request-id");
}}).catch((e) => {{
  out.textContent = "BLOCKED " + e.name + ": " + e.message;
}});
</script></body></html>
"#,
        api = json!(api),
    )
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// The text of `<pre id="{id}">` in a dumped DOM.
fn pre(dom: &str, id: &str) -> Option<String> {
    let open = format!("<pre id=\"{id}\">");
    let start = dom.find(&open)? + open.len();
    let end = start + dom[start..].find("</pre>")?;
    Some(unescape(&dom[start..end]))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.contains("dbus")).collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Loads `url` in a fresh headless Chromium and returns the DOM once the page's work is done.
/// The browser is killed (its whole process group) if it runs past `BROWSER_LIMIT`.
fn browse(url: &str) -> String {
    let chromium = chromium();
    let dir = tempfile::tempdir().expect("temporary folder");
    let stdout = dir.path().join("dom.html");
    let stderr = dir.path().join("chromium.log");
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-quic",
            "--no-proxy-server",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg("--dump-dom")
        .arg(url)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; on Debian/Ubuntu: {INSTALL}", chromium.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > BROWSER_LIMIT {
            // The group is ours (process_group(0) above) and its leader is not yet reaped, so its
            // id cannot have been reused.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("chromium did not finish {url} within {BROWSER_LIMIT:?}; killed. Its log:\n{}", tail(&stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut dom = String::new();
    std::fs::File::open(&stdout).unwrap().read_to_string(&mut dom).unwrap();
    assert!(
        status.success() && dom.contains("id=\"out\""),
        "chromium {status} on {url}; DOM: {dom}\nlog:\n{}",
        tail(&stderr)
    );
    eprintln!("chromium: {url} in {:?}", started.elapsed());
    dom
}

struct BrowserRun {
    /// `<pre id="out">`: `OK <status> <price> <x-request-id>` or `BLOCKED <error>`.
    out: String,
    body: String,
    seen: Vec<Seen>,
    page_origin: String,
}

/// The page's server, on its own loopback origin; each `run_page` puts its page there.
struct Site {
    local: Local,
    html: Arc<Mutex<String>>,
}

async fn site() -> Site {
    let html = Arc::new(Mutex::new(String::new()));
    let page = html.clone();
    let router = Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = page.lock().unwrap().clone();
            async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html) }
        }),
    );
    Site { local: serve(router).await, html }
}

/// Loads the page (calling inferd through a fresh recording proxy) in Chromium and collects
/// what happened.
async fn run_page(app: &TestApp, site: &Site, api_key: Option<&str>) -> BrowserRun {
    let _one = BROWSER.lock().await;
    let (proxy, seen) = recording_proxy(&app.base).await;
    *site.html.lock().unwrap() = page(&proxy.origin, api_key);
    let url = format!("{}/", site.local.origin);
    let dom = tokio::task::spawn_blocking(move || browse(&url))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let out = pre(&dom, "out").unwrap_or_else(|| panic!("no <pre id=out> in the DOM: {dom}"));
    let body = pre(&dom, "body").unwrap_or_default();
    let seen = seen.lock().unwrap().clone();
    drop(proxy);
    BrowserRun { out, body, seen, page_origin: site.local.origin.clone() }
}

impl BrowserRun {
    fn preflights(&self) -> Vec<&Seen> {
        self.seen.iter().filter(|s| s.method == "OPTIONS" && s.path == "/predict").collect()
    }

    fn posts(&self) -> Vec<&Seen> {
        self.seen.iter().filter(|s| s.method == "POST" && s.path == "/predict").collect()
    }

    /// `OK 200 <price> cors-1`, checked; returns the price.
    fn assert_ok(&self) -> f64 {
        let words: Vec<&str> = self.out.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"OK"), "the browser's fetch failed: {}; inferd saw {:?}", self.out, self.seen);
        assert_eq!(words.get(1), Some(&"200"), "{} {}", self.out, self.body);
        let price: f64 = words.get(2).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no price: {}", self.out));
        assert!(price > 10_000.0, "a house price: {}", self.out);
        assert_eq!(
            words.get(3),
            Some(&"cors-1"),
            "the page can read x-request-id (access-control-expose-headers): {}",
            self.out
        );
        price
    }

    /// The browser sent exactly one preflight, inferd answered it 204; `allowed` says whether
    /// with the page's origin in access-control-allow-origin.
    fn assert_preflight(&self, allowed: bool) {
        let preflights = self.preflights();
        assert_eq!(preflights.len(), 1, "the JSON body makes the browser send one preflight: {:?}", self.seen);
        let p = preflights[0];
        assert_eq!(p.origin.as_deref(), Some(self.page_origin.as_str()), "{p:?}");
        assert!(!p.credential, "a browser's preflight never carries the credential: {p:?}");
        assert_eq!(p.status, 204, "inferd answers the preflight 204: {p:?}");
        let want = allowed.then_some(self.page_origin.as_str());
        assert_eq!(p.allow_origin.as_deref(), want, "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_an_allowed_origin_can_predict_and_read_the_request_id() {
    chromium();
    let site = site().await;
    let origin = site.local.origin.clone();
    let app = TestApp::spawn_with(config_with(Some(cors(&[OTHER_ORIGIN, &origin])))).await;
    let run = run_page(&app, &site, None).await;
    run.assert_ok();
    run.assert_preflight(true);
    let posts = run.posts();
    assert_eq!(posts.len(), 1, "{:?}", run.seen);
    assert_eq!((posts[0].status, posts[0].allow_origin.as_deref()), (200, Some(origin.as_str())), "{:?}", posts[0]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_another_origin_is_blocked_after_inferd_answers_the_preflight() {
    chromium();
    let site = site().await;
    let app = TestApp::spawn_with(config_with(Some(cors(&[OTHER_ORIGIN])))).await;
    let run = run_page(&app, &site, None).await;
    assert!(run.out.starts_with("BLOCKED "), "the browser must block an origin that is not listed: {}", run.out);
    run.assert_preflight(false);
    assert!(run.seen.iter().all(|s| s.status < 500), "no 5xx: {:?}", run.seen);
    assert_eq!(run.posts().len(), 0, "after a refused preflight the browser does not send the POST: {:?}", run.seen);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_preflight_needs_no_credential_and_the_browser_sends_its_key() {
    chromium();
    const KEY: &str = "inferd_cors-test-key-0123456789abcdefghijklmnopq";
    let site = site().await;
    let origin = site.local.origin.clone();
    let mut config = test_config();
    config.cors = Some(cors(&[&origin]));
    config.auth.api_keys.push(ApiKeyConfig {
        name: "web-app".into(),
        sha256: hex::encode(Sha256::digest(KEY.as_bytes())),
        scopes: vec!["predict".into()],
        rate_limit: None,
    });
    config.check().expect("valid config");
    let app = TestApp::spawn_with(config).await;

    // Over plain HTTP first: the preflight carries no credential and is answered 204...
    let response = preflight(&app, "/predict", &origin).await;
    assert_eq!(response.status(), 204, "a preflight needs no credential: {:?}", response.headers());
    assert_eq!(header_values(response.headers(), "access-control-allow-origin"), origin, "{:?}", response.headers());
    // ...while the call without its key is 401, readable by a page (it carries allow-origin).
    let response = post_from(&app, &origin).await;
    assert_eq!(header_values(response.headers(), "access-control-allow-origin"), origin, "{:?}", response.headers());
    assert_error(response, 401, "unauthorized").await;

    // The browser: the preflight without the key, then the POST with it.
    let run = run_page(&app, &site, Some(KEY)).await;
    run.assert_ok();
    run.assert_preflight(true);
    let posts = run.posts();
    assert_eq!(posts.len(), 1, "{:?}", run.seen);
    assert!(posts[0].credential && posts[0].status == 200, "{:?}", posts[0]);

    // A page without the key reaches inferd and reads its 401.
    let run = run_page(&app, &site, None).await;
    assert!(run.out.starts_with("OK 401 "), "a 401 the page can read: {} {}", run.out, run.body);
    run.assert_preflight(true);
    app.stop().await;
}

#[test]
fn the_page_parser_reads_the_outcome() {
    let dom = "<html><body><pre id=\"out\">OK 200 123.5 cors-1</pre><pre id=\"body\">{&quot;a&quot;:1} &lt;&amp;</pre>";
    assert_eq!(pre(dom, "out").as_deref(), Some("OK 200 123.5 cors-1"));
    assert_eq!(pre(dom, "body").as_deref(), Some("{\"a\":1} <&"));
}
