//! Whether the prediction log's writer is getting anywhere: lines owed to the files, and how
//! long the write (or file open) in progress has been going. A hung disk or mount does not
//! fail a write, it never returns; this is how the rest of the server finds out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const IDLE: u64 = u64::MAX;

pub struct Health {
    epoch: Instant,
    stall_after: Duration,
    /// Lines handed to the writer (queued or in its buffer) and neither written nor given up on.
    pending_lines: AtomicU64,
    /// Milliseconds from `epoch` to the start of the file operation in progress; `IDLE` when
    /// none is.
    busy_since_ms: AtomicU64,
    /// What the last [`Health::watch`] found, to report each stall once.
    stalled: AtomicBool,
}

/// What [`Health::watch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub stalled: bool,
    /// The log has turned stalled, or writes again, since the previous watch.
    pub changed: bool,
}

impl Health {
    pub fn new(stall_after: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            stall_after,
            pending_lines: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(IDLE),
            stalled: AtomicBool::new(false),
        }
    }

    pub fn queued(&self, lines: u64) {
        self.pending_lines.fetch_add(lines, Ordering::Relaxed);
    }

    /// Lines written, or given up on (and counted as such elsewhere).
    pub fn settled(&self, lines: u64) {
        let _ =
            self.pending_lines.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(lines)));
    }

    pub fn pending_lines(&self) -> u64 {
        self.pending_lines.load(Ordering::Relaxed)
    }

    /// The writer starts a file operation that may block.
    pub fn busy(&self) {
        self.busy_since_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The operation returned (whether it worked or failed: a failure is progress too).
    pub fn idle(&self) {
        self.busy_since_ms.store(IDLE, Ordering::Relaxed);
    }

    /// Stalled when one file operation has been going for `stall_after` or more.
    pub fn stalled(&self) -> bool {
        self.stalled_at(self.epoch.elapsed())
    }

    /// [`Health::stalled`], and whether that changed since the last call: for the one task
    /// that reports stalls (metrics and a log line each time), not for every reader.
    pub fn watch(&self) -> Check {
        self.watch_at(self.epoch.elapsed())
    }

    fn stalled_at(&self, now: Duration) -> bool {
        match self.busy_since_ms.load(Ordering::Relaxed) {
            IDLE => false,
            since => now.saturating_sub(Duration::from_millis(since)) >= self.stall_after,
        }
    }

    fn watch_at(&self, now: Duration) -> Check {
        let stalled = self.stalled_at(now);
        let was = self.stalled.swap(stalled, Ordering::Relaxed);
        Check { stalled, changed: stalled != was }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_does_not_return_stalls_the_log_until_it_does() {
        let health = Health::new(Duration::from_millis(2000));
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(health.watch_at(at(10_000)), Check { stalled: false, changed: false }, "idle is not stalled");
        health.busy_since_ms.store(1000, Ordering::Relaxed);
        assert!(!health.stalled_at(at(2999)), "a slow write is not a stall yet");
        assert!(health.stalled_at(at(3000)));
        assert_eq!(health.watch_at(at(3000)), Check { stalled: true, changed: true });
        assert_eq!(health.watch_at(at(9000)), Check { stalled: true, changed: false }, "reported once");
        health.idle();
        assert_eq!(health.watch_at(at(9001)), Check { stalled: false, changed: true }, "recovers by itself");
        health.busy_since_ms.store(9500, Ordering::Relaxed);
        assert!(health.watch_at(at(12_000)).changed, "a later stall is a new one");
    }

    #[test]
    fn pending_lines_never_go_below_zero() {
        let health = Health::new(Duration::from_secs(1));
        health.queued(3);
        health.settled(2);
        assert_eq!(health.pending_lines(), 1);
        health.settled(5);
        assert_eq!(health.pending_lines(), 0);
    }
}
