//! The Open Inference Protocol over gRPC on the HTTP port: HTTP/1.1 and HTTP/2 cleartext (by
//! prior knowledge, as gRPC clients connect) on the same listener, gRPC told apart by its
//! content type. NVIDIA's tritonclient.grpc drives the service itself (`tritonclient_grpc`).

use std::time::Duration;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http2;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inferd::grpc::proto;
use prost::Message;

use crate::helpers::{eventually, metric, TestApp};

/// An HTTP/2 connection opened by prior knowledge.
pub(crate) async fn h2<B>(app: &TestApp) -> http2::SendRequest<B>
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = app.base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    let (sender, connection) =
        http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2c handshake");
    tokio::spawn(connection);
    sender
}

/// A unary gRPC call: the answer's message bytes (without the frame) and its `grpc-status`.
pub(crate) async fn unary(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    method: &str,
    message: &impl Message,
) -> (Vec<u8>, String, String) {
    unary_with(sender, method, message, None).await
}

/// [`unary`] with an `x-api-key`.
async fn unary_with(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    method: &str,
    message: &impl Message,
    api_key: Option<&str>,
) -> (Vec<u8>, String, String) {
    let metadata: Vec<(&str, &str)> = api_key.map(|key| ("x-api-key", key)).into_iter().collect();
    unary_metadata(sender, method, message, &metadata).await
}

/// [`unary`] with metadata.
pub(crate) async fn unary_metadata(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    method: &str,
    message: &impl Message,
    metadata: &[(&str, &str)],
) -> (Vec<u8>, String, String) {
    let mut request = call_of(method, Full::new(Bytes::from(framed(message))));
    for (name, value) in metadata {
        request
            .headers_mut()
            .insert(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    let response = sender.send_request(request).await.expect("answered");
    answer_of(response).await
}

/// A message as gRPC frames it: uncompressed, its length, its bytes.
pub(crate) fn framed(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend((body.len() as u32).to_be_bytes());
    framed.extend(body);
    framed
}

pub(crate) fn call_of<B>(method: &str, body: B) -> Request<B> {
    Request::post(format!("http://localhost/inference.GRPCInferenceService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap()
}

/// The answer's message bytes (without the frame), its `grpc-status` and `grpc-message`.
pub(crate) async fn answer_of(response: hyper::Response<hyper::body::Incoming>) -> (Vec<u8>, String, String) {
    assert_eq!(response.status(), 200, "gRPC answers 200, its status in the trailers");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let status_of = |map: &hyper::HeaderMap| {
        map.get("grpc-status").map(|v| {
            (
                v.to_str().unwrap().to_owned(),
                map.get("grpc-message").map(|m| m.to_str().unwrap().to_owned()).unwrap_or_default(),
            )
        })
    };
    // A call that fails before any message is "trailers only": its status is in the headers.
    let (status, message) =
        status_of(&parts.headers).or_else(|| collected.trailers().and_then(status_of)).expect("a grpc-status");
    let bytes = collected.to_bytes();
    let payload = if bytes.len() >= 5 { bytes[5..].to_vec() } else { vec![] };
    (payload, status, message)
}

#[tokio::test]
async fn http1_and_h2c_share_the_port() {
    let app = TestApp::spawn().await;
    // HTTP/1.1, as before.
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);

    // REST over HTTP/2 by prior knowledge, then gRPC on the same connection.
    let mut sender = h2(&app).await;
    let request = Request::get("http://localhost/v2/health/live").body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"live":true}"#);

    let (live, status, _) = unary(&mut sender, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0");
    assert!(proto::ServerLiveResponse::decode(&live[..]).unwrap().live);
    let (ready, status, _) = unary(&mut sender, "ServerReady", &proto::ServerReadyRequest {}).await;
    assert_eq!(status, "0");
    assert!(proto::ServerReadyResponse::decode(&ready[..]).unwrap().ready);

    let unknown = proto::ModelMetadataRequest { name: "no_such_model".into(), version: String::new() };
    let (_, status, message) = unary(&mut sender, "ModelMetadata", &unknown).await;
    assert_eq!(status, "5", "NOT_FOUND: {message}");
    assert!(message.contains("no_such_model"), "{message}");

    // And HTTP/1.1 still works alongside the open HTTP/2 connection.
    let health = app.client.get(app.url("/v2/health/ready")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

/// One row for `house_price_linear`, raw, as tritonclient.grpc sends it.
pub(crate) fn linear_row() -> proto::ModelInferRequest {
    let features: Vec<u8> = [5850f32, 3.0, 1.0, 2.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    proto::ModelInferRequest {
        model_name: "house_price_linear".into(),
        inputs: vec![proto::model_infer_request::InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![1, 5],
            ..Default::default()
        }],
        raw_input_contents: vec![features],
        ..Default::default()
    }
}

/// A body that has sent `first` and goes on with whatever is sent on the returned channel,
/// ending when the channel is dropped: a message still arriving.
pub(crate) async fn arriving(
    first: &[u8],
) -> (tokio::sync::mpsc::Sender<Bytes>, http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let body = StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::convert::Infallible>(Frame::data(bytes)), rx))
    })))
    .boxed();
    tx.send(Bytes::copy_from_slice(first)).await.unwrap();
    (tx, body)
}

