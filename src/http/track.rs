//! The middleware every request passes through: its scope (with the request id, for every line
//! logged while serving it), the error shape of its route, one access-log line and the HTTP
//! metrics. (The model's request metrics and the slow-request warning are the predict
//! service's.)

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::RequestId;

use super::error::Shape;
use super::{usable_request_id, AppState, REQUEST_ID};
use crate::auth::Caller;
use crate::observe::access::AccessLine;
use crate::observe::trace::{self, ServerSpan};
use crate::observe::{millis, RequestScope};
use crate::service::ServedBy;

/// The error shape of a route: the protocol's on its routes, ours on every other.
fn shape_of(route: &str) -> Shape {
    match super::v2::ROUTES.contains(&route) {
        true => Shape::V2,
        false => Shape::Json,
    }
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
    let shape = request.extensions().get::<MatchedPath>().map_or(Shape::Json, |route| shape_of(route.as_str()));
    let scope = RequestScope::new(method, request.uri().clone(), id_header.clone());
    // Off (the default), tracing costs this one check: no span, no header parsed. On, probes
    // and scrapes from untraced watchers (every few seconds) make no trace either.
    let span = match trace::enabled() {
        true if PROBE_ROUTES.contains(&scope.path()) && !request.headers().contains_key("traceparent") => None,
        true => ServerSpan::start(method, scope.path(), request.headers()),
        false => None,
    };
    let mut response = match &span {
        Some(span) => scope.clone().run(span.run(next.run(request))).await,
        None => scope.clone().run(next.run(request)).await,
    };
    super::error::stamp(&mut response, &id, shape);
    response.headers_mut().insert(REQUEST_ID, id_header);
    let elapsed = started.elapsed();

    let status = response.status();
    let route = response.extensions().get::<Route>().map_or("unmatched", |r| r.0.as_str());
    state.metrics().http_request(method, route, status.as_u16(), elapsed);
    let served = response.extensions().get::<ServedBy>();

    let latency_ms = millis(elapsed);
    let caller = response.extensions().get::<Caller>();
    let (principal, auth) = (caller.map(|c| &*c.name), caller.map(|c| c.kind));
    let (model, version, rows) = served
        .map_or((None, None, None), |s| (Some(s.spec.name.as_str()), Some(s.spec.version.as_str()), Some(s.rows)));
    let quiet = !state.config.logging.log_probes && status.is_success() && PROBE_ROUTES.contains(&route);
    let status = status.as_u16();
    let trace_id = span.as_ref().map(ServerSpan::trace_id);
    if let Some(span) = span {
        span.end(trace::Answer { method, route, status, model, version, rows });
    }
    if !quiet {
        let trace_id = trace_id.as_deref();
        AccessLine {
            scope: &scope,
            route,
            status,
            grpc_status: None,
            latency_ms,
            model,
            version,
            rows,
            principal,
            auth,
            trace_id,
        }
        .write();
    }
    response
}
