//! Liveness and readiness.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
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
    // The policy is the predict service's.
    let models = state.predictor().ready()?;
    Ok(Json(ReadyResponse { status: "ready", models }))
}
