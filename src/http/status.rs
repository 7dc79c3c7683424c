//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::config::ReadyWhen;
use crate::http::error::{ApiError, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Always `ready`.
    pub status: &'static str,
    /// Every model name served.
    pub models: Vec<String>,
}

/// Alive: answers as soon as the socket is bound, whatever the models' state.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = HealthResponse)))]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok" })
}

/// Ready once every model is loaded and every session has run its schema's examples; not
/// ready again while a loaded model has no working session, and from SIGTERM on. Models
/// unloaded through the repository API do not count. With `server.ready_when = "any"`, one
/// loaded model with a working session is enough. Not ready either while the prediction log's
/// writer is stalled (`prediction_log.stall_ms`).
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, body = ReadyResponse),
    (status = 503, description = "Models loading or without a working session, the prediction log stalled, or shutting down; see Retry-After", body = ErrorBody),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let registry = state.registry()?;
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    // Lossless or not, a log that cannot write is an instance to route around.
    if state.prediction_log().is_some_and(|log| log.stalled()) {
        return Err(ApiError::PredictionLogUnavailable);
    }
    // A model unloaded on purpose (repository API) is left out, as Triton does.
    let down = registry.not_ready();
    let serving = registry.models().values().flat_map(|m| m.versions.values()).any(|v| v.batcher.is_ready());
    let ready = match state.config.server.ready_when {
        ReadyWhen::All => down.is_empty(),
        ReadyWhen::Any => serving,
    };
    if !ready {
        return Err(ApiError::ModelsDown(down));
    }
    Ok(Json(ReadyResponse { status: "ready", models: registry.models().keys().cloned().collect() }))
}
