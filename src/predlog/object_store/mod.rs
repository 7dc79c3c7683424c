//! The object-storage sink: S3 (and its compatibles), GCS, Azure Blob or a local folder,
//! through the `object_store` crate. The writer appends lines to the local spool (durable
//! once there); a thread of its own uploads closed parts as gzipped JSON Lines, retrying
//! failures with backoff, and at shutdown closes the open part and uploads what it can by the
//! deadline. What is left stays in the spool and is uploaded at the next start.

mod spool;
mod upload;

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use time::OffsetDateTime;

use self::spool::Spool;
use super::sink::{OnFailure, Sink, Written};
use crate::config::PredictionLogConfig;
use crate::observe::{PREDICTION_LOG_SINK_ERRORS_TOTAL, PREDICTION_LOG_SPOOL_BYTES, PREDICTION_LOG_UPLOADS_TOTAL};

/// Lines the writer keeps in memory while the spool is full (or its disk failing).
const HOLD_BYTES: usize = 8 << 20;

pub struct ObjectStore {
    shared: Arc<Shared>,
    uploader: Option<JoinHandle<()>>,
    url: String,
    /// The close deadline, passed on to the uploader once the writer has written its last.
    by: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the uploader: a part was closed, or the server is stopping.
    wake: Condvar,
}

struct State {
    spool: Spool,
    /// Set at shutdown: upload everything by then.
    closing: Option<Instant>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ObjectStore {
    pub fn open(config: &PredictionLogConfig) -> io::Result<Self> {
        let os = &config.object_store;
        let (store, prefix) = crate::objects::connect(&os.url, crate::objects::Access::Bucket)?;
        let spool = Spool::open(
            &config.directory,
            os.part_bytes,
            os.spool_max_bytes,
            Duration::from_secs(os.upload_interval_s),
            gauge!(PREDICTION_LOG_SPOOL_BYTES),
        )?;
        let shared = Arc::new(Shared { state: Mutex::new(State { spool, closing: None }), wake: Condvar::new() });
        let uploader = upload::Uploader {
            shared: shared.clone(),
            store,
            prefix,
            ok: counter!(PREDICTION_LOG_UPLOADS_TOTAL, "outcome" => "ok"),
            failed: counter!(PREDICTION_LOG_UPLOADS_TOTAL, "outcome" => "error"),
            errors: counter!(PREDICTION_LOG_SINK_ERRORS_TOTAL),
        };
        let uploader =
            std::thread::Builder::new().name("prediction-log-upload".into()).spawn(move || uploader.run())?;
        Ok(Self { shared, uploader: Some(uploader), url: os.url.clone(), by: None })
    }
}

impl Sink for ObjectStore {
    fn write(&mut self, buf: &[u8], ends: &[usize], now: OffsetDateTime) -> Written {
        let mut state = self.shared.lock();
        let done = state.spool.append(buf, ends, now);
        if state.spool.take_changed() {
            self.shared.wake.notify_one();
        }
        done
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    fn on_failure(&self) -> OnFailure {
        OnFailure::Hold { max_bytes: HOLD_BYTES }
    }

    fn closing(&mut self, by: Instant) {
        self.by = Some(by);
    }

    fn finish(&mut self) {
        self.shared.lock().closing = Some(self.by.unwrap_or_else(Instant::now));
        self.shared.wake.notify_one();
        if let Some(uploader) = self.uploader.take() {
            if uploader.join().is_err() {
                tracing::error!("the prediction log uploader panicked");
            }
        }
    }
}
