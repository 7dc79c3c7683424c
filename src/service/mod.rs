//! The predict service: everything about one prediction, whatever the wire format. Given a
//! [`Target`], who asks ([`Origin`]), a deadline and an [`Input`] (a payload not decoded yet),
//! [`Predictor::predict`] routes (traffic split, pinned version, unloaded models), receives
//! and decodes the payload, admits or sheds, batches, logs the prediction, samples the shadow,
//! records the model's request metrics and the slow-request warning, and returns what the
//! model answered or a [`PredictError`]. REST (`/predict`, `/v1`, `/v2`) is decode → this one
//! call → encode.

mod deadline;
mod error;
mod shadow;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

pub use crate::registry::Target;
pub use deadline::Deadline;
pub use error::{media_type_message, BodyError, PredictError};

use crate::batch::{Batcher, InferError, Inferred};
use crate::config::ReadyWhen;
use crate::decode::{self, DecodeError};
use crate::error::clip_chars;
use crate::model::views::row_outputs_json;
use crate::model::ModelSpec;
use crate::observe::{millis, trace, Metrics, Outcome, RateLimited};
use crate::predlog::{PredictionLog, Request};
use crate::registry::{Current, Route};
use crate::tensor::rows::Rows;
use serde_json::{Map, Value};

/// Who asked, for the prediction log and the logs.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub request_id: &'a str,
    /// The principal access control accepted, when it is on.
    pub principal: Option<&'a Arc<str>>,
}

/// A request's payload as a wire format holds it, until the service has found its model.
pub trait Input: Send {
    /// Receives the payload (a body still arriving, say) before `deadline`.
    fn receive(&mut self, deadline: Deadline) -> impl Future<Output = Result<(), BodyError>> + Send;
    /// The number of instances, found more cheaply than by decoding them, or `None`: asked
    /// only when the model's queue is crowded, so that a request that cannot fit is refused
    /// for the price of a scan.
    fn count(&mut self) -> Option<usize>;
    /// The rows for `model`, at most `max_rows` of them.
    fn decode(&mut self, model: decode::Model<'_>, max_rows: usize) -> Result<Decoded, DecodeError>;
}

pub struct Decoded {
    pub rows: Rows,
    /// A shorter budget than the request's, asked for inside the payload (`/v2`'s
    /// `parameters.timeout`).
    pub timeout: Option<Duration>,
}

/// What the model answered, with the payload it answered (which its encoder may need).
pub struct Answered<I> {
    pub inferred: Inferred,
    pub input: I,
}

/// The result of one request: refused before a model version was found, or with the version
/// it went to (for the access log and the answer's headers) whether or not it succeeded.
pub enum Served<I> {
    Unrouted(PredictError),
    Routed { by: ServedBy, result: Result<Answered<I>, PredictError> },
}

#[derive(Clone)]
pub struct ServedBy {
    pub spec: Arc<ModelSpec>,
    /// Instances in the request; 0 when its payload was not decoded.
    pub rows: usize,
}

/// The predict service; cheap to clone.
#[derive(Clone)]
pub struct Predictor(Arc<Inner>);

struct Inner {
    models: Arc<Current>,
    log: Option<PredictionLog>,
    max_rows: usize,
    /// Requests slower than this are warned about; zero: never.
    slow: Duration,
    ready_when: ReadyWhen,
    /// Set at SIGTERM: not ready from then on, while accepted requests finish.
    draining: AtomicBool,
    metrics: Arc<Metrics>,
}

/// How a [`Predictor`] is set up.
pub struct Settings {
    /// Most instances one request may hold (`server.max_instances_per_request`).
    pub max_rows: usize,
    /// `logging.slow_request_ms`.
    pub slow: Duration,
    /// `server.ready_when`.
    pub ready_when: ReadyWhen,
}

impl Predictor {
    pub fn new(models: Arc<Current>, log: Option<PredictionLog>, settings: Settings, metrics: Arc<Metrics>) -> Self {
        let Settings { max_rows, slow, ready_when } = settings;
        Self(Arc::new(Inner { models, log, max_rows, slow, ready_when, draining: AtomicBool::new(false), metrics }))
    }

