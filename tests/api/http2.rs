//! HTTP/2 connections held as HTTP/1.1 ones are: one with no request in progress is closed
//! after the header-read timeout (GOAWAY), a client that stops answering is found by ping, a
//! slow call is never cut by the idle timer, and a header list over the limit is refused on
//! its stream alone, in each protocol's terms.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use inferd::grpc::proto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::grpc::{answer_of, arriving, call_of, framed, h2, linear_row, unary, unary_metadata};
use crate::helpers::{eventually, test_config, TestApp};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const END_HEADERS: u8 = 0x4;

/// An HTTP/2 frame: its 9-byte header and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend(payload);
    frame
}

/// A header block of literal fields, not indexed and not Huffman-coded (RFC 7541, 6.2.2);
/// names and values shorter than 127 bytes.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        for text in [name, value] {
            assert!(text.len() < 127);
            block.push(text.len() as u8);
            block.extend(text.as_bytes());
        }
    }
    block
}

/// Reads what the server sends until it closes the connection, at most until `limit` has
/// passed since `since`: the types of the frames it sent, and when it closed, counted from
/// `since` (`None` if it did not).
async fn frames_until_closed(stream: &mut TcpStream, since: Instant, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = since;
    let (mut received, mut buf) = (Vec::new(), [0u8; 4096]);
    let closed = loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    let mut kinds = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        kinds.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    (kinds, closed)
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn an_http2_client_that_sends_only_the_preface_is_sent_goaway_and_disconnected() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let connected = Instant::now();
    let mut preface_only = TcpStream::connect(addr(&app)).await.unwrap();
    preface_only.write_all(PREFACE).await.unwrap();
    let mut with_settings = TcpStream::connect(addr(&app)).await.unwrap();
    with_settings.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat()).await.unwrap();
    for (name, stream) in [("preface only", &mut preface_only), ("preface and SETTINGS", &mut with_settings)] {
        // Neither acknowledges anything: dropped a second after GOAWAY, not held for ever.
        let (kinds, closed) = frames_until_closed(stream, connected, Duration::from_secs(10)).await;
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after 10 s"));
        assert!(
            closed >= Duration::from_millis(250),
            "{name}: closed after the idle timeout, not at once ({closed:?})"
        );
        assert!(kinds.contains(&GOAWAY), "{name}: told with GOAWAY, got frames {kinds:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_http2_connection_with_no_call_in_progress_is_closed_even_if_its_client_pings() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let stream = TcpStream::connect(addr(&app)).await.unwrap();
    // A client that keeps its connection alive with pings, as gRPC clients can be told to.
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(50))
        .keep_alive_while_idle(true)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    let (_, status, _) = unary(&mut sender, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0");
    let answered = Instant::now();
    eventually(Duration::from_secs(5), "the idle connection closed", async || sender.is_closed()).await;
    assert!(
        answered.elapsed() >= Duration::from_millis(250),
        "closed after the idle timeout: {:?}",
        answered.elapsed()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_slow_call_is_not_cut_by_the_idle_timeout_nor_its_connection_closed() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let mut sender = h2(&app).await;
    let message = framed(&linear_row());
    let (tx, body) = arriving(&message[..10]).await;
    let call = tokio::spawn(sender.send_request(call_of("ModelInfer", body)));
    // The client sends nothing for three idle timeouts while its call is in progress.
    tokio::time::sleep(Duration::from_millis(900)).await;
    tx.send(Bytes::copy_from_slice(&message[10..])).await.unwrap();
    drop(tx);
    let (_, status, message) = answer_of(call.await.unwrap().expect("answered")).await;
    assert_eq!(status, "0", "{message}");
    // No GOAWAY was sent meanwhile: the connection takes the next call.
    let live = call_of("ServerLive", Full::new(Bytes::from(framed(&proto::ServerLiveRequest {}))).boxed());
    let (_, status, _) = answer_of(sender.send_request(live).await.expect("the connection is still open")).await;
    assert_eq!(status, "0");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_disconnected_with_its_call_in_progress() {
    let mut config = test_config();
    config.server.header_read_timeout_ms = 300;
    config.server.write_timeout_ms = 300;
    config.server.request_timeout_ms = 30_000;
    let app = TestApp::spawn_with(config).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    let headers = header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    let message = framed(&linear_row());
    // A call whose message never finishes arriving, from a client that then goes silent: it
    // acknowledges neither SETTINGS nor PING, as a peer that is gone would not.
    let opening = [
        PREFACE,
        &frame(SETTINGS, 0, 0, &[]),
        &frame(HEADERS, END_HEADERS, 1, &headers),
        &frame(DATA, 0, 1, &message[..10]),
    ]
    .concat();
    stream.write_all(&opening).await.unwrap();
    let (kinds, closed) = frames_until_closed(&mut stream, Instant::now(), Duration::from_secs(20)).await;
    let closed = closed.expect("closed");
    assert!(kinds.contains(&PING), "pinged: frames {kinds:?}");
    // Long before the call's deadline (30 s) would have ended it.
    assert!(closed < Duration::from_secs(5), "closed when the ping went unanswered, after {closed:?}");
    // The server goes on serving.
    let (_, status, _) = unary(&mut h2(&app).await, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0");
    app.stop().await;
}

#[tokio::test]
async fn a_header_list_over_the_limit_is_refused_on_its_stream_alone() {
    let app = TestApp::spawn().await;
    // server.max_header_bytes is 16 KiB.
    let big = "a".repeat(20_000);
    let mut sender = h2(&app).await;
    let (_, status, message) =
        unary_metadata(&mut sender, "ServerLive", &proto::ServerLiveRequest {}, &[("x-big", &big)]).await;
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {message}");
    assert!(message.contains("16384") && message.contains("max_header_bytes"), "names the limit: {message}");

    // REST over HTTP/2: 431 with no body, as over HTTP/1.1.
    let rest = Request::get("http://localhost/health").header("x-big", &big).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(rest).await.expect("answered");
    assert_eq!(response.status(), 431);
    assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty());
    let http1 = app.client.get(app.url("/health")).header("x-big", &big).send().await.unwrap();
    assert_eq!(http1.status(), 431);

    // Far over it (past twice the limit): h2's own 431, still on the stream alone.
    let huge = "a".repeat(40_000);
    let rest = Request::get("http://localhost/health").header("x-big", &huge).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(rest).await.expect("answered");
    assert_eq!(response.status(), 431);

    // The connection's other calls go on.
    let (_, status, message) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "0", "{message}");
    app.stop().await;
}
