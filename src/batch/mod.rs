//! Dynamic batching: a cloneable [`Batcher`] handle admits and queues rows; inference threads,
//! each owning one ONNX Runtime session, take whatever has queued as their next batch.
//!
//! The queue is a `Mutex<State>` with a `Condvar` rather than a channel to an async actor: the
//! consumers are blocking threads, so a free thread pulls its next batch directly, with no hop
//! through the async runtime, and the policy stays in [`state::State`].

pub mod state;
mod worker;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ort::session::Session;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::model::{ModelSpec, SessionFactory};
use crate::observe::ModelMetrics;
use crate::tensor::rows::{Batch, Rows, Slice};
use state::{Pending, Refused, State};

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("queue full ({queued} of {capacity} rows waiting)")]
    Full { queued: usize, capacity: usize },
    #[error("{rows} rows can never fit a queue of {capacity}")]
    TooLarge { rows: usize, capacity: usize },
    #[error("batcher closed")]
    Closed,
    /// No inference thread has a working session.
    #[error("no working session")]
    NotReady,
    /// The request's deadline passed before its rows ran.
    #[error("deadline passed")]
    Expired,
    /// The graph refused these rows while it ran others: the request's own fault.
    #[error("the model refused the rows: {0}")]
    Rejected(String),
    /// A fault of ours: a panic, a session that failed on known-good rows.
    #[error("inference failed: {0}")]
    Internal(String),
}

impl From<Refused> for InferError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Full { queued, capacity } => Self::Full { queued, capacity },
            Refused::TooLarge { rows, capacity } => Self::TooLarge { rows, capacity },
            Refused::Closed => Self::Closed,
        }
    }
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

/// A request's predictions, in order (its slices of the batches it ran in), and how each of
/// its jobs ran.
#[derive(Debug)]
pub struct Inferred {
    pub slices: Vec<Slice>,
    pub parts: Vec<Part>,
}

impl Inferred {
    pub fn rows(&self) -> usize {
        self.slices.iter().map(|s| s.rows.len()).sum()
    }

    /// Every row of the request, in order: the batch it ran in and its index there.
    pub fn each_row(&self) -> impl Iterator<Item = (&Batch, usize)> + Clone {
        self.slices.iter().flat_map(|s| s.rows.clone().map(move |r| (&*s.batch, r)))
    }

    /// The longest wait of any of the request's jobs.
    pub fn queue(&self) -> Duration {
        self.parts.iter().map(|p| p.queue).max().unwrap_or_default()
    }

    /// Time in ONNX Runtime, summed over the request's jobs.
    pub fn inference(&self) -> Duration {
        self.parts.iter().map(|p| p.inference).sum()
    }
}

type Reply = oneshot::Sender<Result<(Slice, Part), InferError>>;

struct Job {
    request: u64,
    rows: Rows,
    deadline: Instant,
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
    fn deadline(&self) -> Instant {
        self.deadline
    }
    fn request(&self) -> u64 {
        self.request
    }
}

/// Counters that show batching at work.
#[derive(Debug)]
struct Stats {
    batches: AtomicU64,
    rows: AtomicU64,
    largest_batch: AtomicU64,
    cancelled_rows: AtomicU64,
    inference_us: AtomicU64,
    session_restarts: AtomicU64,
    /// ONNX Runtime calls by inference thread.
    batches_by_thread: Vec<AtomicU64>,
}

/// Counters of one model version since start.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    /// ONNX Runtime calls.
    pub batches: u64,
    /// Rows run through ONNX Runtime (rows of a refused batch count again when its halves are retried).
    pub rows: u64,
    /// Most rows seen in one call.
    pub largest_batch: u64,
    /// Queued rows dropped unrun because their client had gone away or their deadline passed.
    pub cancelled_rows: u64,
    /// Time spent inside ONNX Runtime (encoding to tensors and decoding included), microseconds.
    pub inference_us: u64,
    /// Sessions rebuilt after a panic or a failure on known-good rows.
    pub session_restarts: u64,
    /// Inference threads with a working session now.
    pub healthy_sessions: usize,
    /// ONNX Runtime calls by inference thread: shows a large request spread over all of them.
    #[schema(value_type = Vec<u64>)]
    pub batches_by_thread: Vec<u64>,
}

