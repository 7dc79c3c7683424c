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

use std::io::Write;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use metrics::{counter, Counter};
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing_appender::rolling::{self, RollingFileAppender};

use crate::batch::{Inferred, Part};
use crate::config::{PredictionLogConfig, Rotation};
use crate::model::tensors::Prediction;
use crate::model::ModelSpec;
use crate::observe::{millis, Metrics, PREDICTION_LOG_DROPPED_TOTAL, PREDICTION_LOG_LINES_TOTAL};

pub const REDACTED: &str = "[redacted]";
/// Bytes gathered before a write even when more lines are waiting.
const WRITE_CHUNK: usize = 1 << 20;
/// How long the writer lets lines gather between writes while requests keep coming.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// One request's predictions, on their way to the writer.
struct Record {
    at: SystemTime,
    request_id: String,
    spec: Arc<ModelSpec>,
    lines: Vec<Line>,
}

struct Line {
    /// Position of the instance in its request.
    index: usize,
    input: Value,
    output: Prediction,
    part: Part,
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
    source: tracing_appender::rolling::InitError,
}

impl PredictionLog {
    pub fn open(config: &PredictionLogConfig, metrics: &Metrics) -> Result<(Self, PredictionLogWriter), OpenError> {
        let rotation = match config.rotation {
            Rotation::Minutely => rolling::Rotation::MINUTELY,
            Rotation::Hourly => rolling::Rotation::HOURLY,
            Rotation::Daily => rolling::Rotation::DAILY,
            Rotation::Weekly => rolling::Rotation::WEEKLY,
            Rotation::Never => rolling::Rotation::NEVER,
        };
        let file = RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix("predictions")
            .filename_suffix("jsonl")
            .max_log_files(config.max_files)
            .build(&config.directory)
            .map_err(|source| OpenError { dir: config.directory.display().to_string(), source })?;
        let (tx, rx) = mpsc::channel(config.buffer_requests);
        let dropped = |reason: &'static str| counter!(PREDICTION_LOG_DROPPED_TOTAL, "reason" => reason);
        let (log, writer) = metrics.with(|| {
            let writer = Writer {
                file,
                redact: config.redact.clone(),
                buf: Vec::with_capacity(WRITE_CHUNK),
                pending: 0,
                written: counter!(PREDICTION_LOG_LINES_TOTAL),
                write_errors: dropped("write_error"),
            };
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
    pub async fn record(&self, request_id: &str, spec: &Arc<ModelSpec>, instances: Vec<Value>, inferred: &Inferred) {
        let parts = inferred.parts.iter().flat_map(|part| std::iter::repeat_n(*part, part.rows));
        let lines: Vec<Line> = instances
            .into_iter()
            .zip(&inferred.predictions)
            .zip(parts)
            .enumerate()
            .filter(|_| self.sample_rate >= 1.0 || fastrand::f64() < self.sample_rate)
            .map(|(index, ((input, output), part))| Line { index, input, output: output.clone(), part })
            .collect();
        let left_out = inferred.predictions.len() - lines.len();
        if left_out > 0 {
            self.sampled_out.increment(left_out as u64);
        }
        if lines.is_empty() {
            return;
        }
        let n = lines.len() as u64;
        let record = Message::Record(Record {
            at: SystemTime::now(),
            request_id: request_id.to_owned(),
            spec: spec.clone(),
            lines,
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

struct Writer {
    file: RollingFileAppender,
    redact: Vec<String>,
    buf: Vec<u8>,
    /// Lines in `buf`.
    pending: u64,
    written: Counter,
    write_errors: Counter,
}

#[derive(Serialize)]
struct LineOut<'a> {
    ts: &'a str,
    request_id: &'a str,
    model: &'a str,
    version: &'a str,
    instance: usize,
    inputs: &'a Value,
    outputs: &'a Prediction,
    batch_size: usize,
    queue_ms: f64,
    inference_ms: f64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let half = rx.max_capacity().div_ceil(2);
        // Parked while idle; once a request arrives, it wakes every `GATHER` and takes all that
        // has queued, so that under load handlers do not pay a thread wake-up per request.
        // A buffer at least half full is drained again at once.
        while let Some(first) = rx.blocking_recv() {
            let mut closing = self.take(first);
            let mut taken = 1;
            while !closing && taken > 0 {
                if taken < half {
                    std::thread::sleep(GATHER);
                }
                taken = 0;
                while let Ok(message) = rx.try_recv() {
                    taken += 1;
                    closing = self.take(message);
                    if closing {
                        break;
                    }
                    if self.buf.len() >= WRITE_CHUNK {
                        self.flush();
                    }
                }
                self.flush();
            }
            self.flush();
            if closing {
                break;
            }
        }
        self.flush();
    }

    /// Adds a record's lines to the buffer; true on `Close`.
    fn take(&mut self, message: Message) -> bool {
        let Message::Record(record) = message else { return true };
        let ts = OffsetDateTime::from(record.at).format(&Rfc3339).unwrap_or_default();
        for mut line in record.lines {
            redact(&mut line, &self.redact);
            let out = LineOut {
                ts: &ts,
                request_id: &record.request_id,
                model: &record.spec.name,
                version: &record.spec.version,
                instance: line.index,
                inputs: &line.input,
                outputs: &line.output,
                batch_size: line.part.batch_rows,
                queue_ms: millis(line.part.queue),
                inference_ms: millis(line.part.inference),
            };
            serde_json::to_writer(&mut self.buf, &out).expect("JSON values serialise");
            self.buf.push(b'\n');
            self.pending += 1;
        }
        false
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all(&self.buf).and_then(|()| self.file.flush()) {
            Ok(()) => self.written.increment(self.pending),
            Err(error) => {
                self.write_errors.increment(self.pending);
                tracing::error!(%error, lines = self.pending, "cannot write the prediction log");
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

fn redact(line: &mut Line, fields: &[String]) {
    for field in fields {
        if let Some(value) = line.input.get_mut(field.as_str()) {
            *value = Value::from(REDACTED);
        }
        if let Some(value) = line.output.get_mut(field.as_str()) {
            *value = Value::from(REDACTED);
        }
    }
}
