//! Loading files off the runtime with a deadline, and saying which file it was stuck on.
//!
//! A file on a hung mount (or a FIFO nobody writes) does not fail a read: the read never
//! returns, and no timeout can interrupt a blocking system call. So the loading runs on a
//! blocking thread that is abandoned when its deadline passes; whoever waited gets an error
//! naming the file that thread was reading, and the process never waits for it again
//! (`main` stops the runtime without waiting for blocked threads).
//!
//! The file is noted by the readers themselves ([`note`]) in a thread-local slot that
//! [`off_runtime`] sets up for its thread: loading is sequential on that one thread, and this
//! keeps a "where am I" argument out of every loading function's signature.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Slot = Arc<Mutex<Option<PathBuf>>>;

thread_local! {
    static READING: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// Notes that this thread is about to read `path` (a no-op outside [`off_runtime`]).
pub fn note(path: &Path) {
    READING.with(|slot| {
        if let Some(slot) = &*slot.borrow() {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.to_owned());
        }
    });
}

/// Work that did not finish within its deadline; its thread goes on, abandoned.
#[derive(Debug, Clone)]
pub struct Stuck {
    /// The file it was reading when the deadline passed, when it had noted one.
    pub file: Option<PathBuf>,
    pub after: Duration,
    abandoned: Abandoned,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "still reading {} after {} ms", file.display(), self.after.as_millis()),
            None => write!(f, "still loading after {} ms", self.after.as_millis()),
        }
    }
}

impl Stuck {
    /// The abandoned work, to tell whether it has ended since.
    pub fn abandoned(&self) -> Abandoned {
        self.abandoned.clone()
    }
}

/// Work given up on: whether it has finished yet, and what it is reading now.
#[derive(Debug, Clone)]
pub struct Abandoned {
    slot: Slot,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl Abandoned {
    pub fn finished(&self) -> bool {
        self.finished.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn file(&self) -> Option<PathBuf> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why [`off_runtime`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum NotDone {
    #[error("{0}")]
    Stuck(Stuck),
    #[error("it panicked: {0}")]
    Panicked(String),
}

/// Runs `work` on a blocking thread and waits for it at most `within`.
pub async fn off_runtime<T: Send + 'static>(
    within: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NotDone> {
    let abandoned = Abandoned { slot: Slot::default(), finished: Arc::default() };
    let (slot, finished) = (abandoned.slot.clone(), abandoned.finished.clone());
    let task = tokio::task::spawn_blocking(move || {
        READING.with(|reading| *reading.borrow_mut() = Some(slot));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
        READING.with(|reading| *reading.borrow_mut() = None);
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    });
    let panicked = |payload: Box<dyn std::any::Any + Send>| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()));
        NotDone::Panicked(message.unwrap_or_else(|| "unknown panic".into()))
    };
    match tokio::time::timeout(within, task).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(panic))) => Err(panicked(panic)),
        Ok(Err(join)) => Err(NotDone::Panicked(join.to_string())),
        Err(_elapsed) => Err(NotDone::Stuck(Stuck { file: abandoned.file(), after: within, abandoned })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_past_its_deadline_is_abandoned_and_names_the_file_it_was_reading() {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let stuck = off_runtime(Duration::from_millis(50), move || {
            note(Path::new("/models/a.onnx"));
            note(Path::new("/mnt/stuck/runtime.toml"));
            let _ = wait.recv();
        })
        .await
        .unwrap_err();
        let NotDone::Stuck(stuck) = stuck else { panic!("{stuck}") };
        assert_eq!(stuck.file.as_deref(), Some(Path::new("/mnt/stuck/runtime.toml")));
        assert_eq!(stuck.to_string(), "still reading /mnt/stuck/runtime.toml after 50 ms");
        let abandoned = stuck.abandoned();
        assert!(!abandoned.finished());
        release.send(()).unwrap();
        let ended = std::time::Instant::now() + Duration::from_secs(10);
        while !abandoned.finished() {
            assert!(std::time::Instant::now() < ended, "the abandoned work ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(off_runtime(Duration::from_secs(10), || 7).await.unwrap(), 7);
        let panicked = off_runtime(Duration::from_secs(10), || panic!("boom")).await.unwrap_err();
        assert_eq!(panicked.to_string(), "it panicked: boom");
        note(Path::new("/not/tracked"));
    }
}