#[tokio::test]
async fn at_shutdown_an_http2_connection_gets_goaway_and_its_call_in_progress_finishes() {
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    // A call whose message is still arriving when the server stops.
    let message = framed(&linear_row());
    let (tx, body) = arriving(&message[..10]).await;
    let call = tokio::spawn(sender.send_request(call_of("ModelInfer", body)));
    let stopped = tokio::spawn(app.stop());
    // Once the server has sent GOAWAY, a new call on the connection is refused.
    eventually(Duration::from_secs(5), "GOAWAY: the connection takes no new calls", async || {
        let live = call_of("ServerLive", Full::new(Bytes::from(framed(&proto::ServerLiveRequest {}))).boxed());
        sender.send_request(live).await.is_err()
    })
    .await;
    tx.send(Bytes::copy_from_slice(&message[10..])).await.unwrap();
    drop(tx);
    let response = call.await.unwrap().expect("the call in progress is answered");
    let (answer, status, message) = answer_of(response).await;
    assert_eq!(status, "0", "{message}");
    let answer = proto::ModelInferResponse::decode(&answer[..]).unwrap();
    assert_eq!(answer.raw_output_contents.len(), 1);
    stopped.await.unwrap();
}

#[tokio::test]
async fn grpc_timeout_shortens_the_deadline_and_errors_get_their_codes() {
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let (_, status, message) =
        unary_metadata(&mut sender, "ModelInfer", &linear_row(), &[("grpc-timeout", "1n")]).await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    let (_, status, message) =
        unary_metadata(&mut sender, "ModelInfer", &linear_row(), &[("grpc-timeout", "soon")]).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    let mut narrow = linear_row();
    narrow.inputs[0].shape = vec![1, 4];
    let (_, status, message) = unary(&mut sender, "ModelInfer", &narrow).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    let mut unknown = linear_row();
    unknown.model_name = "no_such_model".into();
    let (_, status, message) = unary(&mut sender, "ModelInfer", &unknown).await;
    assert_eq!(status, "5", "NOT_FOUND: {message}");
    let (_, status, _) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "0");

    // Counted by method and code, and as HTTP requests on the method's route.
    let text = app.metrics().await;
    let grpc = |code: &str| metric(&text, "inferd_grpc_requests_total", &[("method", "ModelInfer"), ("code", code)]);
    assert_eq!(grpc("INVALID_ARGUMENT"), Some(2.0), "{text}");
    assert_eq!(grpc("NOT_FOUND"), Some(1.0));
    assert_eq!(grpc("DEADLINE_EXCEEDED"), Some(1.0));
    assert_eq!(grpc("OK"), Some(1.0));
    let route = [("method", "POST"), ("route", "/inference.GRPCInferenceService/ModelInfer"), ("status", "200")];
    assert_eq!(metric(&text, "inferd_http_requests_total", &route), Some(5.0));
    app.stop().await;
}

