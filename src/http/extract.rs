//! Extractors whose rejections use the service's error shapes, never axum's plain text: the
//! request's deadline, its body (read within the deadline and the body budget), its path.
//!
//! One deadline per prediction request: `server.request_timeout_ms` from the moment its headers
//! are in, covering the body read, the queue and inference. A client may shorten it with
//! `x-request-timeout-ms` (and `/v2` with `parameters.timeout` in microseconds), never lengthen it.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use std::time::{Duration, Instant};

use super::AppState;
use crate::error::clip;
use crate::http::error::ApiError;
use crate::service::BodyError;
pub use crate::service::Deadline;

pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

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

/// A request whose body is not read yet: handlers find their model first, so that a request
/// for an unknown model is answered without waiting for (or buffering) its body.
pub struct Unread(Request);

impl FromRequest<AppState> for Unread {
    type Rejection = std::convert::Infallible;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(req))
    }
}

impl Unread {
    pub fn headers(&self) -> &axum::http::HeaderMap {
        self.0.headers()
    }

    /// Reads the body whole before `deadline` (see [`read_body`]); `json_only` refuses a
    /// content type other than JSON (see [`json_or_unsaid`]).
    pub async fn receive(self, state: &AppState, deadline: Deadline, json_only: bool) -> Result<Bytes, BodyError> {
        if json_only {
            json_or_unsaid(self.0.headers())?;
        }
        receive(self.0, state, deadline).await
    }
}

/// A body of any content type, read whole within the deadline and the body budget.
pub struct AnyBytes(pub Bytes);

impl FromRequest<AppState> for AnyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_body(req, state).await.map(Self)
    }
}

/// The one rule of every JSON predict route: the body is read as JSON when it has no
/// `content-type` (tritonclient sends none), `application/json` (any parameters, such as a
/// charset), any `application/*+json` (as axum's own JSON extractor accepts), or
/// `application/x-www-form-urlencoded`, which `curl -d` sends unless told otherwise: the
/// examples of TensorFlow Serving and KServe post JSON that way, and a predict body is never a
/// form. Anything else is refused, naming what was received, rather than guessed at.
pub fn json_or_unsaid(headers: &axum::http::HeaderMap) -> Result<(), BodyError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let mime = value.to_str().ok().and_then(|v| v.parse::<mime::Mime>().ok());
    let json = mime.is_some_and(|m| {
        m.type_() == "application"
            && (m.subtype() == "json"
                || m.suffix().is_some_and(|s| s == "json")
                || m.subtype() == "x-www-form-urlencoded")
    });
    if json {
        return Ok(());
    }
    let got = String::from_utf8_lossy(value.as_bytes());
    Err(BodyError::UnsupportedMediaType { got: clip(&got).into_owned() })
}

/// The body length a request's `Content-Length` declares, if it declares a readable one.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Reads a request body whole, before the request's deadline (stamped by the [`Deadline`]
/// extractor, which handlers list before the body), so that a client that trickles its body or
/// declares more than it sends cannot hold a connection and a handler open; and within the
/// budget of body bytes in flight, so that many bodies cannot hold the server's memory. The
/// budget's share (the `Content-Length`, or `body_limit_bytes` when chunked) is taken before a
/// byte is read and travels with the returned bytes, given back when the last reference to
/// them is dropped: a body counts until its request is done with it, not only while it arrives.
pub async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let deadline = match req.extensions().get::<Deadline>() {
        Some(deadline) => *deadline,
        None => from_headers(req.headers(), Instant::now(), state.config.server.request_timeout())?,
    };
    Ok(receive(req, state, deadline).await?)
}

async fn receive(req: Request, state: &AppState, deadline: Deadline) -> Result<Bytes, BodyError> {
    let limit = state.config.server.body_limit_bytes;
    let declared = declared_length(req.headers()).map(|declared| declared.min(limit as u64) as usize);
    let room = tokio::time::timeout_at(deadline.at().into(), state.body_budget().reserve(declared.unwrap_or(limit)))
        .await
        .map_err(|_| BodyError::BudgetFull)?;
    let body = tokio::time::timeout_at(deadline.at().into(), collect(req.into_body(), declared, limit))
        .await
        .map_err(|_| BodyError::Timeout { ms: deadline.budget_ms() })??;
    Ok(holding(body, room))
}

/// The body in one buffer of its declared length (growing up to `limit` when chunked). Each
/// chunk is copied as it comes and dropped, so that hyper reuses its read buffer rather than
/// allocating another while the chunks are held, and no second copy joins them at the end.
async fn collect(mut body: Body, declared: Option<usize>, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| BodyError::Unreadable(clip(&format!("cannot read the body: {e}")).into_owned()))?;
        let Ok(data) = frame.into_data() else { continue }; // trailers
        if buf.len() + data.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if buf.capacity() - buf.len() < data.len() {
            // Doubling, but never past the limit, which is what a chunked body reserved.
            let grown = (buf.capacity() * 2).clamp(buf.len() + data.len(), limit);
            buf.reserve_exact(grown - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// Path parameters; a path that cannot be decoded (invalid UTF-8, say) is a JSON 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::InvalidPath(rejection.body_text())
    }
}

// The body budget: request-body bytes held at once, over all connections, from a body's first
// byte read to the end of its request. The memory a crowd of uploads (slow, stalled or waiting
// for the model) can pin is bounded by it, not by connections x body limit.

/// Counted in KiB, so that permits fit the semaphore's `u32` requests for any body limit.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        Self { units: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// The whole budget, in bytes.
    pub fn total_bytes(&self) -> usize {
        self.total as usize * UNIT
    }

    /// Waits until `bytes` fit, and holds them until the returned guard is dropped. A body
    /// larger than the whole budget waits for all of it.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.total);
        self.units.clone().acquire_many_owned(units).await.expect("the budget's semaphore is never closed")
    }
}

/// `body` as bytes that hold `room` until the last reference to them is dropped.
pub fn holding(body: Vec<u8>, room: OwnedSemaphorePermit) -> Bytes {
    Bytes::from_owner(Held { body, _room: room })
}

struct Held {
    body: Vec<u8>,
    _room: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
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

    #[tokio::test]
    async fn bodies_wait_for_room_and_give_it_back_when_done() {
        let budget = BodyBudget::new(4 * UNIT);
        let first = budget.reserve(3 * UNIT).await;
        let blocked = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await;
        assert!(blocked.is_err(), "3 KiB of 4 are held: 2 more do not fit");
        let _small = budget.reserve(10).await;
        drop(first);
        let _second = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await.unwrap();
        let huge = tokio::time::timeout(Duration::from_millis(20), BodyBudget::new(UNIT).reserve(usize::MAX)).await;
        assert!(huge.is_ok(), "a body over the whole budget waits for all of it, not forever");
    }

    #[tokio::test]
    async fn held_bytes_keep_their_room_until_the_last_reference_goes() {
        let budget = BodyBudget::new(2 * UNIT);
        let body = holding(vec![7; 2 * UNIT], budget.reserve(2 * UNIT).await);
        let part = body.slice(..10);
        drop(body);
        let blocked = tokio::time::timeout(Duration::from_millis(20), budget.reserve(UNIT)).await;
        assert!(blocked.is_err(), "a slice still holds the body");
        drop(part);
        let _room = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await.unwrap();
    }
}
