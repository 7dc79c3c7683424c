//! The service's typed configuration, layered: `runtime.toml` < environment < command line.

pub mod args;
mod auth;
pub mod named;
mod observe;
pub mod reference;
mod sinks;
mod store;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::error::clip;
use args::ServeArgs;
pub use auth::{
    parse_env_keys, ApiKeyConfig, AuthConfig, CorsConfig, JwtConfig, RateLimitConfig, API_KEYS_ENV, JWT_SECRET_ENV,
    SCOPES,
};
pub use observe::{LogFormat, LoggingConfig, MetricsConfig, PredictionLogConfig, Rotation, Secret};
pub use sinks::{is_sql_name, Acknowledge, ObjectStoreSinkConfig, PostgresSinkConfig, SinkKind, DATABASE_URL_ENV};
pub use store::{url_of, ModelStoreConfig};

/// Where the `/metrics` bearer token comes from; never the file.
pub const METRICS_TOKEN_ENV: &str = "INFERD_METRICS_TOKEN";
/// The shortest HS256 secret accepted: the hash's output size (RFC 7518, section 3.2).
const MIN_JWT_SECRET_BYTES: usize = 32;
/// The smallest share of `prediction_log.max_bytes` one file may get.
const MIN_FILE_BYTES: u64 = 1024;

/// Everything the service needs to start; built once by [`Config::load`] and passed by reference.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    #[validate(nested)]
    pub server: ServerConfig,
    #[serde(default)]
    #[validate(nested)]
    pub batching: BatchingConfig,
    #[serde(default)]
    #[validate(nested)]
    pub inference: InferenceConfig,
    #[serde(default)]
    #[validate(nested)]
    pub logging: LoggingConfig,
    #[serde(default)]
    #[validate(nested)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    #[validate(nested)]
    pub prediction_log: PredictionLogConfig,
    #[serde(default)]
    #[validate(nested)]
    pub auth: AuthConfig,
    #[validate(nested)]
    pub cors: Option<CorsConfig>,
    #[serde(default)]
    #[validate(nested)]
    pub reload: ReloadConfig,
    #[serde(default)]
    #[validate(nested)]
    pub model_store: ModelStoreConfig,
    #[serde(default)]
    #[validate(nested)]
    pub models: Vec<ModelConfig>,
    /// The file and overrides this was loaded from, read again on reload; `None` for a
    /// config built in memory (which cannot be reloaded).
    #[serde(skip)]
    pub source: Option<ServeArgs>,
}

/// The HTTP listener: address, limits on requests and connections, deadlines, shutdown.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind. `0.0.0.0` to accept connections from other hosts (PaaS, Docker); the
    /// committed `runtime.toml` sets it.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one. The platform's `PORT` overrides it.
    pub port: u16,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[validate(range(min = 64))]
    pub body_limit_bytes: usize,
    /// Most instances one prediction request may carry (a `/v2` tensor's rows count as
    /// instances); more get 422 (400 on `/v2`). At most `batching.queue_capacity_rows`.
    #[validate(range(min = 1))]
    pub max_instances_per_request: usize,
    /// On SIGTERM/SIGINT, how long accepted requests may take to finish before the process exits.
    #[validate(range(min = 1, max = 3600))]
    pub shutdown_grace_seconds: u64,
    /// Longest a prediction may take from its headers to its answer, in milliseconds: reading
    /// the body (then 408), waiting in the queue and running (then 504). Clients may ask for less.
    #[validate(range(min = 1, max = 3600000))]
    pub request_timeout_ms: u64,
    /// Time a client has to send a request's headers, in milliseconds, counted from the
    /// connection's start or the end of the previous response; so it is also how long an idle
    /// keep-alive connection stays open, and an HTTP/2 connection with no request in progress
    /// (then sent GOAWAY). An HTTP/2 client that has sent nothing for this long is pinged.
    #[validate(range(min = 100, max = 3600000))]
    pub header_read_timeout_ms: u64,
    /// Connections open at once (per listener); more wait in the kernel's accept queue. Lowered
    /// at start to what the open-files limit allows (less 128 descriptors kept for files).
    #[validate(range(min = 1, max = 1000000))]
    pub max_connections: usize,
    /// A client that takes none of its response for this many milliseconds is disconnected, and
    /// so is an HTTP/2 client that answers no ping in this time.
    #[validate(range(min = 100, max = 3600000))]
    pub write_timeout_ms: u64,
    /// Request bodies held at once, from their first byte read to the end of their request,
    /// may hold at most this many bytes in all (each counts as its `Content-Length`, or
    /// `body_limit_bytes` when chunked); a request that finds no room waits for it until its
    /// deadline, then gets 503 `overloaded`. At least `body_limit_bytes`.
    #[validate(range(min = 65536))]
    pub max_body_bytes_in_flight: usize,
    /// Largest request head (request line and headers), in bytes; a larger one gets 431 with no
    /// body (over HTTP/2, where each header counts 32 bytes more, on its stream alone, and a gRPC
    /// call gets RESOURCE_EXHAUSTED). Each connection's read buffer is held to it, so it is most
    /// of what an open connection costs.
    #[validate(range(min = 8192, max = 1048576))]
    pub max_header_bytes: usize,
    /// How the listener stops completing new TCP handshakes at shutdown, before it drains its
    /// accept queue, so that a late client is refused rather than reset.
    pub drain_gate: DrainGate,
    /// When `/ready` says ready: `all` configured models loaded with a working session (the
    /// default), or `any` one of them.
    pub ready_when: ReadyWhen,
}

