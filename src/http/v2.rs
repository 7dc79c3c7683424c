//! KServe Open Inference Protocol v2, REST: health, metadata and tensor inference. Tensors are
//! turned into instances and go through the same schema check and batcher as `/predict`.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::predict::run_instances;
use super::AppState;
use crate::batch::Batcher;
use crate::error::ApiError;
use crate::model::signature::{ElemType, TensorInfo};
use crate::model::tensors::Prediction;

/// The protocol's error body: `{"error": "..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct V2Error {
    pub error: String,
    #[serde(skip)]
    status: StatusCode,
}

impl V2Error {
    fn bad_request(error: impl Into<String>) -> Self {
        Self { error: error.into(), status: StatusCode::BAD_REQUEST }
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::BAD_REQUEST,
            other => other,
        };
        let error = match &e {
            ApiError::Validation(details) | ApiError::InvalidRequest { details, .. } if !details.is_empty() => {
                let fields: Vec<String> =
                    details.iter().map(|d| format!("{}: {}", tensor_path(&d.path), d.message)).collect();
                format!("{}: {}", e, fields.join("; "))
            }
            _ => e.to_string(),
        };
        if let ApiError::Internal(cause) = &e {
            tracing::error!(%cause, "internal error");
        }
        Self { error, status }
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
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
pub struct V2Body(Bytes);

impl FromRequest<AppState> for V2Body {
    type Rejection = V2Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(V2Body).map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit: state.config.server.body_limit_bytes }.into()
            } else {
                V2Error::bad_request(e.body_text())
            }
        })
    }
}

/// `/instances/3/bedrooms` reads better as `bedrooms[3]` when the client sent tensors.
fn tensor_path(path: &str) -> String {
    match path.trim_start_matches("/instances/").split_once('/') {
        Some((row, field)) => format!("{field}[{row}]"),
        None => path.to_owned(),
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
    /// Accepted and ignored.
    #[schema(value_type = Option<Object>)]
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
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Row-major, flat or nested.
    #[schema(value_type = Vec<Object>)]
    pub data: Value,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
}

pub fn datatype(elem: ElemType) -> &'static str {
    elem.oip_datatype()
}

fn metadata(info: &TensorInfo) -> TensorMetadata {
    TensorMetadata { name: info.name.clone(), datatype: datatype(info.elem).to_owned(), shape: info.shape.clone() }
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "open inference protocol v2", responses((status = 200, body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { live: true })
}

/// Server readiness: every model loaded and warmed up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "open inference protocol v2", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "Models still loading", body = V2Error),
))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, V2Error> {
    state.registry()?;
    Ok(Json(Readiness { ready: true }))
}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "open inference protocol v2", responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata { name: "inferd".into(), version: env!("CARGO_PKG_VERSION").into(), extensions: vec![] })
}

fn lookup<'a>(state: &'a AppState, name: &str, version: Option<&str>) -> Result<&'a Batcher, V2Error> {
    Ok(state.registry()?.get(name, version)?)
}

fn model_metadata(state: &AppState, batcher: &Batcher, all_versions: bool) -> ModelMetadata {
    let spec = batcher.spec();
    let versions = match (all_versions, state.loaded().and_then(|r| r.models().get(&spec.name))) {
        (true, Some(model)) => model.versions.keys().cloned().collect(),
        _ => vec![spec.version.clone()],
    };
    ModelMetadata {
        name: spec.name.clone(),
        versions,
        platform: "onnx_onnxv1".into(),
        inputs: spec.signature.inputs.iter().map(metadata).collect(),
        outputs: spec.signature.outputs.iter().map(metadata).collect(),
    }
}

/// Model metadata (default version).
#[utoipa::path(get, path = "/v2/models/{model}", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let batcher = lookup(&state, &name, None)?;
    Ok(Json(model_metadata(&state, batcher, true)))
}

/// Model metadata (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = ModelMetadata), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let batcher = lookup(&state, &name, Some(&version))?;
    Ok(Json(model_metadata(&state, batcher, false)))
}

/// Model readiness (default version).
#[utoipa::path(get, path = "/v2/models/{model}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_ready(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
) -> Result<Json<Readiness>, V2Error> {
    lookup(&state, &name, None)?;
    Ok(Json(Readiness { ready: true }))
}

/// Model readiness (one version).
#[utoipa::path(get, path = "/v2/models/{model}/versions/{version}/ready", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = Readiness), (status = 400, description = "Path is not valid UTF-8", body = V2Error), (status = 404, body = V2Error), (status = 503, body = V2Error)))]
pub async fn model_version_ready(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
) -> Result<Json<Readiness>, V2Error> {
    lookup(&state, &name, Some(&version))?;
    Ok(Json(Readiness { ready: true }))
}

