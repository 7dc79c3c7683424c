//! Dynamic batching: a cloneable [`Batcher`] handle queues rows; inference threads, each owning
//! one ONNX Runtime session, take whatever has queued as their next batch.
//!
//! The queue is a `Mutex<State>` with a `Condvar` rather than a channel to an async actor: the
//! consumers are blocking threads, so a free thread pulls its next batch directly, with no hop
//! through the async runtime, and the policy stays in [`state::State`].

pub mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ort::session::Session;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::error::FieldError;
use crate::model::tensors::{Prediction, Rows};
use crate::model::ModelSpec;
use crate::observe::ModelMetrics;
use state::{Next, Pending, QueueFull, State};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("instances could not be encoded")]
    Encode(Vec<FieldError>),
    #[error("queue full")]
    Full(QueueFull),
    #[error("batcher closed")]
    Closed,
    #[error("the model refused the rows: {0}")]
    Rejected(String),
    #[error("inference failed: {0}")]
    Failed(String),
}

/// What one job's reply carries besides its predictions: the batch it ran in and its timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    /// Rows of the request in this job.
    pub rows: usize,
    /// Rows of the ONNX Runtime call it ran in.
    pub batch_rows: usize,
    pub queue: Duration,
    pub inference: Duration,
}

/// A request's predictions, in order, and how each of its jobs ran.
#[derive(Debug)]
pub struct Inferred {
    pub predictions: Vec<Prediction>,
    pub parts: Vec<Part>,
}

impl Inferred {
    /// The longest wait of any of the request's jobs.
    pub fn queue(&self) -> Duration {
        self.parts.iter().map(|p| p.queue).max().unwrap_or_default()
    }

    /// Time in ONNX Runtime, summed over the request's jobs.
    pub fn inference(&self) -> Duration {
        self.parts.iter().map(|p| p.inference).sum()
    }
}

type Reply = oneshot::Sender<Result<(Vec<Prediction>, Part), InferError>>;

struct Job {
    rows: Rows,
    reply: Reply,
}

impl Pending for Job {
    fn rows(&self) -> usize {
        self.rows.len
    }
    fn is_cancelled(&self) -> bool {
        // The receiver is dropped when axum drops the handler of a client that disconnected.
        self.reply.is_closed()
    }
}

/// Counters that show batching at work.
#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    rows: AtomicU64,
    largest_batch: AtomicU64,
    cancelled_rows: AtomicU64,
    inference_us: AtomicU64,
}

/// Counters of one model version since start.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// ONNX Runtime calls.
    pub batches: u64,
    /// Rows run through ONNX Runtime (rows of a refused batch count again when retried alone).
    pub rows: u64,
    /// Most rows seen in one call.
    pub largest_batch: u64,
    /// Queued rows dropped unrun because their client had gone away.
    pub cancelled_rows: u64,
    /// Time spent inside ONNX Runtime (encoding to tensors and decoding included), microseconds.
    pub inference_us: u64,
}

struct Shared {
    state: Mutex<State<Job>>,
    wake: Condvar,
    stats: Stats,
    metrics: Arc<ModelMetrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State<Job>> {
        self.state.lock().expect("batch queue lock poisoned: an inference thread panicked; this is a bug")
    }
}

#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    spec: Arc<ModelSpec>,
    max_batch_rows: usize,
}

/// The inference threads of one model; [`Workers::join`] waits for them after [`Batcher::close`].
pub struct Workers(Vec<JoinHandle<()>>);

