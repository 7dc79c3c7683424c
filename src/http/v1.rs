//! KServe V1 / TensorFlow Serving REST: `POST /v1/models/{name}:predict` (and
//! `/v1/models/{name}/versions/{version}:predict`) with `{"instances": [...]}` or the columnar
//! `{"inputs": ...}`, and `GET /v1/models/{name}` for the model's status. Bodies go through the
//! same decoder and predict service as `/predict`; errors keep the service's one shape, whose
//! `error` field is what TensorFlow Serving clients read.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use utoipa::ToSchema;

use super::call::{call, pinned, Asker, Body, Instances};
use super::extract::Deadline;
use super::extract::{ApiPath, Unread};
use super::predict::{PinnedHeaders, TimeoutHeader};
use super::AppState;
use crate::batch::Inferred;
use crate::decode::{Envelope, Form};
use crate::error::clip;
use crate::http::error::{ApiError, ErrorBody};
use crate::model::views::OutputCell;
use crate::model::ModelSpec;
use crate::registry::RouteError;
use crate::service::Target;

/// `{"instances": [...]}` (rows: objects, or plain rows for a model with one `[N, F]` input)
/// or `{"inputs": {...}}` (columns), with an optional `signature_name`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[allow(dead_code)] // documentation only: bodies are decoded by `crate::decode`
pub struct V1Request {
    #[schema(value_type = Option<Vec<Object>>)]
    pub instances: Option<Vec<serde_json::Value>>,
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<serde_json::Value>,
    pub signature_name: Option<String>,
}

/// `{"predictions": [...]}` for rows (each the one output's value, or an object of outputs),
/// `{"outputs": ...}` for columns.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct V1Response {
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<serde_json::Value>,
}

/// TensorFlow Serving's model status, with KServe V1's `name` and `ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Status {
    pub name: String,
    pub ready: bool,
    pub model_version_status: Vec<V1VersionStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct V1VersionStatus {
    pub version: String,
    /// `AVAILABLE` while the version has a working session, else `UNAVAILABLE`.
    pub state: &'static str,
    #[schema(value_type = Object)]
    pub status: serde_json::Value,
}

/// `name:predict` → `name`; any other verb is not a route (`path` names it in the error).
fn verb(target: &str, path: impl FnOnce() -> String) -> Result<&str, ApiError> {
    match target.rsplit_once(':') {
        Some((name, "predict")) => Ok(name),
        _ => Err(ApiError::RouteNotFound(clip(&path()).into_owned())),
    }
}

// What the operations below answer besides 200 and 404 (the descriptions of `/predict`'s).
const BAD_REQUEST: &str = "Body is not JSON or could not be read, the path is not valid UTF-8, or \
                           `x-request-timeout-ms` is not a whole number of milliseconds above 0";
const BODY_TIMEOUT: &str = "The body did not arrive before the request's deadline";
const TOO_LARGE: &str = "Body over the configured limit";
const INVALID: &str = "Envelope, instance count, schema violations, or the model refused the rows";
const MEDIA_TYPE: &str = "A content type other than JSON: send `application/json` (or `application/*+json`), or none";
const INTERNAL: &str = "Internal fault, logged with the request id";
const UNAVAILABLE: &str = "Models still loading, the model unloaded (repository API), no working session, queue \
                           full, too many bodies being received, the prediction log not keeping up \
                           (`prediction_log_unavailable`), or shutting down; see Retry-After";
const TIMEOUT: &str = "Not predicted before the deadline (`server.request_timeout_ms`, or the client's shorter \
                       `x-request-timeout-ms`)";
const STATUS_UNAVAILABLE: &str = "Models still loading, or the model unloaded (repository API); see Retry-After";

/// Predict with a model's default version (KServe V1, TensorFlow Serving).
#[utoipa::path(
    post, path = "/v1/models/{name}:predict", tag = "predict",
    params(("name" = String, Path, description = "Model name"), PinnedHeaders),
    request_body = V1Request,
    responses(
        (status = 200, description = "One prediction per instance, in order", body = V1Response,
            example = json!({"predictions": [187534.94]})),
        (status = 400, description = BAD_REQUEST, body = ErrorBody),
        (status = 404, description = "Unknown model, a verb other than `:predict`, or `x-inferd-version` names a version the model does not have", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 415, description = MEDIA_TYPE, body = ErrorBody),
        (status = 422, description = INVALID, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    )
)]
pub async fn predict(
    State(state): State<AppState>,
    ApiPath(target): ApiPath<String>,
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let name = verb(&target, || format!("/v1/models/{target}"))?;
    let pin = pinned(body.headers()).map(str::to_owned);
    Ok(respond(&state, Target::Model { name, pin: pin.as_deref() }, &asker, deadline, body).await)
}

