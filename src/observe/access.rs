//! The access log: one line per request, written here by hand into a reused buffer and handed
//! straight to the access log's non-blocking writer.
//!
//! A tracing event per request went through the filter, a visitor per field, a JSON value per
//! field and a formatter that builds a fresh string; that was most of what the access log cost
//! (about 26k instructions of a 280k-instruction request). The line is the same, field for
//! field and byte for byte: the JSON log's shape (`level`, `span`, `target`, `timestamp`, then
//! `message` and the fields; absent values left out) and the text log's.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing_appender::non_blocking::NonBlocking;

use super::format::{float, json_str, uint, utc_micros};
use super::scope::{RequestScope, NAME};
use crate::config::LogFormat;

/// The target the access log's lines are filtered and routed by.
pub const TARGET: &str = "inferd::access";

/// One request, as the access log says it.
pub struct AccessLine<'a> {
    pub scope: &'a RequestScope,
    /// The matched route template, or `unmatched`.
    pub route: &'a str,
    pub status: u16,
    /// A gRPC call's status code (`grpc-status`); `None` for every other request.
    pub grpc_status: Option<u16>,
    pub latency_ms: f64,
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub rows: Option<usize>,
    pub principal: Option<&'a str>,
    pub auth: Option<&'static str>,
    /// The request's trace id, when traces are on (see [`super::trace`]).
    pub trace_id: Option<&'a str>,
}

struct Sink {
    writer: NonBlocking,
    format: LogFormat,
}

/// Set once per process by `telemetry::init`, and only when its filter lets access lines through.
static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines to `writer` from now on. A second call (a second app in a test process)
/// keeps the first writer, as the process keeps the first subscriber.
pub fn install(writer: NonBlocking, format: LogFormat) {
    let _ = SINK.set(Sink { writer, format });
}

/// Whether access lines are written at all (the filter may have turned them off).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

