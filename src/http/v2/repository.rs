//! The Open Inference Protocol's model repository extension, as Triton serves it: an index of
//! the configured models and their state, and loading or unloading a model (all its versions)
//! without a restart. inferd loads only what its configuration names; a load request that
//! brings its own model config or files is refused.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::V2Error;
use crate::http::error::ApiError;
use crate::http::extract::{AnyBytes, ApiPath};
use crate::http::AppState;
pub use crate::lifecycle::RepositoryModel;
use crate::lifecycle::{ReloadReport, LOADS_ONLY_CONFIGURED};

#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    /// Only the models ready for inference.
    #[serde(default)]
    ready: bool,
}

#[derive(Debug, Default, Deserialize)]
struct LoadRequest {
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An empty body is an empty request, as tritonclient sends it.
fn parse<T: Default + for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, V2Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| V2Error::from(ApiError::MalformedJson(e.to_string())))
}

/// Every configured model version and whether it serves.
#[utoipa::path(post, path = "/v2/repository/index", tag = "open inference protocol v2", responses(
    (status = 200, body = [RepositoryModel]),
    (status = 400, description = "Body is not an index request, or `x-request-timeout-ms` is not a whole number of milliseconds above 0", body = V2Error),
    (status = 408, description = "The body did not arrive before the request's deadline", body = V2Error),
    (status = 413, description = "Body over the configured limit", body = V2Error),
    (status = 503, description = "Models still loading, or too many bodies being received", body = V2Error),
))]
pub async fn index(
    State(state): State<AppState>,
    AnyBytes(body): AnyBytes,
) -> Result<Json<Vec<RepositoryModel>>, V2Error> {
    let request: IndexRequest = parse(&body)?;
    Ok(Json(state.lifecycle().index(request.ready).map_err(ApiError::from)?))
}

async fn load_or_unload(state: AppState, name: String, body: &[u8], load: bool) -> Result<Json<ReloadReport>, V2Error> {
    let request: LoadRequest = parse(body)?;
    if load && !request.parameters.is_empty() {
        return Err(V2Error::from(ApiError::InvalidRequest { message: LOADS_ONLY_CONFIGURED.into(), details: vec![] }));
    }
    Ok(Json(state.lifecycle().set_loaded(&name, load).await.map_err(ApiError::from)?))
}

/// Loads a configured model (every configured version), or loads it again when its files
/// changed: loaded beside what serves, warmed up and golden-checked, then swapped in.
#[utoipa::path(post, path = "/v2/repository/models/{name}/load", tag = "open inference protocol v2",
    params(("name" = String, Path, description = "A configured model")),
    responses(
        (status = 200, body = ReloadReport),
        (status = 400, description = "Body is not a load request or brings a config or files, the path is not valid UTF-8, or `x-request-timeout-ms` is not valid", body = V2Error),
        (status = 403, description = "Not allowed", body = V2Error),
        (status = 404, description = "Not a configured model", body = V2Error),
        (status = 408, description = "The body did not arrive before the request's deadline", body = V2Error),
        (status = 409, description = "The model failed to load; nothing changed", body = V2Error),
        (status = 413, description = "Body over the configured limit", body = V2Error),
        (status = 503, description = "Models still loading, too many bodies being received, or shutting down", body = V2Error),
    ))]
pub async fn load(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    AnyBytes(body): AnyBytes,
) -> Result<Json<ReloadReport>, V2Error> {
    load_or_unload(state, name, &body, true).await
}

/// Stops serving a configured model: requests already accepted finish; new ones get 503
/// until it is loaded again.
#[utoipa::path(post, path = "/v2/repository/models/{name}/unload", tag = "open inference protocol v2",
    params(("name" = String, Path, description = "A configured model")),
    responses(
        (status = 200, body = ReloadReport),
        (status = 400, description = "Body is not an unload request, the path is not valid UTF-8, or `x-request-timeout-ms` is not valid", body = V2Error),
        (status = 403, description = "Not allowed", body = V2Error),
        (status = 404, description = "Not a configured model", body = V2Error),
        (status = 408, description = "The body did not arrive before the request's deadline", body = V2Error),
        (status = 409, description = "The models left could not be set up; nothing changed", body = V2Error),
        (status = 413, description = "Body over the configured limit", body = V2Error),
        (status = 503, description = "Models still loading, too many bodies being received, or shutting down", body = V2Error),
    ))]
pub async fn unload(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    AnyBytes(body): AnyBytes,
) -> Result<Json<ReloadReport>, V2Error> {
    load_or_unload(state, name, &body, false).await
}