/// What both infer operations can answer, besides 404.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: handlers answer with `InferResponse` or `V2Error`
enum InferResponses {
    #[response(status = 200)]
    Ok(InferResponse),
    /// Malformed body, unknown or missing input, wrong datatype, shape and data disagree, or values outside the schema
    #[response(status = 400)]
    BadRequest(V2Error),
    /// Body over the configured limit
    #[response(status = 413)]
    TooLarge(V2Error),
    /// Internal fault
    #[response(status = 500)]
    Internal(V2Error),
    /// Not ready, queue full or shutting down
    #[response(status = 503)]
    Unavailable(V2Error),
}

/// Inference on named tensors (default version). Any content type is read as JSON.
#[utoipa::path(post, path = "/v2/models/{model}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path)),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model", body = V2Error)))]
pub async fn infer(
    State(state): State<AppState>,
    V2Path(name): V2Path<String>,
    V2Body(body): V2Body,
) -> Result<Json<InferResponse>, V2Error> {
    let batcher = lookup(&state, &name, None)?;
    run(&state, batcher, &body).await
}

/// Inference on named tensors (one version). Any content type is read as JSON.
#[utoipa::path(post, path = "/v2/models/{model}/versions/{version}/infer", tag = "open inference protocol v2",
    params(("model" = String, Path), ("version" = String, Path)),
    request_body = InferRequest,
    responses(InferResponses, (status = 404, description = "Unknown model or version", body = V2Error)))]
pub async fn infer_version(
    State(state): State<AppState>,
    V2Path((name, version)): V2Path<(String, String)>,
    V2Body(body): V2Body,
) -> Result<Json<InferResponse>, V2Error> {
    let batcher = lookup(&state, &name, Some(&version))?;
    run(&state, batcher, &body).await
}

async fn run(state: &AppState, batcher: &Batcher, body: &[u8]) -> Result<Json<InferResponse>, V2Error> {
    let request: InferRequest = serde_json::from_slice(body)
        .map_err(|e| V2Error::bad_request(format!("request body is not a valid inference request: {e}")))?;
    let spec = batcher.spec();
    let outputs = selected_outputs(&spec.signature.outputs, request.outputs.as_deref())?;
    let instances = to_instances(&spec.plan.inputs, &request.inputs)?;
    let predictions = run_instances(state, batcher, &instances).await?;
    Ok(Json(InferResponse {
        model_name: spec.name.clone(),
        model_version: spec.version.clone(),
        id: request.id,
        outputs: outputs.into_iter().map(|info| to_output(info, &predictions)).collect(),
    }))
}

fn selected_outputs<'a>(
    all: &'a [TensorInfo],
    wanted: Option<&[RequestedOutput]>,
) -> Result<Vec<&'a TensorInfo>, V2Error> {
    let Some(wanted) = wanted.filter(|w| !w.is_empty()) else {
        return Ok(all.iter().collect());
    };
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|o| o.name == w.name)
                .ok_or_else(|| V2Error::bad_request(format!("unknown output '{}'", w.name)))
        })
        .collect()
}

/// Checks names, datatypes and shapes, then cuts the tensors into one instance per row.
fn to_instances(plan: &[crate::model::signature::InputPlan], inputs: &[InferInput]) -> Result<Vec<Value>, V2Error> {
    if let Some(unknown) = inputs.iter().find(|i| !plan.iter().any(|p| p.name == i.name)) {
        return Err(V2Error::bad_request(format!("unknown input '{}'", unknown.name)));
    }
    let mut rows: Option<usize> = None;
    let mut columns = Vec::with_capacity(plan.len());
    for expected in plan {
        let input = inputs
            .iter()
            .find(|i| i.name == expected.name)
            .ok_or_else(|| V2Error::bad_request(format!("missing input '{}'", expected.name)))?;
        let want = datatype(expected.elem);
        if input.datatype != want {
            return Err(V2Error::bad_request(format!(
                "input '{}': datatype {} does not match the model's {want}",
                input.name, input.datatype
            )));
        }
        let width = expected.fields.len();
        let shape_ok = !input.shape.is_empty()
            && input.shape.iter().all(|d| *d >= 0)
            && input.shape[1..].iter().product::<i64>() == width as i64;
        if !shape_ok {
            return Err(V2Error::bad_request(format!(
                "input '{}': shape {:?} does not fit the model's [N, {width}]",
                input.name, input.shape
            )));
        }
        let n = input.shape[0] as usize;
        if *rows.get_or_insert(n) != n {
            return Err(V2Error::bad_request(format!(
                "input '{}' has {n} rows, others have {}",
                input.name,
                rows.unwrap_or(0)
            )));
        }
        let mut data = Vec::with_capacity(n * width);
        flatten(&input.data, &mut data);
        if data.len() != n * width {
            return Err(V2Error::bad_request(format!(
                "input '{}': shape {:?} needs {} values, data has {}",
                input.name,
                input.shape,
                n * width,
                data.len()
            )));
        }
        columns.push((expected, data));
    }
    let rows = rows.unwrap_or(0);
    let instances = (0..rows)
        .map(|r| {
            let mut instance = Map::new();
            for (input, data) in &columns {
                let width = input.fields.len();
                for (j, field) in input.fields.iter().enumerate() {
                    instance.insert(field.clone(), data[r * width + j].clone());
                }
            }
            Value::Object(instance)
        })
        .collect();
    Ok(instances)
}

