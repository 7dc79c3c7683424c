//! Repeated error lines (a full disk, accept failures) logged at most once per interval.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        Self { every, last: None, suppressed: 0 }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn check(&mut self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    pub fn check_at(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_held_back() {
        let t = Instant::now();
        let mut limit = RateLimited::new(Duration::from_secs(1));
        assert_eq!(limit.check_at(t), Some(0));
        assert_eq!(limit.check_at(t + Duration::from_millis(10)), None);
        assert_eq!(limit.check_at(t + Duration::from_millis(500)), None);
        assert_eq!(limit.check_at(t + Duration::from_millis(1000)), Some(2));
        assert_eq!(limit.check_at(t + Duration::from_millis(1001)), None);
    }
}