#[tokio::test]
async fn access_control_checks_the_same_scopes_as_rest() {
    use inferd::config::ApiKeyConfig;
    use sha2::Digest;
    let key = |name: &str, secret: &str, scopes: &[&str]| ApiKeyConfig {
        name: name.into(),
        sha256: hex::encode(sha2::Sha256::digest(secret.as_bytes())),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        rate_limit: None,
    };
    let mut config = crate::helpers::test_config();
    config.auth.api_keys.push(key("reader", "inferd_test_reader_key_0123456789", &["read"]));
    config.auth.api_keys.push(key("predictor", "inferd_test_predictor_key_0123456789", &["predict"]));
    let app = TestApp::spawn_with(config).await;
    let mut sender = h2(&app).await;
    let (_, status, _) = unary(&mut sender, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0", "liveness is open, as /v2/health/live");
    let (_, status, message) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "16", "UNAUTHENTICATED without a key: {message}");
    let reader = Some("inferd_test_reader_key_0123456789");
    let (_, status, message) = unary_with(&mut sender, "ModelInfer", &linear_row(), reader).await;
    assert_eq!(status, "7", "PERMISSION_DENIED without the predict scope: {message}");
    let metadata = proto::ModelMetadataRequest { name: "house_price_linear".into(), version: String::new() };
    let (_, status, message) = unary_with(&mut sender, "ModelMetadata", &metadata, reader).await;
    assert_eq!(status, "0", "read scope reads metadata: {message}");
    let predictor = Some("inferd_test_predictor_key_0123456789");
    let (answer, status, message) = unary_with(&mut sender, "ModelInfer", &linear_row(), predictor).await;
    assert_eq!(status, "0", "{message}");
    assert_eq!(proto::ModelInferResponse::decode(&answer[..]).unwrap().outputs[0].shape, vec![1, 1]);
    // The repository: its index is read, loading and unloading need the admin scope.
    let (index, status, message) =
        unary_with(&mut sender, "RepositoryIndex", &proto::RepositoryIndexRequest::default(), reader).await;
    assert_eq!(status, "0", "{message}");
    assert!(!proto::RepositoryIndexResponse::decode(&index[..]).unwrap().models.is_empty());
    let unload = proto::RepositoryModelUnloadRequest { model_name: "house_price_linear".into(), ..Default::default() };
    for key in [reader, predictor] {
        let (_, status, message) = unary_with(&mut sender, "RepositoryModelUnload", &unload, key).await;
        assert_eq!(status, "7", "PERMISSION_DENIED without the admin scope: {message}");
    }
    let (_, status, _) = unary(&mut sender, "RepositoryModelUnload", &unload).await;
    assert_eq!(status, "16", "UNAUTHENTICATED without a key");
    let (_, status, _) = unary_with(&mut sender, "ModelReady", &ready_linear(), reader).await;
    assert_eq!(status, "0", "still served");
    app.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    let mut config = crate::helpers::test_config();
    config.server.header_read_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;
    let mut sender = h2::<Full<Bytes>>(&app).await;
    let (_, status, _) = unary(&mut sender, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0");
    // As an idle HTTP/1.1 keep-alive connection is: its slot is not held for ever.
    eventually(Duration::from_secs(5), "the idle connection closed", async || sender.is_closed()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_grpc_message_over_the_body_limit_is_refused_before_it_is_read() {
    let mut config = crate::helpers::test_config();
    config.server.body_limit_bytes = 1024;
    config.server.max_body_bytes_in_flight = 1024;
    let app = TestApp::spawn_with(config).await;
    let mut sender = h2(&app).await;
    let request = proto::ModelInferRequest {
        model_name: "house_price_linear".into(),
        raw_input_contents: vec![vec![0u8; 4096]],
        ..Default::default()
    };
    let (_, status, message) = unary(&mut sender, "ModelInfer", &request).await;
    // Refused from the length prefix, before it is read, as REST's payload_too_large (grpc-go
    // and gRPC C++ say RESOURCE_EXHAUSTED too).
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {message}");
    // grpc-message is percent-encoded.
    assert!(message.contains("larger%20than%20the%20limit%20of%201024%20bytes"), "names the limit: {message}");
    app.stop().await;
}

#[cfg(feature = "external-tools")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_works_unchanged() {
    use crate::helpers::repo;
    let python = repo().join(".venv/bin/python");
    assert!(python.is_file(), "{} is missing: run scripts/test.sh", python.display());
    let app = TestApp::spawn().await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let script = repo().join("tests/oip/triton_grpc_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(host).arg(repo()).output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tritonclient.grpc checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks ok"), "{stdout}");
    app.stop().await;
}

/// tonic reads the whole message before the method runs: a body that never ends must still be
/// answered at the deadline (and its stream let go), not held forever.
#[tokio::test]
async fn a_message_that_never_finishes_arriving_is_deadline_exceeded_at_the_deadline() {
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let message = framed(&linear_row());
    let (tx, body) = arriving(&message[..10]).await;
    let mut request = call_of("ModelInfer", body);
    request.headers_mut().insert("grpc-timeout", "1S".parse().unwrap());
    let sent = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answered, not held")
        .expect("a response");
    let took = sent.elapsed();
    let (_, status, message) = answer_of(response).await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "at the deadline: {took:?}");
    drop(tx);
    // The connection still serves.
    let (_, status, _) = unary(&mut h2(&app).await, "ServerLive", &proto::ServerLiveRequest {}).await;
    assert_eq!(status, "0");
    app.stop().await;
}

