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

/// Ready once every model is loaded and every session has run its schema's examples.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, body = ReadyResponse),
    (status = 503, description = "Models still loading; see Retry-After", body = ErrorBody),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyResponse>, ApiError> {
    let registry = state.registry()?;
    Ok(Json(ReadyResponse { status: "ready", models: registry.models().keys().cloned().collect() }))
}
