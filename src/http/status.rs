//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::error::{ApiError, ErrorBody};

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
/// ready again while a model has no working session, and from SIGTERM on.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, body = ReadyResponse),
    (status = 503, description = "Models loading or without a working session, or shutting down; see Retry-After", body = ErrorBody),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let registry = state.registry()?;
    if state.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let down = registry.not_ready();
    if !down.is_empty() {
        return Err(ApiError::ModelsDown(down));
    }
    Ok(Json(ReadyResponse { status: "ready", models: registry.models().keys().cloned().collect() }))
}
