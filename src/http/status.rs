//! Liveness, readiness and what a model is.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::error::ApiError;

/// Alive: answers as soon as the socket is bound, whatever the models' state.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready once every model is loaded and has served its schema's examples.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let registry = state.registry()?;
    let mut models: Vec<&str> = registry.names().collect();
    models.sort_unstable();
    Ok(Json(json!({"status": "ready", "models": models})))
}

pub async fn model_info(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let registry = state.registry()?;
    let batcher = registry.get(&name).ok_or(ApiError::ModelNotFound(name))?;
    let spec = batcher.spec();
    let batching = &state.config.batching;
    Ok(Json(json!({
        "name": spec.name,
        "version": spec.version,
        "default": registry.default_name() == spec.name,
        "inputs": spec.signature.inputs,
        "outputs": spec.signature.outputs,
        "schema": spec.schema.document(),
        "batching": {
            "max_batch_rows": batching.max_batch_rows,
            "max_delay_ms": batching.max_delay_ms,
            "queue_capacity_rows": batching.queue_capacity_rows,
            "sessions": state.config.inference.sessions,
        },
        "queued_rows": batcher.queued_rows(),
        "stats": batcher.stats(),
    })))
}
