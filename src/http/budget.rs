//! A budget of request-body bytes held at once, over all connections, from a body's first byte
//! read to the end of its request: the memory a crowd of uploads (slow, stalled or waiting for
//! the model) can pin is bounded by it, not by connections x body limit.

use std::sync::Arc;

use axum::body::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counted in KiB, so that permits fit the semaphore's `u32` requests for any body limit.
const UNIT: usize = 1024;

#[derive(Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: u32,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        Self { units: Arc::new(Semaphore::new(total as usize)), total }
    }

    /// Waits until `bytes` fit, and holds them until the returned guard is dropped. A body
    /// larger than the whole budget waits for all of it.
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.total);
        self.units.clone().acquire_many_owned(units).await.expect("the budget's semaphore is never closed")
    }
}

/// `body` as bytes that hold `room` until the last reference to them is dropped.
pub fn holding(body: Vec<u8>, room: OwnedSemaphorePermit) -> Bytes {
    Bytes::from_owner(Held { body, _room: room })
}

struct Held {
    body: Vec<u8>,
    _room: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn bodies_wait_for_room_and_give_it_back_when_done() {
        let budget = BodyBudget::new(4 * UNIT);
        let first = budget.reserve(3 * UNIT).await;
        let blocked = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await;
        assert!(blocked.is_err(), "3 KiB of 4 are held: 2 more do not fit");
        let _small = budget.reserve(10).await;
        drop(first);
        let _second = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await.unwrap();
        let huge = tokio::time::timeout(Duration::from_millis(20), BodyBudget::new(UNIT).reserve(usize::MAX)).await;
        assert!(huge.is_ok(), "a body over the whole budget waits for all of it, not forever");
    }

    #[tokio::test]
    async fn held_bytes_keep_their_room_until_the_last_reference_goes() {
        let budget = BodyBudget::new(2 * UNIT);
        let body = holding(vec![7; 2 * UNIT], budget.reserve(2 * UNIT).await);
        let part = body.slice(..10);
        drop(body);
        let blocked = tokio::time::timeout(Duration::from_millis(20), budget.reserve(UNIT)).await;
        assert!(blocked.is_err(), "a slice still holds the body");
        drop(part);
        let _room = tokio::time::timeout(Duration::from_millis(20), budget.reserve(2 * UNIT)).await.unwrap();
    }
}
