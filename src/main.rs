use std::process::ExitCode;

use clap::Parser;
use inferd::cli::{Cli, Command, KeyCommand};
use inferd::config::Config;
use inferd::startup::{shutdown_signal, Application};

// glibc malloc showed up as ~15% of CPU under load (many small JSON allocations across threads).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // ONNX Runtime 1.31 otherwise starts a telemetry uploader and writes a device id under
    // ~/.cache at start; a model server has no business phoning home, and under systemd's
    // ProtectHome or a read-only image that write fails with a warning. Set before any thread
    // exists (the runtime below starts them), and only when the operator has not chosen.
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start the tokio runtime");
    let code = runtime.block_on(run());
    // The shutdown has waited all it may (the grace period) for what it owns; a thread still
    // blocked (a read from a stuck mount, a write to a hung disk) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

/// How long the exit waits for the service log to be flushed, within the grace period (see
/// `startup::EXIT_RESERVE`).
const LOG_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// How long the exit waits for the trace spans still queued to be exported, within the same
/// reserve and before the log's flush.
const TRACE_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(400);

async fn run() -> ExitCode {
    let (args, serve) = match Cli::parse().into_command() {
        Command::Serve(command) => (command.flags.with_models(command.models), true),
        Command::Openapi(args) => (args, false),
        Command::Probe(args) => return inferd::probe::run(&args).await,
        Command::Check(args) => return inferd::check::run(&args),
        Command::Replay(args) => return inferd::offline::replay::run(&args).await,
        Command::Score(args) => return inferd::offline::score::run(&args).await,
        Command::Schema(args) => return inferd::offline::schema::run(&args),
        Command::ConfigReference { file } => return inferd::config::reference::run(file.as_deref()),
        Command::Key(KeyCommand::New { name, scopes }) => {
            return match inferd::auth::keys::new_key(&name, &scopes) {
                Ok(text) => {
                    inferd::stdout::print(&text);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("inferd key new: {e}");
                    ExitCode::from(2)
                }
            }
        }
    };
    let config = match Config::load(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("inferd: {e}");
            return ExitCode::from(2);
        }
    };
    if !serve {
        return match inferd::openapi::for_config(&config) {
            Ok(doc) => {
                inferd::stdout::print(&format!("{}\n", serde_json::to_string_pretty(&doc).expect("JSON")));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("inferd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let open_files = inferd::startup::raise_open_files_limit();
    let logging = inferd::telemetry::init(&config.logging);
    let traces = match inferd::observe::trace::init() {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("inferd: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(open_files_limit = open_files, traces = traces.is_some(), "starting");
    // Before the models load, so that a SIGHUP or SIGTERM during loading is handled too.
    let signal = shutdown_signal();
    let result = match Application::build(config).await {
        Ok(app) => app.run_until_stopped(signal).await,
        Err(e) => Err(e),
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "inferd stopped");
            inferd::telemetry::say_on_stderr(format!("inferd: {e}\n"));
            ExitCode::from(e.exit_code())
        }
    };
    // Before the log's flush, so that what the exporter says about a failure is in the log.
    if let Some(traces) = traces {
        if !traces.finish(TRACE_FLUSH_WAIT) {
            tracing::warn!(wait_ms = TRACE_FLUSH_WAIT.as_millis() as u64, "trace spans not exported before exit");
        }
    }
    if let Some(logging) = logging {
        logging.finish(LOG_FLUSH_WAIT);
    }
    code
}