fn flatten(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| flatten(item, out)),
        other => out.push(other.clone()),
    }
}

fn to_output(info: &TensorInfo, predictions: &[Prediction]) -> OutputTensor {
    let mut data = Vec::new();
    for prediction in predictions {
        match prediction.get(&info.name) {
            Some(Value::Array(items)) => data.extend(items.iter().cloned()),
            Some(value) => data.push(value.clone()),
            None => {}
        }
    }
    let rows = predictions.len() as i64;
    let per_row = if rows == 0 { 0 } else { data.len() as i64 / rows };
    let shape = match info.shape.len() {
        0 | 1 => vec![rows],
        2 => vec![rows, per_row],
        _ => {
            // Fill the one dynamic non-batch dimension, if any, from the element count.
            let known: i64 = info.shape[1..].iter().filter(|d| **d > 0).product();
            let mut shape: Vec<i64> = info.shape.clone();
            shape[0] = rows;
            for d in shape[1..].iter_mut().filter(|d| **d < 0) {
                *d = if known > 0 { per_row / known } else { per_row };
            }
            shape
        }
    };
    OutputTensor { name: info.name.clone(), shape, datatype: datatype(info.elem).to_owned(), data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::signature::InputPlan;
    use serde_json::json;

    fn input(name: &str, shape: &[i64], datatype: &str, data: Value) -> InferInput {
        InferInput { name: name.into(), shape: shape.to_vec(), datatype: datatype.into(), parameters: None, data }
    }

    fn plan() -> Vec<InputPlan> {
        vec![
            InputPlan { name: "x".into(), elem: ElemType::F32, fields: vec!["a".into(), "b".into()], rank: 2 },
            InputPlan { name: "s".into(), elem: ElemType::String, fields: vec!["s".into()], rank: 2 },
        ]
    }

    #[test]
    fn tensors_become_rows_with_nested_or_flat_data() {
        let inputs =
            [input("x", &[2, 2], "FP32", json!([[1, 2], [3, 4]])), input("s", &[2, 1], "BYTES", json!(["p", "q"]))];
        let rows = to_instances(&plan(), &inputs).unwrap();
        assert_eq!(rows, vec![json!({"a": 1, "b": 2, "s": "p"}), json!({"a": 3, "b": 4, "s": "q"})]);
    }

    #[test]
    fn bad_tensors_are_named() {
        let err = |inputs: &[InferInput]| to_instances(&plan(), inputs).unwrap_err().error;
        let s = input("s", &[1], "BYTES", json!(["p"]));
        assert!(err(&[input("x", &[1, 2], "FP64", json!([1, 2])), input("s", &[1], "BYTES", json!(["p"]))])
            .contains("datatype FP64 does not match the model's FP32"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2, 3]))]).contains("needs 2 values, data has 3"));
        assert!(err(&[input("x", &[1, 3], "FP32", json!([1, 2, 3]))]).contains("does not fit the model's [N, 2]"));
        assert!(err(&[input("x", &[2, 2], "FP32", json!([1, 2, 3, 4])), s]).contains("has 1 rows, others have 2"));
        assert!(err(&[input("zz", &[1], "FP32", json!([1]))]).contains("unknown input 'zz'"));
        assert!(err(&[input("x", &[1, 2], "FP32", json!([1, 2]))]).contains("missing input 's'"));
    }

    #[test]
    fn outputs_are_flattened_with_their_shape() {
        let info = TensorInfo { name: "p".into(), elem: ElemType::F32, shape: vec![-1, 2] };
        let mut a = Map::new();
        a.insert("p".into(), json!([0.1, 0.9]));
        let mut b = Map::new();
        b.insert("p".into(), json!([0.7, 0.3]));
        let out = to_output(&info, &[a, b]);
        assert_eq!(out.shape, vec![2, 2]);
        assert_eq!(out.data, vec![json!(0.1), json!(0.9), json!(0.7), json!(0.3)]);
        assert_eq!(out.datatype, "FP32");
    }

    #[test]
    fn schema_paths_read_as_tensor_positions() {
        assert_eq!(tensor_path("/instances/3/bedrooms"), "bedrooms[3]");
    }
}
