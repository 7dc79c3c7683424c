//! The command-line arguments that layer over `runtime.toml`: the config file and the values
//! that override it, each falling back to its environment variable. Here rather than in
//! `cli` so that configuration depends on nothing above it.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;

use super::sinks::SinkKind;
use super::LogFormat;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file.
    #[arg(long, env = "INFERD_CONFIG", default_value = "runtime.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Values that override `runtime.toml`; each falls back to its environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// Address to bind [file: server.host].
    #[arg(long, env = "INFERD_HOST")]
    pub host: Option<IpAddr>,
    /// Port to bind; `PORT` is what PaaS platforms set [file: server.port].
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// Most rows per ONNX Runtime call [file: batching.max_batch_rows].
    #[arg(long, env = "INFERD_MAX_BATCH_ROWS")]
    pub max_batch_rows: Option<usize>,
    /// Longest wait for a fuller batch, ms; 0 never waits [file: batching.max_delay_ms].
    #[arg(long, env = "INFERD_MAX_DELAY_MS")]
    pub max_delay_ms: Option<u64>,
    /// Most rows queued per model before 503 [file: batching.queue_capacity_rows].
    #[arg(long, env = "INFERD_QUEUE_CAPACITY_ROWS")]
    pub queue_capacity_rows: Option<usize>,
    /// Inference threads (sessions) per model [file: inference.sessions].
    #[arg(long, env = "INFERD_SESSIONS")]
    pub sessions: Option<usize>,
    /// ONNX Runtime intra-op threads per session [file: inference.intra_op_threads].
    #[arg(long, env = "INFERD_INTRA_OP_THREADS")]
    pub intra_op_threads: Option<usize>,
    /// Path of libonnxruntime.so [file: inference.ort_library].
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    /// Service log format, json or text [file: logging.format].
    #[arg(long, env = "INFERD_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// Serve `/metrics` on this port only [file: metrics.port].
    #[arg(long, env = "INFERD_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// Warn about requests slower than this, ms; 0 never [file: logging.slow_request_ms].
    #[arg(long, env = "INFERD_SLOW_REQUEST_MS")]
    pub slow_request_ms: Option<u64>,
    /// Folder of the prediction log [file: prediction_log.directory].
    #[arg(long, env = "INFERD_PREDICTION_LOG_DIR")]
    pub prediction_log_dir: Option<PathBuf>,
    /// Where the prediction log goes: files, stdout, postgres or object_store
    /// [file: prediction_log.sink].
    #[arg(long, env = "INFERD_PREDICTION_LOG_SINK")]
    pub prediction_log_sink: Option<SinkKind>,
    /// The PostgreSQL or object-storage URL of the prediction log's sink [file:
    /// prediction_log.postgres.url or prediction_log.object_store.url].
    #[arg(long, env = "INFERD_PREDICTION_LOG_URL", hide_env_values = true)]
    pub prediction_log_url: Option<String>,
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(format!("expected json or text, got '{text}'")),
    }
}
