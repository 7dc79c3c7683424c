//! One error type for every HTTP rejection, one status map, one JSON body shape.

use std::borrow::Cow;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// How many characters of a client's value an error message quotes back.
const QUOTE_CHARS: usize = 100;

/// A client's text as an error message quotes it: whole up to 100 characters, otherwise its
/// first 100, `…` and the total length, `aaaa… (1048576 chars)`. A client that sends a 1 MB
/// string must not get it back, nor fill the logs with it.
pub fn clip(text: &str) -> Cow<'_, str> {
    clip_chars(text, QUOTE_CHARS)
}

/// `text` whole up to `max` characters, otherwise its first `max`, `…` and the total length.
pub fn clip_chars(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} chars)", &text[..cut], text.chars().count())),
    }
}

/// A client's JSON value as an error message quotes it, cut like [`clip`]; a long string
/// keeps its quotes around the part shown: `"aaaa…" (1048576 chars)`.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => match s.char_indices().nth(QUOTE_CHARS) {
            None => value.to_string(),
            Some((cut, _)) => {
                let head = Value::from(&s[..cut]).to_string();
                format!("{}…\" ({} chars)", &head[..head.len() - 1], s.chars().count())
            }
        },
        other => clip(&other.to_string()).into_owned(),
    }
}

/// A parser's message, with the one client value it may quote (`"..."` or `` `...` ``) cut
/// like [`clip`]; serde quotes at most one, and names its expectation after it.
pub fn clip_quoted(message: &str) -> Cow<'_, str> {
    let span = match message.find(['"', '`']) {
        Some(open) if message[open..].starts_with('"') => message.rfind('"').map(|close| (open + 1, close)),
        Some(open) => message[open + 1..].find('`').map(|close| (open + 1, open + 1 + close)),
        None => None,
    };
    match span {
        Some((start, end)) if end > start && message[start..end].chars().nth(QUOTE_CHARS).is_some() => {
            Cow::Owned(format!("{}{}{}", &message[..start], clip(&message[start..end]), &message[end..]))
        }
        _ => Cow::Borrowed(message),
    }
}

