//! The model registry: what is served and what each model takes and gives.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::ApiPath;
use super::AppState;
use crate::batch::StatsSnapshot;
use crate::http::error::{ApiError, ErrorBody};
use crate::lifecycle::Failure;
use crate::registry::{Fingerprint, Registry, Version};
use crate::tensor::signature::TensorInfo;

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    /// Every loaded version.
    pub versions: Vec<String>,
    /// The version that routes without a version use.
    pub default_version: String,
    /// Whether `POST /predict` serves this model.
    pub default: bool,
    /// Every version has at least one inference thread with a working session.
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchingInfo {
    pub max_batch_rows: usize,
    pub max_delay_ms: u64,
    pub queue_capacity_rows: usize,
    /// Inference threads, one ONNX Runtime session each.
    pub sessions: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// Whether `POST /predict` serves this version.
    pub default: bool,
    /// Whether routes without a version use this version.
    pub default_version: bool,
    /// ONNX inputs as declared; -1 marks a dynamic dimension.
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// JSON Schema of one instance.
    #[schema(value_type = Object)]
    pub schema: Value,
    /// An instance that the model accepts (the schema's first example).
    #[schema(value_type = Object)]
    pub example: Value,
    pub batching: BatchingInfo,
    /// At least one inference thread has a working session.
    pub ready: bool,
    /// Rows waiting for an inference thread now.
    pub queued_rows: usize,
    pub stats: StatsSnapshot,
    /// When this version was loaded (at start or by a reload), RFC 3339.
    pub loaded_at: String,
    /// SHA-256 of the files it was loaded from.
    pub files: Fingerprint,
    /// The last load of this version that failed (a reload refused), if it has not loaded since.
    pub last_load_error: Option<Failure>,
}

/// Every model served, with its versions.
#[utoipa::path(get, path = "/models", tag = "models", responses(
    (status = 200, body = ModelList),
    (status = 503, description = "Models still loading; see Retry-After", body = ErrorBody),
))]
pub async fn list(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let registry = state.registry()?;
    let models = registry
        .models()
        .iter()
        .map(|(name, model)| ModelSummary {
            name: name.clone(),
            versions: model.versions.keys().cloned().collect(),
            default_version: model.default_version.clone(),
            default: model.versions.keys().any(|v| registry.is_default(name, v)),
            ready: model.versions.values().all(|v| v.batcher.is_ready()),
        })
        .collect();
    Ok(Json(ModelList { models }))
}

/// A model's default version: inputs, outputs, instance schema, example, batching.
#[utoipa::path(get, path = "/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses(
        (status = 200, body = ModelInfo),
        (status = 400, description = "Path is not valid UTF-8", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 503, description = "Models still loading, or the model unloaded (repository API); see Retry-After", body = ErrorBody),
    ))]
pub async fn info(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> Result<Json<ModelInfo>, ApiError> {
    let registry = state.registry()?;
    Ok(Json(describe(&state, &registry, registry.get_version(&name, None)?)))
}

/// One version of a model.
#[utoipa::path(get, path = "/models/{name}/versions/{version}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("version" = String, Path, description = "Model version")),
    responses(
        (status = 200, body = ModelInfo),
        (status = 400, description = "Path is not valid UTF-8", body = ErrorBody),
        (status = 404, description = "Unknown model or version", body = ErrorBody),
        (status = 503, description = "Models still loading, or the model unloaded (repository API); see Retry-After", body = ErrorBody),
    ))]
pub async fn version_info(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Result<Json<ModelInfo>, ApiError> {
    let registry = state.registry()?;
    Ok(Json(describe(&state, &registry, registry.get_version(&name, Some(&version))?)))
}

fn describe(state: &AppState, registry: &Registry, version: &Version) -> ModelInfo {
    let batcher = &version.batcher;
    let spec = batcher.spec();
    let batching = &version.batching;
    let last_load_error = state.lifecycle().load_failure(&spec.name, &spec.version);
    let default_version = registry.models().get(&spec.name).is_some_and(|m| m.default_version == spec.version);
    ModelInfo {
        name: spec.name.clone(),
        version: spec.version.clone(),
        default: registry.is_default(&spec.name, &spec.version),
        default_version,
        inputs: spec.signature.inputs.clone(),
        outputs: spec.outputs.clone(),
        schema: spec.schema.document().clone(),
        example: spec.schema.examples().first().cloned().unwrap_or(Value::Null),
        batching: BatchingInfo {
            max_batch_rows: batching.max_batch_rows,
            max_delay_ms: batching.max_delay_ms,
            queue_capacity_rows: batching.queue_capacity_rows,
            sessions: version.sessions,
        },
        ready: batcher.is_ready(),
        queued_rows: batcher.queued_rows(),
        stats: batcher.stats(),
        loaded_at: crate::observe::rfc3339(version.loaded_at),
        files: version.fingerprint.clone(),
        last_load_error,
    }
}
