//! KServe Open Inference Protocol v2, REST: health, metadata and tensor inference. Tensors are
//! turned into instances and go through the same schema check and batcher as `/predict`.

pub mod repository;
mod tensors;
pub mod types;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::call::{call, pinned, Asker, Body};
use super::extract::Deadline;
use super::extract::Unread;
use super::predict::{PinnedHeaders, TimeoutHeader};
use super::AppState;
use crate::batch::{Batcher, Inferred};
use crate::decode::oip;
use crate::decode::{self, DecodeError};
use crate::model::ModelSpec;
use crate::registry::Registry;
use crate::service::{BodyError, Decoded, Input, Target};
use crate::tensor::columns::Column;
use crate::tensor::rows::Outputs;
use crate::tensor::signature::TensorInfo;
pub use repository::{index as repository_index, load as repository_load, unload as repository_unload};
pub use tensors::output_shape;
use tensors::TensorOut;
pub use types::*;

/// The protocol's routes, as `http::router` registers them: they answer errors in its shape
/// (see [`crate::http::error::Shape`]).
pub mod route {
    pub const LIVE: &str = "/v2/health/live";
    pub const READY: &str = "/v2/health/ready";
    pub const SERVER: &str = "/v2";
    pub const MODEL: &str = "/v2/models/{model}";
    pub const MODEL_READY: &str = "/v2/models/{model}/ready";
    pub const VERSION: &str = "/v2/models/{model}/versions/{version}";
    pub const VERSION_READY: &str = "/v2/models/{model}/versions/{version}/ready";
    pub const INFER: &str = "/v2/models/{model}/infer";
    pub const VERSION_INFER: &str = "/v2/models/{model}/versions/{version}/infer";
    pub const REPOSITORY_INDEX: &str = "/v2/repository/index";
    pub const LOAD: &str = "/v2/repository/models/{name}/load";
    pub const UNLOAD: &str = "/v2/repository/models/{name}/unload";
}

pub const ROUTES: [&str; 12] = [
    route::LIVE,
    route::READY,
    route::SERVER,
    route::MODEL,
    route::MODEL_READY,
    route::VERSION,
    route::VERSION_READY,
    route::INFER,
    route::VERSION_INFER,
    route::REPOSITORY_INDEX,
    route::LOAD,
    route::UNLOAD,
];

fn metadata(info: &TensorInfo) -> TensorMetadata {
    TensorMetadata { name: info.name.clone(), datatype: info.elem.oip_datatype().to_owned(), shape: info.shape.clone() }
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "open inference protocol v2", responses((status = 200, body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { live: true })
}

/// Server readiness: every model loaded and warmed up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "open inference protocol v2", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "Models still loading", body = V2Error),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, V2Error> {
    let _ready = crate::http::status::ready(State(state)).await?;
    Ok(Json(Readiness { ready: true }))
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "open inference protocol v2", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: "inferd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: vec!["binary_tensor_data".into(), "model_repository".into()],
    })
}

pub fn model_metadata(registry: &Registry, batcher: &Batcher, all_versions: bool) -> ModelMetadata {
    let spec = batcher.spec();
    let versions = match registry.models().get(&spec.name) {
        Some(model) if all_versions => model.versions.keys().cloned().collect(),
        _ => vec![spec.version.clone()],
    };
    ModelMetadata {
        name: spec.name.clone(),
        versions,
        platform: "onnx_onnxv1".into(),
        inputs: spec.signature.inputs.iter().map(metadata).collect(),
        outputs: spec.v2_outputs.iter().map(metadata).collect(),
    }
}

/// The metadata and readiness routes' 503.
const UNAVAILABLE: &str = "Models still loading, or the model unloaded (repository API); see Retry-After";

/// Model metadata (default version).
#[utoipa::path(get, path = "/v2/models/{model}", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, description = "Unknown model", body = V2Error), (status = 503, description = UNAVAILABLE, body = V2Error)))]
pub async fn model(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let registry = state.registry()?;
    Ok(Json(model_metadata(&registry, registry.get(&name, None)?, true)))
}

/// Model metadata (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, description = "Unknown model or version", body = V2Error), (status = 503, description = UNAVAILABLE, body = V2Error)))]
pub async fn model_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let registry = state.registry()?;
    Ok(Json(model_metadata(&registry, registry.get(&name, Some(&version))?, false)))
}

/// Model readiness (default version).
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, description = "Unknown model", body = V2Error), (status = 503, description = UNAVAILABLE, body = V2Error)))]
pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<Readiness>, V2Error> {
    Ok(Json(Readiness { ready: state.registry()?.get(&name, None)?.is_ready() }))
}

