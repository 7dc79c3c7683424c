//! Models named by URL: fetched into `[model_store] cache_dir` under `sha256/<hash>`, with
//! what each URL last held (ETag, size, time, hash) in `sources/`, so that a restart or a
//! reload of an unchanged object asks the store for its metadata and fetches nothing, and a
//! pinned hash already cached asks it for nothing at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use metrics::counter;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ModelStoreConfig;
use crate::objects::{connect, Access};
use crate::observe::MODEL_FETCHED_BYTES_TOTAL;

/// What a URL held when it was last fetched.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Record {
    url: String,
    e_tag: Option<String>,
    size: u64,
    last_modified: String,
    sha256: String,
}

impl Record {
    fn describes(&self, url: &str, meta: &ObjectMeta) -> bool {
        self.url == url
            && self.size == meta.size
            && self.e_tag == meta.e_tag
            && self.last_modified == meta.last_modified.to_rfc3339()
    }
}

/// The local copy of the model at `url`, fetched if the cache does not hold what the URL now
/// holds; `pin` is the SHA-256 it must have. Blocking: run off the async runtime.
pub fn local_copy(
    url: &str,
    pin: Option<&str>,
    store: &ModelStoreConfig,
    timeout: Duration,
) -> Result<PathBuf, String> {
    let pin = pin.map(str::to_ascii_lowercase);
    let cache = Cache::open(&store.cache_dir).map_err(|e| format!("model cache {}: {e}", store.cache_dir.display()))?;
    if let Some(cached) = pin.as_deref().map(|pin| cache.file(pin)).filter(|p| p.is_file()) {
        tracing::info!(url, file = %cached.display(), fetched_bytes = 0, "model: the pinned file is cached");
        return Ok(cached);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the fetch: {e}"))?;
    runtime.block_on(fetch(url, pin.as_deref(), &cache, store.max_bytes, timeout))
}

async fn fetch(
    url: &str,
    pin: Option<&str>,
    cache: &Cache,
    max_bytes: u64,
    timeout: Duration,
) -> Result<PathBuf, String> {
    let (store, location) = connect(url, Access::Read { timeout }).map_err(|e| e.to_string())?;
    let failed = |e: object_store::Error| format!("{url}: {e}");
    let meta = store.head(&location).await.map_err(failed)?;
    let known = cache.record(url).filter(|r| r.describes(url, &meta) && pin.is_none_or(|pin| pin == r.sha256));
    if let Some(cached) = known.map(|r| cache.file(&r.sha256)).filter(|p| p.is_file()) {
        tracing::info!(url, file = %cached.display(), fetched_bytes = 0, "model: unchanged since fetched");
        return Ok(cached);
    }
    if meta.size > max_bytes {
        return Err(format!("{url}: {} bytes, over model_store.max_bytes ({max_bytes})", meta.size));
    }
    let got = store.get(&location).await.map_err(failed)?;
    let meta = got.meta.clone();
    let mut partial = cache.partial().map_err(|e| format!("model cache: {e}"))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(format!("{url}: more than model_store.max_bytes ({max_bytes}) bytes"));
        }
        hasher.update(&chunk);
        partial.file.write_all(&chunk).map_err(|e| format!("model cache: {e}"))?;
    }
    counter!(MODEL_FETCHED_BYTES_TOTAL).increment(written);
    let sha256 = hex::encode(hasher.finalize());
    if let Some(pin) = pin.filter(|pin| *pin != sha256) {
        return Err(format!("{url}: sha256 mismatch: expected {pin}, got {sha256}"));
    }
    let file = partial.keep(&cache.file(&sha256)).map_err(|e| format!("model cache: {e}"))?;
    let record = Record {
        url: url.to_owned(),
        e_tag: meta.e_tag,
        size: written,
        last_modified: meta.last_modified.to_rfc3339(),
        sha256,
    };
    if let Err(e) = cache.remember(&record) {
        tracing::warn!(url, error = %e, "model cache: what the URL holds was not recorded; the next start fetches it again");
    }
    tracing::info!(url, file = %file.display(), fetched_bytes = written, sha256 = %record.sha256, "model fetched");
    Ok(file)
}

struct Cache {
    dir: PathBuf,
}

impl Cache {
    fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("sha256"))?;
        std::fs::create_dir_all(dir.join("sources"))?;
        Ok(Self { dir: dir.to_owned() })
    }

    fn file(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    fn record_path(&self, url: &str) -> PathBuf {
        self.dir.join("sources").join(format!("{}.json", hex::encode(Sha256::digest(url.as_bytes()))))
    }

    fn record(&self, url: &str) -> Option<Record> {
        let text = std::fs::read(self.record_path(url)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn remember(&self, record: &Record) -> std::io::Result<()> {
        let mut partial = self.partial()?;
        partial.file.write_all(&serde_json::to_vec(record).expect("a record is JSON"))?;
        partial.keep(&self.record_path(&record.url)).map(drop)
    }

    /// A file being written in the cache folder, removed unless kept.
    fn partial(&self) -> std::io::Result<Partial> {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let path = self.dir.join(format!("partial-{}-{nanos}", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Ok(Partial { path, file, kept: false })
    }
}

struct Partial {
    path: PathBuf,
    file: std::fs::File,
    kept: bool,
}

impl Partial {
    /// Made durable, then moved to `to` in one step, so that a file in the cache is whole.
    fn keep(mut self, to: &Path) -> std::io::Result<PathBuf> {
        self.file.sync_all()?;
        std::fs::rename(&self.path, to)?;
        self.kept = true;
        Ok(to.to_owned())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> ModelStoreConfig {
        ModelStoreConfig { cache_dir: dir.join("cache"), max_bytes: 1 << 20 }
    }

    #[test]
    fn a_file_url_is_cached_by_hash_refetched_when_it_changes_and_checked_against_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        std::fs::write(&model, b"first").unwrap();
        let url = format!("file://{}", model.display());
        let store = store(dir.path());
        let first = local_copy(&url, None, &store, Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read(&first).unwrap(), b"first");
        let sha = first.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(sha, hex::encode(Sha256::digest(b"first")));
        // Unchanged: the same file, from the record.
        assert_eq!(local_copy(&url, None, &store, Duration::from_secs(5)).unwrap(), first);
        // Pinned and cached: the store is not asked (the object may even be gone).
        std::fs::remove_file(&model).unwrap();
        assert_eq!(local_copy(&url, Some(&sha.to_uppercase()), &store, Duration::from_secs(5)).unwrap(), first);
        // Changed: fetched again; a pin that does not match is refused, naming both hashes.
        std::fs::write(&model, b"second, longer").unwrap();
        let second = local_copy(&url, None, &store, Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), b"second, longer");
        std::fs::write(&model, b"third").unwrap();
        let err = local_copy(&url, Some(&"0".repeat(64)), &store, Duration::from_secs(5)).unwrap_err();
        assert!(
            err.contains(&format!("expected {}, got {}", "0".repeat(64), hex::encode(Sha256::digest(b"third")))),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&store.cache_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no partial file left behind: {left:?}");
    }

    #[test]
    fn an_object_over_max_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("big.onnx");
        std::fs::write(&model, vec![0u8; 2048]).unwrap();
        let store = ModelStoreConfig { max_bytes: 1024, ..store(dir.path()) };
        let err = local_copy(&format!("file://{}", model.display()), None, &store, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("over model_store.max_bytes (1024)"), "{err}");
    }
}
