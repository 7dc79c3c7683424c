//! KServe Open Inference Protocol v2, REST: health, metadata and tensor inference. Tensors are
//! turned into instances and go through the same schema check and batcher as `/predict`.

#[doc(hidden)]
pub mod fuzzing;
mod tensors;
pub mod types;

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use tower_http::request_id::RequestId;

use super::deadline::Deadline;
use super::extract::Unread;
use super::predict::{principal, run_instances};
use super::AppState;
use crate::batch::Batcher;
use crate::error::ApiError;
use crate::model::signature::TensorInfo;
use crate::observe::access::Caller;
use crate::observe::access::{serve_model, Served};
use crate::registry::Registry;
use std::sync::Arc;
use tensors::{selected_outputs, to_instances, to_output};
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
    Json(ServerMetadata { name: "inferd".into(), version: env!("CARGO_PKG_VERSION").into(), extensions: vec![] })
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

/// Model metadata (default version).
#[utoipa::path(get, path = "/v2/models/{model}", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let registry = state.registry()?;
    Ok(Json(model_metadata(registry, registry.get(&name, None)?, true)))
}

/// Model metadata (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let registry = state.registry()?;
    Ok(Json(model_metadata(registry, registry.get(&name, Some(&version))?, false)))
}

/// Model readiness (default version).
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<Readiness>, V2Error> {
    Ok(Json(Readiness { ready: state.registry()?.get(&name, None)?.is_ready() }))
}

/// Model readiness (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
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
    /// Malformed body, unknown or missing input, wrong datatype, shape and data disagree, or values outside the schema
    #[response(status = 400)]
    BadRequest(V2Error),
    /// Body over the configured limit
    #[response(status = 413)]
    TooLarge(V2Error),
    /// Internal fault
    #[response(status = 500)]
    Internal(V2Error),
    /// Not ready, queue full or shutting down
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
    params(("model" = String, Path)),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model", body = V2Error)))]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Result<Deadline, ApiError>,
    body: Unread,
) -> Result<Response, V2Error> {
    let batcher = state.registry()?.get(&name, None)?;
    Ok(respond(&state, batcher, &request_id, principal(&caller), deadline?, body).await)
}

/// Inference on named tensors (one version). Any content type is read as JSON.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
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
    let batcher = state.registry()?.get(&name, Some(&version))?;
    Ok(respond(&state, batcher, &request_id, principal(&caller), deadline?, body).await)
}

async fn respond(
    state: &AppState,
    batcher: &Batcher,
    request_id: &RequestId,
    principal: Option<&Arc<str>>,
    deadline: Deadline,
    body: Unread,
) -> Response {
    let body: Body = body.read(state).await;
    serve_model(batcher, request_id, async |id: &str, served: &mut Served| {
        run(state, batcher, (id, principal), deadline, body, served).await
    })
    .await
}

async fn run(
    state: &AppState,
    batcher: &Batcher,
    caller: (&str, Option<&Arc<str>>),
    deadline: Deadline,
    body: Body,
    served: &mut Served,
) -> Result<Json<InferResponse>, V2Error> {
    let V2Body(body) = body?;
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in fields it skips.
    let body = std::str::from_utf8(&body)
        .map_err(|e| V2Error::bad_request(format!("request body is not valid UTF-8: {e}")))?;
    let request: InferRequest = serde_json::from_str(body).map_err(|e| {
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
    let instances = to_instances(&spec.plan.inputs, &request.inputs, state.config.server.max_instances_per_request)?;
    served.rows = instances.len();
    let inferred = run_instances(state, batcher, caller, instances, deadline).await?;
    served.timed(&inferred);
    Ok(Json(InferResponse {
        model_name: spec.name.clone(),
        model_version: spec.version.clone(),
        id: request.id,
        outputs: outputs.into_iter().map(|info| to_output(info, &inferred.predictions)).collect(),
    }))
}
