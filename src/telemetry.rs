//! Service logs: JSON lines on stdout by default (what PaaS log routers and Docker collect).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LoggingConfig};

/// `RUST_LOG`, when set, replaces `logging.level`; ONNX Runtime's own INFO chatter is quieted
/// unless the filter names `ort`.
///
/// Lines are written by a background thread so that request handlers never wait on stdout;
/// it is not lossy: when its buffer is full, callers wait rather than drop lines. Keep the
/// returned guard alive until exit: dropping it flushes what is buffered.
pub fn init(config: &LoggingConfig) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let quiet_ort = if config.level.contains("ort") { "" } else { ",ort=warn" };
        EnvFilter::new(format!("{}{quiet_ort}", config.level))
    });
    // Buffered, so that the writer thread hands stdout whatever lines have queued in one
    // `write` (it flushes after each batch it drains) rather than one system call per line.
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    // 16k lines, about a second of the access log at full load, rather than the crate's 128k:
    // its queue is allocated whole at start, and 128k slots were 4 MiB of the idle RSS.
    let (writer, guard) = NonBlockingBuilder::default().buffered_lines_limit(16_384).lossy(false).finish(stdout);
    let result = match config.format {
        LogFormat::Text => fmt().with_env_filter(filter).with_writer(writer).try_init(),
        // json-subscriber keeps span fields as JSON values, where tracing-subscriber's JSON
        // formatter re-parses a span's fields from text for every event inside it.
        LogFormat::Json => json_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // A second init (tests start several apps in one process) keeps the first subscriber.
    let guard = result.ok().map(|()| guard)?;
    log_panics();
    Some(guard)
}

/// Panics (caught by the inference threads' supervisor or by the HTTP layer) become one JSON
/// log line with the thread and place, instead of a multi-line message on stderr.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        tracing::error!(%thread, %place, message, "panic");
    }));
}
