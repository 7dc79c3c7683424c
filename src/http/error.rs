//! One error type for every HTTP rejection and the one table from error to status,
//! `error_type` and `Retry-After`, read by both error shapes (this service's JSON and the Open
//! Inference Protocol's, see [`super::v2::V2Error`]). Lower layers return their own typed errors,
//! converted here.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::decode::DecodeError;
use crate::error::{validation_message, FieldError, MAX_FIELD_ERRORS};
use crate::lifecycle::LifecycleError;
use crate::registry::RouteError;
use crate::service::{BodyError, PredictError};

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
    #[error("{}", crate::service::media_type_message(.got))]
    UnsupportedMediaType { got: String },
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
    /// No loaded version answers the request's model (and version).
    #[error(transparent)]
    Route(#[from] RouteError),
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
    #[error("the prediction log is not keeping up (its disk or database is slow or not responding); retry shortly")]
    PredictionLogUnavailable,
    /// A fault of ours; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
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
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidRequest { .. } | Self::Validation { .. } | Self::ModelRejected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::Route(RouteError::ModelNotFound(_) | RouteError::VersionNotFound { .. }) | Self::RouteNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized | Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::AdminNotLocal => StatusCode::FORBIDDEN,
            Self::ReloadFailed { .. } => StatusCode::CONFLICT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::NotReady
            | Self::Route(RouteError::ModelUnloaded(_))
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
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::InvalidHeader(_) => "invalid_header",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Validation { .. } => "validation_error",
            Self::ModelRejected(_) => "model_rejected_input",
            Self::Route(RouteError::ModelNotFound(_)) => "model_not_found",
            Self::Route(RouteError::VersionNotFound { .. }) => "version_not_found",
            Self::RouteNotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unauthorized | Self::Unauthenticated { .. } => "unauthorized",
            Self::Forbidden(_) | Self::AdminNotLocal => "forbidden",
            Self::ReloadFailed { .. } => "reload_failed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout { .. } => "timeout",
            Self::NotReady | Self::ModelsDown(_) => "not_ready",
            Self::Route(RouteError::ModelUnloaded(_)) => "model_unloaded",
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
            | Self::Route(RouteError::ModelUnloaded(_))
            | Self::PredictionLogUnavailable => Some(5),
            _ => None,
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Malformed(message) => Self::MalformedJson(message),
            DecodeError::Invalid { message, details } => Self::InvalidRequest { message, details },
            DecodeError::Validation { details, truncated } => Self::Validation { details, truncated },
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::UnsupportedMediaType { got } => Self::UnsupportedMediaType { got },
            BodyError::TooLarge { limit } => Self::PayloadTooLarge { limit },
            BodyError::Unreadable(message) => Self::UnreadableBody(message),
            BodyError::Timeout { ms } => Self::BodyTimeout { ms },
            BodyError::BudgetFull => Self::BodiesInFlight,
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::NotReady => Self::NotReady,
            LifecycleError::ShuttingDown => Self::ShuttingDown,
            LifecycleError::ModelNotFound(model) => RouteError::ModelNotFound(model).into(),
            LifecycleError::Refused { message, details } => Self::ReloadFailed { message, details },
            LifecycleError::Internal(cause) => Self::Internal(cause),
        }
    }
}

