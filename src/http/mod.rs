//! The HTTP surface: routes, shared state, and the layers every request passes through.

pub mod admin;
pub mod authorize;
pub mod call;
pub mod cors;
pub mod error;
pub mod extract;
pub mod models;
pub mod openapi;
pub mod predict;
pub mod scrape;
pub mod status;
pub mod track;
pub mod v1;
pub mod v2;

use std::any::Any;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde_json::Value;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{Authenticator, Scope};
use crate::config::Config;
use crate::http::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::observe::Metrics;
use crate::predlog::PredictionLog;
use crate::registry::{Current, Published};
use crate::service::{Predictor, Settings};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler shares, behind one `Arc`: the state is cloned for every request (axum's
/// `State`), and one reference count is cheaper than one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub config: Arc<Config>,
    metrics: Arc<Metrics>,
    /// The predict service (with the prediction log, when it is on).
    predictor: Predictor,
    /// Set once the models are loaded and warmed up (until then model routes answer 503), and
    /// replaced whole by a reload. A request holds the registry it started with to its end.
    models: Arc<Current>,
    /// Reloads and the repository API: what changes the models served.
    lifecycle: Arc<Lifecycle>,
    body_budget: extract::BodyBudget,
    /// `None` when auth is off.
    auth: Option<Arc<Authenticator>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, prediction_log: Option<PredictionLog>) -> Self {
        let models = Arc::new(Current::default());
        let settings = Settings {
            max_rows: config.server.max_instances_per_request,
            slow: std::time::Duration::from_millis(config.logging.slow_request_ms),
            ready_when: config.server.ready_when,
        };
        Self(Arc::new(Shared {
            body_budget: extract::BodyBudget::new(config.server.max_body_bytes_in_flight),
            predictor: Predictor::new(models.clone(), prediction_log, settings, metrics.clone()),
            lifecycle: Arc::new(Lifecycle::new(config.clone(), models.clone(), metrics.clone(), openapi::describe)),
            config,
            metrics,
            models,
            auth: None,
        }))
    }

    /// Turns access control on (see [`crate::auth`]).
    pub fn with_auth(mut self, auth: Option<Authenticator>) -> Self {
        if auth.is_some() {
            self.metrics.register_auth_failures(&crate::auth::Failure::REASONS);
        }
        Arc::get_mut(&mut self.0).expect("access control is set before the state is shared").auth = auth.map(Arc::new);
        self
    }

    pub fn auth(&self) -> Option<&Arc<Authenticator>> {
        self.auth.as_ref()
    }

    pub fn body_budget(&self) -> &extract::BodyBudget {
        &self.body_budget
    }

    pub fn is_draining(&self) -> bool {
        self.predictor.is_draining()
    }

    pub fn set_draining(&self) {
        self.predictor.set_draining();
        self.lifecycle.set_draining();
    }

    /// Publishes `registry` with `openapi` as its document, as a start or reload does (for
    /// tests that build a server around models of their own).
    pub fn set_registry(&self, registry: crate::registry::Registry, openapi: Value) {
        self.models.publish(registry, openapi);
    }

    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.lifecycle
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn prediction_log(&self) -> Option<&PredictionLog> {
        self.predictor.prediction_log()
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// The models served now; a request keeps what it got here to its end, across reloads.
    pub fn registry(&self) -> Result<Arc<Published>, ApiError> {
        self.loaded().ok_or(ApiError::NotReady)
    }

    pub fn loaded(&self) -> Option<Arc<Published>> {
        self.models.load()
    }
}

