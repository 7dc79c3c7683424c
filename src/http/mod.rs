//! The HTTP surface: routes, shared state, and the layers every request passes through.

mod extract;
pub mod predict;
mod status;

use std::any::Any;
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Config;
use crate::error::ApiError;
use crate::registry::Registry;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Set once the models are loaded and warmed up; until then model routes answer 503.
    models: Arc<OnceLock<Registry>>,
}

impl AppState {
    pub fn new(config: Arc<Config>) -> Self {
        Self { config, models: Arc::new(OnceLock::new()) }
    }

    pub fn registry(&self) -> Result<&Registry, ApiError> {
        self.models.get().ok_or(ApiError::NotReady)
    }

    /// Publishes the loaded models; the service is ready from then on.
    pub fn set_registry(&self, registry: Registry) {
        if self.models.set(registry).is_err() {
            unreachable!("models are published once");
        }
    }

    pub fn loaded(&self) -> Option<&Registry> {
        self.models.get()
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    Router::new()
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route("/predict", post(predict::predict_default))
        .route("/models/{name}", get(status::model_info))
        .route("/models/{name}/predict", post(predict::predict_named))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
        .with_state(state)
}

fn request_span(request: &Request) -> tracing::Span {
    let id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
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
