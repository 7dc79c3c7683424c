//! Command line. Every override also reads an environment variable; clap gives the command
//! line precedence over the environment, and [`crate::config::Config::load`] puts both over the file.

use clap::{Args, Parser, Subcommand};

pub use crate::config::args::{Overrides, ServeArgs};

#[derive(Debug, Parser)]
#[command(name = "inferd", version, about = "Serve ONNX models over HTTP with typed JSON and dynamic batching")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Arguments of `serve`, so that a bare `inferd` serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve(ServeArgs),
    /// Print the OpenAPI document for the configured models (loads each model once).
    Openapi(ServeArgs),
    /// Check the config and every model (schema against inputs, warm-up, golden file) without
    /// serving; exit 0, or 1 with one line per problem (2 if the config cannot be read).
    Check(ServeArgs),
    /// Ask a running server for `/health` (or `/ready`) on the address `serve` would bind with
    /// the same config; exit 0 on 200, 1 otherwise. For health checks in images without curl.
    Probe(ProbeArgs),
    /// API keys: `inferd key new --name NAME --scopes predict,read`.
    #[command(subcommand)]
    Key(KeyCommand),
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
pub struct ProbeArgs {
    /// Ask `/ready` (models loaded, not draining) instead of `/health` (the process answers).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// What to do, with `serve` when no subcommand is given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}
