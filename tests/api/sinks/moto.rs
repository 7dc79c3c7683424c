//! An S3-compatible server: moto in server mode (`.venv/bin/moto_server`, pinned in
//! tests/sinks/requirements.txt), on a free loopback port, killed (by its own process id) when
//! dropped. moto keeps everything in memory and checks no signature: the tests read the
//! buckets with plain HTTP requests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::repo;

pub(crate) struct Moto {
    child: Child,
    pub endpoint: String,
    client: reqwest::Client,
    /// moto's own output, for failure messages.
    log: tempfile::NamedTempFile,
}

/// moto answers a request without `Authorization` as an anonymous one, and refuses to let it
/// read a private object (403); with any such header it is an authenticated one, since moto
/// checks no signature.
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                             SignedHeaders=host, Signature=0";

impl Moto {
    /// Starts moto_server and returns once it answers HTTP.
    pub fn start() -> Self {
        let program = repo().join(".venv/bin/moto_server");
        assert!(
            program.is_file(),
            "{} is missing: run scripts/test.sh, or `.venv/bin/python -m pip install -r tests/sinks/requirements.txt`",
            program.display()
        );
        let port = super::free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            log,
        };
        let until = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited ({status}) before it served:\n{}", moto.log());
            }
            assert!(Instant::now() < until, "moto_server did not listen within 60 s:\n{}", moto.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The variables the binary reads its S3 endpoint and credentials from.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = self.client.put(format!("{}/{bucket}", self.endpoint)).send().await.expect("moto answers");
        assert_eq!(response.status(), 200, "PUT /{bucket}: {}", response.text().await.unwrap());
    }

    /// Every key under `prefix` in `bucket`, in S3's (name) order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_owned()), ("prefix", prefix.to_owned())];
            if let Some(token) = &token {
                query.push(("continuation-token", token.clone()));
            }
            let response = self
                .client
                .get(format!("{}/{bucket}", self.endpoint))
                .query(&query)
                .header("authorization", AUTHORIZATION)
                .send()
                .await
                .expect("moto answers");
            assert_eq!(response.status(), 200, "list {bucket}/{prefix}");
            let xml = response.text().await.unwrap();
            keys.extend(elements(&xml, "Key").into_iter().map(|k| unescape(&k)));
            token = elements(&xml, "NextContinuationToken").into_iter().next();
            if elements(&xml, "IsTruncated").first().map(String::as_str) != Some("true") || token.is_none() {
                return keys;
            }
        }
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let response = self
            .client
            .get(format!("{}/{bucket}/{key}", self.endpoint))
            .header("authorization", AUTHORIZATION)
            .send()
            .await
            .expect("moto answers");
        assert_eq!(response.status(), 200, "GET {bucket}/{key}");
        response.bytes().await.unwrap().to_vec()
    }

    /// Stores an object, for the harness test.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let response = self
            .client
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .header("authorization", AUTHORIZATION)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .expect("moto answers");
        assert_eq!(response.status(), 200, "PUT {bucket}/{key}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of every `<tag>...</tag>` in `xml` (S3's listings have no nesting within these).
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let end = rest.find(&close).expect("a closed element");
        out.push(rest[..end].to_owned());
        rest = &rest[end + close.len()..];
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The harness alone: moto starts, a bucket is made, an object put is listed and read back.
#[tokio::test]
async fn moto_serves_a_bucket() {
    let moto = Moto::start();
    moto.create_bucket("harness").await;
    assert_eq!(moto.list("harness", "").await, Vec::<String>::new());
    moto.put("harness", "a/b/one.txt", b"hello".to_vec()).await;
    moto.put("harness", "other.txt", b"x".to_vec()).await;
    assert_eq!(moto.list("harness", "a/").await, vec!["a/b/one.txt".to_owned()]);
    assert_eq!(moto.get("harness", "a/b/one.txt").await, b"hello");
}
