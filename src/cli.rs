//! Command line. Every override also reads an environment variable; clap gives the command
//! line precedence over the environment, and [`crate::config::Config::load`] puts both over the file.

use clap::{Args, Parser, Subcommand};

pub use crate::config::args::{ConfigFile, Overrides, ServeArgs, ServeFlags};
pub use crate::offline::schema::SchemaArgs;

#[derive(Debug, Parser)]
#[command(name = "inferd", version, about = "Serve ONNX models over HTTP with typed JSON and dynamic batching")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Arguments of `serve`, so that a bare `inferd` serves.
    #[command(flatten)]
    pub serve: ServeFlags,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default): the models of the config, or those named.
    Serve(ServeCommand),
    /// Print the OpenAPI document for the configured models (loads each model once).
    Openapi(ServeArgs),
    /// Check the config and every model (schema against inputs, warm-up, golden file) without
    /// serving; exit 0, or 1 with one line per problem (2 if the config cannot be read).
    Check(ServeArgs),
    /// Ask a running server for `/health` (or `/ready`) on the address `serve` would bind with
    /// the same config; exit 0 on 200, 1 otherwise. For health checks in images without curl.
    Probe(ProbeArgs),
    /// Re-score logged predictions on a model version (or an .onnx file with its schema) and
    /// compare: exit 1 when answers differ beyond the tolerance.
    Replay(ReplayArgs),
    /// Score a CSV or JSON Lines file (or stdin) in batches; JSON Lines (or CSV) out.
    Score(ScoreArgs),
    /// Print the instance JSON Schema of an .onnx file's inputs, with an example the model
    /// accepts: a start for `schemas/<name>.json` (`inferd schema models/m.onnx > schemas/m.json`).
    Schema(SchemaArgs),
    /// API keys: `inferd key new --name NAME --scopes predict,read`.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the configuration reference from the config's `///` docs; with FILE, rewrite
    /// FILE's generated part (docs/configuration.md). For maintainers, hence hidden.
    #[command(hide = true)]
    ConfigReference { file: Option<std::path::PathBuf> },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a fresh random key and the config lines (its SHA-256) that let it in.
    New {
        /// The principal's name, as logged: 1 to 64 of A-Z a-z 0-9 _ - .
        #[arg(long)]
        name: String,
        /// Comma-separated: predict, read, admin, metrics.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub flags: ServeFlags,
    /// Models to serve instead of the config's: an .onnx file, or a folder holding `model.onnx`
    /// (or version folders `1/model.onnx`, `2/model.onnx`, ...), as `[NAME=]PATH`. The name
    /// defaults to the file's stem (the folder's name); the schema is derived from the graph
    /// unless the folder holds `schema.json`. Works with no config file; with `--config`, the
    /// file must not name models too.
    #[arg(value_name = "MODEL")]
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Ask `/ready` (models loaded, not draining) instead of `/health` (the process answers).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    /// The address `serve` binds, as `serve --host` sets it [env: INFERD_HOST; file: server.host].
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// The port `serve` binds, as `serve --port` sets it [env: PORT; file: server.port].
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Where the prediction log is: files, folders (every file in them), globs, - for stdin
    /// (plain or gzip); s3://bucket/prefix, gs://, az://, file:// (every object under the
    /// prefix); or a postgres:// URL (the table of `--table`).
    #[arg(required = true)]
    pub logs: Vec<String>,
    /// The PostgreSQL table, for a postgres:// log.
    #[arg(long, default_value = "inferd_predictions")]
    pub table: String,
    /// The model whose lines are replayed [default: the config's default model].
    #[arg(long)]
    pub model: Option<String>,
    /// Replay on this configured version [default: the model's default version].
    #[arg(long)]
    pub version: Option<String>,
    /// Replay on this .onnx file instead of a configured version (with --schema).
    #[arg(long, requires = "schema")]
    pub onnx: Option<std::path::PathBuf>,
    /// The instance schema of --onnx.
    #[arg(long, requires = "onnx")]
    pub schema: Option<std::path::PathBuf>,
    /// Only lines logged at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines logged before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// Absolute tolerance per number.
    #[arg(long, default_value_t = 0.0)]
    pub absolute: f64,
    /// Relative tolerance per number.
    #[arg(long, default_value_t = 1e-6)]
    pub relative: f64,
    /// How many of the largest differences to list.
    #[arg(long, default_value_t = 10)]
    pub worst: usize,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// The model [default: the config's default model].
    #[arg(long)]
    pub model: Option<String>,
    /// A configured version [default: the model's default version].
    #[arg(long)]
    pub version: Option<String>,
    /// Instances: a file, or - for stdin.
    #[arg(long, default_value = "-")]
    pub input: std::path::PathBuf,
    /// [default: from the file's extension; jsonl for stdin]
    #[arg(long, value_enum)]
    pub input_format: Option<RowFormat>,
    /// Predictions: a file, or - for stdout.
    #[arg(long, default_value = "-")]
    pub output: std::path::PathBuf,
    /// [default: from the file's extension; jsonl for stdout]
    #[arg(long, value_enum)]
    pub output_format: Option<RowFormat>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// What to do, with `serve` when no subcommand is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(ServeCommand { flags: self.serve, models: Vec::new() }))
    }
}
