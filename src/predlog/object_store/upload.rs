//! The uploader thread: closed parts, oldest first, gzipped and put under the prefix; a part
//! is deleted from the spool once its object is stored.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use metrics::Counter;
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{DynObjectStore, ObjectStoreExt, PutPayload};

use super::spool::{closed_parts, object_name};
use super::Shared;
use crate::observe::RateLimited;

/// Longest one upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// When no part is open, how long the uploader sleeps before looking again.
const IDLE: Duration = Duration::from_secs(3600);

pub(super) struct Uploader {
    pub shared: Arc<Shared>,
    pub store: Arc<DynObjectStore>,
    pub prefix: ObjectPath,
    pub ok: Counter,
    pub failed: Counter,
    /// `inferd_prediction_log_sink_errors_total`, which counts every sink's failures.
    pub errors: Counter,
}

impl Uploader {
    pub fn run(self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime for uploads");
        let mut backoff = FIRST_BACKOFF;
        let mut errors = RateLimited::new(Duration::from_secs(5));
        loop {
            let (parts, closing) = self.next_parts();
            if parts.is_empty() {
                return; // Closing, and everything is uploaded.
            }
            let mut failed = false;
            for part in &parts {
                let limit = match closing {
                    Some(by) => UPLOAD_TIMEOUT.min(by.saturating_duration_since(Instant::now())),
                    None => UPLOAD_TIMEOUT,
                };
                if limit.is_zero() {
                    break;
                }
                match runtime.block_on(self.upload(part, limit)) {
                    Ok(bytes) => {
                        if let Err(error) = std::fs::remove_file(part) {
                            tracing::error!(%error, part = %part.display(), "cannot delete an uploaded prediction log part");
                        }
                        self.shared.lock().spool.uploaded(bytes);
                        self.ok.increment(1);
                        backoff = FIRST_BACKOFF;
                    }
                    Err(error) => {
                        self.failed.increment(1);
                        self.errors.increment(1);
                        if let Some(suppressed) = errors.check() {
                            tracing::error!(%error, part = %part.display(), suppressed, "cannot upload a prediction log part; retrying");
                        }
                        failed = true;
                        break;
                    }
                }
            }
            if let Some(by) = closing.filter(|by| Instant::now() >= *by) {
                let left = closed_parts(self.shared.lock().spool.dir()).len();
                if left > 0 {
                    tracing::warn!(
                        parts = left,
                        late_ms = by.elapsed().as_millis() as u64,
                        "prediction log parts not uploaded before exit stay in the spool for the next start"
                    );
                }
                return;
            }
            if failed {
                let state = self.shared.lock();
                let wait = match state.closing {
                    Some(by) => backoff.min(by.saturating_duration_since(Instant::now())),
                    None => backoff,
                };
                drop(self.shared.wake.wait_timeout(state, wait));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Waits until there are closed parts or the server is stopping; closes the open part when
    /// it is due (at once when stopping).
    fn next_parts(&self) -> (Vec<std::path::PathBuf>, Option<Instant>) {
        let mut state = self.shared.lock();
        loop {
            let closing = state.closing;
            state.spool.close_if_due(closing.is_some());
            state.spool.take_changed();
            let parts = closed_parts(state.spool.dir());
            if !parts.is_empty() || closing.is_some() {
                return (parts, closing);
            }
            let wait = state.spool.due_in().map_or(IDLE, |due| due + Duration::from_millis(10));
            state = self.shared.wake.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Puts one part, gzipped; its size before gzip on success.
    async fn upload(&self, part: &Path, limit: Duration) -> io::Result<u64> {
        let name = object_name(part).ok_or_else(|| io::Error::other("not a part's name"))?;
        let text = std::fs::read(part)?;
        let mut gz = GzEncoder::new(Vec::with_capacity(text.len() / 4), flate2::Compression::default());
        gz.write_all(&text)?;
        let body = gz.finish()?;
        let location = ObjectPath::from_iter(self.prefix.parts().chain(name.split('/').map(PathPart::from)));
        match tokio::time::timeout(limit, self.store.put(&location, PutPayload::from(body))).await {
            Ok(Ok(_)) => Ok(text.len() as u64),
            Ok(Err(error)) => Err(io::Error::other(error)),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the upload took too long")),
        }
    }
}
