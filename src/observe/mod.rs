//! What the service tells its operators: Prometheus metrics and the per-request access log.
//!
//! Each [`Metrics`] owns its own recorder instead of installing a process-wide one, so that
//! several apps in one process (the integration tests) keep separate counts. Handles with fixed
//! labels are registered once, at start-up; only the HTTP metrics look theirs up per request.

pub mod access;
pub mod format;
mod http;
mod model;
mod ratelimit;
pub mod scope;
pub mod trace;

use std::sync::Arc;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, NoopRecorder, Recorder, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::MetricsConfig;
pub use model::{ModelMetrics, Outcome};
pub use ratelimit::RateLimited;
pub use scope::RequestScope;

pub const REQUESTS_TOTAL: &str = "inferd_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "inferd_request_duration_seconds";
pub const QUEUE_DURATION_SECONDS: &str = "inferd_queue_duration_seconds";
pub const INFERENCE_DURATION_SECONDS: &str = "inferd_inference_duration_seconds";
pub const BATCH_SIZE: &str = "inferd_batch_size";
pub const ROWS_TOTAL: &str = "inferd_rows_total";
pub const QUEUE_ROWS: &str = "inferd_queue_rows";
pub const CANCELLED_ROWS_TOTAL: &str = "inferd_cancelled_rows_total";
pub const MODEL_INFO: &str = "inferd_model_info";
pub const MODEL_READY: &str = "inferd_model_ready";
pub const SESSION_RESTARTS_TOTAL: &str = "inferd_session_restarts_total";
pub const READY: &str = "inferd_ready";
pub const HTTP_REQUESTS_TOTAL: &str = "inferd_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "inferd_http_request_duration_seconds";
pub const GRPC_REQUESTS_TOTAL: &str = "inferd_grpc_requests_total";
pub const PREDICTION_LOG_LINES_TOTAL: &str = "inferd_prediction_log_lines_total";
pub const PREDICTION_LOG_DROPPED_TOTAL: &str = "inferd_prediction_log_dropped_total";
pub const PREDICTION_LOG_STALLED: &str = "inferd_prediction_log_stalled";
pub const PREDICTION_LOG_STALLS_TOTAL: &str = "inferd_prediction_log_stalls_total";
pub const PREDICTION_LOG_SINK_ERRORS_TOTAL: &str = "inferd_prediction_log_sink_errors_total";
pub const PREDICTION_LOG_SPOOL_BYTES: &str = "inferd_prediction_log_spool_bytes";
pub const PREDICTION_LOG_UPLOADS_TOTAL: &str = "inferd_prediction_log_uploads_total";
pub const MODEL_FETCHED_BYTES_TOTAL: &str = "inferd_model_fetched_bytes_total";
pub const LOG_LINES_DROPPED_TOTAL: &str = "inferd_log_lines_dropped_total";
pub const TRACE_SPANS_DROPPED_TOTAL: &str = "inferd_trace_spans_dropped_total";
pub const AUTH_FAILURES_TOTAL: &str = "inferd_auth_failures_total";
pub const MODEL_LOADS_TOTAL: &str = "inferd_model_loads_total";
pub const RELOADS_TOTAL: &str = "inferd_reloads_total";
pub const SHADOW_RUNS_TOTAL: &str = "inferd_shadow_runs_total";
pub const SHADOW_DIFFS_TOTAL: &str = "inferd_shadow_diffs_total";

/// The metrics of one app; cheap to share behind an `Arc`.
pub struct Metrics {
    /// `None` when metrics are turned off: every handle is then a no-op.
    prometheus: Option<(PrometheusRecorder, PrometheusHandle)>,
    process: metrics_process::Collector,
    http: http::HttpHandles,
}