/// Predict with one version of a model (KServe V1, TensorFlow Serving).
#[utoipa::path(
    post, path = "/v1/models/{name}/versions/{version}:predict", tag = "predict",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version"), TimeoutHeader),
    request_body = V1Request,
    responses(
        (status = 200, description = "One prediction per instance, in order", body = V1Response),
        (status = 400, description = BAD_REQUEST, body = ErrorBody),
        (status = 404, description = "Unknown model or version, or a verb other than `:predict`", body = ErrorBody),
        (status = 408, description = BODY_TIMEOUT, body = ErrorBody),
        (status = 413, description = TOO_LARGE, body = ErrorBody),
        (status = 415, description = MEDIA_TYPE, body = ErrorBody),
        (status = 422, description = INVALID, body = ErrorBody),
        (status = 500, description = INTERNAL, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
        (status = 504, description = TIMEOUT, body = ErrorBody),
    )
)]
pub async fn predict_version(
    State(state): State<AppState>,
    ApiPath((name, target)): ApiPath<(String, String)>,
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let version = verb(&target, || format!("/v1/models/{name}/versions/{target}"))?;
    Ok(respond(&state, Target::Version { name: &name, version }, &asker, deadline, body).await)
}

/// A model's status (TensorFlow Serving's `model_version_status`, KServe V1's `ready`).
#[utoipa::path(
    get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, body = V1Status),
        (status = 400, description = "Path is not valid UTF-8", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = STATUS_UNAVAILABLE, body = ErrorBody),
    )
)]
pub async fn status(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> Result<Json<V1Status>, ApiError> {
    model_status(&state, name, None)
}

/// One version's status (TensorFlow Serving's `/v1/models/{name}/versions/{version}`).
#[utoipa::path(
    get, path = "/v1/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    responses(
        (status = 200, body = V1Status),
        (status = 400, description = "Path is not valid UTF-8", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = STATUS_UNAVAILABLE, body = ErrorBody),
    )
)]
pub async fn status_version(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<V1Status>, ApiError> {
    model_status(&state, name, Some(&version))
}

fn model_status(state: &AppState, name: String, only: Option<&str>) -> Result<Json<V1Status>, ApiError> {
    let registry = state.registry()?;
    registry.get(&name, only)?;
    let model = registry
        .models()
        .get(&name)
        .ok_or_else(|| ApiError::Route(RouteError::ModelNotFound(clip(&name).into_owned())))?;
    let versions: Vec<V1VersionStatus> = model
        .versions
        .iter()
        .filter(|(version, _)| only.is_none_or(|v| v == version.as_str()))
        .map(|(version, batcher)| V1VersionStatus {
            version: version.clone(),
            state: if batcher.batcher.is_ready() { "AVAILABLE" } else { "UNAVAILABLE" },
            status: serde_json::json!({"error_code": "OK", "error_message": ""}),
        })
        .collect();
    Ok(Json(V1Status { name, ready: versions.iter().all(|v| v.state == "AVAILABLE"), model_version_status: versions }))
}

async fn respond(state: &AppState, target: Target<'_>, asker: &Asker, deadline: Deadline, body: Unread) -> Response {
    let input = Instances::new(Body::new(body, state, true), Envelope::V1);
    call::<_, ApiError>(state, target, asker, deadline, input, |by, answered| {
        Json(Answer { spec: &by.spec, inferred: &answered.inferred, form: answered.input.form }).into_response()
    })
    .await
}

/// TensorFlow Serving's answer: rows as `predictions` (one output: its value; several: an
/// object of them), columns as `outputs` (one output: its list; several: an object of lists).
struct Answer<'a> {
    spec: &'a ModelSpec,
    inferred: &'a Inferred,
    form: Form,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        let outputs = &self.spec.outputs;
        match self.form {
            Form::Rows => map.serialize_entry("predictions", &Rows(self))?,
            Form::Columns if outputs.len() == 1 => map.serialize_entry("outputs", &OneColumn(self, 0))?,
            Form::Columns => map.serialize_entry("outputs", &Columns(self))?,
        }
        map.end()
    }
}

struct Rows<'a>(&'a Answer<'a>);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let spec = self.0.spec;
        s.collect_seq(self.0.inferred.each_row().map(|(batch, row)| RowValue { spec, batch, row }))
    }
}

struct RowValue<'a> {
    spec: &'a ModelSpec,
    batch: &'a crate::tensor::rows::Batch,
    row: usize,
}

impl Serialize for RowValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let outputs = &self.spec.outputs;
        let cell = |output| OutputCell { spec: self.spec, batch: self.batch, output, row: self.row };
        if outputs.len() == 1 {
            return cell(0).serialize(s);
        }
        let mut map = s.serialize_map(Some(outputs.len()))?;
        for (i, info) in outputs.iter().enumerate() {
            map.serialize_entry(&info.name, &cell(i))?;
        }
        map.end()
    }
}

struct OneColumn<'a>(&'a Answer<'a>, usize);

impl Serialize for OneColumn<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let spec = self.0.spec;
        let output = self.1;
        s.collect_seq(self.0.inferred.each_row().map(|(batch, row)| OutputCell { spec, batch, output, row }))
    }
}

struct Columns<'a>(&'a Answer<'a>);

impl Serialize for Columns<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let outputs = &self.0.spec.outputs;
        let mut map = s.serialize_map(Some(outputs.len()))?;
        for (i, info) in outputs.iter().enumerate() {
            map.serialize_entry(&info.name, &OneColumn(self.0, i))?;
        }
        map.end()
    }
}
