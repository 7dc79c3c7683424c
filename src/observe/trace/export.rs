//! The export side of traces: a bounded queue of finished spans and the thread that sends them
//! in batches through the OTLP exporter.
//!
//! A request thread pushes a span under a short lock and wakes the export thread only when a
//! batch is full: a span that finds the queue full is dropped and counted, never waited for.
//! Waking the export thread once per span (as a channel does) cost more than the push itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use crate::observe::RateLimited;

/// Spans dropped because the export queue was full (or closed), since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped so far because the export queue was full.
pub fn dropped_spans() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How spans are batched (the `OTEL_BSP_*` settings).
pub struct BatchSettings {
    /// The most spans waiting for export; more are dropped.
    pub queue: usize,
    /// The most spans in one export, and how many wake the export thread.
    pub batch: usize,
    /// The longest a span waits for its batch.
    pub delay: Duration,
}

/// The bounded queue between the threads that end spans and the export thread.
#[derive(Debug)]
pub struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
    batch: usize,
}

#[derive(Debug)]
struct Pending {
    spans: Vec<SpanData>,
    /// Set by [`Queue::shut_down`]: export what is queued, answer here, and stop.
    shutdown: Option<mpsc::Sender<OTelSdkResult>>,
    /// No span is taken any more.
    closed: bool,
}

