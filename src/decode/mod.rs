//! From a request body to the rows of the model's input tensors, in one pass: each model's
//! instance schema is compiled at load into a [`crate::schema::InstancePlan`], and bodies are read with
//! `serde` seeds straight into typed column buffers, every field checked (type, range, `enum`,
//! length, `required`, `additionalProperties`) with every error collected under its path.
//! A schema with keywords the plan does not carry out is checked by jsonschema as well, on the
//! decoded instances.

pub mod json;
pub mod oip;
pub mod preview;
pub mod sink;
#[cfg(test)]
mod tests;

use crate::error::{clip_quoted, validation_message, FieldError, MAX_FIELD_ERRORS};
use crate::model::ModelSpec;
use crate::schema::InstanceSchema;
use crate::tensor::rows::Rows;
use crate::tensor::signature::{FeedPlan, TensorInfo};
pub use json::{Envelope, Form};
use crate::schema::InstancePlan;
pub use sink::Sink;

/// Why a body could not be decoded into rows: the client's fault, always.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON (or not UTF-8).
    #[error("request body is not valid JSON: {0}")]
    Malformed(String),
    /// JSON, but not the request the wire format expects.
    #[error("{message}")]
    Invalid { message: String, details: Vec<FieldError> },
    /// Instances that break the model's schema.
    #[error("{}", validation_message(.details, *.truncated))]
    Validation { details: Vec<FieldError>, truncated: bool },
}

impl DecodeError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid { message: message.into(), details: vec![] }
    }

    /// A validation error listing at most [`MAX_FIELD_ERRORS`] of `details`.
    pub fn validation(mut details: Vec<FieldError>) -> Self {
        let truncated = details.len() > MAX_FIELD_ERRORS;
        details.truncate(MAX_FIELD_ERRORS);
        Self::Validation { details, truncated }
    }
}

/// What decoding needs of a model.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    pub plan: &'a InstancePlan,
    pub feed: &'a FeedPlan,
    pub schema: &'a InstanceSchema,
    /// The model's outputs, which a request may choose among (`/v2`).
    pub outputs: &'a [TensorInfo],
}

impl<'a> Model<'a> {
    pub fn of(spec: &'a ModelSpec) -> Self {
        Self { plan: &spec.decoder, feed: &spec.plan, schema: &spec.schema, outputs: &spec.signature.outputs }
    }
}

/// Decodes a JSON body of instances (`/predict`, `/v1`) into rows.
pub fn body(model: Model<'_>, body: &[u8], envelope: Envelope, max_rows: usize) -> Result<(Rows, Form), DecodeError> {
    // A guess at the row count from the body's size keeps the columns from regrowing.
    let expected = (body.len() / (model.plan.fields.len() * 8).max(16)).max(1);
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in values it skips.
    let body = std::str::from_utf8(body).map_err(|e| DecodeError::Malformed(format!("not valid UTF-8: {e}")))?;
    let mut sink = Sink::new(model.plan, model.feed, max_rows, expected);
    let form = json::read_body(body.as_bytes(), envelope, &mut sink).map_err(json_error)?;
    Ok((sink.finish(model.schema)?, form))
}

/// A parser's error in the service's shape: broken JSON is `malformed_json`, valid JSON that
/// is not the envelope is `invalid_request`.
pub fn json_error(e: serde_json::Error) -> DecodeError {
    let message = clip_quoted(&e.to_string()).into_owned();
    match e.classify() {
        serde_json::error::Category::Data => {
            DecodeError::invalid(format!("request body has the wrong shape: {message}"))
        }
        _ => DecodeError::Malformed(message),
    }
}
