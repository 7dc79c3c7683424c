//! Fuzzed gRPC bodies, sent over HTTP/2 to the real server: mutations of valid
//! `ModelInferRequest`, `ModelMetadataRequest` and `ModelReadyRequest` messages (bit flips,
//! truncations, splices, random bytes, overlong varints, huge declared lengths, wrong wire
//! types, nested garbage) and of the 5-byte frame around them. Every answer is a gRPC status
//! the client can act on, never INTERNAL or UNKNOWN (those say the server is at fault), and the
//! server serves as before afterwards.
//!
//! Seeded as `fuzz.rs` is, with a fixed seed unless `INFERD_FUZZ_SEED` says otherwise;
//! `INFERD_FUZZ_CASE=<i>` replays case `i` alone, `INFERD_FUZZ_CASES=<n>` runs more. Beside
//! it, one frame per broken rule, each held to its exact status and message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastrand::Rng;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use inferd::grpc::proto;
use inferd::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use prost::Message;

use crate::fuzz::{case_seed, env_number};
use crate::grpc::{call_of, framed, h2, linear_row, unary};
use crate::helpers::TestApp;

const SEED: u64 = 0x22_6772_7063;
const DEFAULT_CASES: usize = 400;
/// Connections, each with one call at a time.
const CONNECTIONS: usize = 4;
/// Longer than any answer takes: a case still unanswered then is a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutated_grpc_body_gets_a_status_that_blames_the_client() {
    let seed = env_number("INFERD_FUZZ_SEED").unwrap_or(SEED);
    let cases = env_number("INFERD_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let only = env_number("INFERD_FUZZ_CASE").map(|i| i as usize);
    let app = TestApp::spawn().await;
    let next = Arc::new(AtomicUsize::new(only.unwrap_or(0)));
    let end = only.map_or(cases, |i| i + 1);
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let codes = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (next, failures, codes) = (next.clone(), failures.clone(), codes.clone());
        let mut sender = h2(&app).await;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                let case = Case::generate(&mut Rng::with_seed(case_seed(seed, i)));
                let request = call_of(case.method, Full::new(Bytes::from(case.body.clone())));
                let answer = match tokio::time::timeout(ANSWER_WITHIN, sender.send_request(request)).await {
                    Err(_) => Err("no answer in time".to_owned()),
                    Ok(Err(error)) => Err(format!("the call failed at the HTTP/2 level: {error}")),
                    Ok(Ok(response)) => status_of(response).await,
                };
                match answer {
                    Ok((code, _)) if code != "13" && code != "2" => {
                        *codes.lock().unwrap().entry(code).or_default() += 1;
                    }
                    failed => failures.lock().unwrap().push(format!(
                        "case {i} ({}, {} to {}): {failed:?}\n  body: {:02x?}",
                        case.mutation,
                        case.base,
                        case.method,
                        &case.body[..case.body.len().min(120)]
                    )),
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a fuzz worker panicked");
    }
    eprintln!(
        "grpc fuzz: {} cases (seed {seed}), grpc-status counts {:?}",
        end - only.unwrap_or(0),
        codes.lock().unwrap()
    );
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} cases got no client error; replay one with INFERD_FUZZ_SEED={seed} INFERD_FUZZ_CASE=<i>:\n{}",
        failures.len(),
        failures.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );

    // The server still serves, on a new connection.
    let (answer, status, message) = unary(&mut h2(&app).await, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "0", "a valid ModelInfer after the run: {message}");
    assert_eq!(proto::ModelInferResponse::decode(&answer[..]).unwrap().raw_output_contents.len(), 1);
    // And counted none of it as its own fault.
    let text = app.metrics().await;
    let faults: Vec<&str> = text
        .lines()
        .filter(|line| {
            (line.starts_with("inferd_http_requests_total{") && line.contains("status=\"5"))
                || (line.starts_with("inferd_grpc_requests_total{")
                    && (line.contains("code=\"INTERNAL\"") || line.contains("code=\"UNKNOWN\"")))
        })
        .collect();
    assert!(faults.is_empty(), "server faults counted: {faults:?}");
    app.stop().await;
}