/// The public API; `/metrics` too unless it has a port of its own. Routes are grouped by the
/// scope they need; with auth on, each group checks it before its handlers run.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    let metrics = &state.config.metrics;
    let open = Router::new()
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route(v2::route::LIVE, get(v2::live))
        .route(v2::route::READY, get(v2::ready));
    let predict = Router::new()
        .route("/predict", post(predict::predict_default))
        .route("/models/{name}/predict", post(predict::predict_model))
        .route("/models/{name}/versions/{version}/predict", post(predict::predict_version))
        .route("/v1/models/{target}", post(v1::predict))
        .route("/v1/models/{name}/versions/{target}", post(v1::predict_version))
        .route(v2::route::INFER, post(v2::infer))
        .route(v2::route::VERSION_INFER, post(v2::infer_version));
    let read = Router::new()
        .route("/models", get(models::list))
        .route("/models/{name}", get(models::info))
        .route("/models/{name}/versions/{version}", get(models::version_info))
        .route("/v1/models/{target}", get(v1::status))
        .route("/v1/models/{name}/versions/{target}", get(v1::status_version))
        .route(v2::route::SERVER, get(v2::server_metadata))
        .route(v2::route::MODEL, get(v2::model))
        .route(v2::route::MODEL_READY, get(v2::model_ready))
        .route(v2::route::VERSION, get(v2::model_version))
        .route(v2::route::VERSION_READY, get(v2::model_version_ready))
        .route(v2::route::REPOSITORY_INDEX, post(v2::repository_index));
    let admin = Router::new()
        .route("/admin/reload", post(admin::reload_route))
        .route(v2::route::LOAD, post(v2::repository_load))
        .route(v2::route::UNLOAD, post(v2::repository_unload));
    let admin = match state.auth() {
        Some(_) => admin,
        None => admin.route_layer(middleware::from_fn(admin::local_only)),
    };
    let docs = Router::new()
        .route("/openapi.json", get(openapi))
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")));
    // A layer on a group without routes would be refused: the group is added only with its route.
    let scrape =
        (metrics.enabled && metrics.port.is_none()).then(|| Router::new().route("/metrics", get(scrape::metrics)));
    let docs_scope = state.auth().filter(|auth| !auth.public_docs).map(|_| Scope::Read);
    let routes = open
        .merge(needs(predict, &state, Some(Scope::Predict)))
        .merge(needs(read, &state, Some(Scope::Read)))
        .merge(needs(admin, &state, Some(Scope::Admin)))
        .merge(needs(docs, &state, docs_scope))
        .merge(scrape.map(|scrape| needs(scrape, &state, Some(Scope::Metrics))).unwrap_or_default())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard));
    let routes = match &state.config.cors {
        Some(config) => routes.layer(cors::layer(config)).layer(middleware::from_fn(cors::finish)),
        None => routes,
    };
    observed(routes, state)
}

/// `routes` behind a check of `scope`, when auth is on and the routes need one.
fn needs(routes: Router<AppState>, state: &AppState, scope: Option<Scope>) -> Router<AppState> {
    match (state.auth(), scope) {
        (Some(auth), Some(scope)) => {
            let needs = authorize::Needs { state: state.clone(), scope, auth: auth.clone() };
            routes.route_layer(middleware::from_fn_with_state(needs, authorize::authorize))
        }
        _ => routes,
    }
}

/// `/metrics` alone, for `metrics.port`.
pub fn metrics_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/metrics", get(scrape::metrics))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    observed(routes, state)
}

/// The layers every request passes through, outermost first: its id is set and echoed and it is
/// tracked (span, access log, metrics), then a panic becomes a JSON 500 inside that.
fn observed(router: Router<AppState>, state: AppState) -> Router {
    router
        .route_layer(middleware::from_fn(track::remember_route))
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(state.clone(), track::track))
                .layer(CatchPanicLayer::custom(panic_response)),
        )
        .with_state(state)
}

/// A client's `x-request-id` is kept only if it is 1 to 128 of `A-Z a-z 0-9 . _ : -`, so that
/// it cannot bloat every log line of the request or break its correlation; any other is
/// replaced by a generated UUID, which is what is echoed and logged (see `track::track`).
pub fn usable_request_id(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Two checks in one layer (each layer costs every request): a body whose declared
/// `Content-Length` is over the limit is refused before a byte of it is read, and the
/// connection closed rather than drained; and from SIGTERM on, every response tells the client
/// to close the connection, so that a keep-alive client sends its next request elsewhere. So
/// does an answer given before the body was read (see [`crate::http::error::BodyUnread`]).
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.server.body_limit_bytes;
    // HTTP/2 has no `connection` header (hyper would strip it): a draining server's GOAWAY
    // says it (see `serve`), and a refused stream leaves its connection usable.
    let http1 = request.version() < axum::http::Version::HTTP_2;
    let declared = extract::declared_length(request.headers());
    let has_body =
        declared.is_some_and(|length| length > 0) || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut response = if declared.is_some_and(|length| length > limit as u64) {
        let mut response = ApiError::PayloadTooLarge { limit }.into_response();
        if http1 {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    } else {
        next.run(request).await
    };
    let body_unread = has_body && response.extensions().get::<crate::http::error::BodyUnread>().is_some();
    if http1 && (body_unread || state.is_draining()) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The OpenAPI document for the models served (available once they are loaded).
async fn openapi(axum::extract::State(state): axum::extract::State<AppState>) -> Result<Json<Value>, ApiError> {
    let loaded = state.registry()?;
    Ok(Json(loaded.openapi.clone()))
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(crate::error::clip(uri.path()).into_owned())
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