impl AccessLine<'_> {
    /// Formats the line and queues it for stdout; a full queue drops it and counts the drop.
    pub fn write(&self) {
        let Some(sink) = SINK.get() else { return };
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            match sink.format {
                LogFormat::Json => self.json(SystemTime::now(), line),
                LogFormat::Text => self.text(SystemTime::now(), line),
            }
            // Lossy: never fails; a full queue counts the line in the access log's drops.
            let _ = sink.writer.clone().write_all(line);
        });
    }

    fn json(&self, now: SystemTime, out: &mut Vec<u8>) {
        let scope = self.scope;
        out.extend_from_slice(br#"{"level":"INFO","span":{"method":"#);
        json_str(out, scope.method);
        out.extend_from_slice(br#","name":"#);
        json_str(out, NAME);
        out.extend_from_slice(br#","path":"#);
        json_str(out, scope.path());
        out.extend_from_slice(br#","request_id":"#);
        json_str(out, scope.request_id());
        out.extend_from_slice(br#"},"target":"#);
        json_str(out, TARGET);
        out.extend_from_slice(br#","timestamp":""#);
        utc_micros(out, now);
        out.extend_from_slice(br#"","message":"request","route":"#);
        json_str(out, self.route);
        out.extend_from_slice(br#","status":"#);
        uint(out, self.status.into());
        if let Some(code) = self.grpc_status {
            out.extend_from_slice(br#","grpc_status":"#);
            uint(out, code.into());
        }
        out.extend_from_slice(br#","latency_ms":"#);
        float(out, self.latency_ms);
        for (key, value) in [(r#","model":"#, self.model), (r#","version":"#, self.version)] {
            if let Some(value) = value {
                out.extend_from_slice(key.as_bytes());
                json_str(out, value);
            }
        }
        if let Some(rows) = self.rows {
            out.extend_from_slice(br#","rows":"#);
            uint(out, rows as u64);
        }
        for (key, value) in
            [(r#","principal":"#, self.principal), (r#","auth":"#, self.auth), (r#","trace_id":"#, self.trace_id)]
        {
            if let Some(value) = value {
                out.extend_from_slice(key.as_bytes());
                json_str(out, value);
            }
        }
        out.extend_from_slice(b"}\n");
    }

    /// tracing-subscriber's text line: strings quoted as Rust debug-prints them, except the
    /// span's path and id, which were recorded for display. (No colours on a terminal.)
    fn text(&self, now: SystemTime, out: &mut Vec<u8>) {
        utc_micros(out, now);
        out.extend_from_slice(b"  INFO ");
        let mut prefix = String::with_capacity(128);
        self.scope.write_text_prefix(&mut prefix);
        out.extend_from_slice(prefix.as_bytes());
        let _ = write!(out, "{TARGET}: request route={:?} status={}", self.route, self.status);
        if let Some(code) = self.grpc_status {
            let _ = write!(out, " grpc_status={code}");
        }
        let _ = write!(out, " latency_ms={:?}", self.latency_ms);
        for (key, value) in [("model", self.model), ("version", self.version)] {
            if let Some(value) = value {
                let _ = write!(out, " {key}={value:?}");
            }
        }
        if let Some(rows) = self.rows {
            let _ = write!(out, " rows={rows}");
        }
        for (key, value) in [("principal", self.principal), ("auth", self.auth), ("trace_id", self.trace_id)] {
            if let Some(value) = value {
                let _ = write!(out, " {key}={value:?}");
            }
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderValue;
    use serde_json::Value;

    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    fn scope(path: &str) -> RequestScope {
        RequestScope::new("POST", path.parse().unwrap(), HeaderValue::from_static("7f3c"))
    }

    fn line<'a>(scope: &'a RequestScope) -> AccessLine<'a> {
        AccessLine {
            scope,
            route: "/predict",
            status: 200,
            grpc_status: None,
            latency_ms: 1.019,
            model: Some("house_price"),
            version: Some("1"),
            rows: Some(1),
            principal: None,
            auth: None,
            trace_id: None,
        }
    }

    fn json(line: &AccessLine) -> String {
        let mut out = Vec::new();
        line.json(at(1_796_304_678, 437_551), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_json_line_is_the_one_the_json_formatter_wrote() {
        let scope = scope("/predict");
        assert_eq!(
            json(&line(&scope)),
            r#"{"level":"INFO","span":{"method":"POST","name":"request","path":"/predict","request_id":"7f3c"},"target":"inferd::access","timestamp":"2026-12-03T13:31:18.437551Z","message":"request","route":"/predict","status":200,"latency_ms":1.019,"model":"house_price","version":"1","rows":1}"#
                .to_owned()
                + "\n"
        );
        let unmatched = AccessLine {
            route: "unmatched",
            status: 404,
            latency_ms: 0.0,
            model: None,
            version: None,
            rows: None,
            principal: Some("app \"ops\""),
            auth: Some("key"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            ..line(&scope)
        };
        let text = json(&unmatched);
        let tail = r#""status":404,"latency_ms":0.0,"principal":"app \"ops\"","auth":"key","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#;
        assert!(text.ends_with(&format!("{tail}\n")), "{text}");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["principal"], "app \"ops\"");
        assert!(value.get("model").is_none() && value.get("rows").is_none(), "absent values are left out: {text}");
    }

    #[test]
    fn odd_paths_stay_valid_json() {
        let scope = scope("/nope%22%5C%E2%82%AC%01");
        let value: Value = serde_json::from_str(&json(&line(&scope))).unwrap();
        assert_eq!(value["span"]["path"], "/nope%22%5C%E2%82%AC%01");
        assert_eq!(value["span"]["request_id"], "7f3c");
    }

    #[test]
    fn the_text_line_is_the_one_the_text_formatter_wrote() {
        let scope = scope("/predict");
        let mut out = Vec::new();
        line(&scope).text(at(1_796_304_678, 437_551), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-03T13:31:18.437551Z  INFO request{method=\"POST\" path=/predict request_id=7f3c}: inferd::access: \
             request route=\"/predict\" status=200 latency_ms=1.019 model=\"house_price\" version=\"1\" rows=1\n"
        );
    }
}
