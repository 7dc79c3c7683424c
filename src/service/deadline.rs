//! A prediction's deadline: from the moment its headers are in, covering the body read, the
//! queue and inference.

use std::time::{Duration, Instant};

use super::PredictError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    started: Instant,
    budget: Duration,
}

impl Deadline {
    pub fn new(started: Instant, budget: Duration) -> Self {
        Self { started, budget }
    }

    /// The same deadline, or an earlier one if `budget` from the start is shorter.
    pub fn shorten(self, budget: Duration) -> Self {
        Self { started: self.started, budget: self.budget.min(budget) }
    }

    pub fn at(&self) -> Instant {
        self.started + self.budget
    }

    /// The budget in whole milliseconds, for messages.
    pub fn budget_ms(&self) -> u64 {
        self.budget.as_millis().max(1) as u64
    }

    /// Time since the request's headers were in.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn timed_out(&self) -> PredictError {
        PredictError::Timeout { ms: self.budget_ms() }
    }
}