/// Faults a test can inject into the inference threads, to exercise their supervision.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The next run panics.
    Panic,
    /// The next thread to run breaks its session: every run on it fails until it is rebuilt.
    BreakSession,
    /// The next session rebuild fails.
    FailRebuild,
}

#[derive(Debug, Default)]
struct Faults {
    panics: AtomicU32,
    broken_sessions: AtomicU32,
    failed_rebuilds: AtomicU32,
}

impl Faults {
    fn counter(&self, fault: Fault) -> &AtomicU32 {
        match fault {
            Fault::Panic => &self.panics,
            Fault::BreakSession => &self.broken_sessions,
            Fault::FailRebuild => &self.failed_rebuilds,
        }
    }

    /// Takes one pending fault of this kind, if any.
    fn take(&self, fault: Fault) -> bool {
        self.counter(fault).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }
}

struct Shared {
    state: Mutex<State<Job>>,
    wake: Condvar,
    stats: Stats,
    metrics: Arc<ModelMetrics>,
    /// Threads whose session works; the model is ready while it is above zero.
    healthy: AtomicUsize,
    /// Rows counted against the capacity, as last published: read without the lock by
    /// [`Batcher::crowded`] and [`Batcher::has_room`].
    queued: AtomicUsize,
    capacity: usize,
    next_request: AtomicU64,
    faults: Faults,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State<Job>> {
        // The lock is never held across model code, so a poisoned lock can only come from a
        // bug in the queue policy itself; its state is still consistent enough to drain.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the queue's length visible to handlers and to `/metrics`.
    fn publish(&self, state: &State<Job>) {
        let rows = state.queued_rows();
        self.queued.store(rows, Ordering::Relaxed);
        self.metrics.set_queue_rows(rows);
    }

    /// An inference thread lost its session: the model is not ready once none has one.
    fn session_lost(&self) {
        let left = self.healthy.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.set_ready(left > 0);
    }

    fn session_restored(&self) {
        self.healthy.fetch_add(1, Ordering::SeqCst);
        self.metrics.set_ready(true);
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
        factory: SessionFactory,
        config: &BatchingConfig,
        metrics: Arc<ModelMetrics>,
    ) -> std::io::Result<(Self, Workers)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config.max_batch_rows, config.queue_capacity_rows, config.max_delay())),
            wake: Condvar::new(),
            stats: Stats {
                batches: AtomicU64::new(0),
                rows: AtomicU64::new(0),
                largest_batch: AtomicU64::new(0),
                cancelled_rows: AtomicU64::new(0),
                inference_us: AtomicU64::new(0),
                session_restarts: AtomicU64::new(0),
                batches_by_thread: sessions.iter().map(|_| AtomicU64::new(0)).collect(),
            },
            metrics,
            healthy: AtomicUsize::new(sessions.len()),
            queued: AtomicUsize::new(0),
            capacity: config.queue_capacity_rows,
            next_request: AtomicU64::new(0),
            faults: Faults::default(),
        });
        shared.metrics.set_ready(!sessions.is_empty());
        let factory = Arc::new(factory);
        let handles = sessions
            .into_iter()
            .enumerate()
            .map(|(i, session)| {
                let worker = worker::Worker::new(i, shared.clone(), spec.clone(), factory.clone());
                std::thread::Builder::new().name(format!("infer-{}-{i}", spec.name)).spawn(move || worker.run(session))
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

    /// True while at least one inference thread has a working session.
    pub fn is_ready(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst) > 0
    }

    /// Admits `rows` rows before any work is spent on them; refused at once when the queue is
    /// full, closed, or the model has no working session.
    pub fn admit(&self, rows: usize) -> Result<Admission<'_>, InferError> {
        if !self.is_ready() {
            return Err(InferError::NotReady);
        }
        {
            let mut state = self.shared.lock();
            state.reserve(rows)?;
            self.shared.publish(&state);
        }
        let request = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { batcher: self, request, reserved: rows, queued: false, done: false })
    }

    /// True while the queue is over half full: requests are then counted before they are
    /// parsed, so that those that will not fit cost little to refuse.
    pub fn crowded(&self) -> bool {
        self.shared.queued.load(Ordering::Relaxed) * 2 > self.shared.capacity
    }

    /// Whether `rows` would fit in the queue now, from its last published length: a hint for
    /// refusing early, not an admission ([`Batcher::admit`] decides).
    pub fn has_room(&self, rows: usize) -> Result<(), InferError> {
        let queued = self.shared.queued.load(Ordering::Relaxed);
        if queued + rows > self.shared.capacity {
            return Err(InferError::Full { queued, capacity: self.shared.capacity });
        }
        Ok(())
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
            session_restarts: s.session_restarts.load(Ordering::Relaxed),
            healthy_sessions: self.shared.healthy.load(Ordering::SeqCst),
            batches_by_thread: s.batches_by_thread.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }

    /// Makes the inference threads fail as a test asks, `times` times.
    #[doc(hidden)]
    pub fn inject(&self, fault: Fault, times: u32) {
        self.shared.faults.counter(fault).fetch_add(times, Ordering::Relaxed);
    }

    /// Refuses new rows; the inference threads finish what is queued, then exit.
    pub fn close(&self) {
        self.shared.lock().close();
        self.shared.wake.notify_all();
    }
}