/// A problem with one field of a request, as JSON Pointer path plus a readable message.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer to the field, e.g. `/instances/3/bedrooms`.
    pub path: String,
    /// The rule broken and the value received, e.g. `must be <= 10, got 14`.
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What went wrong, for programs: `malformed_json`, `invalid_path`, `unsupported_media_type`,
    /// `payload_too_large`, `invalid_header`, `unreadable_body`, `request_timeout`,
    /// `invalid_request`, `validation_error`, `model_rejected_input`, `model_not_found`,
    /// `version_not_found`, `not_found`, `method_not_allowed`, `unauthorized`, `forbidden`,
    /// `rate_limited`, `reload_failed`, `not_ready`, `model_unloaded`, `overloaded`,
    /// `shutting_down`, `timeout`, `prediction_log_unavailable`, `internal_error`.
    #[schema(value_type = String)]
    pub error_type: &'static str,
    /// The fields at fault, where there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
    /// The request id, also in the `x-request-id` header and in every log line of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub request_id: Option<Arc<str>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("expected a request with `content-type: application/json`")]
    UnsupportedMediaType,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    InvalidHeader(String),
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    #[error("the request body was not received within {ms} ms")]
    BodyTimeout { ms: u64 },
    #[error("{message}")]
    InvalidRequest { message: String, details: Vec<FieldError> },
    #[error("{}", validation_message(.details, *.truncated))]
    Validation { details: Vec<FieldError>, truncated: bool },
    #[error("the model could not run on these instances: {0}")]
    ModelRejected(String),
    #[error("model '{0}' is not served here")]
    ModelNotFound(String),
    #[error("model '{0}' is configured but unloaded; POST /v2/repository/models/{0}/load loads it")]
    ModelUnloaded(String),
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("this route needs `Authorization: Bearer <token>` with the configured token")]
    Unauthorized,
    /// No usable credential, or one that is not valid; `invalid` when one was sent.
    #[error("{message}")]
    Unauthenticated { message: &'static str, invalid: bool },
    #[error("this route needs the '{0}' scope")]
    Forbidden(&'static str),
    #[error("rate limit exceeded for '{principal}'; retry in {retry_after_seconds} s")]
    RateLimited { principal: String, retry_after_seconds: u32 },
    #[error("models are still loading")]
    NotReady,
    /// A reload whose configuration or models were refused; the models served are unchanged.
    #[error("{message}")]
    ReloadFailed { message: String, details: Vec<FieldError> },
    #[error("with access control off, admin routes answer only direct loopback clients")]
    AdminNotLocal,
    #[error("no working inference session for: {}", .0.join(", "))]
    ModelsDown(Vec<String>),
    #[error("the queue of model '{model}' is full ({queued} of {capacity} rows waiting); retry shortly")]
    Overloaded { model: String, queued: usize, capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("too many request bodies are being received; retry shortly")]
    BodiesInFlight,
    #[error("the prediction took longer than the limit of {ms} ms")]
    Timeout { ms: u64 },
    /// Lossless prediction logging could not take the prediction's lines before its deadline
    /// (the log's disk is not keeping up, or hangs): it is not answered, so not lost. Also
    /// `/ready`'s answer while the log's writer is stalled.
    #[error("the prediction log is not keeping up (its disk is slow or not responding); retry shortly")]
    PredictionLogUnavailable,
    /// A fault of ours; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// Most field errors one rejection lists: enough to fix a request, while a body full of bad
/// fields cannot make its answer (and the work of building it) many times its own size.
pub const MAX_FIELD_ERRORS: usize = 100;

fn validation_message(details: &[FieldError], truncated: bool) -> String {
    if truncated {
        format!("more than {MAX_FIELD_ERRORS} invalid fields in the request; the first {MAX_FIELD_ERRORS} are listed")
    } else {
        format!("{} invalid field(s) in the request", details.len())
    }
}

impl ApiError {
    /// A validation error listing at most [`MAX_FIELD_ERRORS`] of `details`.
    pub fn validation(mut details: Vec<FieldError>) -> Self {
        let truncated = details.len() > MAX_FIELD_ERRORS;
        details.truncate(MAX_FIELD_ERRORS);
        Self::Validation { details, truncated }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidPath(_) | Self::InvalidHeader(_) | Self::UnreadableBody(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest { .. } | Self::Validation { .. } | Self::ModelRejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::ModelNotFound(_) | Self::VersionNotFound { .. } | Self::RouteNotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized | Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::AdminNotLocal => StatusCode::FORBIDDEN,
            Self::ReloadFailed { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NotReady
            | Self::ModelUnloaded(_)
            | Self::ModelsDown(_)
            | Self::Overloaded { .. }
            | Self::BodiesInFlight
            | Self::PredictionLogUnavailable
            | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::InvalidPath(_) => "invalid_path",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::InvalidHeader(_) => "invalid_header",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Validation { .. } => "validation_error",
            Self::ModelRejected(_) => "model_rejected_input",
            Self::ModelNotFound(_) => "model_not_found",
            Self::VersionNotFound { .. } => "version_not_found",
            Self::RouteNotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized | Self::Unauthenticated { .. } => "unauthorized",
            Self::Forbidden(_) | Self::AdminNotLocal => "forbidden",
            Self::ReloadFailed { .. } => "reload_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout { .. } => "timeout",
            Self::NotReady | Self::ModelsDown(_) => "not_ready",
            Self::ModelUnloaded(_) => "model_unloaded",
            Self::Overloaded { .. } | Self::BodiesInFlight => "overloaded",
            Self::ShuttingDown => "shutting_down",
            Self::PredictionLogUnavailable => "prediction_log_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Logs the cause of an internal error; the body never carries it. Called while the
    /// response is built, inside the request's span, so the line carries the request id.
    pub(crate) fn log_internal(&self) {
        if let Self::Internal(cause) = self {
            tracing::error!(%cause, "internal error");
        }
    }

    pub(crate) fn retry_after_seconds(&self) -> Option<u32> {
        match self {
            Self::RateLimited { retry_after_seconds, .. } => Some(*retry_after_seconds),
            Self::Overloaded { .. } | Self::BodiesInFlight => Some(1),
            Self::NotReady
            | Self::ModelsDown(_)
            | Self::ShuttingDown
            | Self::ModelUnloaded(_)
            | Self::PredictionLogUnavailable => Some(5),
            _ => None,
        }
    }
}

/// A response extension: the answer was chosen before the request body was read (or while it
/// was being read), so hyper will close the connection rather than look for the next request
/// after the body. The HTTP layer then says `connection: close`, so that a keep-alive client
/// does not send its next request into a closing socket.
#[derive(Debug, Clone, Copy)]
pub struct BodyUnread;

impl ApiError {
    /// Errors found before the body was read through: the route, the model, the media type,
    /// readiness, the body budget, or reading the body itself.
    pub fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedMediaType
                | Self::PayloadTooLarge { .. }
                | Self::UnreadableBody(_)
                | Self::BodyTimeout { .. }
                | Self::ModelNotFound(_)
                | Self::ModelUnloaded(_)
                | Self::VersionNotFound { .. }
                | Self::RouteNotFound(_)
                | Self::MethodNotAllowed
                | Self::NotReady
                | Self::BodiesInFlight
                | Self::Unauthorized
                | Self::Unauthenticated { .. }
                | Self::Forbidden(_)
                | Self::AdminNotLocal
                | Self::RateLimited { .. }
        )
    }

    /// `WWW-Authenticate` for a 401 (RFC 6750): `error="invalid_token"` when a credential was
    /// sent and refused.
    pub(crate) fn challenge(&self) -> Option<HeaderValue> {
        match self {
            Self::Unauthorized | Self::Unauthenticated { invalid: false, .. } => {
                Some(HeaderValue::from_static("Bearer realm=\"inferd\""))
            }
            Self::Unauthenticated { message, invalid: true } => HeaderValue::from_str(&format!(
                "Bearer realm=\"inferd\", error=\"invalid_token\", error_description=\"{}\"",
                message.replace(['"', '\\', '`'], "")
            ))
            .ok(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log_internal();
        let details = match &self {
            Self::Validation { details, .. } => Some(details.clone()),
            Self::InvalidRequest { details, .. } | Self::ReloadFailed { details, .. } if !details.is_empty() => {
                Some(details.clone())
            }
            _ => None,
        };
        let body = ErrorBody { error: self.to_string(), error_type: self.error_type(), details, request_id: None };
        let mut response = (status, Json(body.clone())).into_response();
        response.extensions_mut().insert(Unstamped(Arc::new(body)));
        if let Some(seconds) = self.retry_after_seconds() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if self.leaves_body_unread() {
            response.extensions_mut().insert(BodyUnread);
        }
        response
    }
}

/// An error body written before its request id was known (see [`stamp`]).
#[derive(Debug, Clone)]
struct Unstamped(Arc<ErrorBody>);

/// Writes the request id into an error response's body. The layer that gives requests their
/// ids calls it, so that errors are built anywhere without knowing the request.
pub fn stamp(response: &mut Response, request_id: &Arc<str>) {
    let Some(Unstamped(body)) = response.extensions_mut().remove::<Unstamped>() else { return };
    let mut body = Arc::unwrap_or_clone(body);
    body.request_id = Some(request_id.clone());
    let bytes = serde_json::to_vec(&body).expect("an error body serialises");
    *response.body_mut() = axum::body::Body::from(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_to_100_characters() {
        assert_eq!(clip("short"), "short");
        let long = "a".repeat(1 << 20);
        assert_eq!(clip(&long), format!("{}… (1048576 chars)", "a".repeat(100)));
        assert_eq!(clip(&"é".repeat(101)), format!("{}… (101 chars)", "é".repeat(100)), "cuts on characters");
        assert_eq!(clip(&"a".repeat(100)), "a".repeat(100));
        assert_eq!(shown(&Value::from(long.as_str())), format!("\"{}…\" (1048576 chars)", "a".repeat(100)));
        assert_eq!(shown(&Value::from("q\"")), r#""q\"""#);
        assert_eq!(shown(&serde_json::json!(14)), "14");
        let array = Value::from(vec![1; 1000]);
        assert!(shown(&array).ends_with("… (2001 chars)"), "{}", shown(&array));
        let message = format!("invalid type: string \"{long}\", expected a sequence at line 1 column 9");
        assert_eq!(
            clip_quoted(&message),
            format!(
                "invalid type: string \"{}… (1048576 chars)\", expected a sequence at line 1 column 9",
                "a".repeat(100)
            )
        );
        let message = format!("unknown field `{long}`, expected `instances`");
        assert!(clip_quoted(&message).ends_with("… (1048576 chars)`, expected `instances`"));
        assert_eq!(clip_quoted("expected `,` or `]` at line 1"), "expected `,` or `]` at line 1");
    }

    #[test]
    fn overload_is_503_with_retry_after() {
        let response = ApiError::Overloaded { model: "m".into(), queued: 9, capacity: 9 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let err = ApiError::Internal("onnxruntime said: secret path /x".into());
        assert_eq!(err.to_string(), "internal error");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