impl Batcher {
    pub fn start(
        spec: Arc<ModelSpec>,
        sessions: Vec<Session>,
        config: &BatchingConfig,
        metrics: Arc<ModelMetrics>,
    ) -> std::io::Result<(Self, Workers)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config.max_batch_rows, config.queue_capacity_rows, config.max_delay())),
            wake: Condvar::new(),
            stats: Stats::default(),
            metrics,
        });
        let handles = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let (shared, spec) = (shared.clone(), spec.clone());
                std::thread::Builder::new()
                    .name(format!("infer-{}-{i}", spec.name))
                    .spawn(move || run_worker(&shared, &spec, session))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((Self { shared, spec, max_batch_rows: config.max_batch_rows }, Workers(handles)))
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    pub fn metrics(&self) -> &Arc<ModelMetrics> {
        &self.shared.metrics
    }

    /// Predicts validated instances, in order. Requests larger than one batch are split into
    /// jobs that are queued together and reassembled here.
    pub async fn infer(&self, instances: &[Value]) -> Result<Inferred, InferError> {
        let mut jobs = Vec::new();
        let mut receivers = Vec::new();
        for range in state::split(instances.len(), self.max_batch_rows) {
            let rows =
                Rows::encode(&self.spec.plan, &instances[range.clone()], range.start).map_err(InferError::Encode)?;
            let (reply, rx) = oneshot::channel();
            jobs.push(Job { rows, reply });
            receivers.push(rx);
        }
        {
            let mut state = self.shared.lock();
            if state.is_closed() {
                return Err(InferError::Closed);
            }
            state.push_all(jobs, Instant::now()).map_err(InferError::Full)?;
            self.shared.metrics.set_queue_rows(state.queued_rows());
        }
        self.shared.wake.notify_one();

        let mut out = Inferred { predictions: Vec::with_capacity(instances.len()), parts: Vec::new() };
        for rx in receivers {
            let (predictions, part) =
                rx.await.map_err(|_| InferError::Failed("inference thread stopped before replying".into()))??;
            out.predictions.extend(predictions);
            out.parts.push(part);
        }
        Ok(out)
    }

    pub fn queued_rows(&self) -> usize {
        self.shared.lock().queued_rows()
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        StatsSnapshot {
            batches: s.batches.load(Ordering::Relaxed),
            rows: s.rows.load(Ordering::Relaxed),
            largest_batch: s.largest_batch.load(Ordering::Relaxed),
            cancelled_rows: s.cancelled_rows.load(Ordering::Relaxed),
            inference_us: s.inference_us.load(Ordering::Relaxed),
        }
    }

    /// Refuses new rows; the inference threads finish what is queued, then exit.
    pub fn close(&self) {
        self.shared.lock().close();
        self.shared.wake.notify_all();
    }
}

impl Workers {
    pub fn join(self) {
        for handle in self.0 {
            if handle.join().is_err() {
                tracing::error!("an inference thread panicked");
            }
        }
    }
}

fn run_worker(shared: &Shared, spec: &ModelSpec, mut session: Session) {
    loop {
        let (batch, dropped) = {
            let mut state = shared.lock();
            loop {
                match state.next(Instant::now()) {
                    Next::Run => {
                        let taken = state.take_batch(Instant::now());
                        shared.metrics.set_queue_rows(state.queued_rows());
                        break taken;
                    }
                    Next::WaitFor(wait) => state = shared.wake.wait_timeout(state, wait).expect("lock poisoned").0,
                    Next::Idle => state = shared.wake.wait(state).expect("lock poisoned"),
                    Next::Stop => return,
                }
            }
        };
        if dropped > 0 {
            shared.stats.cancelled_rows.fetch_add(dropped as u64, Ordering::Relaxed);
            shared.metrics.cancelled(dropped);
        }
        if !batch.is_empty() {
            run_batch(shared, spec, &mut session, batch);
        }
    }
}

fn run_batch(shared: &Shared, spec: &ModelSpec, session: &mut Session, batch: Vec<(Job, Duration)>) {
    let rows = Rows::concat(batch.iter().map(|(job, _)| &job.rows));
    let n = rows.len;
    let started = Instant::now();
    let result = crate::model::run(spec, session, rows);
    let inference = started.elapsed();

    let stats = &shared.stats;
    stats.inference_us.fetch_add(inference.as_micros() as u64, Ordering::Relaxed);
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.rows.fetch_add(n as u64, Ordering::Relaxed);
    stats.largest_batch.fetch_max(n as u64, Ordering::Relaxed);
    shared.metrics.batch(n, inference);

    match result {
        Ok(predictions) => {
            let mut predictions = predictions.into_iter();
            for (job, queue) in batch {
                shared.metrics.dequeued(queue);
                let part = Part { rows: job.rows.len, batch_rows: n, queue, inference };
                let rows = predictions.by_ref().take(job.rows.len).collect();
                // A client that left meanwhile no longer listens; nothing to do.
                let _ = job.reply.send(Ok((rows, part)));
            }
        }
        Err(message) if batch.len() == 1 => {
            // Rows that pass the schema can still be refused by the graph (an unseen category
            // where the schema has no enum, say): the fault is this request's alone. The
            // handler logs it, with the request id.
            let (job, queue) = batch.into_iter().next().expect("one job");
            shared.metrics.dequeued(queue);
            let _ = job.reply.send(Err(InferError::Rejected(message)));
        }
        Err(message) => {
            // One request's rows must not fail its batch-mates: run each job on its own.
            tracing::warn!(model = %spec.name, rows = n, jobs = batch.len(), %message, "batch failed; retrying its jobs one by one");
            for (job, queued) in batch {
                run_batch(shared, spec, session, vec![(job, queued)]);
            }
        }
    }
}
