//! Wire decoding: from a request body to the rows of the model's input tensors, in one pass.
//! Each model's instance schema is compiled at load into a [`crate::schema::InstancePlan`];
//! JSON bodies ([`json`]) and the Open Inference Protocol's tensors ([`oip`]) are read with
//! `serde` seeds straight into typed column buffers (the [`sink`]), every field checked (type,
//! range, `enum`, length, `required`, `additionalProperties`) with every error collected under
//! its path. A schema with keywords the plan does not carry out is checked by jsonschema as
//! well, on the decoded instances.

pub mod json;
pub mod oip;
pub mod preview;
pub mod sink;
#[cfg(test)]
mod tests;

pub use json::{Envelope, Form};
pub use sink::Sink;

use crate::error::{validation_message, FieldError, MAX_FIELD_ERRORS};
use crate::model::ModelSpec;
use crate::schema::{InstancePlan, InstanceSchema};
use crate::tensor::signature::{FeedPlan, TensorInfo};

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
    /// The model's outputs, which a request may choose among (`/v2`), by `/v2`'s names.
    pub outputs: &'a [TensorInfo],
}

impl<'a> Model<'a> {
    pub fn of(spec: &'a ModelSpec) -> Self {
        Self { plan: &spec.decoder, feed: &spec.plan, schema: &spec.schema, outputs: &spec.v2_outputs }
    }
}