    pub fn set_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Whether requests should be sent here, and the model names served: ready once every
    /// model is loaded and every session has run its schema's examples; not ready again while
    /// a loaded model has no working session (with `server.ready_when = "any"`, one working
    /// model is enough), while the prediction log's writer is stalled, and from SIGTERM on.
    /// Models unloaded through the repository API do not count, as Triton does.
    pub fn ready(&self) -> Result<Vec<String>, PredictError> {
        let published = self.0.models.load().ok_or(PredictError::NotReady)?;
        if self.is_draining() {
            return Err(PredictError::ShuttingDown);
        }
        // Lossless or not, a log that cannot write is an instance to route around.
        if self.0.log.as_ref().is_some_and(|log| log.stalled()) {
            return Err(PredictError::PredictionLogUnavailable);
        }
        let down = published.not_ready();
        let serving = published.models().values().flat_map(|m| m.versions.values()).any(|v| v.batcher.is_ready());
        let ready = match self.0.ready_when {
            ReadyWhen::All => down.is_empty(),
            ReadyWhen::Any => serving,
        };
        if !ready {
            return Err(PredictError::ModelsDown(down));
        }
        Ok(published.models().keys().cloned().collect())
    }

    pub fn prediction_log(&self) -> Option<&PredictionLog> {
        self.0.log.as_ref()
    }

    /// One prediction, from a target and a payload to the model's answer.
    pub async fn predict<I: Input>(
        &self,
        target: Target<'_>,
        origin: Origin<'_>,
        deadline: Deadline,
        mut input: I,
    ) -> Served<I> {
        let Some(published) = self.0.models.load() else {
            return Served::Unrouted(PredictError::NotReady);
        };
        let route = match published.route_to(target, origin.request_id) {
            Ok(route) => route,
            Err(e) => return Served::Unrouted(e.into()),
        };
        let batcher = route.batcher();
        let (rows, result) = self.run(&route, origin, deadline, &mut input).await;
        let elapsed = deadline.elapsed();
        let outcome = result.as_ref().map_or_else(PredictError::outcome, |_| Outcome::Ok);
        batcher.metrics().request(outcome, elapsed);
        let spec = batcher.spec();
        if !self.0.slow.is_zero() && elapsed >= self.0.slow {
            let (queue, inference) =
                result.as_ref().map_or((Duration::ZERO, Duration::ZERO), |i| (i.queue(), i.inference()));
            tracing::warn!(
                target: crate::telemetry::ACCESS_TARGET,
                outcome = outcome.as_str(),
                latency_ms = millis(elapsed),
                queue_ms = millis(queue),
                inference_ms = millis(inference),
                other_ms = millis(elapsed.saturating_sub(queue + inference)),
                threshold_ms = millis(self.0.slow),
                model = %spec.name,
                version = %spec.version,
                rows,
                principal = origin.principal.map(|p| &**p),
                "slow request"
            );
        }
        Served::Routed {
            by: ServedBy { spec: spec.clone(), rows },
            result: result.map(|inferred| Answered { inferred, input }),
        }
    }