/// Model readiness (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, description = "Unknown model or version", body = V2Error), (status = 503, description = UNAVAILABLE, body = V2Error)))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
) -> Result<Json<Readiness>, V2Error> {
    Ok(Json(Readiness { ready: state.registry()?.get(&name, Some(&version))?.is_ready() }))
}

/// What both infer operations can answer, besides 404.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: handlers answer with `InferResponse` or `V2Error`
enum InferResponses {
    #[response(status = 200)]
    Ok(InferResponse),
    /// Malformed body, a content type other than JSON (`application/json`, `application/*+json` or none) without `Inference-Header-Content-Length`, unknown or missing input, wrong datatype, shape and data disagree, values outside the schema, the path is not valid UTF-8, or `x-request-timeout-ms` is not a whole number of milliseconds above 0
    #[response(status = 400)]
    BadRequest(V2Error),
    /// Body over the configured limit
    #[response(status = 413)]
    TooLarge(V2Error),
    /// Internal fault
    #[response(status = 500)]
    Internal(V2Error),
    /// Models still loading, the model unloaded (repository API), no working session, queue full, too many bodies being received, the prediction log not keeping up (`prediction_log_unavailable`), or shutting down; see Retry-After
    #[response(status = 503)]
    Unavailable(V2Error),
    /// The body did not arrive before the request's deadline
    #[response(status = 408)]
    BodyTimeout(V2Error),
    /// Not predicted before the deadline (`server.request_timeout_ms`, or the client's shorter `x-request-timeout-ms` or `parameters.timeout`)
    #[response(status = 504)]
    Timeout(V2Error),
}

/// Inference on named tensors (default version). A JSON body, or one with
/// `Inference-Header-Content-Length` (binary tensors) of any content type.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), PinnedHeaders),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model, or `x-inferd-version` names a version it does not have", body = V2Error)))]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Response {
    let pin = pinned(body.headers()).map(str::to_owned);
    let target = Target::Model { name: &name, pin: pin.as_deref() };
    respond(&state, target, &asker, deadline, body).await
}

/// Inference on named tensors (one version). A JSON body, or one with
/// `Inference-Header-Content-Length` (binary tensors) of any content type.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path), TimeoutHeader),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model or version", body = V2Error)))]
pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Response {
    respond(&state, Target::Version { name: &name, version: &version }, &asker, deadline, body).await
}

async fn respond(state: &AppState, target: Target<'_>, asker: &Asker, deadline: Deadline, body: Unread) -> Response {
    let header_length: Vec<HeaderValue> = body.headers().get_all(HEADER_LENGTH).iter().cloned().collect();
    // A binary body is JSON and then tensors, sent as `application/octet-stream` or as anything
    // else: its header length says where the JSON ends, so its content type is not read.
    let json_only = header_length.is_empty();
    let input = Tensors { body: Body::new(body, state, json_only), header_length, request: None, binary_at: 0 };
    call::<_, V2Error>(state, target, asker, deadline, input, |by, answered| {
        let request = answered.input.request.expect("decoded").expect("decoded without error");
        answer(&by.spec, request, &answered.inferred)
    })
    .await
}

/// The protocol's binary tensor data extension: the JSON header is the body's first
/// `Inference-Header-Content-Length` bytes, the tensors' bytes follow it.
pub const HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// An inference request's body as the predict service's input: its JSON header is parsed
/// once, to count its rows (when the model's queue is crowded) or to decode them.
struct Tensors {
    body: Body,
    header_length: Vec<HeaderValue>,
    request: Option<Result<InferRequest, DecodeError>>,
    /// Where the binary tensor data starts in the body.
    binary_at: usize,
}

impl Tensors {
    fn parse(&mut self) -> Result<&InferRequest, DecodeError> {
        if self.request.is_none() {
            let parsed = split_body(&self.body.bytes, &self.header_length).and_then(|(json, _)| {
                self.binary_at = json.len();
                oip::request(json)
            });
            self.request = Some(parsed);
        }
        match self.request.as_ref().expect("parsed above") {
            Ok(request) => Ok(request),
            Err(e) => Err(DecodeError::invalid(e.to_string())),
        }
    }
}

impl Input for Tensors {
    fn receive(&mut self, deadline: Deadline) -> impl std::future::Future<Output = Result<(), BodyError>> + Send {
        self.body.receive(deadline)
    }

    fn count(&mut self) -> Option<usize> {
        let request = self.parse().ok()?;
        request.inputs.first().and_then(|i| i.shape.first()).and_then(|n| usize::try_from(*n).ok())
    }

