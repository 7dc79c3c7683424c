//! Extractors whose rejections use the service's error shapes, never axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::error::{clip_quoted, ApiError};

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejected(rejection, state.config.server.body_limit_bytes)),
        }
    }
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
        other => ApiError::MalformedJson(other.body_text()),
    }
}

/// axum prefixes serde's message with its own sentence; keep serde's part, which has the
/// position, with the client value it may quote cut short.
fn source_text(text: &str) -> String {
    clip_quoted(text.split_once(": ").map(|(_, rest)| rest).unwrap_or(text)).into_owned()
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
