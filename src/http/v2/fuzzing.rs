//! The tensor decoder of `POST /v2/models/{model}/infer`, reachable from the fuzz targets in
//! `fuzz/`. Not an API: it follows the decoder wherever the decoder goes.

use serde_json::Value;

use super::tensors::to_instances;
use super::types::InferRequest;
use crate::model::signature::FeedPlan;

/// Parses an inference request body and cuts its tensors into one instance per row, as the
/// infer handler does before the schema check. `max_rows` is `server.max_instances_per_request`.
pub fn decode(plan: &FeedPlan, body: &[u8], max_rows: usize) -> Result<Vec<Value>, String> {
    let request: InferRequest = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    to_instances(&plan.inputs, &request.inputs, max_rows).map_err(|e| e.error)
}
