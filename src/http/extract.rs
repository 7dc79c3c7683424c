//! Extractors whose rejections use the service's error shapes, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

use std::time::Instant;

use super::deadline::Deadline;
use super::AppState;
use crate::error::{clip, clip_quoted, ApiError};

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

    /// Reads the body with `T` (within the deadline and the body budget, for this crate's body
    /// extractors).
    pub async fn read<T: FromRequest<AppState>>(self, state: &AppState) -> Result<T, T::Rejection> {
        T::from_request(self.0, state).await
    }
}

/// A JSON request body, read (within the deadline and the body budget) but not parsed yet, so
/// that the handler can look at its model's queue first: see [`parse_json`].
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_bytes(req, state).await.map(Self)
    }
}

/// A body of any content type, read like [`JsonBytes`] (TensorFlow Serving clients and
/// `curl -d` do not always say JSON).
pub struct AnyBytes(pub Bytes);

impl FromRequest<AppState> for AnyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_bytes(req, state).await.map(Self)
    }
}

async fn read_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.config.server.body_limit_bytes;
    match within_deadline(req, state, Bytes::from_request).await? {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge { limit }),
        // The body broke off or its chunked encoding is invalid: not a JSON problem.
        Err(e) => Err(ApiError::UnreadableBody(clip(&e.body_text()).into_owned())),
    }
}

/// Parses a body read by [`JsonBytes`], with the service's error shape for every failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    Json::<T>::from_bytes(bytes).map(|Json(value)| value).map_err(rejected)
}

/// `application/json`, or any `application/*+json`, as axum's own JSON extractor accepts.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let mime = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()?.parse::<mime::Mime>().ok());
    mime.is_some_and(|m| {
        m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
    })
}

/// The body length a request's `Content-Length` declares, if it declares a readable one.
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Runs a body extractor before the request's deadline (stamped by the [`Deadline`] extractor,
/// which handlers list before the body), so that a client that trickles its body or declares
/// more than it sends cannot hold a connection and a handler open; and within the budget of
/// body bytes in flight, so that many slow bodies cannot hold the server's memory.
pub async fn within_deadline<F, T>(req: Request, state: &AppState, extract: F) -> Result<T, ApiError>
where
    F: AsyncFnOnce(Request, &AppState) -> T,
{
    let deadline = match req.extensions().get::<Deadline>() {
        Some(deadline) => *deadline,
        None => super::deadline::from_headers(req.headers(), Instant::now(), state.config.server.request_timeout())?,
    };
    let limit = state.config.server.body_limit_bytes;
    let bytes = declared_length(req.headers()).map_or(limit, |declared| declared.min(limit as u64) as usize);
    let _room = tokio::time::timeout_at(deadline.at().into(), state.body_budget().reserve(bytes))
        .await
        .map_err(|_| ApiError::BodiesInFlight)?;
    tokio::time::timeout_at(deadline.at().into(), extract(req, state))
        .await
        .map_err(|_| ApiError::BodyTimeout { ms: deadline.budget_ms() })
}

fn rejected(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(source_text(&e.body_text())),
        JsonRejection::JsonDataError(e) => ApiError::InvalidRequest {
            message: format!("request body has the wrong shape: {}", source_text(&e.body_text())),
            details: vec![],
        },
        other => ApiError::MalformedJson(other.body_text()),
    }
}

/// axum prefixes serde's message with its own sentence; keep serde's part, which has the
/// position, with the client value it may quote cut short, and the field path it may start
/// with (built from the client's keys) too.
fn source_text(text: &str) -> String {
    let serde = text.split_once(": ").map(|(_, rest)| rest).unwrap_or(text);
    match serde.split_once(": ") {
        Some((path, message)) => format!("{}: {}", clip(path), clip_quoted(message)),
        None => clip_quoted(serde).into_owned(),
    }
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