impl Queue {
    /// Starts the export thread; spans pushed to the queue returned are exported by `exporter`.
    pub fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> std::io::Result<Arc<Self>> {
        let queue = Arc::new(Self {
            pending: Mutex::new(Pending { spans: Vec::new(), shutdown: None, closed: false }),
            wake: Condvar::new(),
            capacity: settings.queue.max(1),
            batch: settings.batch.clamp(1, settings.queue.max(1)),
        });
        queue.lock().spans.reserve_exact(queue.batch);
        let exporting = queue.clone();
        std::thread::Builder::new()
            .name("trace-export".into())
            .spawn(move || export_loop(exporter, &exporting, settings.delay))?;
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a finished span, or drops and counts it when the queue is full or closed.
    pub fn push(&self, span: SpanData) {
        let mut pending = self.lock();
        if pending.closed || pending.spans.len() >= self.capacity {
            drop(pending);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.spans.push(span);
        let full = pending.spans.len() == self.batch;
        drop(pending);
        if full {
            self.wake.notify_one();
        }
    }

    /// Closes the queue and waits at most `within` for the export thread to send what it held;
    /// returns whether it all went.
    pub fn shut_down(&self, within: Duration) -> OTelSdkResult {
        let (reply, replied) = mpsc::channel();
        {
            let mut pending = self.lock();
            if pending.closed {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            pending.closed = true;
            pending.shutdown = Some(reply);
        }
        self.wake.notify_one();
        replied.recv_timeout(within).unwrap_or(Err(OTelSdkError::Timeout(within)))
    }
}

/// The export thread: sends a batch when one is full or `delay` after the last send, and all
/// that is queued at shutdown. The exporter's HTTP client is a blocking one, so its futures
/// complete on this thread.
fn export_loop<E: SpanExporter>(mut exporter: E, queue: &Queue, delay: Duration) {
    let mut failures = RateLimited::new(Duration::from_secs(10));
    let mut export = |exporter: &E, spans: Vec<SpanData>| -> OTelSdkResult {
        let n = spans.len();
        let result = futures::executor::block_on(exporter.export(spans));
        if let Err(e) = &result {
            // The SDK's own logs are off (its `internal-logs` feature): a collector that is
            // down is said here, at most every 10 s.
            if let Some(suppressed) = failures.check() {
                tracing::warn!(error = %e, spans = n, suppressed, "trace spans not exported");
            }
        }
        result
    };
    let mut next = Instant::now() + delay;
    let mut spare = Vec::new();
    loop {
        if spare.capacity() == 0 {
            spare.reserve_exact(queue.batch);
        }
        let (spans, shutdown) = {
            let mut pending = queue.lock();
            loop {
                let now = Instant::now();
                if pending.shutdown.is_some() || pending.spans.len() >= queue.batch || now >= next {
                    break;
                }
                pending = queue.wake.wait_timeout(pending, next - now).unwrap_or_else(PoisonError::into_inner).0;
            }
            let shutdown = pending.shutdown.take();
            (take(&mut pending.spans, &mut spare, queue.batch), shutdown)
        };
        // A failed export is not retried, so that a collector that is down cannot grow the
        // queue.
        let mut result = match spans.is_empty() {
            true => Ok(()),
            false => export(&exporter, spans),
        };
        next = Instant::now() + delay;
        if let Some(reply) = shutdown {
            // The queue is closed: what it holds now is all there will be.
            loop {
                let spans = take(&mut queue.lock().spans, &mut spare, queue.batch);
                if spans.is_empty() {
                    break;
                }
                result = result.and(export(&exporter, spans));
            }
            let _ = exporter.shutdown();
            let _ = reply.send(result);
            return;
        }
    }
}

/// The first `n` spans of `spans`: all of them when they are no more, in exchange for `spare`,
/// an empty vector with room for `n`, so that the queue does not grow span by span (copying
/// them as it grows) and nothing is allocated under its lock.
fn take(spans: &mut Vec<SpanData>, spare: &mut Vec<SpanData>, n: usize) -> Vec<SpanData> {
    if spans.is_empty() {
        return Vec::new();
    }
    if spans.len() > n {
        return spans.drain(..n).collect();
    }
    std::mem::swap(spans, spare);
    std::mem::take(spare)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::SystemTime;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// Counts what it exports; its first export waits until the test lets it go.
    #[derive(Debug)]
    struct Held {
        exported: Arc<AtomicUsize>,
        started: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<Option<mpsc::Receiver<()>>>,
    }

    impl SpanExporter for Held {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Some(started) = self.started.lock().unwrap().take() {
                started.send(()).unwrap();
                let release = self.release.lock().unwrap().take().unwrap();
                release.recv().unwrap();
            }
            self.exported.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_without_waiting() {
        let exported = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let exporter = Held {
            exported: exported.clone(),
            started: Mutex::new(Some(started_tx)),
            release: Mutex::new(Some(release_rx)),
        };
        let settings = BatchSettings { queue: 2, batch: 1, delay: Duration::from_secs(3600) };
        let queue = Queue::start(exporter, settings).unwrap();
        queue.push(span());
        // The export thread is now held in its first export, with the queue empty.
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        let before = dropped_spans();
        for _ in 0..4 {
            queue.push(span());
        }
        assert_eq!(dropped_spans() - before, 2, "two queued, two dropped");
        release.send(()).unwrap();
        assert!(queue.shut_down(Duration::from_secs(10)).is_ok());
        assert_eq!(exported.load(Ordering::SeqCst), 3, "the first and the two queued, sent by the shutdown");
        let before = dropped_spans();
        queue.push(span());
        assert_eq!(dropped_spans() - before, 1, "a span after the shutdown is dropped and counted");
        assert!(queue.shut_down(Duration::from_secs(1)).is_err(), "shut down once");
    }

    #[derive(Debug)]
    struct Sizes(mpsc::Sender<usize>);

    impl SpanExporter for Sizes {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.send(batch.len()).unwrap();
            Ok(())
        }
    }

    #[test]
    fn a_full_batch_leaves_at_once_and_a_partial_one_waits() {
        let (sizes, sent) = mpsc::channel();
        let settings = BatchSettings { queue: 100, batch: 3, delay: Duration::from_secs(3600) };
        let queue = Queue::start(Sizes(sizes), settings).unwrap();
        for _ in 0..3 {
            queue.push(span());
        }
        assert_eq!(sent.recv_timeout(Duration::from_secs(10)).unwrap(), 3, "a full batch, at once");
        queue.push(span());
        assert!(sent.recv_timeout(Duration::from_millis(300)).is_err(), "one span waits for its batch");
        assert!(queue.shut_down(Duration::from_secs(10)).is_ok());
        assert_eq!(sent.try_recv().unwrap(), 1, "sent by the shutdown");
    }

    #[test]
    fn a_partial_batch_leaves_after_the_delay() {
        let (sizes, sent) = mpsc::channel();
        let settings = BatchSettings { queue: 100, batch: 3, delay: Duration::from_millis(100) };
        let queue = Queue::start(Sizes(sizes), settings).unwrap();
        queue.push(span());
        assert_eq!(sent.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        assert!(queue.shut_down(Duration::from_secs(10)).is_ok());
    }
}