fn ready_linear() -> proto::ModelReadyRequest {
    proto::ModelReadyRequest { name: "house_price_linear".into(), version: String::new() }
}

#[tokio::test]
async fn grpc_over_http1_is_refused_in_rest_words() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(app.url("/inference.GRPCInferenceService/ServerLive"))
        .header("content-type", "application/grpc")
        .body(framed(&proto::ServerLiveRequest {}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], "invalid_header", "{body}");
    assert!(body["error"].as_str().unwrap().contains("HTTP/2"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn with_auth_off_the_repository_is_loaded_and_unloaded_by_a_local_client_only() {
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let unload = proto::RepositoryModelUnloadRequest { model_name: "house_price_linear".into(), ..Default::default() };
    // Behind a proxy (which says so), as from another machine: refused.
    let (_, status, message) =
        unary_metadata(&mut sender, "RepositoryModelUnload", &unload, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(status, "7", "PERMISSION_DENIED: {message}");
    let (answer, status, _) = unary(&mut sender, "ModelReady", &ready_linear()).await;
    assert_eq!(status, "0");
    assert!(proto::ModelReadyResponse::decode(&answer[..]).unwrap().ready, "not unloaded");
    // Directly from loopback: unloaded, then loaded again.
    let (_, status, message) = unary(&mut sender, "RepositoryModelUnload", &unload).await;
    assert_eq!(status, "0", "{message}");
    let (_, status, message) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "14", "UNAVAILABLE once unloaded: {message}");
    let (answer, status, _) = unary(&mut sender, "ModelReady", &ready_linear()).await;
    assert_eq!(status, "0");
    assert!(!proto::ModelReadyResponse::decode(&answer[..]).unwrap().ready, "unloaded is not ready");
    let load = proto::RepositoryModelLoadRequest { model_name: "house_price_linear".into(), ..Default::default() };
    let (_, status, message) = unary(&mut sender, "RepositoryModelLoad", &load).await;
    assert_eq!(status, "0", "{message}");
    let (_, status, message) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "0", "{message}");
    // Only the parameter tritonclient sends to unload is taken.
    let mut odd = unload.clone();
    odd.parameters.insert("cascade".into(), proto::ModelRepositoryParameter::default());
    let (_, status, message) = unary(&mut sender, "RepositoryModelUnload", &odd).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    assert!(message.contains("cascade"), "{message}");
    let text = app.metrics().await;
    let unloads = metric(&text, "inferd_grpc_requests_total", &[("method", "RepositoryModelUnload"), ("code", "OK")]);
    assert_eq!(unloads, Some(1.0), "{text}");
    app.stop().await;
}

/// The whole budget of body bytes in flight held by one message still arriving: another call
/// waits for room until its deadline and is then told to retry (UNAVAILABLE, with when).
#[tokio::test]
async fn a_message_kept_out_of_a_full_body_budget_is_unavailable_with_retry_info() {
    use tonic_types::StatusExt;
    let mut config = crate::helpers::test_config();
    config.server.body_limit_bytes = 4096;
    config.server.max_body_bytes_in_flight = 4096;
    let app = TestApp::spawn_with(config).await;
    let mut holder = h2(&app).await;
    let mut head = vec![0u8];
    head.extend(4000u32.to_be_bytes());
    head.extend([0u8; 3100]);
    let (tx, body) = arriving(&head).await;
    let held = tokio::spawn(holder.send_request(call_of("ModelInfer", body)));
    let mut sender = h2(&app).await;
    let mut refused = None;
    eventually(Duration::from_secs(10), "a call refused for want of room", async || {
        let mut request = call_of("ModelInfer", Full::new(Bytes::from(framed(&linear_row()))));
        request.headers_mut().insert("grpc-timeout", "200m".parse().unwrap());
        let response = sender.send_request(request).await.expect("answered");
        refused = tonic::Status::from_header_map(response.headers()).filter(|s| s.code() == tonic::Code::Unavailable);
        refused.is_some()
    })
    .await;
    let refused = refused.unwrap();
    assert!(refused.message().contains("bodies"), "{}", refused.message());
    let retry = refused.get_details_retry_info().expect("retry info in the status details");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    assert_eq!(refused.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
    // The holder gives up; its room comes back.
    drop(tx);
    let _ = held.await;
    let (_, status, message) = unary(&mut sender, "ModelInfer", &linear_row()).await;
    assert_eq!(status, "0", "{message}");
    app.stop().await;
}

/// A health watch is a stream that lasts: at shutdown it says NOT_SERVING and ends, so that it
/// never holds the server past its grace period.
#[tokio::test]
async fn a_health_watch_says_not_serving_and_ends_when_the_server_drains() {
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse};
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let mut check = Request::post("http://localhost/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed(&HealthCheckRequest { service: String::new() }))))
        .unwrap();
    let (answer, status, _) = answer_of(sender.send_request(check).await.unwrap()).await;
    assert_eq!(status, "0");
    assert_eq!(HealthCheckResponse::decode(&answer[..]).unwrap().status(), ServingStatus::Serving);
    check = Request::post("http://localhost/grpc.health.v1.Health/Watch")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(framed(&HealthCheckRequest { service: String::new() }))))
        .unwrap();
    let response = sender.send_request(check).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The next message's status; None once the stream has ended (its trailers, or nothing).
    let next_message = async |body: &mut hyper::body::Incoming| match body.frame().await {
        Some(Ok(frame)) => frame.into_data().ok().map(|data| HealthCheckResponse::decode(&data[5..]).unwrap().status()),
        None => None,
        Some(Err(e)) => panic!("watch stream failed: {e}"),
    };
    assert_eq!(next_message(&mut body).await, Some(ServingStatus::Serving));
    let stopped = tokio::spawn(app.stop());
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut seen = vec![];
        while let Some(status) = next_message(&mut body).await {
            seen.push(status);
        }
        seen
    })
    .await
    .expect("the watch ends at shutdown");
    assert_eq!(rest.last(), Some(&ServingStatus::NotServing), "{rest:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped).await.expect("shutdown not held").unwrap();
}

