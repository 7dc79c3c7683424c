//! The metrics of one served model version, registered once with fixed labels.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use super::*;

/// How a prediction request ended, as `inferd_requests_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client's fault: a malformed body, a schema violation, rows the model refused.
    Invalid,
    /// Queue full or shutting down (503).
    Overloaded,
    /// The request outlived `server.request_timeout_ms` (504).
    Timeout,
    /// Our fault (500).
    Error,
}

impl Outcome {
    const ALL: [Self; 5] = [Self::Ok, Self::Invalid, Self::Overloaded, Self::Timeout, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

pub struct ModelMetrics {
    pub model: String,
    pub version: String,
    requests: [Counter; 5],
    request_duration: Histogram,
    queue_duration: Histogram,
    inference_duration: Histogram,
    batch_size: Histogram,
    rows: Counter,
    queue_rows: Gauge,
    cancelled: Counter,
    ready: Gauge,
    restarts_ok: Counter,
    restarts_failed: Counter,
}

impl ModelMetrics {
    pub fn register(metrics: &Metrics, model: &str, version: &str) -> Self {
        let labels = [("model", model.to_owned()), ("version", version.to_owned())];
        metrics.with(|| {
            gauge!(MODEL_INFO, &labels).set(1.0);
            Self {
                model: model.to_owned(),
                version: version.to_owned(),
                requests: Outcome::ALL.map(|o| {
                    counter!(REQUESTS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(), "outcome" => o.as_str())
                }),
                request_duration: histogram!(REQUEST_DURATION_SECONDS, &labels),
                queue_duration: histogram!(QUEUE_DURATION_SECONDS, &labels),
                inference_duration: histogram!(INFERENCE_DURATION_SECONDS, &labels),
                batch_size: histogram!(BATCH_SIZE, &labels),
                rows: counter!(ROWS_TOTAL, &labels),
                queue_rows: gauge!(QUEUE_ROWS, &labels),
                cancelled: counter!(CANCELLED_ROWS_TOTAL, &labels),
                ready: gauge!(MODEL_READY, &labels),
                restarts_ok: counter!(SESSION_RESTARTS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(), "result" => "ok"),
                restarts_failed: counter!(SESSION_RESTARTS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(), "result" => "failed"),
            }
        })
    }

    pub fn request(&self, outcome: Outcome, elapsed: Duration) {
        self.requests[outcome as usize].increment(1);
        self.request_duration.record(elapsed);
    }

    /// One ONNX Runtime call of `rows` rows.
    pub fn batch(&self, rows: usize, inference: Duration) {
        self.batch_size.record(rows as f64);
        self.rows.increment(rows as u64);
        self.inference_duration.record(inference);
    }

    /// One queued job taken by an inference thread after waiting `queued`.
    pub fn dequeued(&self, queued: Duration) {
        self.queue_duration.record(queued);
    }

    pub fn set_queue_rows(&self, rows: usize) {
        self.queue_rows.set(rows as f64);
    }

    pub fn cancelled(&self, rows: usize) {
        self.cancelled.increment(rows as u64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(if ready { 1.0 } else { 0.0 });
    }

    pub fn session_restart(&self, ok: bool) {
        if ok { &self.restarts_ok } else { &self.restarts_failed }.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_index_matches_all() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }
}
