//! The stdout sink, for a platform's log drain: each record a JSON line that starts with
//! `"log":"prediction"`, which no service-log line has.

use std::io::{self, Write};

use time::OffsetDateTime;

use super::sink::{Sink, Written};

pub struct Stdout;

impl Sink for Stdout {
    fn write(&mut self, buf: &[u8], ends: &[usize], _now: OffsetDateTime) -> Written {
        // The lock keeps service-log lines (written by another thread through the same handle)
        // from landing inside a record. A reader that stops reading blocks this write: the
        // writer's health reports it as a stall.
        let mut out = io::stdout().lock();
        let end = ends.last().copied().unwrap_or(0);
        // One call for the whole chunk: a failure (a closed pipe) leaves it unknown how much got
        // through, so none is counted as written.
        match out.write_all(&buf[..end]).and_then(|()| out.flush()) {
            Ok(()) => Written { lines: ends.len(), bytes: end, error: None },
            Err(error) => Written::failed(error),
        }
    }

    fn describe(&self) -> String {
        "stdout".into()
    }

    fn line_start(&self) -> &'static [u8] {
        br#"{"log":"prediction","#
    }
}
