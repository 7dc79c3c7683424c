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
    pub latency_ms: f64,
    pub model: Option<&'a str>,
    pub version: Option<&'a str>,
    pub rows: Option<usize>,
    pub principal: Option<&'a str>,
    pub auth: Option<&'static str>,
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
        timestamp(out, now);
        out.extend_from_slice(br#"","message":"request","route":"#);
        json_str(out, self.route);
        out.extend_from_slice(br#","status":"#);
        let _ = write!(out, "{}", self.status);
        out.extend_from_slice(br#","latency_ms":"#);
        // serde_json's float format (shortest round-trip), as the JSON formatter wrote it.
        let _ = serde_json::to_writer(&mut *out, &self.latency_ms);
        for (key, value) in [(r#","model":"#, self.model), (r#","version":"#, self.version)] {
            if let Some(value) = value {
                out.extend_from_slice(key.as_bytes());
                json_str(out, value);
            }
        }
        if let Some(rows) = self.rows {
            let _ = write!(out, r#","rows":{rows}"#);
        }
        for (key, value) in [(r#","principal":"#, self.principal), (r#","auth":"#, self.auth)] {
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
        timestamp(out, now);
        out.extend_from_slice(b"  INFO ");
        let mut prefix = String::with_capacity(128);
        self.scope.write_text_prefix(&mut prefix);
        out.extend_from_slice(prefix.as_bytes());
        let _ = write!(out, "{TARGET}: request route={:?} status={} latency_ms={:?}", self.route, self.status, self.latency_ms);
        for (key, value) in [("model", self.model), ("version", self.version)] {
            if let Some(value) = value {
                let _ = write!(out, " {key}={value:?}");
            }
        }
        if let Some(rows) = self.rows {
            let _ = write!(out, " rows={rows}");
        }
        for (key, value) in [("principal", self.principal), ("auth", self.auth)] {
            if let Some(value) = value {
                let _ = write!(out, " {key}={value:?}");
            }
        }
        out.push(b'\n');
    }
}

/// A JSON string, escaped as serde_json escapes it: `"` and `\`, control characters (the usual
/// five by letter, the rest as `\u00XX`); everything else, non-ASCII included, as is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => &[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `2026-12-03T13:31:18.437551Z`: UTC, microseconds, as tracing-subscriber's clock writes it.
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    );
}

/// Year, month, day of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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

    fn stamp(at: SystemTime) -> String {
        let mut out = Vec::new();
        timestamp(&mut out, at);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_rfc3339_with_microseconds() {
        assert_eq!(stamp(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(at(951_782_400, 1)), "2000-02-29T00:00:00.000001Z");
        assert_eq!(stamp(at(1_796_304_678, 437_551)), "2026-12-03T13:31:18.437551Z");
        // Every day for 400 years against the time crate (leap years, centuries, month ends).
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        for day in (0..146_097u64).step_by(7) {
            let t = at(day * 86_400 + 86_399, 999_999);
            let want = time::OffsetDateTime::from(t).format(&format).unwrap();
            assert_eq!(stamp(t), want);
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let cases = ["", "plain", "q\"uote", "back\\slash", "\n\r\t\u{8}\u{c}", "\u{0}\u{1}\u{1f}\u{7f}", "é€😀", "/a/b"];
        for s in cases {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        for b in 0u8..0x80 {
            let s = format!("a{}b", b as char);
            let mut out = Vec::new();
            json_str(&mut out, &s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap(), "{b:#x}");
        }
    }

    fn scope(path: &str) -> RequestScope {
        RequestScope::new("POST", path.parse().unwrap(), HeaderValue::from_static("7f3c"))
    }

    fn line<'a>(scope: &'a RequestScope) -> AccessLine<'a> {
        AccessLine {
            scope,
            route: "/predict",
            status: 200,
            latency_ms: 1.019,
            model: Some("house_price"),
            version: Some("1"),
            rows: Some(1),
            principal: None,
            auth: None,
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
            ..line(&scope)
        };
        let text = json(&unmatched);
        let tail = r#""status":404,"latency_ms":0.0,"principal":"app \"ops\"","auth":"key"}"#;
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