impl Metrics {
    pub fn new(config: &MetricsConfig) -> Result<Arc<Self>, BuildError> {
        let process = metrics_process::Collector::default();
        let prometheus = if config.enabled {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&config.latency_buckets_seconds)?
                .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &config.batch_size_buckets)?
                .build_recorder();
            let handle = recorder.handle();
            Some((recorder, handle))
        } else {
            None
        };
        let metrics = Arc::new(Self { prometheus, process, http: http::HttpHandles::default() });
        metrics.with(|| {
            describe();
            metrics.process.describe();
            gauge!(READY).set(0.0);
        });
        Ok(metrics)
    }

    pub fn enabled(&self) -> bool {
        self.prometheus.is_some()
    }

    /// Runs `f` with this app's recorder behind the `metrics` macros.
    pub fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        let recorder: &dyn Recorder = match &self.prometheus {
            Some((recorder, _)) => recorder,
            None => &NoopRecorder,
        };
        metrics::with_local_recorder(recorder, f)
    }

    /// A request turned away by access control; `reason` is one of a fixed set.
    pub fn auth_failure(&self, reason: &'static str) {
        self.with(|| counter!(AUTH_FAILURES_TOTAL, "reason" => reason).increment(1));
    }

    /// Every reason's series at 0, so that a rate over them is defined from the start.
    pub fn register_auth_failures(&self, reasons: &[&'static str]) {
        self.with(|| reasons.iter().for_each(|&reason| drop(counter!(AUTH_FAILURES_TOTAL, "reason" => reason))));
    }

    /// A model version loaded (`ok`) or refused (`failed`); labels come from the config.
    pub fn model_loaded(&self, model: &str, version: &str, result: &'static str) {
        self.with(|| {
            counter!(MODEL_LOADS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(), "result" => result)
                .increment(1)
        });
    }

    /// A reload: `ok`, `unchanged` or `failed`.
    pub fn reloaded(&self, result: &'static str) {
        self.with(|| counter!(RELOADS_TOTAL, "result" => result).increment(1));
    }

    /// A shadow run: `same`, `differs` or `skipped` (its queue was full, or it failed).
    pub fn shadow_run(&self, model: &str, version: &str, result: &'static str) {
        self.with(|| {
            counter!(SHADOW_RUNS_TOTAL, "model" => model.to_owned(), "version" => version.to_owned(), "result" => result)
                .increment(1)
        });
    }

    /// A shadowed row whose `output` differed beyond the tolerance; `version` is the shadow's.
    pub fn shadow_diff(&self, model: &str, version: &str, output: &str) {
        self.with(|| {
            let labels = [("model", model.to_owned()), ("version", version.to_owned()), ("output", output.to_owned())];
            counter!(SHADOW_DIFFS_TOTAL, &labels).increment(1)
        });
    }

    /// A version no longer served: its series say so until the process ends.
    pub fn model_removed(&self, model: &str, version: &str) {
        let labels = [("model", model.to_owned()), ("version", version.to_owned())];
        self.with(|| {
            gauge!(MODEL_INFO, &labels).set(0.0);
            gauge!(MODEL_READY, &labels).set(0.0);
            gauge!(QUEUE_ROWS, &labels).set(0.0);
        });
    }

    /// The service logs' drops so far (`log` is `access` or `service`): process-wide totals,
    /// kept by the log writers.
    pub fn log_lines_dropped(&self, log: &'static str, total: u64) {
        self.with(|| counter!(LOG_LINES_DROPPED_TOTAL, "log" => log).absolute(total));
    }

    /// Trace spans dropped so far because the export queue was full: a process-wide total,
    /// kept by the trace exporter (see [`trace::dropped_spans`]).
    pub fn trace_spans_dropped(&self, total: u64) {
        self.with(|| counter!(TRACE_SPANS_DROPPED_TOTAL).absolute(total));
    }

    /// The prediction log's writer is stalled or not; `changed` counts a new stall.
    pub fn prediction_log_stalled(&self, stalled: bool, changed: bool) {
        self.with(|| {
            gauge!(PREDICTION_LOG_STALLED).set(if stalled { 1.0 } else { 0.0 });
            let stalls = counter!(PREDICTION_LOG_STALLS_TOTAL);
            if stalled && changed {
                stalls.increment(1);
            }
        });
    }

    pub fn set_ready(&self, ready: bool) {
        self.with(|| gauge!(READY).set(if ready { 1.0 } else { 0.0 }));
    }

    /// The Prometheus text exposition, process metrics refreshed first.
    pub fn render(&self) -> String {
        let Some((_, handle)) = &self.prometheus else { return String::new() };
        self.with(|| self.process.collect());
        handle.render()
    }

    /// Folds recorded histogram samples into their buckets. Without it, samples pile up in
    /// memory between scrapes (or forever, if nothing scrapes).
    pub fn run_upkeep(&self) {
        if let Some((_, handle)) = &self.prometheus {
            handle.run_upkeep();
        }
    }
}

/// A time as logs and answers write it: RFC 3339, UTC.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(at).format(&Rfc3339).unwrap_or_default()
}

/// Milliseconds with microsecond precision, as logs show them.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_nanos() as f64 / 1e3).round() / 1e3
}

