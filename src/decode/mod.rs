//! From a request body to the rows of the model's input tensors, in one pass: each model's
//! instance schema is compiled at load into a [`plan::InstancePlan`], and bodies are read with
//! `serde` seeds straight into typed column buffers, every field checked (type, range, `enum`,
//! length, `required`, `additionalProperties`) with every error collected under its path.
//! A schema with keywords the plan does not carry out is checked by jsonschema as well, on the
//! decoded instances.

pub mod json;
pub mod plan;
pub mod preview;
pub mod sink;
#[cfg(test)]
mod tests;

use crate::error::{clip_quoted, ApiError};
use crate::schema::InstanceSchema;
use crate::tensor::rows::Rows;
use crate::tensor::signature::FeedPlan;
pub use json::{Envelope, Form};
pub use plan::InstancePlan;
pub use sink::Sink;

/// What decoding needs of a model.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    pub plan: &'a InstancePlan,
    pub feed: &'a FeedPlan,
    pub schema: &'a InstanceSchema,
}

/// Decodes a JSON body of instances (`/predict`, `/v1`) into rows.
pub fn body(model: Model<'_>, body: &[u8], envelope: Envelope, max_rows: usize) -> Result<(Rows, Form), ApiError> {
    // A guess at the row count from the body's size keeps the columns from regrowing.
    let expected = (body.len() / (model.plan.fields.len() * 8).max(16)).max(1);
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in values it skips.
    let body = std::str::from_utf8(body).map_err(|e| ApiError::MalformedJson(format!("not valid UTF-8: {e}")))?;
    let mut sink = Sink::new(model.plan, model.feed, max_rows, expected);
    let form = json::read_body(body.as_bytes(), envelope, &mut sink).map_err(json_error)?;
    Ok((sink.finish(model.schema)?, form))
}

/// A parser's error in the service's shape: broken JSON is `malformed_json`, valid JSON that
/// is not the envelope is `invalid_request`.
pub fn json_error(e: serde_json::Error) -> ApiError {
    let message = clip_quoted(&e.to_string()).into_owned();
    match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest {
            message: format!("request body has the wrong shape: {message}"),
            details: vec![],
        },
        _ => ApiError::MalformedJson(message),
    }
}
