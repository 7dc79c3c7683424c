//! Connections a client holds open cannot lock others out, and SIGTERM answers what the kernel
//! already accepted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferd::config::DrainGate;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{eventually, schema_example, test_config, TestApp};

/// Ample for the few hundred answers the shutdown tests wait for before they signal.
const ANSWERED_WITHIN: Duration = Duration::from_secs(60);

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Waits until the server closes `stream` (read returns 0 or fails), at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let mut idle = TcpStream::connect(addr(&app)).await.unwrap();
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"POST /predict HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let mut kept_alive = TcpStream::connect(addr(&app)).await.unwrap();
    kept_alive.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 16];
    kept_alive.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..12], b"HTTP/1.1 200");
    for (name, stream) in [("idle", &mut idle), ("slowloris", &mut slow), ("keep-alive", &mut kept_alive)] {
        let closed = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "{name} connection still open after 5 s");
    }
    app.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_new_clients_wait_for_a_free_slot_instead_of_failing() {
    let mut config = test_config();
    config.server.max_connections = 2;
    config.server.header_read_timeout_ms = 400;
    let app = TestApp::spawn_with(config).await;
    let _held: Vec<TcpStream> =
        futures_all((0..2).map(|_| TcpStream::connect(addr(&app)))).await.into_iter().map(Result::unwrap).collect();
    // Both slots are taken by silent clients; a third client is served once one times out.
    let started = Instant::now();
    let response = app.predict(&[schema_example("house_price")]).await;
    assert_eq!(response.status(), 200);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "the cap held the third client back ({waited:?})");
    app.stop().await;
}

async fn futures_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for future in futures {
        out.push(future.await);
    }
    out
}

#[derive(Default)]
pub(crate) struct Tally {
    pub answered: AtomicUsize,
    pub refused: AtomicUsize,
    /// Connected, request sent, then reset or closed without an answer: what must not happen.
    pub lost: AtomicUsize,
}

/// One client: a new connection per request until the server is gone.
pub(crate) async fn connection_per_request(addr: String, body: Arc<String>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let mut stream = match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => stream,
            // Refused, or a SYN left unanswered while the server drains: not a lost request.
            _ => {
                tally.refused.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        let request = format!(
            "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{}",
            body.len(),
            body
        );
        let mut answer = Vec::new();
        let sent = stream.write_all(request.as_bytes()).await;
        let read = stream.read_to_end(&mut answer).await;
        if sent.is_ok() && read.is_ok() && answer.starts_with(b"HTTP/1.1 ") {
            tally.answered.fetch_add(1, Ordering::SeqCst);
        } else {
            eprintln!(
                "lost: sent {:?} read {:?} answer {:?}",
                sent.err(),
                read.err(),
                String::from_utf8_lossy(&answer)
            );
            tally.lost.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_every_connection_the_kernel_accepted() {
    every_connection_the_kernel_accepted_is_answered(DrainGate::Auto).await;
}

/// The gate a process without `CAP_NET_ADMIN` gets where the kernel refuses it socket filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_every_connection_the_kernel_accepted_behind_the_min_ttl_gate() {
    every_connection_the_kernel_accepted_is_answered(DrainGate::MinTtl).await;
}

async fn every_connection_the_kernel_accepted_is_answered(gate: DrainGate) {
    let mut config = test_config();
    config.server.drain_gate = gate;
    let app = TestApp::spawn_with(config).await;
    let body = Arc::new(json!({"instances": [schema_example("house_price")]}).to_string());
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..32)
        .map(|_| tokio::spawn(connection_per_request(addr(&app), body.clone(), tally.clone(), stop.clone())))
        .collect();
    let answered = async || tally.answered.load(Ordering::SeqCst) >= 500;
    eventually(ANSWERED_WITHIN, "500 requests answered before the shutdown", answered).await;
    let _logs = app.stop().await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let (answered, lost) = (tally.answered.load(Ordering::SeqCst), tally.lost.load(Ordering::SeqCst));
    assert_eq!(lost, 0, "{lost} requests were reset or cut off ({answered} answered)");
}

/// Reads one response off a keep-alive connection: `Some(says close)`, or `None` if the
/// connection ended first.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<bool> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("responses carry a content-length");
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(head.contains("connection: close"))
}

/// One client: requests back to back on one keep-alive connection, a new one when told to close.
pub(crate) async fn keep_alive_client(addr: String, body: Arc<String>, tally: Arc<Tally>) {
    let request = format!(
        "POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        body
    );
    let mut buf = Vec::new();
    'connections: loop {
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&addr)).await else {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            return;
        };
        loop {
            if stream.write_all(request.as_bytes()).await.is_err() {
                // Closed by the server before this request was sent: not lost.
                continue 'connections;
            }
            match read_response(&mut stream, &mut buf).await {
                Some(close) => {
                    tally.answered.fetch_add(1, Ordering::SeqCst);
                    if close {
                        continue 'connections;
                    }
                    // A client that thinks a moment between requests: its connection is idle
                    // now and then, as a pooled connection is.
                    tokio::time::sleep(Duration::from_micros(fastrand::u64(500..50_000))).await;
                }
                None => {
                    tally.lost.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_requests_already_sent_on_keep_alive_connections() {
    requests_sent_on_keep_alive_connections_are_answered(DrainGate::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_requests_already_sent_on_keep_alive_connections_behind_the_min_ttl_gate() {
    requests_sent_on_keep_alive_connections_are_answered(DrainGate::MinTtl).await;
}

async fn requests_sent_on_keep_alive_connections_are_answered(gate: DrainGate) {
    let mut config = test_config();
    config.server.drain_gate = gate;
    let app = TestApp::spawn_with(config).await;
    let body = Arc::new(json!({"instances": [schema_example("house_price")]}).to_string());
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> =
        (0..32).map(|_| tokio::spawn(keep_alive_client(addr(&app), body.clone(), tally.clone()))).collect();
    let answered = async || tally.answered.load(Ordering::SeqCst) >= 300;
    eventually(ANSWERED_WITHIN, "300 requests answered before the shutdown", answered).await;
    let _logs = app.stop().await;
    for client in clients {
        client.await.unwrap();
    }
    let (answered, lost) = (tally.answered.load(Ordering::SeqCst), tally.lost.load(Ordering::SeqCst));
    assert_eq!(lost, 0, "{lost} requests sent on open connections got no answer ({answered} answered)");
}
