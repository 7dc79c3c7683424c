//! Extractors whose rejections use the service's error shapes, never axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;

use std::time::Instant;

use super::deadline::Deadline;
use super::AppState;
use crate::error::{clip, clip_quoted, ApiError};

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match within_deadline(req, state, Json::<T>::from_request).await? {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejected(rejection, state.config.server.body_limit_bytes)),
        }
    }
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
        None => Deadline::from_headers(req.headers(), Instant::now(), state.config.server.request_timeout())?,
    };
    let limit = state.config.server.body_limit_bytes;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let bytes = declared.map_or(limit, |declared| declared.min(limit));
    let _room = tokio::time::timeout_at(deadline.at().into(), state.body_budget().reserve(bytes))
        .await
        .map_err(|_| ApiError::BodiesInFlight)?;
    tokio::time::timeout_at(deadline.at().into(), extract(req, state))
        .await
        .map_err(|_| ApiError::BodyTimeout { ms: deadline.budget_ms() })
}

fn rejected(rejection: JsonRejection, limit: usize) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(source_text(&e.body_text())),
        JsonRejection::JsonDataError(e) => ApiError::InvalidRequest {
            message: format!("request body has the wrong shape: {}", source_text(&e.body_text())),
            details: vec![],
        },
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge { limit }
        }
        // The body broke off or its chunked encoding is invalid: not a JSON problem.
        JsonRejection::BytesRejection(e) => ApiError::UnreadableBody(clip(&e.body_text()).into_owned()),
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
