//! Configuration of what the service tells its operators: service logs, metrics, prediction log.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

use super::sinks::{Acknowledge, ObjectStoreSinkConfig, PostgresSinkConfig, SinkKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: what PaaS log routers and Docker collect.
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// The service log: lines on stdout, one access line per request, each carrying its request id.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Filter of the service log, e.g. `info` or `info,inferd=debug`; `RUST_LOG`, when set,
    /// replaces it. `ort=warn` is added unless the filter names `ort`.
    #[validate(length(min = 1))]
    pub level: String,
    /// How each line is written.
    pub format: LogFormat,
    /// Requests slower than this many milliseconds are logged as warnings with their timing
    /// breakdown; 0 turns the warning off.
    pub slow_request_ms: u64,
    /// Write access-log lines for successful probe and scrape requests too (`/health`,
    /// `/ready`, `/metrics`, `/v2/health/*`); off, a probe every few seconds from each of
    /// several watchers would drown the lines that matter. Failed ones are always logged.
    pub log_probes: bool,
    /// Access-log lines that may wait for stdout (the other service-log lines get a quarter of
    /// this). A full queue drops lines, counted in `inferd_log_lines_dropped_total`, rather
    /// than hold requests: a log reader that stops reading must not stop the server.
    #[validate(range(min = 16, max = 1048576))]
    pub buffer_lines: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            slow_request_ms: 1000,
            log_probes: false,
            buffer_lines: 16_384,
        }
    }
}

/// A value that must not show up in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Prometheus metrics. The bearer token they may require comes from `INFERD_METRICS_TOKEN`
/// only, never from the file.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `GET /metrics`.
    pub enabled: bool,
    /// Serve `/metrics` on this port instead of the main one (kept off the public port);
    /// 0 picks a free one. Unset: the main port serves it.
    pub port: Option<u16>,
    /// Bearer token `/metrics` requires; taken from `INFERD_METRICS_TOKEN` only, never from
    /// the file, so that it stays out of version control.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// Upper bounds of the latency histograms' buckets, in seconds, ascending.
    #[validate(custom(function = "ascending"))]
    pub latency_buckets_seconds: Vec<f64>,
    /// Upper bounds of the `inferd_batch_size` buckets, in rows, ascending.
    #[validate(custom(function = "ascending"))]
    pub batch_size_buckets: Vec<f64>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
            token: None,
            latency_buckets_seconds: vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0,
            ],
            batch_size_buckets: vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
        }
    }
}

fn ascending(values: &[f64]) -> Result<(), ValidationError> {
    let ok = !values.is_empty() && values.iter().all(|v| v.is_finite()) && values.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("buckets").with_message("must be finite numbers in ascending order".into()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Never,
}

/// The prediction log: one JSON line per prediction in rotated files, written by a thread of
/// its own. Lossless unless `lossy` or `sample_rate` says otherwise.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionLogConfig {
    /// Write one JSON line per prediction (inputs, outputs, timings).
    pub enabled: bool,
    /// Where the lines go. `INFERD_PREDICTION_LOG_SINK` overrides it.
    pub sink: SinkKind,
    /// Folder of the log files (`files`), of the upload spool (`object_store`), and of the
    /// lines a `postgres` sink could not send before exit (sent at the next start); relative
    /// paths are resolved against the config file's folder.
    pub directory: PathBuf,
    /// When a new file starts (in UTC; `weekly` on Sundays).
    pub rotation: Rotation,
    /// Files kept; older ones are deleted when a new one starts.
    #[validate(range(min = 1, max = 100000))]
    pub max_files: usize,
    /// Bytes kept over all the files; the oldest files are deleted to stay within it. Each
    /// file holds at most `max_bytes / max_files`: a file that would outgrow that share gives
    /// way to a new part of the same period (`predictions.<date>.<part>.jsonl`).
    #[validate(range(min = 4096, max = 1125899906842624u64))]
    pub max_bytes: u64,
    /// Share of predictions written, 0 to 1; those left out are counted in
    /// `inferd_prediction_log_dropped_total{reason="sampled_out"}`.
    #[validate(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// Input fields and outputs whose values are written as `"[redacted]"`; outputs by the names
    /// answers give them (a model's `outputs` renames).
    pub redact: Vec<String>,
    /// When false (the default), a request whose lines do not fit in the buffer waits for the
    /// writer, so no line is lost. When true, it drops them and counts them instead.
    pub lossy: bool,
    /// Lossless only: when a request may be answered.
    pub acknowledge: Acknowledge,
    /// Requests whose lines may wait for the writer thread.
    #[validate(range(min = 1, max = 1048576))]
    pub buffer_requests: usize,
    /// A write (or file open) that has not returned for this long, in milliseconds, or a
    /// PostgreSQL or object-storage sink failing for this long, marks the log stalled (a hung
    /// disk or mount, a database down): `/ready` answers 503 until writes go through again.
    #[validate(range(min = 10, max = 3600000))]
    pub stall_ms: u64,
    #[validate(nested)]
    pub postgres: PostgresSinkConfig,
    #[validate(nested)]
    pub object_store: ObjectStoreSinkConfig,
}

impl Default for PredictionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: PathBuf::from("logs"),
            rotation: Rotation::Daily,
            max_files: 14,
            max_bytes: 1 << 30,
            sample_rate: 1.0,
            redact: Vec::new(),
            lossy: false,
            buffer_requests: 1024,
            stall_ms: 2000,
            sink: SinkKind::Files,
            acknowledge: Acknowledge::Queued,
            postgres: PostgresSinkConfig::default(),
            object_store: ObjectStoreSinkConfig::default(),
        }
    }
}
