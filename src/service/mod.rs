//! One prediction, from decoded rows to outputs: admission to the model's queue, the deadline,
//! batching, the prediction log and the model's request metrics. Every wire format (`/predict`,
//! KServe V1 / TensorFlow Serving, the Open Inference Protocol) decodes its body into
//! [`Rows`], calls [`Predictor::predict`] and encodes the [`Inferred`] it gets back.

mod deadline;
mod shadow;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

pub use deadline::Deadline;

use crate::batch::{Batcher, InferError, Inferred};
use crate::error::{clip_chars, ApiError};
use crate::model::golden::Tolerance;
use crate::model::views::row_outputs_json;
use crate::model::ModelSpec;
use crate::observe::{Metrics, ModelMetrics, RateLimited};
use crate::predlog::PredictionLog;
use crate::tensor::rows::Rows;
use serde_json::{Map, Value};

/// Who asked, for the prediction log.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub request_id: &'a str,
    /// The principal access control accepted, when it is on.
    pub principal: Option<&'a Arc<str>>,
}

/// What a model request reports about itself, for the access log and the model's metrics
/// (carried out of the handler as a response extension).
#[derive(Clone)]
pub struct Served {
    pub metrics: Arc<ModelMetrics>,
    /// Instances in the request; 0 when its body could not be read.
    pub rows: usize,
    pub queue: Duration,
    pub inference: Duration,
}

impl Served {
    pub fn new(metrics: &Arc<ModelMetrics>) -> Self {
        Self { metrics: metrics.clone(), rows: 0, queue: Duration::ZERO, inference: Duration::ZERO }
    }
}

/// A version that also runs a sample of another's requests (`shadow` in the config).
#[derive(Clone)]
pub struct Shadow {
    pub batcher: Batcher,
    pub sample_rate: f64,
    pub tolerance: Tolerance,
}

/// The predict service; cheap to clone.
#[derive(Clone)]
pub struct Predictor {
    log: Option<Arc<PredictionLog>>,
    max_rows: usize,
    metrics: Arc<Metrics>,
}

impl Predictor {
    pub fn new(log: Option<PredictionLog>, max_rows: usize, metrics: Arc<Metrics>) -> Self {
        Self { log: log.map(Arc::new), max_rows, metrics }
    }

    /// Most instances one request may hold (`server.max_instances_per_request`).
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    pub fn prediction_log(&self) -> Option<&PredictionLog> {
        self.log.as_deref()
    }

    /// Refuses `rows` at once if the model's queue cannot take them now: a hint from its last
    /// published length, used before a crowded server spends work decoding a body.
    pub fn has_room(&self, batcher: &Batcher, rows: usize, deadline: Deadline) -> Result<(), ApiError> {
        batcher.has_room(rows).map_err(|e| refused(batcher.spec(), deadline, rows, e))
    }

    /// Runs decoded rows through the model's batcher before the deadline and logs them; a
    /// sampled request also runs on `shadow`, in a task of its own, once answered.
    pub async fn predict(
        &self,
        batcher: &Batcher,
        shadow: Option<Shadow>,
        origin: Origin<'_>,
        rows: Rows,
        deadline: Deadline,
        served: &mut Served,
    ) -> Result<Inferred, ApiError> {
        let spec = batcher.spec();
        let n = rows.len;
        served.rows = n;
        let fail = |e| refused(spec, deadline, n, e);
        if let Some(log) = &self.log {
            log.admits().map_err(|_| ApiError::PredictionLogUnavailable)?;
        }
        let admission = batcher.admit(n).map_err(fail)?;
        let shadowed = shadow.filter(|s| fastrand::f64() < s.sample_rate).map(|s| (s, rows.clone()));
        let inferred = admission.infer(rows, deadline.at()).await.map_err(fail)?;
        served.queue = inferred.queue();
        served.inference = inferred.inference();
        if let Some(log) = &self.log {
            // What is answered is logged: a prediction the log cannot take is not answered.
            log.record(origin.request_id, origin.principal, spec, &inferred, deadline.at())
                .await
                .map_err(|_| ApiError::PredictionLogUnavailable)?;
        }
        if let Some((shadow, rows)) = shadowed {
            let answered: Vec<Map<String, Value>> =
                inferred.each_row().map(|(batch, row)| row_outputs_json(spec, batch, row)).collect();
            let (metrics, request_id, primary) =
                (self.metrics.clone(), origin.request_id.to_owned(), spec.version.clone());
            tokio::spawn(async move { shadow::run(&shadow, &metrics, &request_id, rows, answered, primary).await });
        }
        Ok(inferred)
    }
}

/// Refused rows are the client's doing, so their warning is logged at most once a second.
static REFUSED_ROWS_LOG: LazyLock<Mutex<RateLimited>> =
    LazyLock::new(|| Mutex::new(RateLimited::new(Duration::from_secs(1))));

/// Why the batcher did not predict, as the error a client gets.
fn refused(spec: &ModelSpec, deadline: Deadline, rows: usize, e: InferError) -> ApiError {
    match e {
        InferError::Full { queued, capacity } => ApiError::Overloaded { model: spec.name.clone(), queued, capacity },
        InferError::TooLarge { rows, capacity } => ApiError::InvalidRequest {
            message: format!("{rows} instances can never fit the queue of model '{}' ({capacity} rows)", spec.name),
            details: vec![],
        },
        InferError::Closed => ApiError::ShuttingDown,
        InferError::NotReady => ApiError::ModelsDown(vec![format!("{}:{}", spec.name, spec.version)]),
        InferError::Expired => deadline.timed_out(),
        InferError::Rejected(message) => {
            // Rows that pass the schema can still be refused by the graph (an index out of
            // range, say) while other requests' rows run: the fault is this request's.
            // ONNX Runtime's own message (it says which node refused what), cut at a length
            // that keeps it useful but bounded.
            let message = clip_chars(&message, 400).into_owned();
            if let Some(suppressed) = REFUSED_ROWS_LOG.lock().unwrap_or_else(|p| p.into_inner()).check() {
                tracing::warn!(model = %spec.name, rows, %message, suppressed, "model refused the request's rows");
            }
            ApiError::ModelRejected(message)
        }
        InferError::Internal(cause) => ApiError::Internal(cause),
    }
}
