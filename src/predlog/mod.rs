//! The prediction log: one JSON line per prediction, written to rolling files by a thread of
//! its own.
//!
//! Handlers hand each request's predictions to a bounded channel. In the default, lossless
//! mode a full channel makes the request wait (asynchronously: no runtime thread blocks) until
//! the writer catches up, so no line is ever dropped and memory stays bounded; a request that
//! cannot hand its lines over before its deadline is refused rather than answered, and so is
//! one that finds the channel full while the writer is stalled on a hung disk. The writer
//! thread serialises, redacts and writes whatever has queued in one `write` call, every few
//! milliseconds while requests keep coming, so a busy server pays one wake-up and one system
//! call per interval rather than per line.
//!
//! It does not go through the global `tracing` subscriber: a `tracing` event cannot wait
//! asynchronously, and tests run several apps, each with its own log, in one process.
//!
//! The files only ever hold whole lines, and `inferd_prediction_log_lines_total` counts the
//! lines that reached them (see `files.rs` for why this is not tracing-appender's writer).

mod files;
mod health;
mod object_store;
mod policy;
mod postgres;
mod sink;
mod stdout;
mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, Counter};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

pub use self::health::Check;
use self::health::Health;
use self::writer::Writer;
use crate::batch::{Inferred, Part};
use crate::config::{Acknowledge, PredictionLogConfig, SinkKind};
use crate::model::ModelSpec;
use crate::observe::{Metrics, PREDICTION_LOG_DROPPED_TOTAL, PREDICTION_LOG_LINES_TOTAL};
use crate::tensor::rows::Slice;

pub use crate::model::views::REDACTED;
/// The request a prediction answered, as its log lines say.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `x-request-id`, or the id generated for the request.
    pub id: &'a str,
    /// The principal access control accepted, when it is on.
    pub principal: Option<&'a Arc<str>>,
    /// The request's trace id (32 hex digits), when traces are on.
    pub trace_id: Option<&'a str>,
}

/// One request's predictions, on their way to the writer.
struct Record {
    at: SystemTime,
    request_id: String,
    /// Who asked, when access control is on.
    principal: Option<Arc<str>>,
    /// The request's trace id, when traces are on.
    trace_id: Option<String>,
    spec: Arc<ModelSpec>,
    /// The request's slices of the batches it ran in (shared, not copied), with how each ran.
    slices: Vec<(Slice, Part)>,
    /// Positions in the request of the instances logged; `None`: all of them.
    sampled: Option<Vec<usize>>,
    /// Told once the sink has taken the record's lines (`acknowledge = "written"`); dropped
    /// unsent if they are given up on.
    ack: Option<oneshot::Sender<()>>,
}

enum Message {
    Record(Record),
    /// Everything sent before it is written (or, for a sink that holds failed lines, kept
    /// for the next start) by `by`; then the writer exits.
    Close {
        by: Instant,
    },
}

/// The handlers' side: cheap to clone.
#[derive(Clone)]
pub struct PredictionLog {
    tx: mpsc::Sender<Message>,
    sample_rate: f64,
    lossy: bool,
    /// Lossless and `acknowledge = "written"`: a request waits for its lines to be written.
    wait_written: bool,
    sampled_out: Counter,
    buffer_full: Counter,
    closed: Counter,
    unavailable: Counter,
    unwritten_at_exit: Counter,
    health: Arc<Health>,
}

/// A prediction whose lines the log could not take in time (lossless mode): its answer must
/// not be sent, since what is answered is logged.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the prediction log cannot take more lines now")]
pub struct Unavailable;

/// The writer thread; [`PredictionLogWriter::join`] after [`PredictionLog::close`].
pub struct PredictionLogWriter(JoinHandle<()>);

#[derive(Debug, thiserror::Error)]
#[error("cannot open the prediction log ({sink}): {source}")]
pub struct OpenError {
    sink: String,
    source: std::io::Error,
}

impl PredictionLog {
    pub fn open(config: &PredictionLogConfig, metrics: &Metrics) -> Result<(Self, PredictionLogWriter), OpenError> {
        let sink = metrics.with(|| open_sink(config))?;
        let (tx, rx) = mpsc::channel(config.buffer_requests);
        let health = Arc::new(Health::new(Duration::from_millis(config.stall_ms)));
        let dropped = |reason: &'static str| counter!(PREDICTION_LOG_DROPPED_TOTAL, "reason" => reason);
        let (log, writer) = metrics.with(|| {
            let counters = writer::Counters {
                written: counter!(PREDICTION_LOG_LINES_TOTAL),
                write_errors: dropped("write_error"),
            };
            let writer = Writer::new(sink, config.redact.clone(), counters, health.clone());
            let log = Self {
                tx,
                sample_rate: config.sample_rate,
                lossy: config.lossy,
                wait_written: !config.lossy && config.acknowledge == Acknowledge::Written,
                sampled_out: dropped("sampled_out"),
                buffer_full: dropped("buffer_full"),
                closed: dropped("closed"),
                unavailable: dropped("unavailable"),
                unwritten_at_exit: dropped("shutdown"),
                health,
            };
            (log, writer)
        });
        let thread = std::thread::Builder::new()
            .name("prediction-log".into())
            .spawn(move || writer.run(rx))
            .expect("cannot start the prediction log thread");
        Ok((log, PredictionLogWriter(thread)))
    }