    fn decode(&mut self, model: decode::Model<'_>, max_rows: usize) -> Result<Decoded, DecodeError> {
        self.parse()?;
        let request = self.request.as_ref().and_then(|r| r.as_ref().ok()).expect("parsed above");
        let timeout = oip::timeout(request)?;
        let outputs = oip::selected_outputs(model.outputs, request.outputs.as_deref())?;
        oip::flag(request.parameters.as_ref(), "binary_data_output")?;
        for (_, requested) in &outputs {
            oip::flag(requested.and_then(|r| r.parameters.as_ref()), "binary_data")?;
        }
        let binary = &self.body.bytes[self.binary_at..];
        let rows = oip::to_rows(model, &request.inputs, binary, max_rows)?;
        Ok(Decoded { rows, timeout })
    }
}

fn split_body<'b>(body: &'b [u8], header_length: &[HeaderValue]) -> Result<(&'b [u8], &'b [u8]), DecodeError> {
    let value = match header_length {
        [] => return Ok((body, &[])),
        [one] => one,
        // Two lengths would split the body two ways; a proxy might read the other one.
        _ => return Err(DecodeError::invalid(format!("`{HEADER_LENGTH}` is given more than once"))),
    };
    let length = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or_else(|| DecodeError::invalid(format!("`{HEADER_LENGTH}` must be a whole number of bytes")))?;
    if length > body.len() {
        return Err(DecodeError::invalid(format!(
            "`{HEADER_LENGTH}` is {length}, but the body holds {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// Writes the answer from the output columns: JSON, or a JSON header followed by the binary
/// outputs (in the order the header lists them) when any output is asked for in binary.
fn answer(spec: &ModelSpec, request: InferRequest, inferred: &Inferred) -> Response {
    let outputs = oip::selected_outputs(&spec.v2_outputs, request.outputs.as_deref()).expect("checked by decode");
    let binary_default = oip::flag(request.parameters.as_ref(), "binary_data_output").ok().flatten().unwrap_or(false);
    let id = request.id.clone();
    // One tensor per output, from the request's rows of the batches it ran in.
    let joined = joined_outputs(spec, inferred);
    let rows = inferred.rows();
    let mut binary = Vec::new();
    let mut tensors = Vec::with_capacity(outputs.len());
    for (info, requested) in outputs {
        let index = spec.v2_outputs.iter().position(|o| o.name == info.name).expect("a known output");
        let column = &joined.columns[index];
        let wants_binary = requested.and_then(|r| r.parameters.as_ref()).and_then(|p| p.get("binary_data"));
        let wants_binary = wants_binary.and_then(Value::as_bool).unwrap_or(binary_default);
        let binary_size = wants_binary.then(|| {
            let start = binary.len();
            column.write_binary(0..column.len(), &mut binary);
            binary.len() - start
        });
        tensors.push(TensorOut { info, column, rows, per_row: joined.per_row[index], binary_size });
    }
    let header =
        serde_json::to_vec(&InferAnswer { spec, id: id.as_deref(), outputs: &tensors }).expect("answers serialise");
    if binary.is_empty() && tensors.iter().all(|t| t.binary_size.is_none()) {
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], header).into_response();
    }
    let length = header.len();
    let mut body = header;
    body.extend_from_slice(&binary);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (HEADER_LENGTH, HeaderValue::from(length)),
        ],
        body,
    )
        .into_response()
}

/// The request's outputs as one run of rows: borrowed from its batch when the batch was the
/// request's alone, otherwise copied out of its batches, only its own rows.
pub fn joined_outputs<'a>(spec: &ModelSpec, inferred: &'a Inferred) -> std::borrow::Cow<'a, Outputs> {
    if let [slice] = inferred.slices.as_slice() {
        let outputs = &slice.batch.outputs;
        if slice.rows.start == 0 && slice.rows.end == outputs.rows {
            return std::borrow::Cow::Borrowed(outputs);
        }
    }
    let first = &inferred.slices[0].batch.outputs;
    let mut columns: Vec<Column> = spec.signature.outputs.iter().map(|o| Column::with_capacity(o.elem, 0)).collect();
    for slice in &inferred.slices {
        for (i, column) in slice.batch.outputs.columns.iter().enumerate() {
            let n = slice.batch.outputs.per_row[i];
            columns[i].extend_from(column, slice.rows.start * n..slice.rows.end * n);
        }
    }
    std::borrow::Cow::Owned(Outputs { rows: inferred.rows(), columns, per_row: first.per_row.clone() })
}

struct InferAnswer<'a> {
    spec: &'a ModelSpec,
    id: Option<&'a str>,
    outputs: &'a [TensorOut<'a>],
}

impl Serialize for InferAnswer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("model_name", &self.spec.name)?;
        map.serialize_entry("model_version", &self.spec.version)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("outputs", self.outputs)?;
        map.end()
    }
}