    /// Receives, decodes and runs the payload on the route's version; the instance count
    /// comes back whatever the result.
    async fn run<I: Input>(
        &self,
        route: &Route<'_>,
        origin: Origin<'_>,
        mut deadline: Deadline,
        input: &mut I,
    ) -> (usize, Result<Inferred, PredictError>) {
        let batcher = route.batcher();
        let spec = batcher.spec();
        let mut receiving = trace::Child::start("receive");
        if let Err(e) = input.receive(deadline).await {
            receiving.fail(|| e.to_string());
            return (0, Err(e.into()));
        }
        drop(receiving);
        if batcher.crowded() {
            if let Some(n) = input.count() {
                if let Err(e) = batcher.has_room(n) {
                    return (0, Err(refused(spec, deadline, n, e)));
                }
            }
        }
        let mut decoding = trace::Child::start("decode");
        let decoded = match input.decode(decode::Model::of(spec), self.0.max_rows) {
            Ok(decoded) => decoded,
            Err(e) => {
                decoding.fail(|| e.to_string());
                return (0, Err(e.into()));
            }
        };
        drop(decoding);
        if let Some(timeout) = decoded.timeout {
            deadline = deadline.shorten(timeout);
        }
        let n = decoded.rows.len;
        (n, self.infer(batcher, route, origin, decoded.rows, deadline).await)
    }

    /// Runs decoded rows through the model's batcher before the deadline and logs them; a
    /// sampled request also runs on the shadow, in a task of its own, once answered.
    async fn infer(
        &self,
        batcher: &Batcher,
        route: &Route<'_>,
        origin: Origin<'_>,
        rows: Rows,
        deadline: Deadline,
    ) -> Result<Inferred, PredictError> {
        let spec = batcher.spec();
        let n = rows.len;
        let fail = |e| refused(spec, deadline, n, e);
        if let Some(log) = &self.0.log {
            log.admits().map_err(|_| PredictError::PredictionLogUnavailable)?;
        }
        let admission = batcher.admit(n).map_err(fail)?;
        let shadowed =
            route.shadow.as_ref().filter(|s| fastrand::f64() < s.sample_rate).map(|s| (s.clone(), rows.clone()));
        let admitted = trace::enabled().then(SystemTime::now);
        let inferred = admission.infer(rows, deadline.at()).await.map_err(fail)?;
        if let Some(admitted) = admitted {
            // Measured by the batcher: the longest wait of the request's jobs, then their
            // inference time, summed.
            let queued = admitted + inferred.queue();
            trace::Child::between("queue", admitted, queued);
            trace::Child::between("inference", queued, queued + inferred.inference());
        }
        if let Some(log) = &self.0.log {
            let _logging = trace::Child::start("prediction_log");
            let trace_id = trace::current_trace_id();
            let request = Request { id: origin.request_id, principal: origin.principal, trace_id: trace_id.as_deref() };
            // What is answered is logged: a prediction the log cannot take is not answered.
            log.record(request, spec, &inferred, deadline.at())
                .await
                .map_err(|_| PredictError::PredictionLogUnavailable)?;
        }
        if let Some((shadow, rows)) = shadowed {
            let answered: Vec<Map<String, Value>> =
                inferred.each_row().map(|(batch, row)| row_outputs_json(spec, batch, row)).collect();
            let (metrics, request_id, primary) =
                (self.0.metrics.clone(), origin.request_id.to_owned(), spec.version.clone());
            tokio::spawn(async move { shadow::run(&shadow, &metrics, &request_id, rows, answered, primary).await });
        }
        Ok(inferred)
    }
}

/// Refused rows are the client's doing, so their warning is logged at most once a second.
static REFUSED_ROWS_LOG: LazyLock<Mutex<RateLimited>> =
    LazyLock::new(|| Mutex::new(RateLimited::new(Duration::from_secs(1))));

/// Why the batcher did not predict.
fn refused(spec: &ModelSpec, deadline: Deadline, rows: usize, e: InferError) -> PredictError {
    match e {
        InferError::Full { queued, capacity } => {
            PredictError::Overloaded { model: spec.name.clone(), queued, capacity }
        }
        InferError::TooLarge { rows, capacity } => PredictError::NeverFits { model: spec.name.clone(), rows, capacity },
        InferError::Closed => PredictError::ShuttingDown,
        InferError::NotReady => PredictError::ModelsDown(vec![format!("{}:{}", spec.name, spec.version)]),
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
            PredictError::ModelRejected(message)
        }
        InferError::Internal(cause) => PredictError::Internal(cause),
    }
}
