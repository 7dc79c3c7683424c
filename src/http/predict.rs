//! `POST /predict`, `POST /models/{name}/predict` and `POST /models/{name}/versions/{version}/predict`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use tower_http::request_id::RequestId;
use utoipa::ToSchema;

use super::deadline::Deadline;
use super::extract::{ApiPath, JsonBytes, Unread};
use super::track::serve_model;
use super::AppState;
use crate::auth::Caller;
use crate::batch::{Batcher, Inferred};
use crate::decode::{self, Envelope};
use crate::error::{ApiError, ErrorBody};
use crate::model::views::RowOutputs;
use crate::model::ModelSpec;
use crate::registry::Route;
use crate::service::{Origin, Predictor, Served, Shadow};

/// The request body (documentation: bodies are decoded by [`crate::decode`]).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PredictRequest {
    /// Instances to predict, each an object of the model's fields (or, for a model with one
    /// `[N, F]` input, a plain row of its F values in the schema's order).
    pub instances: Vec<Value>,
}

/// The answer (documentation: it is written from the output tensors by `Answer`).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct PredictResponse {
    /// The request id, also in the `x-request-id` header.
    pub id: String,
    pub model: String,
    pub version: String,
    /// One object per instance, in input order, keyed by output name.
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<Value>,
}

/// A request body's instances, counted but not built.
#[derive(Deserialize)]
struct Counted {
    instances: Vec<serde::de::IgnoredAny>,
}

/// What every predict operation can answer (404 is added where a path names a model).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: handlers answer with `PredictResponse` or `ApiError`
enum PredictResponses {
    /// One prediction per instance, in order
    #[response(status = 200)]
    Ok(PredictResponse),
    /// Body is not JSON or could not be read, the path is not valid UTF-8, or `x-request-timeout-ms` is not a whole number of milliseconds above 0
    #[response(status = 400)]
    MalformedJson(ErrorBody),
    /// The body did not arrive before the request's deadline
    #[response(status = 408)]
    BodyTimeout(ErrorBody),
    /// Body over the configured limit
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Content type is not application/json
    #[response(status = 415)]
    MediaType(ErrorBody),
    /// Envelope, instance count, schema violations, or the model refused the rows
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Internal fault, logged with the request id
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Models still loading, the model unloaded (repository API), no working session, queue full, too many bodies being received, the prediction log not keeping up (`prediction_log_unavailable`), or shutting down; see Retry-After
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Not predicted before the deadline (`server.request_timeout_ms`, or the client's shorter `x-request-timeout-ms`)
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The header every predict operation reads (documentation: see [`super::deadline`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct TimeoutHeader {
    /// Shortens the request's deadline (`server.request_timeout_ms`, never lengthened) to this many milliseconds
    #[param(rename = "x-request-timeout-ms", minimum = 1, nullable = false)]
    timeout: Option<u64>,
}

/// The headers of predict operations without a version in their path: the version may be
/// pinned (see [`pinned`]).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct PinnedHeaders {
    /// The version to run, instead of the one the model's traffic split picks; 404 if the model has no such version
    #[param(rename = "x-inferd-version", nullable = false)]
    version: Option<String>,
    /// Shortens the request's deadline (`server.request_timeout_ms`, never lengthened) to this many milliseconds
    #[param(rename = "x-request-timeout-ms", minimum = 1, nullable = false)]
    timeout: Option<u64>,
}

/// The body as a `Result`, so that a request whose body is rejected still counts for its model.
type Body = Result<JsonBytes, ApiError>;

/// Predict with the default model.
#[utoipa::path(
    post, path = "/predict", tag = "predict",
    params(PinnedHeaders),
    request_body = PredictRequest,
    responses(PredictResponses, (status = 404, description = "`x-inferd-version` names a version the default model does not have", body = ErrorBody))
)]
pub async fn predict_default(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let route = registry.route_default(id_of(&request_id), pinned(body.headers()))?;
    Ok(respond(&state, route, &request_id, principal(&caller), deadline, body).await)
}

/// Predict with a model's default version.
#[utoipa::path(
    post, path = "/models/{name}/predict", tag = "predict",
    params(("name" = String, Path, description = "Model name"), PinnedHeaders),
    request_body = PredictRequest,
    responses(PredictResponses, (status = 404, description = "Unknown model, or `x-inferd-version` names a version it does not have", body = ErrorBody))
)]
pub async fn predict_model(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let route = registry.route(&name, id_of(&request_id), pinned(body.headers()))?;
    Ok(respond(&state, route, &request_id, principal(&caller), deadline, body).await)
}

