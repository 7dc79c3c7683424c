//! Models named by URL (`s3://`, `gs://`, `az://`, `https://`): where their files are cached.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use validator::{Validate, ValidationError};

/// Models whose `path` is a URL are fetched once into a cache folder, each file named by its
/// SHA-256, so that a restart or a reload of an unchanged model fetches nothing. Fetching is
/// bounded by `reload.timeout_ms`, at start as on reload.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelStoreConfig {
    /// Folder of the fetched files (`sha256/<hash>`) and of what each URL last held
    /// (`sources/`); relative paths are resolved against the config file's folder. Nothing is
    /// deleted from it: remove old files by hand when disk matters.
    pub cache_dir: PathBuf,
    /// Largest model file fetched, in bytes: a larger object is refused before it is written.
    #[validate(range(min = 1024, max = 1099511627776u64))]
    pub max_bytes: u64,
}

impl Default for ModelStoreConfig {
    fn default() -> Self {
        Self { cache_dir: PathBuf::from("model-cache"), max_bytes: 8 << 30 }
    }
}

/// The URL a model `path` holds, if it holds one rather than a file name.
pub fn url_of(path: &std::path::Path) -> Option<&str> {
    path.to_str().filter(|p| p.contains("://"))
}

/// 64 hexadecimal digits.
pub fn validate_sha256(text: &str) -> Result<(), ValidationError> {
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ValidationError::new("sha256").with_message("must be 64 hexadecimal digits (a SHA-256)".into()))
    }
}
