//! The tensor decoder of `POST /v2/models/{model}/infer`, reachable from the fuzz targets in
//! `fuzz/`. Not an API: it follows the decoder wherever the decoder goes.

use super::tensors::to_rows;
use super::types::InferRequest;
use crate::decode;
use crate::tensor::rows::Rows;

/// Parses an inference request body (JSON only) and reads its tensors into rows, as the infer
/// handler does. `max_rows` is `server.max_instances_per_request`.
pub fn decode(model: decode::Model<'_>, body: &[u8], max_rows: usize) -> Result<Rows, String> {
    let request: InferRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    to_rows(model, &request.inputs, &[], max_rows).map_err(|e| e.error)
}
