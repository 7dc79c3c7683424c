//! The writer thread: gathers queued lines, serialises them and writes them in chunks, keeping
//! those whose write failed for a bounded retry.

use std::time::{Duration, Instant};

use metrics::Counter;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use std::collections::VecDeque;
use std::sync::Arc;

use super::health::Health;
use super::sink::{OnFailure, Sink};
use super::{Message, Record};
use crate::model::views::{RowInputs, RowOutputs};
use crate::observe::format::{float, json_str, uint, utc_rfc3339};
use crate::observe::millis;
use crate::observe::RateLimited;

/// Bytes gathered before a write even when more lines are waiting.
const WRITE_CHUNK: usize = 1 << 20;
/// How long the writer lets lines gather between writes while requests keep coming.
const GATHER: Duration = Duration::from_millis(5);
// Lines whose write failed (a full disk, say) are kept and retried, every `RETRY_EVERY`, for
// `RETRY_FOR` or until `RETRY_BYTES` are waiting; then they are dropped and counted as
// `write_error`. Lossless mode promises that no line is lost for lack of buffer, not that a
// broken disk never costs lines: the writer keeps taking lines meanwhile (requests do not
// wait on the disk), so holding failed lines longer would only grow memory.
const RETRY_FOR: Duration = Duration::from_secs(1);
const RETRY_EVERY: Duration = Duration::from_millis(50);
const RETRY_BYTES: usize = 8 * WRITE_CHUNK;
/// At most one "cannot write" line per this interval; the next one counts those held back.
const ERROR_EVERY: Duration = Duration::from_secs(5);

pub(super) struct Writer {
    sink: Box<dyn Sink>,
    on_failure: OnFailure,
    redact: Vec<String>,
    buf: Vec<u8>,
    /// What every line of the record being taken starts with, up to its `instance`.
    head: Vec<u8>,
    /// Where each line in `buf` ends.
    ends: Vec<usize>,
    /// Records waiting to hear that their lines were taken: the number of lines in `buf` up to
    /// and including the record's last, oldest first.
    acks: VecDeque<(usize, oneshot::Sender<()>)>,
    /// When the lines in `buf` first failed to be written.
    failing_since: Option<Instant>,
    /// A write failed since the last one that succeeded.
    broken: bool,
    errors: RateLimited,
    counters: Counters,
    health: Arc<Health>,
}

/// `written` counts the lines that reached the files; `write_errors` those given up on.
pub(super) struct Counters {
    pub written: Counter,
    pub write_errors: Counter,
}