    /// Whether a lossless log can take a request's lines now: not when the writer is stalled
    /// and its buffer full (the request would only wait for its deadline). Checked before
    /// inference, so that such a request costs no model time.
    pub fn admits(&self) -> Result<(), Unavailable> {
        if self.lossy || self.tx.capacity() > 0 || !self.health.stalled() {
            return Ok(());
        }
        Err(Unavailable)
    }

    /// Queues one line per (sampled) instance. Lossless, it waits while the buffer is full,
    /// until `deadline` at most (at once when the writer is stalled); lossy, it drops them.
    pub async fn record(
        &self,
        request: Request<'_>,
        spec: &Arc<ModelSpec>,
        inferred: &Inferred,
        deadline: Instant,
    ) -> Result<(), Unavailable> {
        let total = inferred.rows();
        let sampled = (self.sample_rate < 1.0)
            .then(|| (0..total).filter(|_| fastrand::f64() < self.sample_rate).collect::<Vec<_>>());
        let n = sampled.as_ref().map_or(total, Vec::len);
        if n < total {
            self.sampled_out.increment((total - n) as u64);
        }
        if n == 0 {
            return Ok(());
        }
        let n = n as u64;
        let (ack, written) = if self.wait_written {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let record = Message::Record(Record {
            at: SystemTime::now(),
            request_id: request.id.to_owned(),
            principal: request.principal.cloned(),
            trace_id: request.trace_id.map(str::to_owned),
            spec: spec.clone(),
            slices: inferred.slices.iter().cloned().zip(inferred.parts.iter().copied()).collect(),
            sampled,
            ack,
        });
        enum Refused {
            Closed,
            BufferFull,
            Unavailable,
        }
        // Counted before the writer can see them, taken back if they never reach it.
        self.health.queued(n);
        let refused = match self.tx.try_send(record) {
            Ok(()) => return self.written(written, deadline).await,
            Err(mpsc::error::TrySendError::Closed(_)) => Refused::Closed,
            Err(mpsc::error::TrySendError::Full(_)) if self.lossy => Refused::BufferFull,
            Err(mpsc::error::TrySendError::Full(_)) if self.health.stalled() => Refused::Unavailable,
            Err(mpsc::error::TrySendError::Full(record)) => {
                match tokio::time::timeout_at(deadline.into(), self.tx.send(record)).await {
                    Ok(Ok(())) => return self.written(written, deadline).await,
                    Ok(Err(_)) => Refused::Closed,
                    Err(_elapsed) => Refused::Unavailable,
                }
            }
        };
        self.health.settled(n);
        match refused {
            // The writer has finished (the server is stopping): counted, as it can take no more.
            Refused::Closed => self.closed.increment(n),
            Refused::BufferFull => self.buffer_full.increment(n),
            Refused::Unavailable => {
                self.unavailable.increment(n);
                return Err(Unavailable);
            }
        }
        Ok(())
    }

    /// With `acknowledge = "written"`, waits (until `deadline`) for the sink to take the lines;
    /// lines given up on, or not taken in time, refuse the answer. The lines are the writer's
    /// now: they may still be written after a refusal (logged, not answered: never the reverse).
    async fn written(&self, written: Option<oneshot::Receiver<()>>, deadline: Instant) -> Result<(), Unavailable> {
        let Some(written) = written else { return Ok(()) };
        match tokio::time::timeout_at(deadline.into(), written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Unavailable),
        }
    }

    /// Whether the writer is stalled: a file operation has not returned for `stall_ms`.
    pub fn stalled(&self) -> bool {
        self.health.stalled()
    }

    /// [`PredictionLog::stalled`] and whether it changed since the last call, for the task
    /// that reports it.
    pub fn watch(&self) -> Check {
        self.health.watch()
    }

    /// Asks the writer to finish by `by`: lines queued before this call are written and
    /// flushed (uploaded), or kept for the next start where the sink has a place for them.
    pub async fn close(&self, by: Instant) {
        let _ = self.tx.send(Message::Close { by }).await;
    }

    /// Lines handed to the writer and not yet written or given up on.
    pub fn pending_lines(&self) -> u64 {
        self.health.pending_lines()
    }

    /// Counts lines left unwritten at exit (the writer did not finish within the grace
    /// period), so that they are reported rather than silently lost.
    pub fn abandoned(&self, lines: u64) {
        self.unwritten_at_exit.increment(lines);
    }
}

/// The configured sink, opened (files created, the spool scanned; the database is connected
/// to later, by the writer).
fn open_sink(config: &PredictionLogConfig) -> Result<Box<dyn sink::Sink>, OpenError> {
    let failed = |sink: String| move |source| OpenError { sink, source };
    Ok(match config.sink {
        SinkKind::Files => Box::new(
            files::LogFiles::open(config, OffsetDateTime::now_utc())
                .map_err(failed(config.directory.display().to_string()))?,
        ),
        SinkKind::Stdout => Box::new(stdout::Stdout),
        SinkKind::Postgres => Box::new(postgres::Postgres::open(config).map_err(failed("postgres".into()))?),
        SinkKind::ObjectStore => {
            Box::new(object_store::ObjectStore::open(config).map_err(failed(config.object_store.url.clone()))?)
        }
    })
}

impl PredictionLogWriter {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the prediction log thread panicked");
        }
    }
}