/// Frames that each break one rule, and the status each gets.
#[tokio::test]
async fn each_malformed_frame_gets_a_clear_client_error() {
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let valid = framed(&linear_row());
    let mut garbage = vec![0u8];
    garbage.extend(3u32.to_be_bytes());
    garbage.extend([0x0a, 0x64, b'x']); // model_name declared 100 bytes long, 1 sent
    let flag = |value: u8| {
        let mut body = valid.clone();
        body[0] = value;
        body
    };
    let (compressed, bad_flag) = (flag(1), flag(7));
    let cases = [
        ("not protobuf", garbage, None, "3", "not valid protobuf"),
        ("two messages", [&valid[..], &valid[..]].concat(), None, "3", "exactly one"),
        ("a stray byte after the message", [&valid[..], &[0]].concat(), None, "3", "exactly one"),
        ("cut inside the message", valid[..valid.len() - 3].to_vec(), None, "3", "ended inside the message"),
        ("cut inside the prefix", valid[..3].to_vec(), None, "3", "prefix"),
        ("no message at all", Vec::new(), None, "3", "no message"),
        ("compressed flag, no grpc-encoding", compressed, None, "3", "compressed"),
        ("flag 7", bad_flag, None, "3", "flag"),
        // tonic's own answers, before the body is read.
        ("an encoding tonic lacks", valid.clone(), Some("gzip"), "12", "gzip"),
    ];
    for (name, body, encoding, want, says) in cases {
        let mut request = call_of("ModelInfer", Full::new(Bytes::from(body)));
        if let Some(encoding) = encoding {
            request.headers_mut().insert("grpc-encoding", encoding.parse().unwrap());
        }
        let response = sender.send_request(request).await.expect("answered");
        let (code, message) = status_of(response).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(code, want, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message:?} should say {says:?}");
    }
    let mut huge = valid.clone();
    huge[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    let response = sender.send_request(call_of("ModelInfer", Full::new(Bytes::from(huge)))).await.expect("answered");
    let (code, message) = status_of(response).await.unwrap();
    assert_eq!(code, "8", "a declared length over the body limit is RESOURCE_EXHAUSTED: {message}");
    assert!(message.contains("larger than the limit"), "{message}");
    app.stop().await;
}

/// The answer's `grpc-status` and `grpc-message`, or what is wrong with it as a gRPC answer.
async fn status_of(response: hyper::Response<hyper::body::Incoming>) -> Result<(String, String), String> {
    if response.status() != 200 {
        return Err(format!("HTTP {}", response.status()));
    }
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.map_err(|e| format!("the body failed: {e}"))?;
    let read = |map: &hyper::HeaderMap| {
        let text = |name: &str| map.get(name).map(|v| percent_decoded(v.as_bytes()));
        text("grpc-status").map(|status| (status, text("grpc-message").unwrap_or_default()))
    };
    read(&parts.headers).or_else(|| collected.trailers().and_then(read)).ok_or_else(|| "no grpc-status".to_owned())
}

/// `grpc-message` as sent, percent-encoded (gRPC over HTTP/2), made readable.
fn percent_decoded(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = tail.get(..2).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One generated call.
struct Case {
    method: &'static str,
    /// The valid message it started from.
    base: &'static str,
    mutation: &'static str,
    body: Vec<u8>,
}

/// The valid messages mutations start from, each with the method it is for.
fn bases() -> [(&'static str, &'static str, Vec<u8>); 4] {
    let typed = proto::ModelInferRequest {
        model_name: "house_price_linear".into(),
        model_version: "1".into(),
        id: "fuzz".into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![2, 5],
            contents: Some(proto::InferTensorContents {
                fp32_contents: vec![5850.0, 3.0, 1.0, 2.0, 1.0, 7260.0, 4.0, 2.0, 2.0, 2.0],
                ..Default::default()
            }),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor { name: "variable".into(), ..Default::default() }],
        ..Default::default()
    };
    let (name, version) = ("house_price_linear".to_owned(), "1".to_owned());
    [
        ("ModelInfer", "raw ModelInferRequest", linear_row().encode_to_vec()),
        ("ModelInfer", "typed ModelInferRequest", typed.encode_to_vec()),
        (
            "ModelMetadata",
            "ModelMetadataRequest",
            proto::ModelMetadataRequest { name: name.clone(), version: version.clone() }.encode_to_vec(),
        ),
        ("ModelReady", "ModelReadyRequest", proto::ModelReadyRequest { name, version }.encode_to_vec()),
    ]
}

const METHODS: [&str; 6] = ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"];

impl Case {
    fn generate(rng: &mut Rng) -> Self {
        let bases = bases();
        let (mut method, base, message) = bases[rng.usize(..bases.len())].clone();
        // Now and then a message sent to another method than its own.
        if rng.u8(..10) == 0 {
            method = METHODS[rng.usize(..METHODS.len())];
        }
        let other = &bases[rng.usize(..bases.len())].2;
        let (mutation, body) = match rng.u8(..15) {
            0 => ("bit flips", frame(bit_flips(rng, message))),
            1 => ("truncated message", frame(message[..rng.usize(..=message.len())].to_vec())),
            2 => ("splice", frame(splice(rng, message, other))),
            3 => ("random bytes", frame(random_bytes(rng, 0..200))),
            4 => ("overlong varint", frame(insert(rng, message, overlong_varint))),
            5 => ("huge declared length", frame(insert(rng, message, huge_length))),
            6 => ("wrong wire type", frame(wrong_wire_type(rng, message))),
            7 => ("nested garbage", frame(insert(rng, message, nested_garbage))),
            8 => ("deep nesting", frame(insert(rng, message, deep_nesting))),
            9 => ("random flag byte", with_flag(rng.u8(..), frame(message))),
            10 => ("declared length off", with_length(rng, frame(message))),
            11 => ("two messages", [frame(message.clone()), frame(message)].concat()),
            12 => ("body cut", cut(rng, frame(message))),
            13 => ("random body", random_bytes(rng, 0..64)),
            _ => {
                let flipped = frame(bit_flips(rng, message));
                ("mutated message, mutated frame", with_length(rng, flipped))
            }
        };
        Case { method, base, mutation, body }
    }
}

/// A message in its 5-byte frame, uncompressed.
fn frame(message: Vec<u8>) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    body
}

