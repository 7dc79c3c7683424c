//! The Open Inference Protocol's inference request (v2): its JSON header, and its tensors read
//! into rows. REST reads it from a body (`POST /v2/models/{model}/infer`).

mod parameters;
mod tensors;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use tensors::{selected_outputs, to_rows, to_rows_from_parts};

use super::DecodeError;

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    /// `timeout` (microseconds, as Triton takes it) shortens the request's deadline; other
    /// parameters are accepted and ignored.
    #[schema(value_type = Option<Object>)]
    #[serde(default, deserialize_with = "parameters::known")]
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
    #[serde(default, deserialize_with = "parameters::known")]
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
    #[serde(default, deserialize_with = "parameters::known")]
    pub parameters: Option<Value>,
}

/// Parses a request's JSON header.
pub fn request(json: &[u8]) -> Result<InferRequest, DecodeError> {
    // JSON is UTF-8 throughout; serde would let invalid bytes pass in fields it skips.
    let json =
        std::str::from_utf8(json).map_err(|e| DecodeError::invalid(format!("request body is not valid UTF-8: {e}")))?;
    serde_json::from_str(json).map_err(|e| {
        let message = crate::error::clip_quoted(&e.to_string()).into_owned();
        DecodeError::invalid(format!("request body is not a valid inference request: {message}"))
    })
}

/// Parses a whole request (JSON only, no binary data) and reads its tensors into rows, as
/// `/v2`'s infer does; for the fuzz targets in `fuzz/`.
#[doc(hidden)]
pub fn decode_json(
    model: super::Model<'_>,
    body: &[u8],
    max_rows: usize,
) -> Result<crate::tensor::rows::Rows, DecodeError> {
    to_rows(model, &request(body)?.inputs, &[], max_rows)
}

/// `parameters.<name>`, which must be a boolean when given.
pub fn flag(parameters: Option<&Value>, name: &str) -> Result<Option<bool>, DecodeError> {
    match parameters.and_then(|p| p.get(name)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(DecodeError::invalid(format!("parameters.{name} must be true or false"))),
    }
}

/// `parameters.timeout`, microseconds above 0: a shorter deadline for the request.
pub fn timeout(request: &InferRequest) -> Result<Option<std::time::Duration>, DecodeError> {
    match request.parameters.as_ref().and_then(|p| p.get("timeout")) {
        None => Ok(None),
        Some(timeout) => match timeout.as_u64().filter(|us| *us > 0) {
            Some(us) => Ok(Some(std::time::Duration::from_micros(us))),
            None => Err(DecodeError::invalid("parameters.timeout must be a whole number of microseconds above 0")),
        },
    }
}
