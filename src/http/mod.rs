//! The HTTP surface: routes, shared state, and the layers every request passes through.

pub mod extract;
pub mod models;
pub mod predict;
pub mod scrape;
pub mod status;
pub mod v2;

use std::any::Any;
use std::sync::{Arc, OnceLock};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::Value;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::ApiError;
use crate::observe::{access, Metrics};
use crate::predlog::PredictionLog;
use crate::registry::Registry;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// `None` when the prediction log is turned off. In an `Arc` because the state is cloned
    /// per request, and cloning the channel's sender would touch its shared count each time.
    prediction_log: Option<Arc<PredictionLog>>,
    /// Set once the models are loaded and warmed up; until then model routes answer 503.
    models: Arc<OnceLock<Loaded>>,
}

struct Loaded {
    registry: Registry,
    openapi: Value,
}

impl AppState {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, prediction_log: Option<PredictionLog>) -> Self {
        Self { config, metrics, prediction_log: prediction_log.map(Arc::new), models: Arc::new(OnceLock::new()) }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn prediction_log(&self) -> Option<&PredictionLog> {
        self.prediction_log.as_deref()
    }

    pub fn registry(&self) -> Result<&Registry, ApiError> {
        self.loaded().ok_or(ApiError::NotReady)
    }

    /// Publishes the loaded models and the OpenAPI document that describes them; the service
    /// is ready from then on.
    pub fn set_registry(&self, registry: Registry) {
        let openapi = crate::openapi::document(&self.config, &registry.documented());
        if self.models.set(Loaded { registry, openapi }).is_err() {
            unreachable!("models are published once");
        }
    }

    pub fn loaded(&self) -> Option<&Registry> {
        self.models.get().map(|l| &l.registry)
    }
}

/// The public API; `/metrics` too unless it has a port of its own.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    let metrics = &state.config.metrics;
    let mut routes = Router::new();
    if metrics.enabled && metrics.port.is_none() {
        routes = routes.route("/metrics", get(scrape::metrics));
    }
    let routes = routes
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route("/predict", post(predict::predict_default))
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::info))
        .route("/models/{name}/predict", post(predict::predict_model))
        .route("/models/{name}/versions/{version}", get(models::version_info))
        .route("/models/{name}/versions/{version}/predict", post(predict::predict_version))
        .route("/v2", get(v2::server_metadata))
        .route("/v2/health/live", get(v2::live))
        .route("/v2/health/ready", get(v2::ready))
        .route("/v2/models/{model}", get(v2::model))
        .route("/v2/models/{model}/ready", get(v2::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v2/models/{model}/versions/{version}", get(v2::model_version))
        .route("/v2/models/{model}/versions/{version}/ready", get(v2::model_version_ready))
        .route("/v2/models/{model}/versions/{version}/infer", post(v2::infer_version))
        .route("/openapi.json", get(openapi))
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit));
    observed(routes, state)
}

/// `/metrics` alone, for `metrics.port`.
pub fn metrics_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(scrape::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    observed(routes, state)
}

/// The layers every request passes through, outermost first: its id is set and echoed, then
/// it is tracked (span, access log, metrics), and a panic becomes a JSON 500 inside that.
fn observed(router: Router<AppState>, state: AppState) -> Router {
    router
        .route_layer(middleware::from_fn(access::remember_route))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn_with_state(state.clone(), access::track))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}

/// The OpenAPI document for the models served (available once they are loaded).
async fn openapi(axum::extract::State(state): axum::extract::State<AppState>) -> Result<Json<Value>, ApiError> {
    let loaded = state.models.get().ok_or(ApiError::NotReady)?;
    Ok(Json(loaded.openapi.clone()))
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(cause: Box<dyn Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