/// How the listener is shut to new handshakes at shutdown, so that a late client is refused
/// rather than accepted by the kernel and then reset when the listener closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrainGate {
    /// A socket filter, else (without `CAP_NET_ADMIN`, on kernels that ask for it) the minimum TTL.
    #[default]
    Auto,
    /// A socket filter that drops new SYNs.
    SocketFilter,
    /// `IP_MINTTL` (and IPv6's minimum hop count) at 255, which any user may set: SYNs sent with
    /// a usual TTL are dropped.
    MinTtl,
    /// No gate: the listener keeps accepting until clients stop coming (at most a second); one
    /// that connects just as it closes is reset.
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReadyWhen {
    #[default]
    All,
    Any,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            body_limit_bytes: 1024 * 1024,
            max_instances_per_request: 1024,
            shutdown_grace_seconds: 25,
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            write_timeout_ms: 10_000,
            max_body_bytes_in_flight: 256 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            drain_gate: DrainGate::Auto,
            ready_when: ReadyWhen::All,
        }
    }
}

impl ServerConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}

/// Reloading without a signal: a watch on the config file and every model, schema and golden
/// file it names (polled, so that it works on mounted volumes whose files are swapped by
/// symlink, as Kubernetes ConfigMaps are).
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when a watched file changes (its size, time or identity).
    pub watch: bool,
    /// How often the files are looked at, in milliseconds.
    #[validate(range(min = 100, max = 3600000))]
    pub poll_ms: u64,
    /// A change is acted on once the files have stayed the same this long, in milliseconds
    /// (a copy in progress, several files updated one after another).
    #[validate(range(max = 3600000))]
    pub debounce_ms: u64,
    /// Longest a reload (or a repository load) may take to read and load its files, in
    /// milliseconds; past it, it fails with 409 `reload_failed` naming the file it was reading,
    /// and the models served stay as they were. Also bounds reading the models at start.
    #[validate(range(min = 100, max = 86400000))]
    pub timeout_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: false, poll_ms: 1000, debounce_ms: 2000, timeout_ms: 120_000 }
    }
}

/// Dynamic batching, per model version: a queue of rows that its inference threads take in
/// batches. No timer by default: a free thread takes what is queued at once.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Most rows in one ONNX Runtime call; larger requests are split and reassembled in order.
    #[validate(range(min = 1, max = 65536))]
    pub max_batch_rows: usize,
    /// How long a free inference thread may wait for a fuller batch, in milliseconds. 0 (the
    /// default) never waits: rows that arrive while the model is busy form the next batch.
    #[validate(range(max = 10000))]
    pub max_delay_ms: u64,
    /// Most rows waiting per model; beyond it requests get 503 with `Retry-After`. At least
    /// `max_batch_rows`; size it to the wait you accept at full speed (32768 rows is about
    /// 0.2 s of the bundled model's work on 2 cores).
    #[validate(range(min = 1))]
    pub queue_capacity_rows: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self { max_batch_rows: 64, max_delay_ms: 0, queue_capacity_rows: 32768 }
    }
}

impl BatchingConfig {
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }
}

/// ONNX Runtime: sessions per model version, threads per session, and where the library is.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Inference threads per model, each owning one ONNX Runtime session.
    #[validate(range(min = 1, max = 256))]
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    #[validate(range(min = 1, max = 256))]
    pub intra_op_threads: usize,
    /// Path of `libonnxruntime.so`. When unset it is looked for in `.ort/` under the working
    /// directory, then next to the executable, then in `.ort/` of the checkout when the
    /// executable sits in its `target/<profile>/`; never in the folder it was built in. When it
    /// is nowhere, inferd exits with one line that says how to get it.
    pub ort_library: Option<PathBuf>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { sessions: 1, intra_op_threads: 1, ort_library: None }
    }
}