impl Writer {
    pub(super) fn new(sink: Box<dyn Sink>, redact: Vec<String>, counters: Counters, health: Arc<Health>) -> Self {
        Self {
            on_failure: sink.on_failure(),
            sink,
            redact,
            buf: Vec::with_capacity(WRITE_CHUNK),
            head: Vec::with_capacity(256),
            ends: Vec::new(),
            acks: VecDeque::new(),
            failing_since: None,
            broken: false,
            errors: RateLimited::new(ERROR_EVERY),
            counters,
            health,
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let half = rx.max_capacity().div_ceil(2);
        // Parked while idle; once a request arrives, it wakes every `GATHER` and takes all that
        // has queued, so that under load handlers do not pay a thread wake-up per request.
        // A buffer at least half full is drained again at once. Lines that failed to be
        // written keep it polling, to retry them, instead of parking; a sink that holds
        // failed lines takes no more once it holds its most.
        self.sink.start();
        let mut closing = None;
        loop {
            let first = if self.buf.is_empty() {
                rx.blocking_recv()
            } else {
                std::thread::sleep(RETRY_EVERY);
                if self.full() {
                    self.flush();
                    continue;
                }
                match rx.try_recv() {
                    Ok(message) => Some(message),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.flush();
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(first) = first else { break };
            closing = self.take(first);
            let mut taken = 1;
            while closing.is_none() && taken > 0 {
                if taken < half {
                    std::thread::sleep(GATHER);
                }
                taken = 0;
                while !self.full() {
                    let Ok(message) = rx.try_recv() else { break };
                    taken += 1;
                    closing = self.take(message);
                    if closing.is_some() {
                        break;
                    }
                    if self.buf.len() >= WRITE_CHUNK {
                        self.flush();
                    }
                }
                self.flush();
            }
            self.flush();
            if closing.is_some() {
                break;
            }
        }
        self.close(closing.unwrap_or_else(Instant::now));
    }

    /// Whether a sink that holds failed lines holds its most: then nothing more is taken.
    fn full(&self) -> bool {
        matches!(self.on_failure, OnFailure::Hold { max_bytes } if self.buf.len() >= max_bytes)
    }

    /// Retries what is left until it is written or given up on (after `RETRY_FOR` at most),
    /// or, for a sink that holds lines, until `by`; then spills what remains for the next start.
    fn close(&mut self, by: Instant) {
        self.sink.closing(by);
        while !self.buf.is_empty() {
            if matches!(self.on_failure, OnFailure::Hold { .. }) && Instant::now() >= by {
                break;
            }
            self.flush();
            if !self.buf.is_empty() {
                std::thread::sleep(RETRY_EVERY);
            }
        }
        let left = self.ends.len();
        if left > 0 {
            match self.sink.spill(&self.buf, &self.ends) {
                Ok(true) => {
                    self.acknowledge(left);
                    tracing::warn!(lines = left, sink = %self.sink.describe(), "prediction log lines not sent before exit are kept for the next start");
                    self.health.settled(left as u64);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, lines = left, "cannot keep the prediction log lines not sent before exit")
                }
            }
        }
        self.sink.finish();
    }

    /// Adds a record's lines to the buffer; on `Close`, its deadline.
    fn take(&mut self, message: Message) -> Option<Instant> {
        let mut record = match message {
            Message::Record(record) => record,
            Message::Close { by } => return Some(by),
        };
        self.start_record(&record);
        let mut sampled = record.sampled.as_deref().map(|s| s.iter().copied().peekable());
        let mut index = 0;
        for (slice, part) in &record.slices {
            for row in slice.rows.clone() {
                let instance = index;
                index += 1;
                if let Some(sampled) = &mut sampled {
                    if sampled.next_if_eq(&instance).is_none() {
                        continue;
                    }
                }
                self.line(&record, instance, &slice.batch, row, part);
            }
        }
        if let Some(ack) = record.ack.take() {
            self.acks.push_back((self.ends.len(), ack));
        }
        None
    }

    /// The first `lines` lines of `buf` are taken (or kept on disk): their records are told.
    fn acknowledge(&mut self, lines: usize) {
        while self.acks.front().is_some_and(|(upto, _)| *upto <= lines) {
            let (_, ack) = self.acks.pop_front().expect("checked above");
            let _ = ack.send(());
        }
        self.acks.iter_mut().for_each(|(upto, _)| *upto -= lines);
    }

    /// The fields every line of `record` shares, written once into `head`. The line's fields
    /// and their order: `ts`, `request_id`, `principal` (when known), `trace_id` (when traced),
    /// `model`, `version`, `instance`, `inputs`, `outputs`, `batch_size`, `queue_ms`,
    /// `inference_ms`.
    fn start_record(&mut self, record: &Record) {
        let head = &mut self.head;
        head.clear();
        head.extend_from_slice(self.sink.line_start());
        head.extend_from_slice(br#""ts":""#);
        utc_rfc3339(head, record.at);
        head.extend_from_slice(br#"","request_id":"#);
        json_str(head, &record.request_id);
        if let Some(principal) = &record.principal {
            head.extend_from_slice(br#","principal":"#);
            json_str(head, principal);
        }
        if let Some(trace_id) = &record.trace_id {
            head.extend_from_slice(br#","trace_id":"#);
            json_str(head, trace_id);
        }
        head.extend_from_slice(br#","model":"#);
        json_str(head, &record.spec.name);
        head.extend_from_slice(br#","version":"#);
        json_str(head, &record.spec.version);
        head.extend_from_slice(br#","instance":"#);
    }

    /// One line, written by hand around the row's inputs and outputs (serialised by the
    /// model's views): a derived `Serialize` escaped and formatted every key and shared value
    /// again for each line.
    fn line(
        &mut self,
        record: &Record,
        instance: usize,
        batch: &crate::tensor::rows::Batch,
        row: usize,
        part: &crate::batch::Part,
    ) {
        let spec = &*record.spec;
        let buf = &mut self.buf;
        buf.extend_from_slice(&self.head);
        uint(buf, instance as u64);
        buf.extend_from_slice(br#","inputs":"#);
        let inputs = RowInputs { spec, batch, row, redact: &self.redact };
        serde_json::to_writer(&mut *buf, &inputs).expect("JSON values serialise");
        buf.extend_from_slice(br#","outputs":"#);
        let outputs = RowOutputs { spec, batch, row, redact: &self.redact };
        serde_json::to_writer(&mut *buf, &outputs).expect("JSON values serialise");
        buf.extend_from_slice(br#","batch_size":"#);
        uint(buf, part.batch_rows as u64);
        buf.extend_from_slice(br#","queue_ms":"#);
        float(buf, millis(part.queue));
        buf.extend_from_slice(br#","inference_ms":"#);
        float(buf, millis(part.inference));
        buf.extend_from_slice(b"}\n");
        self.ends.push(buf.len());
    }

    /// Writes what `buf` holds; what fails stays there to be retried, until given up on.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // A write to a hung disk or mount does not fail, it never returns: the rest of the
        // server watches how long this call has been going (see `Health`). For a sink that
        // holds failed lines, the watch runs from the first failure to the next success.
        let hold = matches!(self.on_failure, OnFailure::Hold { .. });
        if !(hold && self.failing_since.is_some()) {
            self.health.busy();
        }
        let done = self.sink.write(&self.buf, &self.ends, OffsetDateTime::now_utc());
        if done.error.is_none() || !hold {
            self.health.idle();
        }
        self.counters.written.increment(done.lines as u64);
        self.health.settled(done.lines as u64);
        self.acknowledge(done.lines);
        self.buf.drain(..done.bytes);
        self.ends.drain(..done.lines);
        self.ends.iter_mut().for_each(|end| *end -= done.bytes);
        let Some(error) = done.error else {
            self.failing_since = None;
            if std::mem::take(&mut self.broken) {
                tracing::info!(sink = %self.sink.describe(), "the prediction log is written again");
            }
            return;
        };
        self.broken = true;
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        let waiting = self.ends.len();
        let give_up = now.duration_since(since) >= RETRY_FOR || self.buf.len() >= RETRY_BYTES;
        let dropped = if give_up && !hold {
            self.counters.write_errors.increment(waiting as u64);
            self.health.settled(waiting as u64);
            self.buf.clear();
            self.ends.clear();
            // Their requests are refused rather than answered.
            self.acks.clear();
            // The next lines get their own `RETRY_FOR`.
            self.failing_since = None;
            waiting
        } else {
            0
        };
        if let Some(suppressed) = self.errors.check_at(now) {
            let sink = self.sink.describe();
            tracing::error!(%error, %sink, waiting = waiting - dropped, dropped, suppressed, "cannot write the prediction log");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::predlog::sink::Written;

    /// A sink that fails while `down` is set, and records what it took and what was spilled.
    #[derive(Default)]
    struct Flaky {
        down: Arc<Mutex<bool>>,
        taken: Arc<Mutex<Vec<u8>>>,
        spilled: Arc<Mutex<Vec<u8>>>,
    }

    impl Sink for Flaky {
        fn write(&mut self, buf: &[u8], ends: &[usize], _now: OffsetDateTime) -> Written {
            if *self.down.lock().unwrap() {
                return Written::failed(std::io::Error::other("down"));
            }
            let end = ends.last().copied().unwrap_or(0);
            self.taken.lock().unwrap().extend_from_slice(&buf[..end]);
            Written { lines: ends.len(), bytes: end, error: None }
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn on_failure(&self) -> OnFailure {
            OnFailure::Hold { max_bytes: 16 }
        }
        fn spill(&mut self, buf: &[u8], ends: &[usize]) -> std::io::Result<bool> {
            self.spilled.lock().unwrap().extend_from_slice(&buf[..*ends.last().unwrap()]);
            Ok(true)
        }
    }

    fn writer(sink: Flaky) -> (Writer, Arc<Health>) {
        let health = Arc::new(Health::new(Duration::from_millis(10)));
        let counters = Counters { written: Counter::noop(), write_errors: Counter::noop() };
        (Writer::new(Box::new(sink), Vec::new(), counters, health.clone()), health)
    }

    fn push(writer: &mut Writer, line: &[u8]) {
        writer.buf.extend_from_slice(line);
        writer.ends.push(writer.buf.len());
        writer.health.queued(1);
    }

    #[test]
    fn a_sink_that_holds_keeps_failed_lines_stalls_when_full_and_delivers_once_back() {
        let sink = Flaky::default();
        let (down, taken) = (sink.down.clone(), sink.taken.clone());
        *down.lock().unwrap() = true;
        let (mut writer, health) = writer(sink);
        push(&mut writer, b"{\"a\":1}\n");
        let (ack, mut acked) = oneshot::channel();
        writer.acks.push_back((writer.ends.len(), ack));
        writer.flush();
        assert_eq!(writer.ends.len(), 1, "kept, not dropped");
        assert!(acked.try_recv().is_err(), "not acknowledged before it is written");
        assert!(!writer.full());
        push(&mut writer, b"{\"a\":2}\n");
        assert!(writer.full(), "16 bytes held: no more lines are taken");
        std::thread::sleep(Duration::from_millis(20));
        writer.flush();
        assert!(health.stalled(), "failing for longer than stall_ms is a stall");
        *down.lock().unwrap() = false;
        writer.flush();
        assert!(!health.stalled() && writer.buf.is_empty());
        assert_eq!(acked.try_recv(), Ok(()), "acknowledged once written");
        assert_eq!(&taken.lock().unwrap()[..], b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(health.pending_lines(), 0);
    }

    #[test]
    fn lines_a_holding_sink_cannot_take_by_the_close_deadline_are_spilled() {
        let sink = Flaky::default();
        let (down, spilled) = (sink.down.clone(), sink.spilled.clone());
        *down.lock().unwrap() = true;
        let (mut writer, health) = writer(sink);
        push(&mut writer, b"{\"a\":1}\n");
        writer.close(Instant::now());
        assert_eq!(&spilled.lock().unwrap()[..], b"{\"a\":1}\n");
        assert_eq!(health.pending_lines(), 0, "spilled lines are settled");
    }
}
