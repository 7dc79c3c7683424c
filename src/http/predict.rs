//! `POST /predict` and `POST /models/{name}/predict`.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tower_http::request_id::RequestId;

use super::extract::ApiJson;
use super::AppState;
use crate::batch::{Batcher, InferError};
use crate::error::{ApiError, FieldError};
use crate::model::tensors::Prediction;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    pub instances: Vec<Value>,
}

#[derive(Debug, Serialize)]
pub struct PredictResponse {
    pub id: String,
    pub model: String,
    pub version: String,
    pub predictions: Vec<Prediction>,
}

pub async fn predict_default(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let registry = state.registry()?;
    let batcher = registry.get(registry.default_name()).expect("the default model is in the registry");
    predict(&state, batcher, &request_id, body).await
}

pub async fn predict_named(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<PredictRequest>,
) -> Result<Json<PredictResponse>, ApiError> {
    let registry = state.registry()?;
    let batcher = registry.get(&name).ok_or(ApiError::ModelNotFound(name))?;
    predict(&state, batcher, &request_id, body).await
}

async fn predict(
    state: &AppState,
    batcher: &Batcher,
    request_id: &RequestId,
    body: PredictRequest,
) -> Result<Json<PredictResponse>, ApiError> {
    let spec = batcher.spec();
    let instances = body.instances;
    let max = state.config.server.max_instances_per_request;
    if instances.is_empty() || instances.len() > max {
        return Err(ApiError::InvalidRequest {
            message: format!("`instances` must hold 1 to {max} instances, got {}", instances.len()),
            details: vec![FieldError {
                path: "/instances".into(),
                message: format!("must hold 1 to {max} instances, got {}", instances.len()),
            }],
        });
    }
    let mut errors = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        spec.schema.check(i, instance, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let predictions = batcher.infer(&instances).await.map_err(|e| match e {
        InferError::Encode(errors) => ApiError::Validation(errors),
        InferError::Full(full) => {
            ApiError::Overloaded { model: spec.name.clone(), queued: full.queued, capacity: full.capacity }
        }
        InferError::Closed => ApiError::ShuttingDown,
        InferError::Rejected(message) => ApiError::ModelRejected(message),
        InferError::Failed(cause) => ApiError::Internal(format!("model '{}': {cause}", spec.name)),
    })?;
    let id = request_id.header_value().to_str().unwrap_or_default().to_owned();
    Ok(Json(PredictResponse { id, model: spec.name.clone(), version: spec.version.clone(), predictions }))
}
