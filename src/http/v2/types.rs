//! The protocol's wire types, its error shape, and extractors that reject in that shape.

use axum::extract::rejection::PathRejection;
use axum::extract::FromRequestParts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::decode::oip::{InferInput, InferRequest, RequestedOutput};
use crate::http::error::{v2_message, ApiError, BodyUnread, Shape};
use crate::registry::RouteError;
use crate::service::PredictError;

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

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        e.log_internal();
        Self {
            error: v2_message(&e.body()),
            status: Shape::V2.status(e.status()),
            body_unread: e.leaves_body_unread(),
            challenge: e.challenge(),
            retry_after: e.retry_after_seconds(),
        }
    }
}

impl From<PredictError> for V2Error {
    fn from(e: PredictError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<RouteError> for V2Error {
    fn from(e: RouteError) -> Self {
        ApiError::from(e).into()
    }
}

/// The same status, `Retry-After` and `WWW-Authenticate` as this service's shape: both read
/// them from [`ApiError`]'s one table.
impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let (status, body_unread) = (self.status, self.body_unread);
        let (challenge, retry_after) = (self.challenge.clone(), self.retry_after);
        let mut response = (status, Json(self)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if body_unread {
            response.extensions_mut().insert(BodyUnread);
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