/// One model version to serve. Entries with the same `name` and different `version`s are
/// versions of one model, each with its own sessions and batcher.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name used in URLs (`/models/{name}/predict`): ASCII letters, digits, `_`, `-` and `.`.
    #[validate(length(min = 1, max = 128), custom(function = "validate_model_name"))]
    pub name: String,
    /// The `.onnx` file, relative to the config file's folder; or its URL: `s3://bucket/key`,
    /// `gs://`, `az://` (credentials, region and endpoint from the provider's environment
    /// variables, as for the prediction log's object store) or `https://` (a plain GET; a
    /// private CA through `SSL_CERT_FILE`). A URL is fetched into `[model_store] cache_dir`
    /// and fetched again only when its object changes (ETag, size and time), checked at start
    /// and on each reload.
    pub path: PathBuf,
    /// The SHA-256 the model file must have (hex): a file or fetched object that differs is
    /// refused, naming both hashes (exit 2 at start, 409 on reload). With a URL it also pins
    /// the content: a cached file of that hash is used without asking the store.
    #[validate(custom(function = "store::validate_sha256"))]
    pub sha256: Option<String>,
    /// JSON Schema of one instance; when absent it is derived from the ONNX inputs (types
    /// only, no ranges or enums).
    pub schema: Option<PathBuf>,
    /// Version reported in responses and used in `/models/{name}/versions/{version}`; the
    /// same characters as `name`.
    #[serde(default = "default_version")]
    #[validate(length(min = 1, max = 64), custom(function = "validate_model_name"))]
    pub version: String,
    /// Serve this entry at `POST /predict`. Exactly one entry may set it; when all entries
    /// share one name, the first is the default without it.
    #[serde(default)]
    pub default: bool,
    /// When several entries share a name, this one answers the routes without a version;
    /// without it, the first entry listed does.
    #[serde(default)]
    pub default_version: bool,
    /// Answer a classifier's probabilities keyed by class (`{"setosa": 0.97, ...}`) instead of
    /// as an array. The output is the one named `probabilities`, else the only float `[N, K]`
    /// output; the classes are `labels` when set, else the names the graph gives them (the
    /// `classlabels_*` attributes of its `ai.onnx.ml` nodes). `/v2` keeps tensors.
    #[serde(default)]
    pub probabilities_by_class: bool,
    /// Class names in column order of the probabilities; they win over the graph's, and the
    /// predicted class (the `label` output) is answered by them too. 1 to 4096 labels of 1 to
    /// 256 characters, all different; only with `probabilities_by_class`.
    #[validate(custom(function = "validate_labels"))]
    pub labels: Option<Vec<String>>,
    /// A golden file: answers the version must give before it serves, checked at start, before
    /// every swap and by `inferd check`. When unset, the first that exists of the schema's
    /// `.golden.json` twin (`schemas/x.json` -> `schemas/x.golden.json`) and
    /// `<model name>.golden.json` beside the schema is used.
    pub golden: Option<PathBuf>,
    /// A canary split of the model's unversioned requests between its versions, by weight:
    /// `{ "1" = 90, "2" = 10 }` (weights 0 to 1000000, not all 0). Sticky per `x-request-id`;
    /// `x-inferd-version` picks one. Set on one entry of the model.
    #[serde(default)]
    pub traffic: Option<std::collections::BTreeMap<String, u32>>,
    /// Runs a sample of the model's unversioned requests on another version too, after the
    /// answer, and counts and logs the answers that differ. Set on one entry of the model.
    #[validate(nested)]
    pub shadow: Option<ShadowConfig>,
    /// Public names for the graph's outputs, graph name -> public name: `{ variable = "price" }`.
    /// Answers of `/predict`, `/models/...` and `/v1`, the prediction log, `inferd score` and
    /// `inferd replay`, golden files, the model's listing and its OpenAPI document all use the
    /// public name. Each key must be an output of the graph; public names are 1 to 128 of
    /// A-Z a-z 0-9 `_` `.` `:` `-`, all different, and not the name of another output. `/v2`
    /// keeps the graph's names unless `rename_v2` is set.
    #[serde(default)]
    #[validate(custom(function = "validate_output_names"))]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// Apply `outputs` to `/v2` too: its model metadata, its infer answers and the names its
    /// requests select outputs by. Off by default, since Open Inference Protocol clients
    /// address tensors by the names the model metadata gives, usually the graph's.
    #[serde(default)]
    pub rename_v2: bool,
}

/// A shadow version: it runs a sample of the requests another version answers.
#[derive(Debug, Clone, Deserialize, Validate, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// The version that shadows the one answering.
    pub version: String,
    /// Share of requests also run on it.
    #[serde(default = "one")]
    #[validate(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// Differences within `absolute + relative * |answer|` per number are not counted.
    #[serde(default)]
    #[validate(range(min = 0.0))]
    pub absolute: f64,
    /// Relative tolerance, see `absolute`.
    #[serde(default = "default_relative")]
    #[validate(range(min = 0.0))]
    pub relative: f64,
}

fn one() -> f64 {
    1.0
}

fn default_relative() -> f64 {
    1e-6
}

impl ModelConfig {
    /// Version 1 of a model with every optional setting at its default.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            sha256: None,
            schema: None,
            version: default_version(),
            default: false,
            default_version: false,
            probabilities_by_class: false,
            labels: None,
            golden: None,
            traffic: None,
            shadow: None,
            outputs: Default::default(),
            rename_v2: false,
        }
    }
}

fn default_version() -> String {
    "1".to_owned()
}

fn validate_labels(labels: &[String]) -> Result<(), validator::ValidationError> {
    check_labels(labels).map_err(|message| validator::ValidationError::new("labels").with_message(message.into()))
}

/// Most labels a config may list.
pub const MAX_LABELS: usize = 4096;
/// Longest label a config may list, in characters.
pub const MAX_LABEL_CHARS: usize = 256;

/// Checks a config's `labels`: 1 to [`MAX_LABELS`] labels, each 1 to [`MAX_LABEL_CHARS`]
/// characters, all different. The message names the first fault.
pub fn check_labels(labels: &[String]) -> Result<(), String> {
    if labels.is_empty() {
        return Err("must list at least one label".into());
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("must list at most {MAX_LABELS} labels, got {}", labels.len()));
    }
    if let Some((i, _)) = labels.iter().enumerate().find(|(_, l)| l.is_empty()) {
        return Err(format!("label {i} is empty"));
    }
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, l)| l.chars().count() > MAX_LABEL_CHARS) {
        return Err(format!("label {i} has {} characters, more than {MAX_LABEL_CHARS}", l.chars().count()));
    }
    if let Some(dup) = first_duplicate(labels) {
        return Err(format!("the label {dup:?} is listed more than once"));
    }
    Ok(())
}