impl From<PredictError> for ApiError {
    fn from(e: PredictError) -> Self {
        match e {
            PredictError::NotReady => Self::NotReady,
            PredictError::Route(e) => Self::Route(e),
            PredictError::Body(e) => e.into(),
            PredictError::Decode(e) => e.into(),
            PredictError::Overloaded { model, queued, capacity } => Self::Overloaded { model, queued, capacity },
            e @ PredictError::NeverFits { .. } => Self::InvalidRequest { message: e.to_string(), details: vec![] },
            PredictError::ShuttingDown => Self::ShuttingDown,
            PredictError::ModelsDown(versions) => Self::ModelsDown(versions),
            PredictError::Timeout { ms } => Self::Timeout { ms },
            PredictError::ModelRejected(message) => Self::ModelRejected(message),
            PredictError::PredictionLogUnavailable => Self::PredictionLogUnavailable,
            PredictError::Internal(cause) => Self::Internal(cause),
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
            Self::UnsupportedMediaType { .. }
                | Self::PayloadTooLarge { .. }
                | Self::UnreadableBody(_)
                | Self::BodyTimeout { .. }
                | Self::Route(_)
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

    /// The body in this service's shape, without the request id (see [`stamp`]).
    pub fn body(&self) -> ErrorBody {
        let details = match self {
            Self::Validation { details, .. } => Some(details.clone()),
            Self::InvalidRequest { details, .. } | Self::ReloadFailed { details, .. } if !details.is_empty() => {
                Some(details.clone())
            }
            _ => None,
        };
        ErrorBody { error: self.to_string(), error_type: self.error_type(), details, request_id: None }
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
        let body = self.body();
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

/// The two shapes an error body takes: this service's (`ErrorBody`, with the request id) or
/// the Open Inference Protocol's (`{"error": ...}`, with 400 for every refusal of the request).
/// Each route speaks one, chosen by `track::track` from the route (`/v2`'s routes speak the
/// protocol's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Json,
    V2,
}

impl Shape {
    /// The protocol's status: the request's fault is 400 whatever it was.
    pub fn status(self, status: StatusCode) -> StatusCode {
        match (self, status) {
            (Self::V2, StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE) => {
                StatusCode::BAD_REQUEST
            }
            _ => status,
        }
    }
}

/// The protocol's one error message: the error, then each field at fault by tensor position.
pub fn v2_message(body: &ErrorBody) -> String {
    match &body.details {
        Some(details) if !details.is_empty() => {
            let fields: Vec<String> =
                details.iter().map(|d| format!("{}: {}", tensor_path(&d.path), d.message)).collect();
            format!("{}: {}", body.error, fields.join("; "))
        }
        _ => body.error.clone(),
    }
}

/// `/instances/3/bedrooms` reads better as `bedrooms[3]` when the client sent tensors.
pub fn tensor_path(path: &str) -> String {
    match path.trim_start_matches("/instances/").split_once('/') {
        Some((row, field)) => format!("{field}[{row}]"),
        None => path.to_owned(),
    }
}

/// Writes an error response's body in the route's `shape`, with the request id in ours. The
/// layer that gives requests their ids calls it, so that errors are built anywhere (a layer
/// before the handler, say) without knowing the request or its route.
pub fn stamp(response: &mut Response, request_id: &Arc<str>, shape: Shape) {
    let Some(Unstamped(body)) = response.extensions_mut().remove::<Unstamped>() else { return };
    let bytes = match shape {
        Shape::Json => {
            let mut body = Arc::unwrap_or_clone(body);
            body.request_id = Some(request_id.clone());
            serde_json::to_vec(&body)
        }
        Shape::V2 => {
            *response.status_mut() = shape.status(response.status());
            serde_json::to_vec(&serde_json::json!({ "error": v2_message(&body) }))
        }
    };
    *response.body_mut() = axum::body::Body::from(bytes.expect("an error body serialises"));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's request metrics count the service's outcome; it must agree with the status
    /// this table gives the same error.
    #[test]
    fn the_service_outcome_agrees_with_the_status() {
        use crate::observe::Outcome;
        let outcome_of = |status: StatusCode| match status.as_u16() {
            503 => Outcome::Overloaded,
            504 => Outcome::Timeout,
            400..=499 => Outcome::Invalid,
            _ => Outcome::Error,
        };
        let errors = [
            PredictError::NotReady,
            RouteError::ModelNotFound("m".into()).into(),
            RouteError::ModelUnloaded("m".into()).into(),
            BodyError::UnsupportedMediaType { got: "text/plain".into() }.into(),
            BodyError::TooLarge { limit: 1 }.into(),
            BodyError::Unreadable("x".into()).into(),
            BodyError::Timeout { ms: 1 }.into(),
            BodyError::BudgetFull.into(),
            DecodeError::Malformed("x".into()).into(),
            DecodeError::invalid("x").into(),
            DecodeError::validation(vec![]).into(),
            PredictError::Overloaded { model: "m".into(), queued: 1, capacity: 1 },
            PredictError::NeverFits { model: "m".into(), rows: 2, capacity: 1 },
            PredictError::ShuttingDown,
            PredictError::ModelsDown(vec![]),
            PredictError::Timeout { ms: 1 },
            PredictError::ModelRejected("x".into()),
            PredictError::PredictionLogUnavailable,
            PredictError::Internal("x".into()),
        ];
        for error in errors {
            let outcome = error.outcome();
            let name = format!("{error:?}");
            let status = ApiError::from(error).status();
            assert_eq!(outcome_of(status), outcome, "{name} is {status}");
        }
    }

    #[test]
    fn schema_paths_read_as_tensor_positions() {
        assert_eq!(tensor_path("/instances/3/bedrooms"), "bedrooms[3]");
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
