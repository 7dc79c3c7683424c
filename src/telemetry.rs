//! Service logs: JSON lines on stdout by default (what PaaS log routers and Docker collect).

use tracing_subscriber::{fmt, EnvFilter};

/// `RUST_LOG` sets the filter; ONNX Runtime's own INFO chatter is quieted by default.
/// `INFERD_LOG_FORMAT=text` switches to human-readable lines.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let text = std::env::var("INFERD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stdout);
    let result = if text {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
    };
    // A second init (tests start several apps in one process) keeps the first subscriber.
    let _ = result;
}
