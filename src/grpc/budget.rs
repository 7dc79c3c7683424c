//! A gRPC call's message counted in the server's budget of body bytes in flight
//! (`server.max_body_bytes_in_flight`), as REST's bodies are. gRPC clients send no
//! `Content-Length`, so the bytes are charged as they arrive (rather than the body limit up
//! front, which would cap concurrent calls at budget / limit): each data frame waits for its
//! room before tonic sees it, and the room is held until the call is answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use hyper::body::{Bytes, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use crate::http::extract::BodyBudget;

/// Charged in the budget's units, so that many small frames cost what their bytes do.
const UNIT: usize = 1024;

/// What a call holds of the budget; shared by the body and the call that answers it.
#[derive(Default)]
pub struct Held {
    room: Option<OwnedSemaphorePermit>,
    bytes: usize,
    /// A frame is waiting for room: the budget is full.
    waiting: bool,
}

#[derive(Clone, Default)]
pub struct Holding(Arc<Mutex<Held>>);

impl Holding {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives the room back, once the call is answered (tonic may still hold the body).
    pub fn release(&self) {
        self.lock().room = None;
    }

    /// Whether the message is held up by a full budget (rather than by its client).
    pub fn waiting(&self) -> bool {
        self.lock().waiting
    }
}

type Reserve = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

/// `inner`, whose data frames are let through once the budget has room for them.
pub struct Charged {
    inner: Body,
    budget: BodyBudget,
    holding: Holding,
    arrived: usize,
    pending: Option<(Frame<Bytes>, usize, Reserve)>,
}

impl Charged {
    pub fn new(inner: Body, budget: BodyBudget, holding: Holding) -> Self {
        Self { inner, budget, holding, arrived: 0, pending: None }
    }
}

impl hyper::body::Body for Charged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some((_, _, reserve)) = &mut this.pending {
            let room = ready!(reserve.as_mut().poll(cx));
            let (frame, bytes, _) = this.pending.take().expect("pending was just polled");
            let mut held = this.holding.lock();
            held.waiting = false;
            held.bytes += bytes;
            match &mut held.room {
                Some(all) => all.merge(room),
                None => held.room = Some(room),
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let Some(data) = frame.data_ref() else { return Poll::Ready(Some(Ok(frame))) };
        this.arrived += data.len();
        // Up to the whole budget: a message is never larger (the configuration checks
        // body_limit_bytes <= max_body_bytes_in_flight), so this only rounds.
        let owed = this.arrived.next_multiple_of(UNIT).min(this.budget.total_bytes());
        let held = this.holding.lock().bytes;
        if owed <= held {
            return Poll::Ready(Some(Ok(frame)));
        }
        let (budget, bytes) = (this.budget.clone(), owed - held);
        this.holding.lock().waiting = true;
        this.pending = Some((frame, bytes, Box::pin(async move { budget.reserve(bytes).await })));
        // Polled at once, so that the waker is registered (or the room taken).
        Pin::new(this).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_are_charged_as_they_arrive_and_held_until_the_call_lets_go() {
        let budget = BodyBudget::new(4 * UNIT);
        let holding = Holding::default();
        let body = Body::from(vec![7u8; 2 * UNIT + 1]);
        let bytes = Charged::new(body, budget.clone(), holding.clone()).collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 2 * UNIT + 1);
        assert_eq!(holding.lock().bytes, 3 * UNIT, "rounded up to whole units");
        assert!(!holding.waiting());
        let body_alive = holding.clone();
        // One unit is left: a second body of two units waits, and goes once the first lets go.
        let second = Holding::default();
        let read = Charged::new(Body::from(vec![1u8; 2 * UNIT]), budget.clone(), second.clone()).collect();
        let mut read = Box::pin(read);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), &mut read).await.is_err());
        assert!(second.waiting(), "held up by the budget");
        holding.release();
        assert_eq!(read.await.unwrap().to_bytes().len(), 2 * UNIT);
        assert!(!second.waiting());
        drop(body_alive);
    }
}
