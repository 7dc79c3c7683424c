//! `POST /predict`, `POST /models/{name}/predict` and `POST /models/{name}/versions/{version}/predict`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use utoipa::ToSchema;

use super::call::{call, id_of, pinned, Asker, Body, Instances};
use super::error::{ApiError, ErrorBody};
use super::extract::Deadline;
use super::extract::{ApiPath, Unread};
use super::AppState;
use crate::batch::Inferred;
use crate::decode::Envelope;
use crate::model::views::RowOutputs;
use crate::model::ModelSpec;
use crate::service::Target;

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
    /// A content type other than JSON: send `application/json` (or `application/*+json`), or none
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

/// The header every predict operation reads (documentation: see [`super::extract`], which
/// reads it into the request's deadline).
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

/// Predict with the default model.
#[utoipa::path(
    post, path = "/predict", tag = "predict",
    params(PinnedHeaders),
    request_body = PredictRequest,
    responses(PredictResponses, (status = 404, description = "`x-inferd-version` names a version the default model does not have", body = ErrorBody))
)]
pub async fn predict_default(
    State(state): State<AppState>,
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Response {
    let pin = pinned(body.headers()).map(str::to_owned);
    let target = Target::Default { pin: pin.as_deref() };
    respond(&state, target, &asker, deadline, body).await
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
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Response {
    let pin = pinned(body.headers()).map(str::to_owned);
    let target = Target::Model { name: &name, pin: pin.as_deref() };
    respond(&state, target, &asker, deadline, body).await
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
    asker: Asker,
    deadline: Deadline,
    body: Unread,
) -> Response {
    respond(&state, Target::Version { name: &name, version: &version }, &asker, deadline, body).await
}

async fn respond(state: &AppState, target: Target<'_>, asker: &Asker, deadline: Deadline, body: Unread) -> Response {
    let input = Instances::new(Body::new(body, state, true), Envelope::Predict);
    call::<_, ApiError>(state, target, asker, deadline, input, |by, answered| {
        let answer = Answer { id: id_of(&asker.request_id), spec: &by.spec, inferred: &answered.inferred };
        Json(answer).into_response()
    })
    .await
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
