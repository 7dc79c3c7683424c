//! KServe Open Inference Protocol v2, REST: health, metadata and tensor inference. Tensors are
//! turned into instances and go through the same schema check and batcher as `/predict`.

#[doc(hidden)]
pub mod fuzzing;
mod parameters;
pub mod repository;
mod tensors;
pub mod types;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use tower_http::request_id::RequestId;

use super::deadline::Deadline;
use super::extract::Unread;
use super::predict::{id_of, pinned, principal, PinnedHeaders, TimeoutHeader};
use super::track::serve_model;
use super::AppState;
use crate::auth::Caller;
use crate::batch::{Batcher, Inferred};
use crate::error::ApiError;
use crate::model::ModelSpec;
use crate::registry::{Registry, Route};
use crate::service::Shadow;
use crate::service::{Origin, Served};
use crate::tensor::columns::Column;
use crate::tensor::rows::Outputs;
use crate::tensor::signature::TensorInfo;
use tensors::{selected_outputs, to_rows, TensorOut};
pub use types::*;

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
        extensions: vec!["binary_tensor_data".into()],
    })
}

fn model_metadata(registry: &Registry, batcher: &Batcher, all_versions: bool) -> ModelMetadata {
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
        outputs: spec.signature.outputs.iter().map(metadata).collect(),
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
    /// Malformed body, unknown or missing input, wrong datatype, shape and data disagree, values outside the schema, the path is not valid UTF-8, or `x-request-timeout-ms` is not a whole number of milliseconds above 0
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

/// The body as a `Result`, so that a request whose body is rejected still counts for its model.
type Body = Result<V2Body, V2Error>;

/// Inference on named tensors (default version). Any content type is read as JSON.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), PinnedHeaders),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model, or `x-inferd-version` names a version it does not have", body = V2Error)))]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Result<Deadline, ApiError>,
    body: Unread,
) -> Result<Response, V2Error> {
    let registry = state.registry()?;
    let route = registry.route(&name, id_of(&request_id), pinned(body.headers()))?;
    let header_length = body.headers().get_all(HEADER_LENGTH).iter().cloned().collect();
    Ok(respond(&state, route, &request_id, principal(&caller), deadline?, (header_length, body)).await)
}

/// Inference on named tensors (one version). Any content type is read as JSON.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path), TimeoutHeader),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model or version", body = V2Error)))]
pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Result<Deadline, ApiError>,
    body: Unread,
) -> Result<Response, V2Error> {
    let registry = state.registry()?;
    let route = Route::direct(registry.get_version(&name, Some(&version))?);
    let header_length = body.headers().get_all(HEADER_LENGTH).iter().cloned().collect();
    Ok(respond(&state, route, &request_id, principal(&caller), deadline?, (header_length, body)).await)
}

async fn respond(
    state: &AppState,
    route: Route<'_>,
    request_id: &RequestId,
    principal: Option<&Arc<str>>,
    deadline: Deadline,
    (header_length, body): (Vec<HeaderValue>, Unread),
) -> Response {
    let body: Body = body.read(state).await;
    let batcher = route.batcher();
    serve_model(batcher, request_id, async |id: &str, served: &mut Served| {
        let origin = Origin { request_id: id, principal };
        run(state, batcher, route.shadow, origin, deadline, header_length, body, served).await
    })
    .await
}

/// The protocol's binary tensor data extension: the JSON header is the body's first
/// `Inference-Header-Content-Length` bytes, the tensors' bytes follow it.
pub const HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

#[allow(clippy::too_many_arguments)]
async fn run(
    state: &AppState,
    batcher: &Batcher,
    shadow: Option<Shadow>,
    origin: Origin<'_>,
    deadline: Deadline,
    header_length: Vec<HeaderValue>,
    body: Body,
    served: &mut Served,
) -> Result<Response, V2Error> {
    let V2Body(body) = body?;
    let (json, binary) = split_body(&body, &header_length)?;
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in fields it skips.
    let json =
        std::str::from_utf8(json).map_err(|e| V2Error::bad_request(format!("request body is not valid UTF-8: {e}")))?;
    let request: InferRequest = serde_json::from_str(json).map_err(|e| {
        let message = crate::error::clip_quoted(&e.to_string()).into_owned();
        V2Error::bad_request(format!("request body is not a valid inference request: {message}"))
    })?;
    let deadline = match request.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => deadline,
        Some(timeout) => match timeout.as_u64().filter(|us| *us > 0) {
            Some(us) => deadline.shorten(std::time::Duration::from_micros(us)),
            None => {
                return Err(V2Error::bad_request("parameters.timeout must be a whole number of microseconds above 0"))
            }
        },
    };
    let spec = batcher.spec();
    let outputs = selected_outputs(&spec.signature.outputs, request.outputs.as_deref())?;
    let binary_default = flag(request.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    for (_, requested) in &outputs {
        flag(requested.and_then(|r| r.parameters.as_ref()), "binary_data")?;
    }
    let predictor = state.predictor();
    let rows = to_rows(spec.decoding(), &request.inputs, binary, predictor.max_rows())?;
    let inferred = predictor.predict(batcher, shadow, origin, rows, deadline, served).await?;
    Ok(answer(spec, request.id, &outputs, binary_default, &inferred))
}

/// `parameters.<name>`, which must be a boolean when given.
fn flag(parameters: Option<&Value>, name: &str) -> Result<Option<bool>, V2Error> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(V2Error::bad_request(format!("parameters.{name} must be true or false"))),
    }
}

fn split_body<'b>(body: &'b [u8], header_length: &[HeaderValue]) -> Result<(&'b [u8], &'b [u8]), V2Error> {
    let value = match header_length {
        [] => return Ok((body, &[])),
        [one] => one,
        // Two lengths would split the body two ways; a proxy might read the other one.
        _ => return Err(V2Error::bad_request(format!("`{HEADER_LENGTH}` is given more than once"))),
    };
    let length = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<usize>().ok())
        .ok_or_else(|| V2Error::bad_request(format!("`{HEADER_LENGTH}` must be a whole number of bytes")))?;
    if length > body.len() {
        return Err(V2Error::bad_request(format!(
            "`{HEADER_LENGTH}` is {length}, but the body holds {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// Writes the answer from the output columns: JSON, or a JSON header followed by the binary
/// outputs (in the order the header lists them) when any output is asked for in binary.
fn answer(
    spec: &ModelSpec,
    id: Option<String>,
    outputs: &[(&TensorInfo, Option<&RequestedOutput>)],
    binary_default: bool,
    inferred: &Inferred,
) -> Response {
    // One tensor per output, from the request's rows of the batches it ran in.
    let joined = joined_outputs(spec, inferred);
    let rows = inferred.rows();
    let mut binary = Vec::new();
    let mut tensors = Vec::with_capacity(outputs.len());
    for (info, requested) in outputs {
        let index = spec.signature.outputs.iter().position(|o| o.name == info.name).expect("a known output");
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
fn joined_outputs<'a>(spec: &ModelSpec, inferred: &'a Inferred) -> std::borrow::Cow<'a, Outputs> {
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
