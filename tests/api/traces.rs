//! OpenTelemetry traces: the real binary exports OTLP/HTTP to a receiver in the test, which
//! decodes what it sends with the protocol's own types.

use std::ffi::OsStr;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};

use crate::helpers::{schema_example, send_signal};
use crate::process::{start_with, Server};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// An exported span, with its resource's `service.name`.
struct Exported {
    service: String,
    span: Span,
}

/// An OTLP/HTTP receiver on port 0: `POST /v1/traces` with a protobuf body. Returns its base URL
/// and the spans it has been sent.
async fn receiver() -> (String, mpsc::Receiver<Exported>) {
    let (tx, rx) = mpsc::channel();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref()?.value.clone())
                        .map_or_else(String::new, |v| match v {
                            Any::StringValue(s) => s,
                            other => format!("{other:?}"),
                        });
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let _ = tx.send(Exported { service: service.clone(), span });
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn string(span: &Span, key: &str) -> Option<String> {
    match attribute(span, key)? {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// Starts inferd exporting to `endpoint`, with `env` besides. The batch delay is long, so that
/// spans leave only when the shutdown flushes them.
fn serve(endpoint: &str, env: &[(&str, &str)]) -> Server {
    let mut vars: Vec<(&str, &OsStr)> =
        vec![("OTEL_EXPORTER_OTLP_ENDPOINT", OsStr::new(endpoint)), ("OTEL_BSP_SCHEDULE_DELAY", OsStr::new("600000"))];
    vars.extend(env.iter().map(|(k, v)| (*k, OsStr::new(*v))));
    start_with(&[], &vars)
}

async fn predict(server: &Server, id: &str, traceparent: Option<&str>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/predict", server.base))
        .header("x-request-id", id)
        .json(&json!({"instances": [schema_example("house_price")]}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent).header("tracestate", "vendor=opaque");
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
}

/// Stops the server (SIGTERM) and returns its service log and prediction log lines.
fn stop(mut server: Server) -> (Vec<Value>, Vec<Value>) {
    send_signal(&server.child, libc::SIGTERM);
    let exit = tokio::task::block_in_place(|| server.child.wait()).unwrap();
    assert_eq!(exit.code(), Some(0));
    let logs: Vec<Value> = server.logs.try_iter().collect();
    let mut predictions = Vec::new();
    for entry in std::fs::read_dir(server.prediction_log.path()).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            predictions.push(serde_json::from_str(line).expect("JSON line"));
        }
    }
    (logs, predictions)
}

fn access_line<'a>(logs: &'a [Value], id: &str) -> &'a Value {
    logs.iter().find(|l| l["message"] == "request" && l["span"]["request_id"] == id).expect("an access line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_a_server_span_in_the_callers_trace_with_its_steps() {
    let (endpoint, spans) = receiver().await;
    let server = serve(&endpoint, &[]);
    predict(&server, "traced", Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    let probe = reqwest::get(format!("{}/health", server.base)).await.unwrap();
    assert_eq!(probe.status(), 200);
    // Exported at shutdown, within the grace period: the batch delay has not come round.
    let (logs, predictions) = stop(server);
    let spans: Vec<Exported> = spans.try_iter().collect();
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();

    let server_span = spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span among {names:?}"));
    assert_eq!(server_span.service, "inferd");
    let span = &server_span.span;
    assert_eq!(span.name, "POST /predict");
    assert!(names.iter().all(|n| !n.contains("/health")), "an untraced probe makes no span: {names:?}");
    assert_eq!(span.trace_id, trace_id, "the caller's trace");
    assert_eq!(span.parent_span_id, hex::decode(PARENT_ID).unwrap(), "a child of the caller's span");
    assert_eq!(span.trace_state, "vendor=opaque");
    assert_eq!(string(span, "http.route").as_deref(), Some("/predict"));
    assert_eq!(string(span, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(string(span, "inferd.model").as_deref(), Some("house_price"));
    assert_eq!(string(span, "inferd.version").as_deref(), Some("1"));
    assert!(matches!(attribute(span, "http.response.status_code"), Some(Any::IntValue(200))), "{span:?}");
    assert_eq!(string(span, "url.path").as_deref(), Some("/predict"));
    assert!(matches!(attribute(span, "inferd.rows"), Some(Any::IntValue(1))), "{span:?}");

    for step in ["receive", "decode", "queue", "inference", "prediction_log"] {
        let child = spans.iter().find(|s| s.span.name == step).unwrap_or_else(|| panic!("no {step} span: {names:?}"));
        assert_eq!(child.span.trace_id, trace_id, "{step}");
        assert_eq!(child.span.parent_span_id, span.span_id, "{step} is a child of the server span");
        assert_eq!(child.span.kind, SpanKind::Internal as i32, "{step}");
        assert_eq!(child.span.trace_state, "vendor=opaque", "{step} keeps the caller's tracestate");
        assert_ne!(child.span.span_id, span.span_id, "{step} has a span id of its own");
        assert!(child.span.start_time_unix_nano >= span.start_time_unix_nano, "{step}");
        assert!(child.span.end_time_unix_nano <= span.end_time_unix_nano, "{step}");
    }

    // The logs carry the same trace id.
    assert_eq!(access_line(&logs, "traced")["trace_id"], TRACE_ID);
    let logged: Vec<&Value> = predictions.iter().filter(|p| p["request_id"] == "traced").collect();
    assert_eq!(logged.len(), 1, "{predictions:?}");
    assert_eq!(logged[0]["trace_id"], TRACE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_exports_nothing_and_logs_no_trace_id() {
    let (endpoint, spans) = receiver().await;
    // An endpoint alone would turn traces on; `none` as the exporter turns them off again.
    let server = serve(&endpoint, &[("OTEL_TRACES_EXPORTER", "none")]);
    predict(&server, "untraced", Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    let (logs, predictions) = stop(server);
    assert_eq!(spans.try_iter().count(), 0, "nothing exported");
    let line = access_line(&logs, "untraced");
    assert!(line.get("trace_id").is_none(), "{line}");
    assert!(predictions.iter().all(|p| p.get("trace_id").is_none()), "{predictions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_ratio_samples_only_what_the_caller_sampled() {
    let (endpoint, spans) = receiver().await;
    let sampler = [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")];
    let server = serve(&endpoint, &sampler);
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    predict(&server, "no-parent", None).await;
    predict(&server, "sampled-parent", Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    predict(&server, "unsampled-parent", Some(&format!("00-{unsampled}-{PARENT_ID}-00"))).await;
    let (logs, _) = stop(server);
    let spans: Vec<Exported> = spans.try_iter().collect();
    assert!(!spans.is_empty(), "the sampled parent's request is exported");
    let trace_id = hex::decode(TRACE_ID).unwrap();
    assert!(spans.iter().all(|s| s.span.trace_id == trace_id), "only the sampled parent's trace is exported");
    assert_eq!(spans.iter().filter(|s| s.span.kind == SpanKind::Server as i32).count(), 1);
    // Not exported, the caller's trace id is still in the log, to find the caller's spans.
    assert_eq!(access_line(&logs, "unsampled-parent")["trace_id"], unsampled);
}

/// A unary gRPC call over h2c with `traceparent` in its metadata: ModelReady on house_price.
async fn grpc_model_ready(server: &Server, traceparent: &str) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let message = inferd::grpc::proto::ModelReadyRequest { name: "house_price".into(), version: String::new() };
    let body = message.encode_to_vec();
    let framed = [vec![0u8], (body.len() as u32).to_be_bytes().to_vec(), body].concat();
    let request = hyper::Request::post("http://localhost/inference.GRPCInferenceService/ModelReady")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-request-id", "grpc-traced")
        .header("traceparent", traceparent)
        .body(Full::new(axum::body::Bytes::from(framed)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let trailers = response.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default();
    assert_eq!(trailers.get("grpc-status").map(|v| v.to_str().unwrap().to_owned()), Some("0".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_with_traceparent_metadata_is_a_server_span_in_the_callers_trace() {
    let (endpoint, spans) = receiver().await;
    let server = serve(&endpoint, &[]);
    grpc_model_ready(&server, &format!("00-{TRACE_ID}-{PARENT_ID}-01")).await;
    let (logs, _) = stop(server);
    let spans: Vec<Exported> = spans.try_iter().collect();
    let names: Vec<&str> = spans.iter().map(|s| s.span.name.as_str()).collect();
    let span = &spans
        .iter()
        .find(|s| s.span.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span among {names:?}"))
        .span;
    assert_eq!(span.name, "POST /inference.GRPCInferenceService/ModelReady");
    assert_eq!(span.trace_id, hex::decode(TRACE_ID).unwrap(), "the caller's trace");
    assert_eq!(span.parent_span_id, hex::decode(PARENT_ID).unwrap(), "a child of the caller's span");
    assert_eq!(access_line(&logs, "grpc-traced")["trace_id"], TRACE_ID);
}