/// Server reflection, so that grpcurl and other generic clients need no proto file.
#[tokio::test]
async fn reflection_lists_the_services_and_describes_them() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let app = TestApp::spawn().await;
    let mut sender = h2(&app).await;
    let mut ask = async |request: MessageRequest| {
        let message = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
        let call = Request::post("http://localhost/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from(framed(&message))))
            .unwrap();
        let (answer, status, message) = answer_of(sender.send_request(call).await.unwrap()).await;
        assert_eq!(status, "0", "{message}");
        ServerReflectionResponse::decode(&answer[..]).unwrap().message_response.unwrap()
    };
    let MessageResponse::ListServicesResponse(list) = ask(MessageRequest::ListServices(String::new())).await else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for name in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let symbol = MessageRequest::FileContainingSymbol("inference.GRPCInferenceService".into());
    let MessageResponse::FileDescriptorResponse(files) = ask(symbol).await else { panic!("not a descriptor") };
    let file = prost_types::FileDescriptorProto::decode(&files.file_descriptor_proto[0][..]).unwrap();
    let methods: Vec<_> = file.service[0].method.iter().map(|m| m.name()).collect();
    assert!(methods.contains(&"ModelInfer") && methods.contains(&"RepositoryIndex"), "{methods:?}");
    app.stop().await;
}
