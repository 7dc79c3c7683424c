//! The pieces of a log line, written straight into a byte buffer: JSON strings, integers,
//! floats and UTC times. Each writes what the formatter it replaces wrote (serde_json for
//! strings and floats, tracing-subscriber's clock, `time`'s RFC 3339), for a fraction of the
//! instructions; the tests compare them with those formatters.

use std::time::SystemTime;

/// A JSON string, escaped as serde_json escapes it: `"` and `\`, control characters (the usual
/// five by letter, the rest as `\u00XX`); everything else, non-ASCII included, as is.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most strings need no escape: one pass that the compiler can vectorise, then one copy.
    let plain = bytes.iter().fold(true, |plain, &b| plain & (b >= 0x20 && b != b'"' && b != b'\\'));
    if plain {
        out.extend_from_slice(bytes);
    } else {
        escape_into(out, bytes);
    }
    out.push(b'"');
}

fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
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
}

/// An unsigned integer in decimal.
pub fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A float as serde_json writes it (shortest form that reads back the same; `null` if not
/// finite).
pub fn float(out: &mut Vec<u8>, x: f64) {
    let _ = serde_json::to_writer(&mut *out, &x);
}

/// `n` in exactly `width` digits, zero-padded.
fn padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `2026-12-03T13:31:18` of `secs` since the epoch.
fn date_time(out: &mut Vec<u8>, secs: u64) {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    padded(out, year.max(0) as u64, 4);
    out.push(b'-');
    padded(out, month.into(), 2);
    out.push(b'-');
    padded(out, day.into(), 2);
    out.push(b'T');
    padded(out, of_day / 3600, 2);
    out.push(b':');
    padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    padded(out, of_day % 60, 2);
}

/// `2026-12-03T13:31:18.437551Z`: UTC, always six digits of microseconds, as
/// tracing-subscriber's clock writes the service log's `timestamp`.
pub fn utc_micros(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    date_time(out, since.as_secs());
    out.push(b'.');
    padded(out, since.subsec_micros().into(), 6);
    out.push(b'Z');
}

/// `2026-12-03T13:31:18.43740601Z`: UTC, nanoseconds without their trailing zeros (none at
/// all on a whole second), as `time` writes RFC 3339 (see [`super::rfc3339`]).
pub fn utc_rfc3339(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    date_time(out, since.as_secs());
    let mut nanos = u64::from(since.subsec_nanos());
    if nanos != 0 {
        let mut width = 9;
        while nanos % 10 == 0 {
            nanos /= 10;
            width -= 1;
        }
        out.push(b'.');
        padded(out, nanos, width);
    }
    out.push(b'Z');
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

    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn times_match_tracing_and_time() {
        assert_eq!(text(|o| utc_micros(o, at(0, 0))), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(|o| utc_micros(o, at(951_782_400, 1_000))), "2000-02-29T00:00:00.000001Z");
        assert_eq!(text(|o| utc_micros(o, at(1_796_304_678, 437_551_999))), "2026-12-03T13:31:18.437551Z");
        let micros =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
        // Every week of 400 years (leap years, centuries, month ends), with odd sub-seconds.
        for (i, day) in (0..146_097u64).step_by(7).enumerate() {
            let nanos = [0, 1, 10, 999_999_999, 437_406_010, 500_000_000, 120_000][i % 7];
            let t = at(day * 86_400 + (i as u64 * 7919) % 86_400, nanos);
            let want = time::OffsetDateTime::from(t).format(&micros).unwrap();
            assert_eq!(text(|o| utc_micros(o, t)), want);
            assert_eq!(text(|o| utc_rfc3339(o, t)), super::super::rfc3339(t), "{nanos}");
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let cases =
            ["", "plain", "q\"uote", "back\\slash", "\n\r\t\u{8}\u{c}", "\u{0}\u{1}\u{1f}\u{7f}", "é€😀", "/a/b"];
        for s in cases {
            assert_eq!(text(|o| json_str(o, s)), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        for b in 0u8..0x80 {
            let s = format!("a{}b{}", b as char, "x".repeat(40));
            assert_eq!(text(|o| json_str(o, &s)), serde_json::to_string(&s).unwrap(), "{b:#x}");
        }
    }

    #[test]
    fn numbers_match_serde_json() {
        for n in [0u64, 7, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(text(|o| uint(o, n)), n.to_string());
        }
        for x in [0.0, 1.0, 1.019, 0.001, 123_456.789, 1e-7, 1e21, f64::NAN] {
            assert_eq!(text(|o| float(o, x)), serde_json::to_string(&x).unwrap());
        }
    }
}
