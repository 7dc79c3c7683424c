//! The rules of the rolling files, as pure functions: file names, periods, which old files to
//! delete, how many lines fit in a file, how often an error is logged. `files.rs` applies them.

use time::{OffsetDateTime, Time};

use crate::config::Rotation;

const PREFIX: &str = "predictions.";
const SUFFIX: &str = ".jsonl";

/// The label of the period starting at `start`, as tracing-appender named its files: empty for
/// `never`, else `YYYY-MM-DD`, `-HH` for hourly, `-HH-MM` for minutely (weekly: the Sunday).
pub fn period_label(rotation: Rotation, start: OffsetDateTime) -> String {
    let (date, hour, minute) = (start.date(), start.hour(), start.minute());
    let day = format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day());
    match rotation {
        Rotation::Never => String::new(),
        Rotation::Daily | Rotation::Weekly => day,
        Rotation::Hourly => format!("{day}-{hour:02}"),
        Rotation::Minutely => format!("{day}-{hour:02}-{minute:02}"),
    }
}

/// Start of the period `at` falls in (UTC); `None` for `never`.
pub fn period_start(rotation: Rotation, at: OffsetDateTime) -> Option<OffsetDateTime> {
    let midnight = at.replace_time(Time::MIDNIGHT);
    let hms = |h, m| Time::from_hms(h, m, 0).expect("hour and minute of a valid time");
    Some(match rotation {
        Rotation::Never => return None,
        Rotation::Minutely => at.replace_time(hms(at.hour(), at.minute())),
        Rotation::Hourly => at.replace_time(hms(at.hour(), 0)),
        Rotation::Daily => midnight,
        Rotation::Weekly => midnight - time::Duration::days(at.weekday().number_days_from_sunday().into()),
    })
}

/// Start of the period after the one `at` falls in: when the next file starts.
pub fn next_period(rotation: Rotation, at: OffsetDateTime) -> Option<OffsetDateTime> {
    let step = match rotation {
        Rotation::Never => return None,
        Rotation::Minutely => time::Duration::minutes(1),
        Rotation::Hourly => time::Duration::hours(1),
        Rotation::Daily => time::Duration::days(1),
        Rotation::Weekly => time::Duration::weeks(1),
    };
    period_start(rotation, period_start(rotation, at)? + step)
}

/// `predictions.<label>.jsonl`; a period's later parts, started when a file reached its share
/// of `max_bytes`, are `predictions.<label>.<part>.jsonl` (`predictions.<part>.jsonl` for `never`).
pub fn file_name(label: &str, part: u32) -> String {
    match (label.is_empty(), part) {
        (true, 0) => format!("predictions{SUFFIX}"),
        (true, _) => format!("{PREFIX}{part}{SUFFIX}"),
        (false, 0) => format!("{PREFIX}{label}{SUFFIX}"),
        (false, _) => format!("{PREFIX}{label}.{part}{SUFFIX}"),
    }
}

/// The label and part of one of our file names; `None` for any other file.
pub fn parse_name(name: &str) -> Option<(String, u32)> {
    if name == file_name("", 0) {
        return Some((String::new(), 0));
    }
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let part = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten();
    if let Some(n) = part(middle) {
        return Some((String::new(), n));
    }
    match middle.rsplit_once('.') {
        Some((label, n)) => Some((label.to_owned(), part(n)?)),
        None => Some((middle.to_owned(), 0)),
    }
}

/// Each file's share of `max_bytes`: a file that would outgrow it gives way to a new part, so
/// that `max_files` files, each within its share, stay within `max_bytes` together.
pub fn file_cap(max_bytes: u64, max_files: usize) -> u64 {
    max_bytes / max_files.max(1) as u64
}

/// One file of the log and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub name: String,
    pub bytes: u64,
}

/// How many of the oldest files (`kept` is oldest first, the last being written) to delete so
/// that at most `max_files` remain and, with `incoming` more bytes, at most `max_bytes`. The
/// file being written is never deleted.
pub fn oldest_to_delete(kept: &[Kept], max_files: usize, max_bytes: u64, incoming: u64) -> usize {
    let mut total: u64 = kept.iter().map(|k| k.bytes).sum::<u64>() + incoming;
    let mut n = 0;
    while n + 1 < kept.len() && (kept.len() - n > max_files || total > max_bytes) {
        total -= kept[n].bytes;
        n += 1;
    }
    n
}