/// Predict with one version of a model.
#[utoipa::path(
    post, path = "/models/{name}/versions/{version}/predict", tag = "predict",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version"), TimeoutHeader),
    request_body = PredictRequest,
    responses(PredictResponses, (status = 404, description = "Unknown model or version", body = ErrorBody))
)]
pub async fn predict_version(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let registry = state.registry()?;
    let route = Route::direct(registry.get_version(&name, Some(&version))?);
    Ok(respond(&state, route, &request_id, principal(&caller), deadline, body).await)
}

/// The principal access control accepted, for the prediction log.
pub fn principal(caller: &Option<Extension<Caller>>) -> Option<&Arc<str>> {
    caller.as_ref().map(|Extension(caller)| &caller.name)
}

async fn respond(
    state: &AppState,
    route: Route<'_>,
    request_id: &RequestId,
    principal: Option<&Arc<str>>,
    deadline: Deadline,
    body: Unread,
) -> Response {
    let body: Body = body.read(state).await;
    let batcher = route.batcher();
    serve_model(batcher, request_id, async |id: &str, served: &mut Served| {
        let origin = Origin { request_id: id, principal };
        run(state, batcher, route.shadow, origin, deadline, body, served).await
    })
    .await
}

/// The request id as text (it is always a valid header value of ASCII).
pub fn id_of(request_id: &RequestId) -> &str {
    request_id.header_value().to_str().unwrap_or_default()
}

/// The version a client asks for on an unversioned route (`x-inferd-version`), overriding
/// the model's traffic split.
pub fn pinned(headers: &HeaderMap) -> Option<&str> {
    headers.get(PIN_VERSION).and_then(|v| v.to_str().ok())
}

pub const PIN_VERSION: HeaderName = HeaderName::from_static("x-inferd-version");

async fn run(
    state: &AppState,
    batcher: &Batcher,
    shadow: Option<Shadow>,
    origin: Origin<'_>,
    deadline: Deadline,
    body: Body,
    served: &mut Served,
) -> Result<Response, ApiError> {
    let JsonBytes(body) = body?;
    let predictor = state.predictor();
    precheck(predictor, batcher, &body, deadline)?;
    let spec = batcher.spec();
    let (rows, _) = decode::body(spec.decoding(), &body, Envelope::Predict, predictor.max_rows())?;
    let inferred = predictor.predict(batcher, shadow, origin, rows, deadline, served).await?;
    Ok(Json(Answer { id: origin.request_id, spec, inferred: &inferred }).into_response())
}

/// Under pressure, counts the instances without building them, so that a request that cannot
/// fit is refused for the price of a scan rather than of a decode.
pub fn precheck(predictor: &Predictor, batcher: &Batcher, body: &[u8], deadline: Deadline) -> Result<(), ApiError> {
    if batcher.crowded() {
        if let Ok(Counted { instances }) = serde_json::from_slice::<Counted>(body) {
            predictor.has_room(batcher, instances.len(), deadline)?;
        }
    }
    Ok(())
}

/// `/predict`'s answer, written straight from the output tensors.
struct Answer<'a> {
    id: &'a str,
    spec: &'a ModelSpec,
    inferred: &'a Inferred,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("id", self.id)?;
        map.serialize_entry("model", &self.spec.name)?;
        map.serialize_entry("version", &self.spec.version)?;
        map.serialize_entry("predictions", &Predictions { spec: self.spec, inferred: self.inferred })?;
        map.end()
    }
}

/// One object per instance, keyed by output name.
pub struct Predictions<'a> {
    pub spec: &'a ModelSpec,
    pub inferred: &'a Inferred,
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.inferred.each_row().map(|(batch, row)| RowOutputs {
            spec: self.spec,
            batch,
            row,
            redact: &[],
        }))
    }
}
