//! `POST /predict`, `POST /models/{name}/predict` and `POST /models/{name}/versions/{version}/predict`.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_http::request_id::RequestId;
use utoipa::ToSchema;

use super::deadline::Deadline;
use super::extract::{parse_json, ApiPath, JsonBytes, Unread};
use super::AppState;
use crate::batch::{Batcher, InferError, Inferred};
use crate::error::{clip_chars, ApiError, ErrorBody, FieldError, MAX_FIELD_ERRORS};
use crate::model::tensors::Prediction;
use crate::model::ModelSpec;
use crate::observe::access::{serve_model, Caller, Served};
use crate::observe::RateLimited;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Instances to predict, each an object of the model's fields.
    pub instances: Vec<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PredictResponse {
    /// The request id, also in the `x-request-id` header.
    pub id: String,
    pub model: String,
    pub version: String,
    /// One object per instance, in input order, keyed by output name.
    #[schema(value_type = Vec<Object>)]
    pub predictions: Vec<Prediction>,
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
    /// Body is not JSON, the path is not valid UTF-8, or `x-request-timeout-ms` is not a number of milliseconds
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
    /// Not ready, no working session, queue full or shutting down; see Retry-After
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// Not predicted before the deadline (`server.request_timeout_ms`, or the client's shorter `x-request-timeout-ms`)
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The body as a `Result`, so that a request whose body is rejected still counts for its model.
type Body = Result<JsonBytes, ApiError>;

/// Predict with the default model.
#[utoipa::path(
    post, path = "/predict", tag = "predict",
    request_body = PredictRequest,
    responses(PredictResponses)
)]
pub async fn predict_default(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let batcher = state.registry()?.default_model();
    Ok(respond(&state, batcher, &request_id, principal(&caller), deadline, body).await)
}

/// Predict with a model's default version.
#[utoipa::path(
    post, path = "/models/{name}/predict", tag = "predict",
    params(("name" = String, Path, description = "Model name")),
    request_body = PredictRequest,
    responses(PredictResponses, (status = 404, description = "Unknown model", body = ErrorBody))
)]
pub async fn predict_model(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    Extension(request_id): Extension<RequestId>,
    caller: Option<Extension<Caller>>,
    deadline: Deadline,
    body: Unread,
) -> Result<Response, ApiError> {
    let batcher = state.registry()?.get(&name, None)?;
    Ok(respond(&state, batcher, &request_id, principal(&caller), deadline, body).await)
}

/// Predict with one version of a model.
#[utoipa::path(
    post, path = "/models/{name}/versions/{version}/predict", tag = "predict",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
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
    let batcher = state.registry()?.get(&name, Some(&version))?;
    Ok(respond(&state, batcher, &request_id, principal(&caller), deadline, body).await)
}

/// The principal access control accepted, for the prediction log.
pub fn principal(caller: &Option<Extension<Caller>>) -> Option<&Arc<str>> {
    caller.as_ref().map(|Extension(caller)| &caller.name)
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
) -> Result<Json<PredictResponse>, ApiError> {
    let request_id = caller.0;
    let JsonBytes(body) = body?;
    if batcher.crowded() {
        // Under pressure, count the instances without building them, so that a request that
        // cannot fit is refused for the price of a scan rather than of a parse.
        if let Ok(Counted { instances }) = serde_json::from_slice::<Counted>(&body) {
            batcher.has_room(instances.len()).map_err(|e| infer_error(batcher.spec(), deadline, instances.len(), e))?;
        }
    }
    let PredictRequest { instances } = parse_json(&body)?;
    served.rows = instances.len();
    let inferred = run_instances(state, batcher, caller, instances, deadline).await?;
    served.timed(&inferred);
    let spec = batcher.spec();
    Ok(Json(PredictResponse {
        id: request_id.to_owned(),
        model: spec.name.clone(),
        version: spec.version.clone(),
        predictions: inferred.predictions,
    }))
}

/// Checks the instance count, admits the rows to the model's queue (before any validation
/// work, so that a shed request costs little), checks every instance against the schema, runs
/// them through the batcher before the request's deadline, and logs the predictions. Shared by
/// `/predict` and the Open Inference Protocol routes.
pub async fn run_instances(
    state: &AppState,
    batcher: &Batcher,
    (request_id, principal): (&str, Option<&Arc<str>>),
    instances: Vec<Value>,
    deadline: Deadline,
) -> Result<Inferred, ApiError> {
    let spec = batcher.spec();
    let max = state.config.server.max_instances_per_request;
    if instances.is_empty() || instances.len() > max {
        let message = format!("must hold 1 to {max} instances, got {}", instances.len());
        return Err(ApiError::InvalidRequest {
            message: format!("`instances` {message}"),
            details: vec![FieldError { path: "/instances".into(), message }],
        });
    }
    let refused = |e| infer_error(spec, deadline, instances.len(), e);
    let admission = batcher.admit(instances.len()).map_err(refused)?;
    let mut errors = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        spec.schema.check(i, instance, &mut errors);
        if errors.len() > MAX_FIELD_ERRORS {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let inferred = admission.infer(&instances, deadline.at()).await.map_err(refused)?;
    if let Some(log) = state.prediction_log() {
        log.record(request_id, principal, spec, instances, &inferred).await;
    }
    Ok(inferred)
}

/// Refused rows are the client's doing, so their warning is logged at most once a second.
static REFUSED_ROWS_LOG: LazyLock<Mutex<RateLimited>> =
    LazyLock::new(|| Mutex::new(RateLimited::new(Duration::from_secs(1))));

fn infer_error(spec: &ModelSpec, deadline: Deadline, rows: usize, e: InferError) -> ApiError {
    match e {
        InferError::Encode(errors) => ApiError::validation(errors),
        InferError::Full { queued, capacity } => ApiError::Overloaded { model: spec.name.clone(), queued, capacity },
        InferError::TooLarge { rows, capacity } => ApiError::InvalidRequest {
            message: format!("{rows} instances can never fit the queue of model '{}' ({capacity} rows)", spec.name),
            details: vec![],
        },
        InferError::Closed => ApiError::ShuttingDown,
        InferError::NotReady => ApiError::ModelsDown(vec![format!("{}:{}", spec.name, spec.version)]),
        InferError::Expired => deadline.timed_out(),
        InferError::Rejected(message) => {
            // Rows that pass the schema can still be refused by the graph (an index out of
            // range, say) while other requests' rows run: the fault is this request's.
            // ONNX Runtime's own message (it says which node refused what), cut at a length
            // that keeps it useful but bounded.
            let message = clip_chars(&message, 400).into_owned();
            if let Some(suppressed) = REFUSED_ROWS_LOG.lock().unwrap_or_else(|p| p.into_inner()).check() {
                tracing::warn!(model = %spec.name, rows, %message, suppressed, "model refused the request's rows");
            }
            ApiError::ModelRejected(message)
        }
        InferError::Internal(cause) => ApiError::Internal(cause),
    }
}
