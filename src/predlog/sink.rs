//! What the writer thread hands its lines to: rolling files, stdout, PostgreSQL or object
//! storage. The writer serialises, gathers and retries; a sink only moves whole lines.

use std::io;
use std::time::Instant;

use time::OffsetDateTime;

/// What one [`Sink::write`] did: its first `lines` lines (`bytes` bytes) were taken (durably,
/// as far as the sink goes), then `error`, if any, stopped it.
pub struct Written {
    pub lines: usize,
    pub bytes: usize,
    pub error: Option<io::Error>,
}

impl Written {
    pub fn failed(error: io::Error) -> Self {
        Self { lines: 0, bytes: 0, error: Some(error) }
    }
}

/// What the writer does with lines a sink failed to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Retry for a second, then drop and count them: a broken disk or a closed stdout does not
    /// mend itself soon, and requests do not wait on it.
    GiveUp,
    /// Keep retrying, holding at most `max_bytes`; beyond it the writer takes no more lines, so
    /// lossless requests wait, then get 503. A database restart or an unreachable bucket ends.
    Hold { max_bytes: usize },
}

pub trait Sink: Send {
    /// Takes the lines of `buf` (line `i` ends at byte `ends[i]`) until one fails.
    fn write(&mut self, buf: &[u8], ends: &[usize], now: OffsetDateTime) -> Written;

    /// Where the lines go, for the service log (no password).
    fn describe(&self) -> String;

    /// What each line starts with instead of `{`: on stdout, the field that tells a record
    /// from a service-log line.
    fn line_start(&self) -> &'static [u8] {
        b"{"
    }

    fn on_failure(&self) -> OnFailure {
        OnFailure::GiveUp
    }

    /// First call, on the writer thread: connect early, so that a wrong URL or password is
    /// in the service log at start rather than at the first prediction.
    fn start(&mut self) {}

    /// The server is stopping: what the sink does from now on must end by `by`.
    fn closing(&mut self, _by: Instant) {}

    /// Keeps lines it could not take before exit where the next start sends them; `Ok(false)`
    /// when this sink has no such place.
    fn spill(&mut self, _buf: &[u8], _ends: &[usize]) -> io::Result<bool> {
        Ok(false)
    }

    /// Last call, on the writer thread: finish background work (uploads) by the close deadline.
    fn finish(&mut self) {}
}
