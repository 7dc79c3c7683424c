//! The HTTP side of the predict service: a request body as the service's [`Input`], and the one
//! way a [`Served`] becomes a response. Every predict route is decode → [`call`] → encode.

use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower_http::request_id::RequestId;

use super::extract::Deadline;
use super::extract::Unread;
use super::AppState;
use crate::auth::Caller;
use crate::decode::{self, DecodeError, Envelope, Form};
use crate::service::{Answered, BodyError, Decoded, Input, Origin, PredictError, Served, ServedBy, Target};

/// Which version answered, whatever the route (a traffic split may have chosen it); on
/// unversioned routes a client may also send it to pin the version.
pub const PIN_VERSION: HeaderName = HeaderName::from_static("x-inferd-version");

/// The version a client asks for on an unversioned route (`x-inferd-version`), overriding
/// the model's traffic split.
pub fn pinned(headers: &HeaderMap) -> Option<&str> {
    headers.get(PIN_VERSION).and_then(|v| v.to_str().ok())
}

/// The request id as text (it is always a valid header value of ASCII).
pub fn id_of(request_id: &RequestId) -> &str {
    request_id.header_value().to_str().unwrap_or_default()
}

/// Who sent a request: its id (set by `track::track`) and the caller access control accepted.
pub struct Asker {
    pub request_id: RequestId,
    pub caller: Option<Extension<Caller>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Asker {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId::new(HeaderValue::from_static("")));
        Ok(Self { request_id, caller: parts.extensions.get::<Caller>().cloned().map(Extension) })
    }
}

/// Calls the predict service and answers: `encode` writes what the model answered, `E` (the
/// route's error shape) any error. The response carries [`ServedBy`] out to the access log.
pub async fn call<I: Input, E: From<PredictError> + IntoResponse>(
    state: &AppState,
    target: Target<'_>,
    asker: &Asker,
    deadline: Deadline,
    input: I,
    encode: impl FnOnce(&ServedBy, Answered<I>) -> Response,
) -> Response {
    let principal = asker.caller.as_ref().map(|Extension(caller)| &caller.name);
    let origin = Origin { request_id: id_of(&asker.request_id), principal };
    let (mut response, by) = match state.predictor().predict(target, origin, deadline, input).await {
        Served::Unrouted(e) => (E::from(e).into_response(), None),
        Served::Routed { by, result: Ok(answered) } => (encode(&by, answered), Some(by)),
        Served::Routed { by, result: Err(e) } => (E::from(e).into_response(), Some(by)),
    };
    if let Some(by) = by {
        if let Ok(version) = HeaderValue::from_str(&by.spec.version) {
            response.headers_mut().insert(PIN_VERSION, version);
        }
        response.extensions_mut().insert(by);
    }
    response
}

/// A request body, read when the service asks for it: after the model is found, within the
/// deadline and the body budget.
pub struct Body {
    unread: Option<Unread>,
    state: AppState,
    /// Refuse a content type other than JSON (see [`super::extract::json_or_unsaid`]): true but
    /// for `/v2`'s binary bodies, which carry tensors after their JSON header.
    json_only: bool,
    pub bytes: Bytes,
}

impl Body {
    pub fn new(unread: Unread, state: &AppState, json_only: bool) -> Self {
        Self { unread: Some(unread), state: state.clone(), json_only, bytes: Bytes::new() }
    }

    pub async fn receive(&mut self, deadline: Deadline) -> Result<(), BodyError> {
        if let Some(unread) = self.unread.take() {
            self.bytes = unread.receive(&self.state, deadline, self.json_only).await?;
        }
        Ok(())
    }
}

/// A JSON body of instances (`/predict`) or of instances or columns (`/v1`).
pub struct Instances {
    pub body: Body,
    envelope: Envelope,
    /// How the instances came (rows or columns), for the answer.
    pub form: Form,
}

impl Instances {
    pub fn new(body: Body, envelope: Envelope) -> Self {
        Self { body, envelope, form: Form::Rows }
    }
}

/// A request body's instances, counted but not built.
#[derive(Deserialize)]
struct Counted {
    instances: Vec<serde::de::IgnoredAny>,
}

impl Input for Instances {
    fn receive(&mut self, deadline: Deadline) -> impl std::future::Future<Output = Result<(), BodyError>> + Send {
        self.body.receive(deadline)
    }

    fn count(&mut self) -> Option<usize> {
        serde_json::from_slice::<Counted>(&self.body.bytes).ok().map(|c| c.instances.len())
    }

    fn decode(&mut self, model: decode::Model<'_>, max_rows: usize) -> Result<Decoded, DecodeError> {
        let (rows, form) = decode::json::body(model, &self.body.bytes, self.envelope, max_rows)?;
        self.form = form;
        Ok(Decoded { rows, timeout: None })
    }
}
