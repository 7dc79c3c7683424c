//! The protocol's wire types, its error shape, and extractors that reject in that shape.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::tensors::tensor_path;
use crate::error::ApiError;
use crate::http::AppState;

/// The protocol's error body: `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct V2Error {
    pub error: String,
    #[serde(skip)]
    status: StatusCode,
    #[serde(skip)]
    body_unread: bool,
    /// `WWW-Authenticate` and `Retry-After` of the error it came from.
    #[serde(skip)]
    challenge: Option<HeaderValue>,
    #[serde(skip)]
    retry_after: Option<u32>,
}

impl V2Error {
    pub(super) fn bad_request(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            status: StatusCode::BAD_REQUEST,
            body_unread: false,
            challenge: None,
            retry_after: None,
        }
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::BAD_REQUEST,
            other => other,
        };
        let error = match &e {
            ApiError::Validation { details, .. }
            | ApiError::InvalidRequest { details, .. }
            | ApiError::ReloadFailed { details, .. }
                if !details.is_empty() =>
            {
                let fields: Vec<String> =
                    details.iter().map(|d| format!("{}: {}", tensor_path(&d.path), d.message)).collect();
                format!("{}: {}", e, fields.join("; "))
            }
            _ => e.to_string(),
        };
        e.log_internal();
        Self {
            error,
            status,
            body_unread: e.leaves_body_unread(),
            challenge: e.challenge(),
            retry_after: e.retry_after_seconds(),
        }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let (status, body_unread) = (self.status, self.body_unread);
        let (challenge, retry_after) = (self.challenge.clone(), self.retry_after);
        let mut response = (status, Json(self)).into_response();
        let retry_after = match status {
            StatusCode::SERVICE_UNAVAILABLE => Some(1),
            StatusCode::TOO_MANY_REQUESTS => retry_after,
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if body_unread {
            response.extensions_mut().insert(crate::error::BodyUnread);
        }
        response
    }
}

/// Path parameters, rejected in the protocol's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(V2Error))]
pub struct V2Path<T>(pub T);

impl From<PathRejection> for V2Error {
    fn from(rejection: PathRejection) -> Self {
        ApiError::from(rejection).into()
    }
}

/// The raw body, whatever its content type (standard clients do not always send one).
pub struct V2Body(pub Bytes);

impl FromRequest<AppState> for V2Body {
    type Rejection = V2Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(V2Body(crate::http::extract::read_body(req, state).await?))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    /// BOOL, INT8 to INT64, UINT8 to UINT64, FP16, FP32, FP64 or BYTES.
    pub datatype: String,
    /// -1 marks a dynamic dimension.
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub live: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// `timeout` (microseconds, as Triton takes it) shortens the request's deadline; other
    /// parameters are accepted and ignored.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "super::parameters::known")]
    pub parameters: Option<Value>,
    pub inputs: Vec<InferInput>,
    /// Restricts the outputs returned; all by default.
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// `binary_data_size`: the tensor's bytes follow the JSON header (binary tensor data
    /// extension) instead of `data`.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "super::parameters::known")]
    pub parameters: Option<Value>,
    /// Row-major, flat or nested like `shape`; kept unparsed until the model's element type
    /// is known, then read straight into the tensor's buffer.
    #[schema(value_type = Option<Vec<Object>>)]
    pub data: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "super::parameters::known")]
    pub parameters: Option<Value>,
}

/// The answer (documentation: it is written from the output tensors).
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// `binary_data_size` when the output's bytes follow the JSON header instead of `data`.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub data: Option<Vec<Value>>,
}
