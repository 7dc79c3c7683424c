//! gRPC bodies that break the framing or the protobuf encoding, sent over HTTP/2 to the real
//! server: each is a status that blames the client (INVALID_ARGUMENT, or tonic's own
//! UNIMPLEMENTED and OUT_OF_RANGE), never INTERNAL or UNKNOWN, which say the server is at fault.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::grpc::{call_of, framed, h2, linear_row};
use crate::helpers::TestApp;

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
    assert_eq!(code, "11", "a declared length over the body limit is tonic's OUT_OF_RANGE: {message}");
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
