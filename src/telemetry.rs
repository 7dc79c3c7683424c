//! Service logs: JSON lines on stdout by default (what PaaS log routers and Docker collect).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::{fmt, EnvFilter};

/// `RUST_LOG` sets the filter; ONNX Runtime's own INFO chatter is quieted by default.
/// `INFERD_LOG_FORMAT=text` switches to human-readable lines.
///
/// Lines are written by a background thread so that request handlers never wait on stdout;
/// it is not lossy: when its buffer is full, callers wait rather than drop lines. Keep the
/// returned guard alive until exit: dropping it flushes what is buffered.
pub fn init() -> Option<WorkerGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let text = std::env::var("INFERD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let (writer, guard) = NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    let result = if text {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    };
    // A second init (tests start several apps in one process) keeps the first subscriber.
    result.ok().map(|()| guard)
}