fn describe() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Prediction requests by model, version and outcome (ok, invalid, overloaded, timeout, error)."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Prediction request latency, from the first byte read to the response, by model."
    );
    describe_histogram!(
        QUEUE_DURATION_SECONDS,
        Unit::Seconds,
        "Time a request's rows waited for an inference thread, by model."
    );
    describe_histogram!(
        INFERENCE_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one ONNX Runtime call (tensor encoding and decoding included), by model."
    );
    describe_histogram!(BATCH_SIZE, Unit::Count, "Rows per ONNX Runtime call, by model.");
    describe_counter!(ROWS_TOTAL, Unit::Count, "Rows predicted, by model and version.");
    describe_gauge!(QUEUE_ROWS, Unit::Count, "Rows waiting for an inference thread, by model.");
    describe_counter!(
        CANCELLED_ROWS_TOTAL,
        Unit::Count,
        "Queued rows dropped unrun because their client went away, by model."
    );
    describe_gauge!(MODEL_INFO, Unit::Count, "1 for every model version served; 0 for one removed by a reload.");
    describe_gauge!(
        MODEL_READY,
        Unit::Count,
        "1 while at least one inference thread of the model version has a working session, else 0."
    );
    describe_counter!(
        SESSION_RESTARTS_TOTAL,
        Unit::Count,
        "Attempts to rebuild a session after a panic or a failure on known-good rows, by result (ok, failed)."
    );
    describe_counter!(
        MODEL_LOADS_TOTAL,
        Unit::Count,
        "Model versions loaded at start or on reload, by model, version and result (ok, failed)."
    );
    describe_counter!(
        SHADOW_RUNS_TOTAL,
        Unit::Count,
        "Requests also run on a shadow version, by model, shadow version and result (same, differs, skipped)."
    );
    describe_counter!(
        SHADOW_DIFFS_TOTAL,
        Unit::Count,
        "Shadowed rows whose output differed beyond the tolerance, by model, shadow version and output."
    );
    describe_counter!(RELOADS_TOTAL, Unit::Count, "Reloads of the configuration, by result (ok, unchanged, failed).");
    describe_gauge!(READY, Unit::Count, "1 while every model is loaded and the server takes predictions, else 0.");
    describe_counter!(HTTP_REQUESTS_TOTAL, Unit::Count, "HTTP requests by method, route template and status.");
    describe_counter!(
        GRPC_REQUESTS_TOTAL,
        Unit::Count,
        "gRPC calls by method and status code (each is also an HTTP request, status 200, route the method's path)."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency by method and route template."
    );
    describe_counter!(
        PREDICTION_LOG_LINES_TOTAL,
        Unit::Count,
        "Prediction log lines the sink took: written to the files or stdout, inserted into PostgreSQL, appended to the \
         upload spool."
    );
    describe_counter!(
        PREDICTION_LOG_SINK_ERRORS_TOTAL,
        Unit::Count,
        "Failed attempts of the prediction log's sink: PostgreSQL connects and statements, object-storage uploads (their lines are kept and retried)."
    );
    describe_gauge!(
        PREDICTION_LOG_SPOOL_BYTES,
        Unit::Bytes,
        "Bytes of prediction log lines in the object-storage sink's local spool, not uploaded yet."
    );
    describe_counter!(
        PREDICTION_LOG_UPLOADS_TOTAL,
        Unit::Count,
        "Uploads of prediction log parts to object storage, by outcome (ok, error; failed ones are retried)."
    );
    describe_counter!(
        MODEL_FETCHED_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes of model files fetched from object storage or https (0 while every model named by URL is in the cache)."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        Unit::Count,
        "Requests turned away by access control, by reason (missing, malformed, unknown_key, invalid_signature, \
         expired, not_yet_valid, wrong_audience, wrong_issuer, invalid_token, forbidden, rate_limited)."
    );
    describe_counter!(
        PREDICTION_LOG_DROPPED_TOTAL,
        Unit::Count,
        "Prediction log lines not written, by reason (sampled_out, buffer_full, write_error, closed; unavailable: \
         the request got 503 instead of an answer; shutdown: still unwritten when the process exited)."
    );
    describe_gauge!(
        PREDICTION_LOG_STALLED,
        Unit::Count,
        "1 while a prediction log write has not returned, or its database been failing, for prediction_log.stall_ms, \
         else 0."
    );
    describe_counter!(PREDICTION_LOG_STALLS_TOTAL, Unit::Count, "Times the prediction log's writer was found stalled.");
    describe_counter!(
        LOG_LINES_DROPPED_TOTAL,
        Unit::Count,
        "Service log lines dropped because stdout was not read fast enough, by log (access, service)."
    );
    describe_counter!(
        TRACE_SPANS_DROPPED_TOTAL,
        Unit::Count,
        "Trace spans dropped because the OTLP export queue was full (tracing on only)."
    );
}
