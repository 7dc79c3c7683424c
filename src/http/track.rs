//! The middleware every request passes through: its scope (with the request id, for every line
//! logged while serving it), one access-log line, the HTTP metrics, the model's request metrics
//! and the slow-request warning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::RequestId;

use super::{usable_request_id, AppState, REQUEST_ID};
use crate::auth::Caller;
use crate::batch::Batcher;
use crate::observe::access::AccessLine;
use crate::observe::{millis, Outcome, RequestScope};
use crate::service::Served;

/// Runs a model request (`run` gets the request id and the report to fill in) and answers with
/// its result, carrying the report out to [`track`]. Shared by every predict route.
pub async fn serve_model<T: IntoResponse, E: IntoResponse>(
    batcher: &Batcher,
    request_id: &RequestId,
    run: impl AsyncFnOnce(&str, &mut Served) -> Result<T, E>,
) -> Response {
    let mut served = Served::new(batcher.metrics());
    let id = request_id.header_value().to_str().unwrap_or_default();
    let mut response = match run(id, &mut served).await {
        Ok(ok) => ok.into_response(),
        Err(e) => e.into_response(),
    };
    // Which version answered, whatever the route (a traffic split may have chosen it).
    if let Ok(version) = HeaderValue::from_str(&batcher.spec().version) {
        response.headers_mut().insert(super::predict::PIN_VERSION, version);
    }
    response.extensions_mut().insert(served);
    response
}

/// Routes that watchers call every few seconds: not access-logged when they succeed, unless
/// `logging.log_probes` asks for it.
const PROBE_ROUTES: [&str; 5] = ["/health", "/ready", "/metrics", "/v2/health/live", "/v2/health/ready"];

/// The route template that matched, carried out to [`track`] (which runs before routing).
#[derive(Clone)]
struct Route(MatchedPath);

/// Installed with `route_layer`, so it only sees requests that matched a route.
pub async fn remember_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// The request's id: the client's `x-request-id` if it is usable (see
/// [`crate::http::usable_request_id`]), else a new UUID, which replaces it in the request. Also
/// set as the request's [`RequestId`] extension, which handlers read.
fn request_id(request: &mut Request) -> HeaderValue {
    let id = match request.headers().get(&REQUEST_ID) {
        Some(id) if usable_request_id(id) => id.clone(),
        _ => {
            let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value");
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    request.extensions_mut().insert(RequestId::new(id.clone()));
    id
}

/// The `method` label: a standard method, or `_OTHER`, so that clients cannot mint series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let id_header = request_id(&mut request);
    let id: Arc<str> = id_header.to_str().unwrap_or_default().into();
    let scope = RequestScope::new(method, request.uri().clone(), id_header.clone());
    let mut response = scope.clone().run(next.run(request)).await;
    crate::error::stamp(&mut response, &id);
    response.headers_mut().insert(REQUEST_ID, id_header);
    let elapsed = started.elapsed();

    let status = response.status();
    let route = response.extensions().get::<Route>().map_or("unmatched", |r| r.0.as_str());
    state.metrics().http_request(method, route, status.as_u16(), elapsed);
    let served = response.extensions().get::<Served>();
    if let Some(served) = served {
        served.metrics.request(Outcome::from_status(status), elapsed);
    }

    let latency_ms = millis(elapsed);
    let slow = state.config.logging.slow_request_ms;
    let caller = response.extensions().get::<Caller>();
    let (principal, auth) = (caller.map(|c| &*c.name), caller.map(|c| c.kind));
    let (model, version, rows) = served.map_or((None, None, None), |s| {
        (Some(s.metrics.model.as_str()), Some(s.metrics.version.as_str()), Some(s.rows))
    });
    let quiet = !state.config.logging.log_probes && status.is_success() && PROBE_ROUTES.contains(&route);
    if !quiet {
        let status = status.as_u16();
        AccessLine { scope: &scope, route, status, latency_ms, model, version, rows, principal, auth }.write();
    }
    if slow > 0 && elapsed >= Duration::from_millis(slow) {
        let (queue, inference) = served.map_or((Duration::ZERO, Duration::ZERO), |s| (s.queue, s.inference));
        scope.enter(|| {
            tracing::warn!(
                target: crate::telemetry::ACCESS_TARGET,
                route,
                status = status.as_u16(),
                latency_ms,
                queue_ms = millis(queue),
                inference_ms = millis(inference),
                other_ms = millis(elapsed.saturating_sub(queue + inference)),
                threshold_ms = slow,
                model,
                version,
                rows,
                principal,
                "slow request"
            )
        });
    }
    response
}
