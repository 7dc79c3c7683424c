//! The command-line arguments that layer over `runtime.toml`: the config file and the values
//! that override it, each falling back to its environment variable. Here rather than in
//! `cli` so that configuration depends on nothing above it.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches};

use super::sinks::SinkKind;
use super::LogFormat;

/// The config file `serve` reads when none is named.
pub const DEFAULT_CONFIG: &str = "runtime.toml";
pub const CONFIG_ENV: &str = "INFERD_CONFIG";

/// What loading the configuration takes: the file, the overrides, and the models named on
/// `serve`'s command line (which replace the file's).
#[derive(Debug, Clone)]
pub struct ServeArgs {
    pub config: PathBuf,
    /// Whether the file was named (`--config` or `INFERD_CONFIG`) rather than the default.
    pub config_named: bool,
    pub overrides: Overrides,
    pub models: Vec<String>,
}

impl ServeArgs {
    /// The file, with the overrides from the environment only: for the subcommands that load
    /// the configuration without serving (their `--help` lists their own flags, not serve's).
    pub fn from_env(config: Option<PathBuf>) -> Self {
        Self::new(config, Overrides::from_env(), Vec::new())
    }

    /// The named file, else the default one.
    pub fn new(config: Option<PathBuf>, overrides: Overrides, models: Vec<String>) -> Self {
        let config_named = config.is_some();
        Self { config: config.unwrap_or_else(|| DEFAULT_CONFIG.into()), config_named, overrides, models }
    }
}

/// `serve`'s flags: the config file and every value that overrides it.
#[derive(Debug, Clone, Args)]
pub struct ServeFlags {
    /// Configuration file [default: runtime.toml].
    #[arg(long, env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ServeFlags {
    pub fn with_models(self, models: Vec<String>) -> ServeArgs {
        ServeArgs::new(self.config, self.overrides, models)
    }
}

/// `--config` alone (the overrides still come from their environment variables).
#[derive(Debug, Clone, Args)]
pub struct ConfigFile {
    /// Configuration file [default: runtime.toml].
    #[arg(long, env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
}

impl ConfigFile {
    pub fn serve_args(&self) -> ServeArgs {
        ServeArgs::from_env(self.config.clone())
    }
}

// As the arguments of a subcommand, `ServeArgs` is `--config` alone.
impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        ConfigFile::from_arg_matches(matches).map(|file| file.serve_args())
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        ConfigFile::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        ConfigFile::augment_args_for_update(command)
    }
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

impl Overrides {
    /// The overrides their environment variables set; a bad value exits with clap's message,
    /// as it would on `serve`.
    pub fn from_env() -> Self {
        #[derive(clap::Parser)]
        struct OnlyEnv {
            #[command(flatten)]
            overrides: Overrides,
        }
        let matches = OnlyEnv::command().no_binary_name(true).try_get_matches_from(Vec::<String>::new());
        matches.and_then(|m| Overrides::from_arg_matches(&m)).unwrap_or_else(|e| e.exit())
    }
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err(format!("expected json or text, got '{text}'")),
    }
}
