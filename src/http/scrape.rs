//! `GET /metrics`: the Prometheus text exposition.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Extension;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "health", responses(
    (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String),
    (status = 401, description = "Missing or wrong bearer token (only when `INFERD_METRICS_TOKEN` is set)", body = ErrorBody),
))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // A caller means access control let it in (the token or the `metrics` scope, main port);
    // otherwise (auth off, or `metrics.port`, which has no such layer) the token decides.
    if state.config.metrics.token.is_some() && caller.is_none() && !token_sent(&state, &headers) {
        return Err(ApiError::Unauthorized);
    }
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], state.metrics().render()))
}

/// Whether the request carries `INFERD_METRICS_TOKEN` as its bearer credential; false when no
/// token is set. Constant time, so that response timing does not reveal how much of a guess
/// was right.
pub(super) fn token_sent(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &state.config.metrics.token else { return false };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(token.0.as_bytes())))
}
