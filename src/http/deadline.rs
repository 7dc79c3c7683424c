//! One deadline per prediction request: `server.request_timeout_ms` from the moment its headers
//! are in, covering the body read, the queue and inference. A client may shorten it with
//! `x-request-timeout-ms` (and `/v2` with `parameters.timeout` in microseconds), never lengthen it.

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::AppState;
use crate::http::error::ApiError;

pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

pub use crate::service::Deadline;

/// The server's limit, shortened by the client's header if it sent one.
pub fn from_headers(headers: &HeaderMap, started: Instant, limit: Duration) -> Result<Deadline, ApiError> {
    let deadline = Deadline::new(started, limit);
    let Some(value) = headers.get(&REQUEST_TIMEOUT_MS) else { return Ok(deadline) };
    let ms =
        value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()).filter(|ms| *ms > 0).ok_or_else(|| {
            ApiError::InvalidHeader(format!("`{REQUEST_TIMEOUT_MS}` must be a whole number of milliseconds above 0"))
        })?;
    Ok(deadline.shorten(Duration::from_millis(ms)))
}

impl FromRequestParts<AppState> for Deadline {
    type Rejection = ApiError;

    /// Stamped when the handler's extractors run, right after the headers are read, and kept in
    /// the request's extensions for the body extractors.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(deadline) = parts.extensions.get::<Deadline>() {
            return Ok(*deadline);
        }
        let deadline = from_headers(&parts.headers, Instant::now(), state.config.server.request_timeout())?;
        parts.extensions.insert(deadline);
        Ok(deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_client_may_shorten_the_deadline_but_not_lengthen_it() {
        let t = Instant::now();
        let limit = Duration::from_millis(1000);
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers, t, limit).unwrap().at(), t + limit);
        headers.insert(REQUEST_TIMEOUT_MS, HeaderValue::from_static("250"));
        assert_eq!(from_headers(&headers, t, limit).unwrap().budget_ms(), 250);
        headers.insert(REQUEST_TIMEOUT_MS, HeaderValue::from_static("99999"));
        assert_eq!(from_headers(&headers, t, limit).unwrap().budget_ms(), 1000);
        for bad in ["0", "-5", "soon", "1.5", "99999999999999999999999"] {
            headers.insert(REQUEST_TIMEOUT_MS, HeaderValue::from_static(bad));
            assert!(from_headers(&headers, t, limit).is_err(), "{bad}");
        }
        let d = Deadline::new(t, limit).shorten(Duration::from_micros(1500));
        assert_eq!(d.at(), t + Duration::from_micros(1500));
    }
}