/// Rows admitted to a model's queue. Dropping it before its predictions arrived (the client
/// left, the deadline passed, validation failed) gives its capacity back at once.
pub struct Admission<'a> {
    batcher: &'a Batcher,
    request: u64,
    reserved: usize,
    queued: bool,
    done: bool,
}

impl Admission<'_> {
    /// Predicts decoded rows, in order, before `deadline`. Requests larger than one batch are
    /// split into jobs that are queued together and reassembled here.
    pub async fn infer(mut self, rows: Rows, deadline: Instant) -> Result<Inferred, InferError> {
        debug_assert_eq!(rows.len, self.reserved, "admitted for as many rows as predicted");
        let max = self.batcher.max_batch_rows;
        let lens: Vec<usize> = state::split(rows.len, max).into_iter().map(|r| r.len()).collect();
        let parts = if lens.len() == 1 { vec![rows] } else { rows.split(&lens) };
        let mut jobs = Vec::with_capacity(parts.len());
        let mut receivers = Vec::with_capacity(parts.len());
        for rows in parts {
            let (reply, rx) = oneshot::channel();
            jobs.push(Job { request: self.request, rows, deadline, reply });
            receivers.push(rx);
        }
        let shared = &self.batcher.shared;
        let wake = {
            let mut state = shared.lock();
            state.push_reserved(jobs, Instant::now());
            self.queued = true;
            shared.publish(&state);
            state.runnable_batches()
        };
        // One wake-up per batch that is now ready, so that a large request spreads over every
        // idle thread; `notify_one` to a thread already awake is harmless.
        for _ in 0..wake.clamp(1, shared.stats.batches_by_thread.len()) {
            shared.wake.notify_one();
        }

        let mut out = Inferred { slices: Vec::with_capacity(receivers.len()), parts: Vec::new() };
        let collect = async {
            for rx in receivers {
                let (slice, part) =
                    rx.await.map_err(|_| InferError::Internal("inference thread stopped before replying".into()))??;
                out.slices.push(slice);
                out.parts.push(part);
            }
            Ok::<(), InferError>(())
        };
        match tokio::time::timeout_at(deadline.into(), collect).await {
            Ok(Ok(())) => {
                self.done = true;
                Ok(out)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(InferError::Expired),
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let shared = &self.batcher.shared;
        let mut state = shared.lock();
        if self.queued {
            let freed = state.withdraw(self.request);
            if freed > 0 {
                shared.stats.cancelled_rows.fetch_add(freed as u64, Ordering::Relaxed);
                shared.metrics.cancelled(freed);
            }
        } else {
            state.release(self.reserved);
            if state.is_closed() {
                // Threads of a closing queue wait for admitted rows; these will not come.
                shared.wake.notify_all();
            }
        }
        shared.publish(&state);
    }
}

impl Workers {
    pub fn join(self) {
        for handle in self.0 {
            if handle.join().is_err() {
                tracing::error!("an inference thread panicked outside a run");
            }
        }
    }
}

/// How long a thread whose session failed waits before trying to open a new one, at most.
const MAX_REBUILD_BACKOFF: Duration = Duration::from_secs(5);