pub(crate) fn first_duplicate(labels: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(labels.len());
    labels.iter().map(String::as_str).find(|l| !seen.insert(*l))
}

fn validate_model_name(name: &str) -> Result<(), validator::ValidationError> {
    let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(validator::ValidationError::new("model_name")
            .with_message("may only hold ASCII letters, digits, '_', '-' and '.'".into()))
    }
}

fn validate_output_names(
    outputs: &std::collections::BTreeMap<String, String>,
) -> Result<(), validator::ValidationError> {
    check_output_names(outputs)
        .map_err(|message| validator::ValidationError::new("outputs").with_message(message.into()))
}

/// Longest public output name, in characters.
pub const MAX_OUTPUT_NAME_CHARS: usize = 128;

/// Checks a config's `outputs` as far as the config alone allows (the graph's outputs are
/// checked at load): each public name 1 to [`MAX_OUTPUT_NAME_CHARS`] of A-Z a-z 0-9 `_` `.` `:`
/// `-`, no two the same. The message names the first fault.
pub fn check_output_names(outputs: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for (graph, public) in outputs {
        let ok = (1..=MAX_OUTPUT_NAME_CHARS).contains(&public.chars().count())
            && public.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if !ok {
            return Err(format!(
                "'{graph}' = '{}': a public name is 1 to {MAX_OUTPUT_NAME_CHARS} of A-Z a-z 0-9 _ . : -",
                crate::error::clip(public)
            ));
        }
    }
    let publics: Vec<String> = outputs.values().cloned().collect();
    if let Some(name) = first_duplicate(&publics) {
        return Err(format!("two outputs are renamed '{name}'"));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads the file named by `--config`/`INFERD_CONFIG`, applies command-line and environment
    /// overrides (clap resolves those two, command line first), then checks the result.
    ///
    /// Models named on `serve`'s command line replace the file's; then the file may be absent
    /// unless it was named (`--config`), and a named file must not name models too.
    pub fn load(args: &ServeArgs) -> Result<Self, ConfigError> {
        crate::reading::note(&args.config);
        let named = !args.models.is_empty();
        let text = match std::fs::read_to_string(&args.config) {
            Ok(text) => text,
            Err(e) if named && !args.config_named && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ConfigError::Read { path: args.config.clone(), source }),
        };
        let mut config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: args.config.clone(), message: e.to_string() })?;
        let base = args.config.parent().map(Path::to_path_buf).unwrap_or_default();
        config.resolve_paths(&base);
        if named {
            if args.config_named && !config.models.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "{} names [[models]] and models were named on the command line: name them in one place",
                    args.config.display()
                )));
            }
            config.models = named::models(&args.models).map_err(ConfigError::Invalid)?;
        }
        config.apply(args)?;
        config.check()?;
        config.source = Some(args.clone());
        Ok(config)
    }

    /// Parses a TOML document whose relative paths are resolved against `base`; for tests.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let config = Self::from_toml_unchecked(text, base)?;
        config.check()?;
        Ok(config)
    }

    /// [`Config::from_toml`] without [`Config::check`], for tests that set what only the
    /// environment provides (secrets) before checking.
    pub fn from_toml_unchecked(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<inline>"), message: e.to_string() })?;
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        self.model_store.cache_dir = base.join(&self.model_store.cache_dir);
        for model in &mut self.models {
            if url_of(&model.path).is_none() {
                model.path = base.join(&model.path);
            }
            model.schema = model.schema.as_ref().map(|s| base.join(s));
            model.golden = model.golden.as_ref().map(|g| base.join(g));
        }
        self.inference.ort_library = self.inference.ort_library.as_ref().map(|p| base.join(p));
        self.prediction_log.directory = base.join(&self.prediction_log.directory);
        if let Some(jwt) = &mut self.auth.jwt {
            jwt.public_key = jwt.public_key.as_ref().map(|p| base.join(p));
            jwt.jwks_file = jwt.jwks_file.as_ref().map(|p| base.join(p));
        }
    }

    fn apply(&mut self, args: &ServeArgs) -> Result<(), ConfigError> {
        let o = &args.overrides;
        if let Some(host) = o.host {
            self.server.host = host;
        }
        if let Some(port) = o.port {
            self.server.port = port;
        }
        if let Some(rows) = o.max_batch_rows {
            self.batching.max_batch_rows = rows;
        }
        if let Some(ms) = o.max_delay_ms {
            self.batching.max_delay_ms = ms;
        }
        if let Some(rows) = o.queue_capacity_rows {
            self.batching.queue_capacity_rows = rows;
        }
        if let Some(n) = o.sessions {
            self.inference.sessions = n;
        }
        if let Some(n) = o.intra_op_threads {
            self.inference.intra_op_threads = n;
        }
        if let Some(path) = &o.ort_library {
            self.inference.ort_library = Some(path.clone());
        }
        if let Some(format) = o.log_format {
            self.logging.format = format;
        }
        if let Some(ms) = o.slow_request_ms {
            self.logging.slow_request_ms = ms;
        }
        if let Some(port) = o.metrics_port {
            self.metrics.port = Some(port);
        }
        if let Some(dir) = &o.prediction_log_dir {
            self.prediction_log.directory = dir.clone();
        }
        let log = &mut self.prediction_log;
        if let Some(sink) = o.prediction_log_sink {
            log.sink = sink;
        }
        if let Some(url) = o.prediction_log_url.clone().filter(|u| !u.is_empty()) {
            match log.sink {
                SinkKind::ObjectStore => log.object_store.url = url,
                _ => log.postgres.url = url,
            }
        }
        if log.postgres.url.is_empty() {
            log.postgres.url = std::env::var(DATABASE_URL_ENV).unwrap_or_default();
        }
        self.metrics.token = std::env::var(METRICS_TOKEN_ENV).ok().filter(|t| !t.is_empty()).map(Secret);
        self.auth.jwt_secret = std::env::var(JWT_SECRET_ENV).ok().filter(|t| !t.is_empty()).map(Secret);
        if let Ok(keys) = std::env::var(API_KEYS_ENV) {
            let keys = parse_env_keys(&keys).map_err(ConfigError::Invalid)?;
            // Set but empty is a deployment that lost its keys: refused rather than served open.
            if keys.is_empty() {
                return Err(ConfigError::Invalid(format!("{API_KEYS_ENV} is set but holds no key")));
            }
            self.auth.api_keys.extend(keys);
        }
        Ok(())
    }

    /// Field ranges (validator) and the checks that span fields.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate().map_err(|e| ConfigError::Invalid(flatten_validation(&e)))?;
        if self.models.is_empty() {
            return Err(ConfigError::Invalid("no [[models]] configured".into()));
        }
        let mut keys: Vec<(&str, &str)> = self.models.iter().map(|m| (m.name.as_str(), m.version.as_str())).collect();
        keys.sort_unstable();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid(format!("model '{}' version '{}' is configured twice", w[0].0, w[0].1)));
        }
        let mut names: Vec<&str> = keys.iter().map(|(name, _)| *name).collect();
        names.dedup();
        for name in &names {
            let marked = self.models.iter().filter(|m| m.name == *name && m.default_version).count();
            if marked > 1 {
                return Err(ConfigError::Invalid(format!(
                    "model '{name}': more than one version sets default_version"
                )));
            }
        }
        let defaults = self.models.iter().filter(|m| m.default).count();
        if defaults > 1 {
            return Err(ConfigError::Invalid("more than one model sets default = true".into()));
        }
        if defaults == 0 && names.len() > 1 {
            return Err(ConfigError::Invalid("several models are configured: set default = true on one".into()));
        }
        if self.batching.queue_capacity_rows < self.batching.max_batch_rows {
            return Err(ConfigError::Invalid(format!(
                "batching.queue_capacity_rows ({}) must be >= batching.max_batch_rows ({})",
                self.batching.queue_capacity_rows, self.batching.max_batch_rows
            )));
        }
        if self.server.max_instances_per_request > self.batching.queue_capacity_rows {
            return Err(ConfigError::Invalid(format!(
                "server.max_instances_per_request ({}) must be <= batching.queue_capacity_rows ({}): \
                 a larger request could never be queued",
                self.server.max_instances_per_request, self.batching.queue_capacity_rows
            )));
        }
        let log = &self.prediction_log;
        if log.max_bytes / (log.max_files as u64) < MIN_FILE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "prediction_log.max_bytes ({}) must be at least {MIN_FILE_BYTES} x prediction_log.max_files ({}): \
                 each file holds max_bytes / max_files",
                log.max_bytes, log.max_files
            )));
        }
        self.check_sink()?;
        if self.server.max_body_bytes_in_flight < self.server.body_limit_bytes {
            return Err(ConfigError::Invalid(format!(
                "server.max_body_bytes_in_flight ({}) must be >= server.body_limit_bytes ({})",
                self.server.max_body_bytes_in_flight, self.server.body_limit_bytes
            )));
        }
        self.check_auth()?;
        if self.metrics.port.is_some_and(|p| p != 0 && p == self.server.port) {
            return Err(ConfigError::Invalid("metrics.port must differ from server.port".into()));
        }
        for model in &self.models {
            if let Some(url) = url_of(&model.path) {
                let parsed = url::Url::parse(url)
                    .map_err(|e| e.to_string())
                    .and_then(|u| object_store::ObjectStoreScheme::parse(&u).map(|_| ()).map_err(|e| e.to_string()));
                if let Err(e) = parsed {
                    return Err(ConfigError::Invalid(format!(
                        "model '{}': path {url:?} is neither a file nor an s3://, gs://, az:// or https:// URL: {e}",
                        model.name
                    )));
                }
            } else if !model.path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "model '{}': file {} does not exist",
                    model.name,
                    model.path.display()
                )));
            }
            if let Some(schema) = model.schema.as_ref().filter(|s| !s.is_file()) {
                return Err(ConfigError::Invalid(format!(
                    "model '{}': schema {} does not exist",
                    model.name,
                    schema.display()
                )));
            }
            if let Some(golden) = model.golden.as_ref().filter(|g| !g.is_file()) {
                return Err(ConfigError::Invalid(format!(
                    "model '{}': golden file {} does not exist",
                    model.name,
                    golden.display()
                )));
            }
            self.check_rollout(model)?;
            if model.labels.is_some() && !model.probabilities_by_class {
                return Err(ConfigError::Invalid(format!(
                    "model '{}': labels are set but probabilities_by_class is not; set probabilities_by_class = true \
                     or remove labels",
                    model.name
                )));
            }
        }
        Ok(())
    }

    /// `traffic` and `shadow`: on one entry per model, naming its versions.
    fn check_rollout(&self, model: &ModelConfig) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(format!("model '{}': {message}", model.name)));
        let versions: Vec<&str> =
            self.models.iter().filter(|m| m.name == model.name).map(|m| m.version.as_str()).collect();
        let setting = |f: fn(&ModelConfig) -> bool| self.models.iter().filter(|m| m.name == model.name && f(m)).count();
        if setting(|m| m.traffic.is_some()) > 1 || setting(|m| m.shadow.is_some()) > 1 {
            return invalid("traffic and shadow may each be set on one of its entries only".into());
        }
        if let Some(traffic) = &model.traffic {
            if let Some(v) = traffic.keys().find(|v| !versions.contains(&v.as_str())) {
                return invalid(format!("traffic names version '{}', which is not configured", clip(v)));
            }
            if traffic.values().all(|w| *w == 0) || traffic.values().any(|w| *w > 1_000_000) {
                return invalid("traffic weights must be 0 to 1000000, and not all 0".into());
            }
        }
        if let Some(shadow) = &model.shadow {
            if !versions.contains(&shadow.version.as_str()) {
                return invalid(format!("shadow names version '{}', which is not configured", clip(&shadow.version)));
            }
        }
        Ok(())
    }

    /// The chosen sink has what it needs: a URL it can parse.
    fn check_sink(&self) -> Result<(), ConfigError> {
        let log = &self.prediction_log;
        if !log.enabled {
            return Ok(());
        }
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        match log.sink {
            SinkKind::Files | SinkKind::Stdout => Ok(()),
            SinkKind::Postgres if log.postgres.url.is_empty() => invalid(format!(
                "prediction_log.sink = \"postgres\" needs prediction_log.postgres.url, INFERD_PREDICTION_LOG_URL or {DATABASE_URL_ENV}"
            )),
            SinkKind::Postgres => match log.postgres.url.parse::<sqlx::postgres::PgConnectOptions>() {
                Ok(_) => Ok(()),
                // The error may quote the URL, password included.
                Err(_) => invalid("prediction_log.postgres.url is not a postgres:// URL".into()),
            },
            SinkKind::ObjectStore => {
                let url = &log.object_store.url;
                let parsed = url::Url::parse(url).map_err(|e| e.to_string()).and_then(|u| {
                    object_store::ObjectStoreScheme::parse(&u).map(|_| ()).map_err(|e| e.to_string())
                });
                match parsed {
                    Ok(()) => Ok(()),
                    Err(e) if url.is_empty() => invalid(format!(
                        "prediction_log.sink = \"object_store\" needs prediction_log.object_store.url or INFERD_PREDICTION_LOG_URL ({e})"
                    )),
                    Err(e) => invalid(format!(
                        "prediction_log.object_store.url {url:?} is not an s3://, gs://, az:// or file:// URL: {e}"
                    )),
                }
            }
        }
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        let mut names: Vec<&str> = self.auth.api_keys.iter().map(|k| k.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Invalid(format!("auth.api_keys: the name '{}' is used twice", w[0])));
        }
        if let Some(secret) = self.auth.jwt_secret.as_ref().filter(|s| s.0.trim().len() < MIN_JWT_SECRET_BYTES) {
            return Err(ConfigError::Invalid(format!(
                "{JWT_SECRET_ENV} has {} bytes; HS256 needs at least {MIN_JWT_SECRET_BYTES} (RFC 7518), \
                 e.g. `head -c 32 /dev/urandom | base64`",
                secret.0.trim().len()
            )));
        }
        if self.auth.jwt.is_some() && !self.auth.enabled() {
            // A table without a key source would serve every route open.
            return Err(ConfigError::Invalid(format!(
                "[auth.jwt] is configured but has no key: set {JWT_SECRET_ENV}, auth.jwt.public_key or auth.jwt.jwks_file"
            )));
        }
        if let Some(jwt) = &self.auth.jwt {
            for (key, path) in [("public_key", &jwt.public_key), ("jwks_file", &jwt.jwks_file)] {
                if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
                    return Err(ConfigError::Invalid(format!(
                        "auth.jwt.{key}: file {} does not exist",
                        path.display()
                    )));
                }
            }
        }
        if self.cors.as_ref().is_some_and(|c| c.allow_credentials && c.any_origin()) {
            return Err(ConfigError::Invalid(
                "cors: allow_origins = [\"*\"] cannot go with allow_credentials = true; list the origins".into(),
            ));
        }
        Ok(())
    }

    /// The entry served at `POST /predict`.
    pub fn default_model(&self) -> &ModelConfig {
        self.models.iter().find(|m| m.default).unwrap_or(&self.models[0])
    }

    /// The version of `name` that answers routes without a version.
    pub fn default_version(&self, name: &str) -> Option<&ModelConfig> {
        let mut versions = self.models.iter().filter(|m| m.name == name).peekable();
        let first = *versions.peek()?;
        Some(versions.find(|m| m.default_version).unwrap_or(first))
    }
}

