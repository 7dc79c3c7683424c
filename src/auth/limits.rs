//! Rate limits per principal: in-process GCRA buckets (governor). Each replica keeps its own.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

/// Subjects' buckets are swept for idle ones every this many checks, so that the map holds
/// only recent subjects (only validly signed tokens reach it).
const SWEEP_EVERY: u32 = 4096;

#[derive(Debug, Clone)]
pub enum Limit {
    None,
    Key(Arc<DefaultDirectRateLimiter>),
    /// The token subjects' shared quota, keyed by subject.
    Subject,
}

fn quota(limit: &RateLimitConfig) -> Quota {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).expect("a period above zero").allow_burst(burst)
}

pub fn bucket(limit: &RateLimitConfig) -> DefaultDirectRateLimiter {
    RateLimiter::direct(quota(limit))
}

/// How long until the bucket has room; `None` when the request may go now.
pub fn wait(bucket: &DefaultDirectRateLimiter) -> Option<Duration> {
    bucket.check().err().map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

pub struct SubjectLimits {
    buckets: DefaultKeyedRateLimiter<Arc<str>>,
    checks: AtomicU32,
}

impl SubjectLimits {
    pub fn new(limit: &RateLimitConfig) -> Self {
        Self { buckets: RateLimiter::keyed(quota(limit)), checks: AtomicU32::new(0) }
    }

    pub fn wait(&self, subject: &Arc<str>) -> Option<Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(subject).err().map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