fn bit_flips(rng: &mut Rng, mut message: Vec<u8>) -> Vec<u8> {
    if !message.is_empty() {
        for _ in 0..rng.usize(1..=8) {
            let at = rng.usize(..message.len());
            message[at] ^= 1 << rng.u8(..8);
        }
    }
    message
}

/// A piece of `other` in place of a piece of `message`.
fn splice(rng: &mut Rng, message: Vec<u8>, other: &[u8]) -> Vec<u8> {
    let (from, to) = sorted(rng.usize(..=message.len()), rng.usize(..=message.len()));
    let (a, b) = sorted(rng.usize(..=other.len()), rng.usize(..=other.len()));
    [&message[..from], &other[a..b], &message[to..]].concat()
}

fn sorted(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn random_bytes(rng: &mut Rng, length: std::ops::Range<usize>) -> Vec<u8> {
    (0..rng.usize(length)).map(|_| rng.u8(..)).collect()
}

/// A piece made by `piece`, inserted at a random place (a field boundary or not).
fn insert(rng: &mut Rng, message: Vec<u8>, piece: fn(&mut Rng) -> Vec<u8>) -> Vec<u8> {
    let piece = piece(rng);
    let at = if rng.bool() { message.len() } else { rng.usize(..=message.len()) };
    [&message[..at], &piece, &message[at..]].concat()
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    while value >= 0x80 {
        bytes.push((value as u8) | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
    bytes
}

fn tag(field: u64, wire_type: u64) -> Vec<u8> {
    varint(field << 3 | wire_type)
}

/// A varint field whose value runs past 10 bytes, or whose tag does.
fn overlong_varint(rng: &mut Rng) -> Vec<u8> {
    let run = vec![0xff; rng.usize(10..=16)];
    if rng.bool() {
        [tag(rng.u64(1..=8), 0), run, vec![0x01]].concat()
    } else {
        [run, vec![0x01]].concat()
    }
}

/// A length-delimited field that declares far more bytes than follow.
fn huge_length(rng: &mut Rng) -> Vec<u8> {
    let length = [u64::from(u32::MAX), 1 << 40, u64::MAX, rng.u64(1000..1 << 31)][rng.usize(..4)];
    [tag(rng.u64(1..=8), 2), varint(length), random_bytes(rng, 0..8)].concat()
}

/// The message with one of its tags' wire type changed (the first byte is always a tag).
fn wrong_wire_type(rng: &mut Rng, mut message: Vec<u8>) -> Vec<u8> {
    if let Some(first) = message.first_mut() {
        *first = (*first & !0x07) | rng.u8(..8);
    }
    if rng.bool() {
        message = insert(rng, message, |rng| tag(rng.u64(1..=8), u64::from(rng.u8(..8))));
    }
    message
}

/// A message field (`inputs`, `outputs`, `parameters`) holding random bytes.
fn nested_garbage(rng: &mut Rng) -> Vec<u8> {
    let inner = random_bytes(rng, 0..40);
    [tag([4, 5, 6][rng.usize(..3)], 2), varint(inner.len() as u64), inner].concat()
}

/// `inputs` holding `contents` nested in themselves far past any sane depth: field 5 is a
/// message in both `ModelInferRequest` and `InferInputTensor`, so each level is one more.
fn deep_nesting(rng: &mut Rng) -> Vec<u8> {
    let mut inner = random_bytes(rng, 0..4);
    for _ in 0..rng.usize(20..300) {
        inner = [tag(5, 2), varint(inner.len() as u64), inner].concat();
    }
    inner
}

fn with_flag(flag: u8, mut body: Vec<u8>) -> Vec<u8> {
    body[0] = flag;
    body
}

/// The frame's declared length changed, the bytes that follow it not.
fn with_length(rng: &mut Rng, mut body: Vec<u8>) -> Vec<u8> {
    let actual = (body.len() - 5) as u32;
    let declared = match rng.u8(..4) {
        0 => 0,
        1 => actual.saturating_add(rng.u32(1..100)),
        2 => actual.saturating_sub(rng.u32(1..=actual.max(1))),
        _ => rng.u32(..),
    };
    body[1..5].copy_from_slice(&declared.to_be_bytes());
    body
}

/// The framed body cut anywhere, the prefix included.
fn cut(rng: &mut Rng, body: Vec<u8>) -> Vec<u8> {
    body[..rng.usize(..body.len())].to_vec()
}

#[test]
fn the_mutations_are_what_they_say() {
    assert_eq!(varint(300), [0xac, 0x02]);
    assert_eq!(tag(5, 2), [0x2a]);
    let mut rng = Rng::with_seed(1);
    for _ in 0..100 {
        let deep = deep_nesting(&mut rng);
        assert_eq!(deep[0], 0x2a, "each level starts with field 5, length-delimited");
        assert!(overlong_varint(&mut rng).iter().filter(|b| **b == 0xff).count() >= 10);
        let body = with_length(&mut rng, frame(vec![1, 2, 3]));
        assert_eq!(body.len(), 8, "only the declared length changes");
    }
}
