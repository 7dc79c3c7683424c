//! The prediction log: one JSON line per prediction, written to rolling files by a thread of
//! its own.
//!
//! Handlers hand each request's predictions to a bounded channel. In the default, lossless
//! mode a full channel makes the request wait (asynchronously: no runtime thread blocks) until
//! the writer catches up, so no line is ever dropped and memory stays bounded. The writer
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
mod policy;
mod writer;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use metrics::{counter, Counter};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use self::writer::Writer;
use crate::batch::{Inferred, Part};
use crate::config::PredictionLogConfig;
use crate::model::ModelSpec;
use crate::observe::{Metrics, PREDICTION_LOG_DROPPED_TOTAL, PREDICTION_LOG_LINES_TOTAL};
use crate::tensor::rows::Slice;

pub use crate::model::views::REDACTED;
/// One request's predictions, on their way to the writer.
struct Record {
    at: SystemTime,
    request_id: String,
    /// Who asked, when access control is on.
    principal: Option<Arc<str>>,
    spec: Arc<ModelSpec>,
    /// The request's slices of the batches it ran in (shared, not copied), with how each ran.
    slices: Vec<(Slice, Part)>,
    /// Positions in the request of the instances logged; `None`: all of them.
    sampled: Option<Vec<usize>>,
}

enum Message {
    Record(Record),
    /// Everything sent before it is written; then the writer exits.
    Close,
}

/// The handlers' side: cheap to clone.
#[derive(Clone)]
pub struct PredictionLog {
    tx: mpsc::Sender<Message>,
    sample_rate: f64,
    lossy: bool,
    sampled_out: Counter,
    buffer_full: Counter,
    closed: Counter,
}

/// The writer thread; [`PredictionLogWriter::join`] after [`PredictionLog::close`].
pub struct PredictionLogWriter(JoinHandle<()>);

#[derive(Debug, thiserror::Error)]
#[error("cannot open the prediction log in {dir}: {source}")]
pub struct OpenError {
    dir: String,
    source: std::io::Error,
}

impl PredictionLog {
    pub fn open(config: &PredictionLogConfig, metrics: &Metrics) -> Result<(Self, PredictionLogWriter), OpenError> {
        let files = files::LogFiles::open(config, OffsetDateTime::now_utc())
            .map_err(|source| OpenError { dir: config.directory.display().to_string(), source })?;
        let (tx, rx) = mpsc::channel(config.buffer_requests);
        let dropped = |reason: &'static str| counter!(PREDICTION_LOG_DROPPED_TOTAL, "reason" => reason);
        let (log, writer) = metrics.with(|| {
            let writer =
                Writer::new(files, config.redact.clone(), counter!(PREDICTION_LOG_LINES_TOTAL), dropped("write_error"));
            let log = Self {
                tx,
                sample_rate: config.sample_rate,
                lossy: config.lossy,
                sampled_out: dropped("sampled_out"),
                buffer_full: dropped("buffer_full"),
                closed: dropped("closed"),
            };
            (log, writer)
        });
        let thread = std::thread::Builder::new()
            .name("prediction-log".into())
            .spawn(move || writer.run(rx))
            .expect("cannot start the prediction log thread");
        Ok((log, PredictionLogWriter(thread)))
    }

    /// Queues one line per (sampled) instance. Waits while the buffer is full, unless lossy.
    pub async fn record(
        &self,
        request_id: &str,
        principal: Option<&Arc<str>>,
        spec: &Arc<ModelSpec>,
        inferred: &Inferred,
    ) {
        let total = inferred.rows();
        let sampled = (self.sample_rate < 1.0)
            .then(|| (0..total).filter(|_| fastrand::f64() < self.sample_rate).collect::<Vec<_>>());
        let n = sampled.as_ref().map_or(total, Vec::len);
        if n < total {
            self.sampled_out.increment((total - n) as u64);
        }
        if n == 0 {
            return;
        }
        let n = n as u64;
        let record = Message::Record(Record {
            at: SystemTime::now(),
            request_id: request_id.to_owned(),
            principal: principal.cloned(),
            spec: spec.clone(),
            slices: inferred.slices.iter().cloned().zip(inferred.parts.iter().copied()).collect(),
            sampled,
        });
        if self.lossy {
            match self.tx.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => self.buffer_full.increment(n),
                Err(mpsc::error::TrySendError::Closed(_)) => self.closed.increment(n),
            }
        } else if self.tx.send(record).await.is_err() {
            self.closed.increment(n);
        }
    }

    /// Asks the writer to finish: lines queued before this call are written and flushed.
    pub async fn close(&self) {
        let _ = self.tx.send(Message::Close).await;
    }
}

impl PredictionLogWriter {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the prediction log thread panicked");
        }
    }
}
