//! Service logs: JSON lines on stdout by default (what PaaS log routers and Docker collect).
//!
//! Lines are written by background threads so that request handlers never wait on stdout, and
//! they are dropped rather than waited for when a queue is full: a log reader that stops
//! reading (a stuck log shipper, a full container log driver) must not stop the server. Drops
//! are counted per log, `access` (one line per request) apart from `service` (everything
//! else), so that a burst of traffic cannot crowd out the lines that say what went wrong.

use std::io::{BufWriter, IsTerminal, Stdout, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, LoggingConfig};
use crate::observe::{access, RequestScope};

/// The target of the access log's lines (see [`crate::observe::access`]).
pub const ACCESS_TARGET: &str = access::TARGET;

/// The logs' drop counters, for the metrics of whichever app runs (tests run several apps in
/// one process, but the subscriber, and so the logs, are the process's).
static DROPS: OnceLock<[(&'static str, ErrorCounter); 2]> = OnceLock::new();

/// The log writers' threads; [`Logging::finish`] flushes them with a bound on the wait.
pub struct Logging {
    guards: Vec<WorkerGuard>,
}

/// `RUST_LOG`, when set, replaces `logging.level`; ONNX Runtime's own INFO chatter is quieted
/// unless the filter names `ort`. `None` when a subscriber was already set (a second app in a
/// test process keeps the first one's).
pub fn init(config: &LoggingConfig) -> Option<Logging> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let quiet_ort = if config.level.contains("ort") { "" } else { ",ort=warn" };
        EnvFilter::new(format!("{}{quiet_ort}", config.level))
    });
    let stdout = SharedStdout::default();
    let queue = |lines| NonBlockingBuilder::default().buffered_lines_limit(lines).lossy(true).finish(stdout.clone());
    // Both queues are allocated whole at start, 32 bytes a line; the default access queue
    // holds about a second of the access log at full load.
    let (access, access_guard) = queue(config.buffer_lines);
    let (service, service_guard) = queue((config.buffer_lines / 4).max(16));
    let drops = [("access", access.error_counter()), ("service", service.error_counter())];
    // The access line itself is written by `observe::access`; the slow-request warning is an
    // event with the access log's target, and goes to its queue too.
    let access_lines = access.clone();
    let writer = access.with_filter(|meta: &tracing::Metadata<'_>| meta.target() == ACCESS_TARGET).or_else(service);
    let result = match config.format {
        LogFormat::Text => fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(InRequest(Format::default()))
            .try_init(),
        // Field for field what json-subscriber's `fmt()` wrote with the request's span as
        // `span`; there is no span any more, so `span` comes from the request's scope.
        LogFormat::Json => {
            let mut json = json_subscriber::JsonLayer::new(writer);
            json.with_timer("timestamp", SystemTime)
                .with_level("level")
                .with_target("target")
                .with_flattened_event()
                .add_dynamic_field("span", |_, _| RequestScope::with_current(|scope| scope.cloned()));
            tracing_subscriber::registry().with(json).with(filter).try_init().map_err(Into::into)
        }
    };
    result.ok()?;
    // Set only when the filter lets the access log's lines through (`RUST_LOG` may not).
    if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        access::install(access_lines, config.format);
    }
    let _ = DROPS.set(drops);
    log_panics();
    Some(Logging { guards: vec![access_guard, service_guard] })
}

/// Lines dropped so far by each log (`access`, `service`), since the process started.
pub fn dropped_lines() -> impl Iterator<Item = (&'static str, u64)> {
    DROPS.get().into_iter().flatten().map(|(log, counter)| (*log, counter.dropped_lines() as u64))
}

/// What the last [`report_drops`] saw, so that each drop is reported once.
static REPORTED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Logs one line per log that dropped lines since the last call. Called every second or so:
/// the line itself goes through the log, so it appears once the writer has caught up (and if
/// it is dropped too, the next call counts it).
pub fn report_drops() {
    for (i, (log, dropped)) in dropped_lines().enumerate() {
        let before = REPORTED[i].swap(dropped as usize, Ordering::Relaxed) as u64;
        if dropped > before {
            tracing::warn!(
                log,
                dropped = dropped - before,
                total = dropped,
                "log lines dropped: stdout was not read fast enough"
            );
        }
    }
}

impl Logging {
    /// Flushes what the writers hold, waiting at most `within` (a stuck stdout would hold the
    /// process forever); then says on stderr, if that can be written, what was left behind.
    /// Returns whether everything was flushed.
    pub fn finish(self, within: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // The guards' own drop waits up to 1.1 s, and then prints to stdout, which may be the
        // stuck pipe: dropped on a thread of their own, abandoned if they do not finish.
        let flushing = std::thread::Builder::new().name("log-flush".into()).spawn(move || {
            drop(self.guards);
            let _ = done_tx.send(());
        });
        if flushing.is_ok() && done_rx.recv_timeout(within).is_ok() {
            return true;
        }
        let dropped: Vec<String> = dropped_lines().map(|(log, n)| format!("{log} {n}")).collect();
        say_on_stderr(format!(
            "inferd: the service log was not flushed within {} ms (stdout is not being read); exiting without it. \
             Lines dropped: {}\n",
            within.as_millis(),
            dropped.join(", ")
        ));
        false
    }
}

/// Writes `message` to stderr from a thread of its own, waiting for it briefly: stderr may be
/// a stuck pipe as well.
pub fn say_on_stderr(message: String) {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("stderr".into()).spawn(move || {
        let _ = std::io::stderr().write_all(message.as_bytes());
        let _ = done_tx.send(());
    });
    if spawned.is_ok() {
        let _ = done_rx.recv_timeout(Duration::from_millis(100));
    }
}

/// Stdout shared by the two log writers. Each line goes in whole under the lock, so the two
/// logs' lines never interleave mid-line; buffered, so that a writer hands stdout whatever
/// lines have queued in one `write` (it flushes after each batch it drains).
#[derive(Clone)]
struct SharedStdout(Arc<Mutex<BufWriter<Stdout>>>);

impl Default for SharedStdout {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, std::io::stdout()))))
    }
}

impl Write for SharedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
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

/// The text format, with `request{method=… path=… request_id=…}: ` before the target of a line
/// logged while serving a request, where tracing-subscriber wrote the request's span.
struct InRequest<F>(F);

impl<S, N, F> FormatEvent<S, N> for InRequest<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        RequestScope::with_current(|scope| {
            let Some(scope) = scope else { return self.0.format_event(ctx, writer, event) };
            // Written plain (no colours): only lines logged inside a request come here.
            let mut line = String::with_capacity(256);
            self.0.format_event(ctx, Writer::new(&mut line), event)?;
            let at = line.find(event.metadata().target()).unwrap_or(0);
            let mut prefix = String::with_capacity(128);
            scope.write_text_prefix(&mut prefix);
            line.insert_str(at, &prefix);
            writer.write_str(&line)
        })
    }
}
