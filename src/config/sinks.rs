//! Where the prediction log goes: rolling files, stdout, PostgreSQL or object storage.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError};

/// `DATABASE_URL`: where Heroku Postgres (and most platforms) put the database's address.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// Rolling JSON Lines files in `directory`.
    #[default]
    Files,
    /// One JSON line per record on stdout, with `"log":"prediction"` first, for a log drain.
    Stdout,
    /// Rows of a PostgreSQL table (`[prediction_log.postgres]`).
    Postgres,
    /// Gzipped JSON Lines objects in S3, GCS, Azure Blob or a folder (`[prediction_log.object_store]`),
    /// spooled in `directory` until uploaded.
    ObjectStore,
}

impl std::str::FromStr for SinkKind {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "files" => Ok(Self::Files),
            "stdout" => Ok(Self::Stdout),
            "postgres" => Ok(Self::Postgres),
            "object_store" => Ok(Self::ObjectStore),
            _ => Err(format!("expected files, stdout, postgres or object_store, got '{text}'")),
        }
    }
}

/// When a lossless prediction log lets a request be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acknowledge {
    /// Once its lines are queued for the writer (in memory, bounded by `buffer_requests`):
    /// nothing is lost to a full buffer, a sink outage or a shutdown, but a crash (SIGKILL,
    /// out of memory) loses what is queued.
    #[default]
    Queued,
    /// Once the sink has taken its lines: written to the files or stdout, committed in
    /// PostgreSQL, appended to the upload spool (or kept on disk at shutdown). Costs each
    /// request the writer's gathering interval (5 ms) and the sink's write.
    Written,
}

/// The PostgreSQL sink: rows written in batches by the log's writer, which reconnects with
/// backoff and keeps what it could not write (up to `buffer_bytes`) until it can.
#[derive(Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSinkConfig {
    /// `postgres://user:password@host:port/database?sslmode=require`. Empty: `DATABASE_URL`.
    /// `INFERD_PREDICTION_LOG_URL` overrides it.
    pub url: String,
    /// The table (`schema.table` allowed), created with its index on (model, ts) if missing.
    #[validate(custom(function = "sql_name"))]
    pub table: String,
    /// Most rows in one INSERT.
    #[validate(range(min = 1, max = 100000))]
    pub batch_rows: usize,
    /// A connect or statement taking longer than this, in milliseconds, is abandoned and retried.
    #[validate(range(min = 100, max = 600000))]
    pub timeout_ms: u64,
    /// Bytes of lines that may wait for the database (while it restarts, say); beyond, the
    /// writer takes no more and requests wait, as for a full `buffer_requests`.
    #[validate(range(min = 65536, max = 17179869184u64))]
    pub buffer_bytes: u64,
}

impl Default for PostgresSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            table: "inferd_predictions".into(),
            batch_rows: 1000,
            timeout_ms: 10_000,
            buffer_bytes: 64 << 20,
        }
    }
}

// The URL holds a password.
impl std::fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("url", &if self.url.is_empty() { "" } else { "[redacted]" })
            .field("table", &self.table)
            .field("batch_rows", &self.batch_rows)
            .field("timeout_ms", &self.timeout_ms)
            .field("buffer_bytes", &self.buffer_bytes)
            .finish()
    }
}

/// The object-storage sink: lines are appended to a part file in `directory` (the spool); a
/// part is closed at `part_bytes` or `upload_interval_s` and uploaded gzipped by a thread of
/// its own, which retries failed uploads. Credentials and endpoints come from the providers'
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `GOOGLE_SERVICE_ACCOUNT`,
/// `AZURE_STORAGE_ACCOUNT_NAME`, ...).
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreSinkConfig {
    /// `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` or
    /// `file:///folder`. `INFERD_PREDICTION_LOG_URL` overrides it.
    pub url: String,
    /// A part is uploaded at most this many seconds after its first line.
    #[validate(range(min = 1, max = 86400))]
    pub upload_interval_s: u64,
    /// A part is uploaded when it holds this many bytes (before gzip).
    #[validate(range(min = 4096, max = 4294967296u64))]
    pub part_bytes: u64,
    /// Bytes the spool may hold, parts waiting for upload included; when full, the writer
    /// takes no more and requests wait, as for a full `buffer_requests`.
    #[validate(range(min = 65536, max = 1125899906842624u64))]
    pub spool_max_bytes: u64,
}

impl Default for ObjectStoreSinkConfig {
    fn default() -> Self {
        Self { url: String::new(), upload_interval_s: 60, part_bytes: 16 << 20, spool_max_bytes: 1 << 30 }
    }
}

fn sql_name(name: &str) -> Result<(), ValidationError> {
    if is_sql_name(name) {
        Ok(())
    } else {
        Err(ValidationError::new("sql_name")
            .with_message("must be a table name: letters, digits and _, optionally schema.table".into()))
    }
}

/// `name` or `schema.name`, each an unquoted SQL identifier of at most 63 bytes: safe to put
/// in SQL text as it is.
pub fn is_sql_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() <= 2 && parts.iter().all(|p| part(p))
}