/// Turns validator's nested error tree into `server.port: must be ...; ...`.
fn flatten_validation(errors: &validator::ValidationErrors) -> String {
    fn walk(prefix: &str, errors: &validator::ValidationErrors, out: &mut Vec<String>) {
        for (field, kind) in errors.errors() {
            let path = if prefix.is_empty() { field.to_string() } else { format!("{prefix}.{field}") };
            match kind {
                validator::ValidationErrorsKind::Field(list) => {
                    for e in list {
                        out.push(format!("{path}: {}", describe(e)));
                    }
                }
                validator::ValidationErrorsKind::Struct(inner) => walk(&path, inner, out),
                validator::ValidationErrorsKind::List(items) => {
                    for (i, inner) in items {
                        walk(&format!("{path}[{i}]"), inner, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", errors, &mut out);
    out.sort();
    out.join("; ")
}

fn describe(e: &validator::ValidationError) -> String {
    if let Some(message) = &e.message {
        return message.to_string();
    }
    let param = |k: &str| e.params.get(k).map(|v| v.to_string());
    let got = param("value").map(|v| format!(", got {v}")).unwrap_or_default();
    match (param("min"), param("max")) {
        (Some(min), Some(max)) => format!("must be between {min} and {max}{got}"),
        (Some(min), None) => format!("must be >= {min}{got}"),
        (None, Some(max)) => format!("must be <= {max}{got}"),
        (None, None) => format!("is invalid ({}){got}", e.code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    const ONE_MODEL: &str = r#"
        [[models]]
        name = "house_price"
        path = "models/house_price.onnx"
    "#;

    #[test]
    fn auth_that_would_serve_everything_open_or_forgeable_is_refused() {
        let keyless = Config::from_toml(&format!("[auth.jwt]\nissuer = \"idp\"\n{ONE_MODEL}"), &repo()).unwrap_err();
        assert!(keyless.to_string().contains("[auth.jwt] is configured but has no key"), "{keyless}");
        let mut config = Config::from_toml(ONE_MODEL, &repo()).unwrap();
        config.auth.jwt_secret = Some(Secret("x".repeat(31)));
        assert!(config.check().unwrap_err().to_string().contains("HS256 needs at least 32"));
        config.auth.jwt_secret = Some(Secret("x".repeat(32)));
        assert!(config.check().is_ok());
        config.cors = Some(CorsConfig { allow_origins: vec!["https://*.example.com".into()], ..CorsConfig::default() });
        assert!(config.check().unwrap_err().to_string().contains("no wildcard"));
    }

    #[test]
    fn defaults_apply_and_a_lone_model_is_the_default() {
        let config = Config::from_toml(ONE_MODEL, &repo()).unwrap();
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.batching.max_delay_ms, 0);
        assert_eq!(config.default_model().name, "house_price");
        assert_eq!(config.default_model().version, "1");
    }

    #[test]
    fn out_of_range_fields_are_named_with_their_limit() {
        let text = format!("[batching]\nmax_batch_rows = 0\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("batching.max_batch_rows: must be between 1 and 65536, got 0"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("[server]\nprot = 1\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn cross_field_checks() {
        let two = format!("{ONE_MODEL}\n[[models]]\nname = \"b\"\npath = \"models/house_price.onnx\"\n");
        let err = Config::from_toml(&two, &repo()).unwrap_err().to_string();
        assert!(err.contains("set default = true on one"), "{err}");

        let dup = format!("{ONE_MODEL}{ONE_MODEL}");
        let err = Config::from_toml(&dup, &repo()).unwrap_err().to_string();
        assert!(err.contains("version '1' is configured twice"), "{err}");

        let text = format!("[batching]\nmax_batch_rows = 64\nqueue_capacity_rows = 8\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("queue_capacity_rows (8) must be >= batching.max_batch_rows (64)"), "{err}");

        let text = format!("[batching]\nmax_batch_rows = 8\nqueue_capacity_rows = 100\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(
            err.contains("max_instances_per_request (1024) must be <= batching.queue_capacity_rows (100)"),
            "{err}"
        );

        let missing = "[[models]]\nname = \"x\"\npath = \"models/nope.onnx\"\n";
        let err = Config::from_toml(missing, &repo()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");

        let bad_name = "[[models]]\nname = \"a/b\"\npath = \"models/house_price.onnx\"\n";
        let err = Config::from_toml(bad_name, &repo()).unwrap_err().to_string();
        assert!(err.contains("models[0].name: may only hold"), "{err}");
    }

    #[test]
    fn traffic_and_shadow_name_configured_versions_on_one_entry() {
        let two = format!(
            "{ONE_MODEL}\n[[models]]\nname = \"house_price\"\nversion = \"2\"\npath = \"models/house_price.onnx\"\n"
        );
        let ok = two.replace(
            "version = \"2\"",
            "version = \"2\"\ntraffic = { \"1\" = 90, \"2\" = 10 }\nshadow = { version = \"1\", sample_rate = 0.5 }",
        );
        assert!(Config::from_toml(&ok, &repo()).is_ok());
        let unknown = two.replace("version = \"2\"", "version = \"2\"\ntraffic = { \"1\" = 90, \"3\" = 10 }");
        let err = Config::from_toml(&unknown, &repo()).unwrap_err().to_string();
        assert!(err.contains("traffic names version '3', which is not configured"), "{err}");
        let zero = two.replace("version = \"2\"", "version = \"2\"\ntraffic = { \"1\" = 0 }");
        assert!(Config::from_toml(&zero, &repo()).unwrap_err().to_string().contains("not all 0"));
        let shadow = two.replace("version = \"2\"", "version = \"2\"\nshadow = { version = \"7\" }");
        assert!(Config::from_toml(&shadow, &repo()).unwrap_err().to_string().contains("shadow names version '7'"));
        let rate = two.replace("version = \"2\"", "version = \"2\"\nshadow = { version = \"1\", sample_rate = 2.0 }");
        assert!(Config::from_toml(&rate, &repo()).unwrap_err().to_string().contains("sample_rate"));
    }

    #[test]
    fn versions_of_one_model_pick_a_default_version() {
        let two = format!(
            "{ONE_MODEL}\n[[models]]\nname = \"house_price\"\nversion = \"2\"\npath = \"models/house_price.onnx\"\n"
        );
        let config = Config::from_toml(&two, &repo()).unwrap();
        assert_eq!(config.default_version("house_price").unwrap().version, "1", "first listed");
        let marked = format!("{two}default_version = true\n");
        let config = Config::from_toml(&marked, &repo()).unwrap();
        assert_eq!(config.default_version("house_price").unwrap().version, "2");
        assert!(config.default_version("nope").is_none());
    }

    #[test]
    fn observability_sections_are_checked() {
        let config = Config::from_toml(ONE_MODEL, &repo()).unwrap();
        assert!(config.metrics.enabled && config.prediction_log.enabled);
        assert_eq!(config.prediction_log.directory, repo().join("logs"), "resolved against the file's folder");
        assert_eq!(config.metrics.latency_buckets_seconds[0], 0.00005);

        let text = format!("[metrics]\nlatency_buckets_seconds = [0.1, 0.01]\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("metrics.latency_buckets_seconds: must be finite numbers in ascending order"), "{err}");
        let text = format!("[prediction_log]\nsample_rate = 1.5\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("prediction_log.sample_rate: must be between 0.0 and 1.0, got 1.5"), "{err}");
        let text = format!("[prediction_log]\nrotation = \"yearly\"\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("unknown variant `yearly`"), "{err}");
        let text = format!("[prediction_log]\nmax_bytes = 100\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("prediction_log.max_bytes: must be between 4096 and"), "{err}");
        let text = format!("[prediction_log]\nmax_bytes = 8192\nmax_files = 10\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(
            err.contains("prediction_log.max_bytes (8192) must be at least 1024 x prediction_log.max_files (10)"),
            "{err}"
        );
        let text = format!("[server]\nport = 9000\n[metrics]\nport = 9000\n{ONE_MODEL}");
        let err = Config::from_toml(&text, &repo()).unwrap_err().to_string();
        assert!(err.contains("metrics.port must differ from server.port"), "{err}");
        // The token is never read from the file.
        let text = format!("[metrics]\ntoken = \"x\"\n{ONE_MODEL}");
        assert!(Config::from_toml(&text, &repo()).is_err());
        let secret = format!("{:?}", Secret("hunter2".into()));
        assert_eq!(secret, "[redacted]");
    }

    #[test]
    fn classifier_keys_default_off_and_labels_are_checked() {
        let config = Config::from_toml(ONE_MODEL, &repo()).unwrap();
        assert!(!config.models[0].probabilities_by_class);
        assert_eq!(config.models[0].labels, None);

        let iris = "[[models]]\nname = \"iris\"\npath = \"models/iris.onnx\"\nprobabilities_by_class = true\n";
        let config = Config::from_toml(iris, &repo()).unwrap();
        assert!(config.models[0].probabilities_by_class);
        assert_eq!(config.models[0].labels, None, "the graph's labels are used");
        let listed = format!("{iris}labels = [\"setosa\", \"versicolor\", \"virginica\"]\n");
        let config = Config::from_toml(&listed, &repo()).unwrap();
        assert_eq!(config.models[0].labels.as_deref().unwrap(), ["setosa", "versicolor", "virginica"]);

        let bad =
            |labels: &str| Config::from_toml(&format!("{iris}labels = {labels}\n"), &repo()).unwrap_err().to_string();
        assert!(bad("[]").contains("models[0].labels: must list at least one label"), "{}", bad("[]"));
        let err = bad("[\"a\", \"b\", \"a\"]");
        assert!(err.contains("models[0].labels: the label \"a\" is listed more than once"), "{err}");
        let err = bad("[\"a\", \"\"]");
        assert!(err.contains("models[0].labels: label 1 is empty"), "{err}");
        let err = bad(&format!("[\"{}\"]", "x".repeat(257)));
        assert!(err.contains("models[0].labels: label 0 has 257 characters, more than 256"), "{err}");
        let many: Vec<String> = (0..4097).map(|i| format!("\"c{i}\"")).collect();
        let err = bad(&format!("[{}]", many.join(", ")));
        assert!(err.contains("models[0].labels: must list at most 4096 labels, got 4097"), "{err}");
        let err = bad("[1, 2]");
        assert!(err.contains("invalid type: integer `1`, expected a string"), "{err}");

        let unused = "[[models]]\nname = \"iris\"\npath = \"models/iris.onnx\"\nlabels = [\"a\"]\n";
        let err = Config::from_toml(unused, &repo()).unwrap_err().to_string();
        assert!(err.contains("model 'iris': labels are set but probabilities_by_class is not"), "{err}");
    }

    #[test]
    fn the_committed_runtime_toml_is_valid() {
        let text = std::fs::read_to_string(repo().join("runtime.toml")).unwrap();
        let config = Config::from_toml(&text, &repo()).unwrap();
        assert_eq!(config.default_model().name, "house_price");
    }
}
