//! CORS for browser apps on other origins (tower-http's layer), with two rules of ours on top:
//! a preflight is answered 204, and an origin that is not allowed gets no `access-control-*`
//! header at all, preflight or not.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::CorsConfig;

pub fn layer(config: &CorsConfig) -> CorsLayer {
    let origins = if config.any_origin() {
        AllowOrigin::any()
    } else {
        // The config check parsed every origin as a header value.
        AllowOrigin::list(config.allow_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let headers: Vec<HeaderName> =
        config.allow_headers.iter().filter_map(|h| HeaderName::try_from(h.as_str()).ok()).collect();
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers(headers)
        .expose_headers([super::REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(config.max_age_seconds))
        .allow_credentials(config.allow_credentials)
}

/// Runs outside [`layer`]: see the module's two rules.
pub async fn finish(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = next.run(request).await;
    if !response.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        let cors: Vec<HeaderName> =
            response.headers().keys().filter(|name| name.as_str().starts_with("access-control-")).cloned().collect();
        for name in cors {
            response.headers_mut().remove(name);
        }
    }
    if preflight && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}