/// How many of the lines ending at `ends` (byte offsets, ascending, counted from `from`) fit in
/// `room` bytes. A file holding nothing takes at least one line, however long, so that a line
/// longer than a file's share is still written.
pub fn lines_that_fit(ends: &[usize], from: usize, room: u64, empty_file: bool) -> usize {
    let n = ends.partition_point(|&end| (end - from) as u64 <= room);
    if n == 0 && empty_file && !ends.is_empty() {
        1
    } else {
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Date, Month};

    /// A UTC time; minutes and seconds default to 0.
    fn utc(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: f64) -> OffsetDateTime {
        let date = Date::from_calendar_date(y, Month::try_from(mo).unwrap(), d).unwrap();
        let nanos = (s.fract() * 1e9) as u32;
        date.with_hms_nano(h, mi, s as u8, nanos).unwrap().assume_utc()
    }

    fn kept(sizes: &[u64]) -> Vec<Kept> {
        sizes.iter().enumerate().map(|(i, &bytes)| Kept { name: format!("f{i}"), bytes }).collect()
    }

    #[test]
    fn names_have_tracing_appenders_shapes() {
        let at = utc(2026, 11, 22, 13, 52, 38.0); // a Sunday
        let name = |r| file_name(&period_label(r, period_start(r, at).unwrap_or(at)), 0);
        assert_eq!(name(Rotation::Minutely), "predictions.2026-11-22-13-52.jsonl");
        assert_eq!(name(Rotation::Hourly), "predictions.2026-11-22-13.jsonl");
        assert_eq!(name(Rotation::Daily), "predictions.2026-11-22.jsonl");
        assert_eq!(name(Rotation::Weekly), "predictions.2026-11-22.jsonl");
        assert_eq!(name(Rotation::Never), "predictions.jsonl");
        assert_eq!(file_name("2026-11-22", 3), "predictions.2026-11-22.3.jsonl");
        assert_eq!(file_name("", 2), "predictions.2.jsonl");
    }

    #[test]
    fn names_parse_back() {
        for (label, part) in [("", 0), ("", 7), ("2026-11-22", 0), ("2026-11-22-13-52", 12)] {
            assert_eq!(parse_name(&file_name(label, part)), Some((label.to_owned(), part)));
        }
        assert_eq!(parse_name("other.jsonl"), None);
        assert_eq!(parse_name("predictions.2026-11-22.log"), None);
        assert_eq!(parse_name("predictions.2026-11-22.x1.jsonl"), None);
    }

    #[test]
    fn periods_start_and_end_where_tracing_appender_put_them() {
        let at = utc(2026, 11, 25, 13, 52, 38.5); // a Wednesday
        assert_eq!(period_start(Rotation::Minutely, at), Some(utc(2026, 11, 25, 13, 52, 0.0)));
        assert_eq!(next_period(Rotation::Minutely, at), Some(utc(2026, 11, 25, 13, 53, 0.0)));
        assert_eq!(next_period(Rotation::Hourly, at), Some(utc(2026, 11, 25, 14, 0, 0.0)));
        assert_eq!(next_period(Rotation::Daily, at), Some(utc(2026, 11, 26, 0, 0, 0.0)));
        assert_eq!(period_start(Rotation::Weekly, at), Some(utc(2026, 11, 22, 0, 0, 0.0)));
        assert_eq!(next_period(Rotation::Weekly, at), Some(utc(2026, 11, 29, 0, 0, 0.0)));
        assert_eq!(next_period(Rotation::Daily, utc(2026, 12, 31, 23, 59, 59.0)), Some(utc(2027, 1, 1, 0, 0, 0.0)));
        assert_eq!(next_period(Rotation::Never, at), None);
    }

    #[test]
    fn old_files_go_by_count_then_by_bytes_never_the_current_one() {
        assert_eq!(oldest_to_delete(&kept(&[10, 10, 10]), 3, 100, 0), 0);
        assert_eq!(oldest_to_delete(&kept(&[10, 10, 10, 0]), 3, 100, 0), 1, "a new file pushes one out");
        assert_eq!(oldest_to_delete(&kept(&[40, 40, 10]), 14, 100, 20), 1, "bytes to come count");
        assert_eq!(oldest_to_delete(&kept(&[40, 40, 10]), 14, 100, 60), 2);
        assert_eq!(oldest_to_delete(&kept(&[40, 40, 500]), 14, 100, 10), 2, "the current file stays");
        assert_eq!(oldest_to_delete(&kept(&[]), 1, 100, 10), 0);
    }

    #[test]
    fn max_files_within_their_share_stay_within_max_bytes() {
        let (max_bytes, max_files) = (1000, 4);
        let cap = file_cap(max_bytes, max_files);
        assert_eq!(cap, 250);
        // Lines of 60 bytes fill files to 240 (4 lines), then a new part starts.
        let ends: Vec<usize> = (1..=100).map(|i| i * 60).collect();
        let mut files = kept(&[0]);
        let mut from = 0;
        let mut i = 0;
        while i < ends.len() {
            let current = files.last().unwrap().bytes;
            let n = lines_that_fit(&ends[i..], from, cap - current, current == 0);
            if n == 0 {
                files.push(Kept { name: "next".into(), bytes: 0 });
                let gone = oldest_to_delete(&files, max_files, max_bytes, 0);
                files.drain(..gone);
                continue;
            }
            let bytes = (ends[i + n - 1] - from) as u64;
            let gone = oldest_to_delete(&files, max_files, max_bytes, bytes);
            files.drain(..gone);
            files.last_mut().unwrap().bytes += bytes;
            from = ends[i + n - 1];
            i += n;
            let total: u64 = files.iter().map(|f| f.bytes).sum();
            assert!(total <= max_bytes && files.len() <= max_files, "{files:?}");
            assert!(files.iter().all(|f| f.bytes <= cap), "{files:?}");
        }
        assert_eq!(files.len(), max_files);
    }

    #[test]
    fn whole_lines_only_and_at_least_one_in_an_empty_file() {
        let ends = [100, 250, 300];
        assert_eq!(lines_that_fit(&ends, 0, 1000, false), 3);
        assert_eq!(lines_that_fit(&ends, 0, 299, false), 2);
        assert_eq!(lines_that_fit(&ends[1..], 100, 150, false), 1);
        assert_eq!(lines_that_fit(&ends, 0, 50, false), 0);
        assert_eq!(lines_that_fit(&ends, 0, 50, true), 1, "a line longer than the share");
        assert_eq!(lines_that_fit(&[], 0, 50, true), 0);
    }
}
