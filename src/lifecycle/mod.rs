//! The models' lifecycle after start: a reload (`POST /admin/reload`, SIGHUP or the file
//! watch) reads the configuration file again and swaps in the models it names, and the
//! repository API unloads and loads configured models. Changed versions are loaded beside the
//! ones serving, warmed up and checked (golden files) before the swap; any failure leaves
//! everything as it was. One at a time, each within `reload.timeout_ms`.

pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use arc_swap::ArcSwap;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config::Config;
use crate::error::FieldError;
use crate::observe::{rfc3339, Metrics};
use crate::reading::{off_runtime, Abandoned, NotDone};
use crate::registry::{Change, Current, Published, Registry};

/// Why a reload or a repository load did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("models are still loading")]
    NotReady,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("model '{0}' is not served here")]
    ModelNotFound(String),
    /// Refused, with the models served unchanged.
    #[error("{message}")]
    Refused { message: String, details: Vec<FieldError> },
    #[error("internal error")]
    Internal(String),
}

/// The OpenAPI document of a registry (built by the HTTP layer, which knows the routes).
pub type Describe = fn(&Config, &Registry) -> Value;

/// The models served and what changes them; one per server, shared.
pub struct Lifecycle {
    /// The configuration the server started with (its listeners, logs and limits).
    config: Arc<Config>,
    /// The configuration the models come from: read at start and by each successful reload.
    configured: ArcSwap<Config>,
    models: Arc<Current>,
    metrics: Arc<Metrics>,
    describe: Describe,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The last failed load of each model version.
    load_failures: Mutex<Failures>,
    /// A reload given up on at its timeout whose thread is still stuck reading a file.
    stuck_reload: Mutex<Option<Abandoned>>,
    /// Set at SIGTERM: no reload starts, and one under way is not published.
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn new(config: Arc<Config>, models: Arc<Current>, metrics: Arc<Metrics>, describe: Describe) -> Self {
        Self {
            configured: ArcSwap::new(config.clone()),
            config,
            models,
            metrics,
            describe,
            reloading: tokio::sync::Mutex::new(()),
            load_failures: Mutex::default(),
            stuck_reload: Mutex::default(),
            draining: AtomicBool::new(false),
        }
    }

    /// Publishes the models loaded at start, with their OpenAPI document.
    pub fn publish(&self, registry: Registry) {
        let openapi = (self.describe)(&self.config, &registry);
        self.models.publish(registry, openapi);
    }

    pub fn registry(&self) -> Result<Arc<Published>, LifecycleError> {
        self.models.load().ok_or(LifecycleError::NotReady)
    }

    /// The configuration the models come from now.
    pub fn configured(&self) -> Arc<Config> {
        self.configured.load_full()
    }

    /// The last failed load of `(model, version)`, if it has not loaded since.
    pub fn load_failure(&self, model: &str, version: &str) -> Option<Failure> {
        let failures = self.load_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(&(model.to_owned(), version.to_owned())).cloned()
    }

    /// From SIGTERM on, nothing is reloaded.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Reads the configuration again and swaps in its models; what SIGHUP, the route and the
    /// file watch run.
    pub async fn reload(self: &Arc<Self>, trigger: &'static str) -> Result<ReloadReport, LifecycleError> {
        reload(self, trigger).await
    }

    /// Unloads (`load = false`) or loads a configured model, all its versions, as the Open
    /// Inference Protocol's repository extension asks.
    pub async fn set_loaded(self: &Arc<Self>, name: &str, load: bool) -> Result<ReloadReport, LifecycleError> {
        set_loaded(self, name, load).await
    }

    /// Every configured model version and whether it serves (the repository extension's
    /// index); with `ready_only`, those that serve.
    pub fn index(&self, ready_only: bool) -> Result<Vec<RepositoryModel>, LifecycleError> {
        let registry = self.registry()?;
        let configured = self.configured();
        let models = configured
            .models
            .iter()
            .map(|entry| {
                let (state, reason) = match registry.get(&entry.name, Some(&entry.version)) {
                    Ok(batcher) if batcher.is_ready() => ("READY", None),
                    Ok(_) => ("UNAVAILABLE", Some("no working inference session")),
                    Err(_) => ("UNAVAILABLE", Some("unloaded")),
                };
                RepositoryModel { name: entry.name.clone(), version: entry.version.clone(), state, reason }
            })
            .filter(|m| !ready_only || m.state == "READY")
            .collect();
        Ok(models)
    }

    /// Waits until no reload runs (or `within` passes), for a shutdown that closes the models.
    pub async fn quiesce(&self, within: Duration) {
        let _no_reload = tokio::time::timeout(within, self.reloading.lock()).await.ok();
    }
}

/// Why a load request that brings a model config or files is refused.
pub const LOADS_ONLY_CONFIGURED: &str =
    "inferd loads the models its configuration names: a load request cannot bring a model config or files";

/// A configured model version in the repository index.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryModel {
    pub name: String,
    pub version: String,
    /// `READY`, or `UNAVAILABLE` with a `reason`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The last failed load of each model version, by (model, version); cleared when it loads.
pub type Failures = BTreeMap<(String, String), Failure>;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    /// When it failed, RFC 3339.
    pub at: String,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReloadReport {
    /// `reloaded` (the new models serve now) or `unchanged` (nothing to load).
    pub status: &'static str,
    /// Every model version of the new configuration, and those it removed.
    pub models: Vec<Change>,
    /// Sections of the configuration that changed but only take effect at a restart.
    pub restart_needed: Vec<&'static str>,
    pub ms: u64,
}

/// Longest error message a reload reports or keeps per model version.
const MAX_ERROR_CHARS: usize = 2048;

/// Runs `operation` in a task of its own, so that a client hanging up does not cancel a reload
/// halfway (its lock released while its models still load).
async fn detached<F>(
    state: &Arc<Lifecycle>,
    operation: impl FnOnce(Arc<Lifecycle>) -> F,
) -> Result<ReloadReport, LifecycleError>
where
    F: std::future::Future<Output = Result<ReloadReport, LifecycleError>> + Send + 'static,
{
    tokio::spawn(operation(state.clone()))
        .await
        .unwrap_or_else(|e| Err(LifecycleError::Internal(format!("reload task failed: {e}"))))
}

async fn reload(state: &Arc<Lifecycle>, trigger: &'static str) -> Result<ReloadReport, LifecycleError> {
    detached(state, move |state| async move { reload_now(&state, trigger).await }).await
}

/// One reload or repository load: what asked for it, and when it must have finished
/// (`reload.timeout_ms` from its start, reading the configuration included).
#[derive(Clone, Copy)]
struct Attempt {
    trigger: &'static str,
    until: Instant,
}

impl Attempt {
    /// Starts one once the lock is held, refusing while an earlier one, given up on, is still
    /// stuck reading: its thread cannot be stopped, and another would pile up beside it.
    fn start(state: &Arc<Lifecycle>, trigger: &'static str) -> Result<Self, LifecycleError> {
        if state.is_draining() {
            return Err(LifecycleError::ShuttingDown);
        }
        let mut stuck = state.stuck_reload.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(earlier) = stuck.as_ref().filter(|earlier| !earlier.finished()) {
            let reading = earlier.file().map_or("its files".into(), |f| f.display().to_string());
            drop(stuck);
            let message = format!("an earlier reload, given up on after reload.timeout_ms, is still reading {reading}; retry once it returns");
            return Err(refused(state, trigger, message, vec![]));
        }
        *stuck = None;
        Ok(Self { trigger, until: Instant::now() + Duration::from_millis(state.config.reload.timeout_ms) })
    }

    fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// The 409 for work that did not finish in time (the stuck thread is remembered) or
    /// panicked.
    fn not_done(&self, state: &Arc<Lifecycle>, not_done: NotDone) -> LifecycleError {
        let stuck = match not_done {
            NotDone::Stuck(stuck) => stuck,
            NotDone::Panicked(message) => {
                return refused(state, self.trigger, format!("reloading failed: {message}"), vec![])
            }
        };
        *state.stuck_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(stuck.abandoned());
        let message = format!(
            "the reload did not finish within reload.timeout_ms ({} ms): {stuck}; the models served are unchanged",
            state.config.reload.timeout_ms
        );
        let details = stuck
            .file
            .iter()
            .map(|f| FieldError { path: f.display().to_string(), message: "not read in time".into() })
            .collect();
        refused(state, self.trigger, message, details)
    }
}

async fn reload_now(state: &Arc<Lifecycle>, trigger: &'static str) -> Result<ReloadReport, LifecycleError> {
    let _one_at_a_time = state.reloading.lock().await;
    let attempt = Attempt::start(state, trigger)?;
    let Some(source) = state.config.source.clone() else {
        return Err(refused(
            state,
            trigger,
            "this server's configuration was not read from a file: nothing to reload".into(),
            vec![],
        ));
    };
    // Off the runtime's threads: the file may sit on a slow or stuck mount.
    let config = match off_runtime(attempt.left(), move || Config::load(&source)).await {
        Ok(Ok(config)) => Arc::new(config),
        Ok(Err(e)) => return Err(refused(state, trigger, format!("the configuration is not valid: {e}"), vec![])),
        Err(not_done) => return Err(attempt.not_done(state, not_done)),
    };
    // Models unloaded through the repository API stay so, unless the file no longer names them.
    let mut unloaded = state.registry()?.unloaded().clone();
    unloaded.retain(|name| config.models.iter().any(|m| m.name == *name));
    let report = apply(state, config.clone(), unloaded, attempt).await?;
    state.configured.store(config);
    Ok(report)
}

async fn set_loaded(state: &Arc<Lifecycle>, name: &str, load: bool) -> Result<ReloadReport, LifecycleError> {
    let name = name.to_owned();
    detached(state, move |state| async move { set_loaded_now(&state, &name, load).await }).await
}

async fn set_loaded_now(state: &Arc<Lifecycle>, name: &str, load: bool) -> Result<ReloadReport, LifecycleError> {
    let _one_at_a_time = state.reloading.lock().await;
    let attempt = Attempt::start(state, if load { "load" } else { "unload" })?;
    let config = state.configured.load_full();
    if !config.models.iter().any(|m| m.name == name) {
        return Err(LifecycleError::ModelNotFound(crate::error::clip(name).into_owned()));
    }
    let mut unloaded = state.registry()?.unloaded().clone();
    if load {
        unloaded.remove(name);
    } else {
        unloaded.insert(name.to_owned());
    }
    apply(state, config, unloaded, attempt).await
}

fn refused(state: &Arc<Lifecycle>, trigger: &str, message: String, details: Vec<FieldError>) -> LifecycleError {
    let message = crate::error::clip_chars(&message, MAX_ERROR_CHARS).into_owned();
    tracing::error!(trigger, error = %message, "reload refused; the models served are unchanged");
    state.metrics().reloaded("failed");
    LifecycleError::Refused { message, details }
}

/// Builds the registry `config` asks for (less the `unloaded` models) beside the one serving,
/// and swaps it in when everything loaded. Called with `reloading` held.
async fn apply(
    state: &Arc<Lifecycle>,
    config: Arc<Config>,
    unloaded: BTreeSet<String>,
    attempt: Attempt,
) -> Result<ReloadReport, LifecycleError> {
    let trigger = attempt.trigger;
    let started = Instant::now();
    // The registry serving: the lock held, no other reload replaces it meanwhile.
    let serving = state.registry()?;
    let restart_needed = restart_needed(&state.config, &config);
    let (current, metrics) = (serving.clone(), state.metrics().clone());
    let (loading, keep_out) = (config.clone(), unloaded.clone());
    let outcome = off_runtime(attempt.left(), move || current.reload(&loading, &keep_out, &metrics)).await;
    let (registry, changes) = match outcome {
        Ok(Ok(reloaded)) => reloaded,
        Ok(Err(changes)) => {
            let mut failures = state.load_failures.lock().unwrap_or_else(|p| p.into_inner());
            let details = changes
                .iter()
                .filter_map(|c| {
                    let error = crate::error::clip_chars(c.error.as_deref()?, MAX_ERROR_CHARS).into_owned();
                    failures.insert(
                        (c.model.clone(), c.version.clone()),
                        Failure { at: rfc3339(SystemTime::now()), error: error.clone() },
                    );
                    Some(FieldError { path: format!("/models/{}/versions/{}", c.model, c.version), message: error })
                })
                .collect::<Vec<_>>();
            let message = format!("{} model version(s) failed to load; the models served are unchanged", details.len());
            drop(failures);
            return Err(refused(state, trigger, message, details));
        }
        Err(not_done) => return Err(attempt.not_done(state, not_done)),
    };
    let ms = started.elapsed().as_millis() as u64;
    if state.is_draining() {
        // Shutting down: what was loaded is dropped here, and the registry serving is closed.
        return Err(LifecycleError::ShuttingDown);
    }
    // Every version now configured loads: earlier failures are history.
    state.load_failures.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let rerouted = registry.routing() != serving.routing();
    drop(serving);
    if !rerouted && changes.iter().all(|c| c.result == "unchanged") {
        state.metrics().reloaded("unchanged");
        tracing::info!(trigger, ms, ?restart_needed, "reload: the models are unchanged");
        return Ok(ReloadReport { status: "unchanged", models: changes, restart_needed, ms });
    }
    let openapi = (state.describe)(&config, &registry);
    // The registry it replaces is dropped here, or by the last request still holding it.
    state.models.publish(registry, openapi);
    for change in changes.iter().filter(|c| matches!(c.result, "removed" | "unloaded")) {
        state.metrics().model_removed(&change.model, &change.version);
    }
    state.metrics().reloaded("ok");
    for change in changes.iter().filter(|c| c.result != "unchanged") {
        tracing::info!(trigger, model = %change.model, version = %change.version, result = change.result, "reload");
    }
    tracing::info!(trigger, ms, ?restart_needed, "reloaded");
    Ok(ReloadReport { status: "reloaded", models: changes, restart_needed, ms })
}

/// The sections a reload does not apply: the listeners, access control, logs, metrics and the
/// watch are set up once, at start.
fn restart_needed(running: &Config, read: &Config) -> Vec<&'static str> {
    let section = |c: &Config| -> [(&'static str, String); 7] {
        [
            ("server", format!("{:?}", c.server)),
            ("logging", format!("{:?}", c.logging)),
            ("metrics", format!("{:?}", c.metrics)),
            ("prediction_log", format!("{:?}", c.prediction_log)),
            ("auth", format!("{:?}", c.auth)),
            ("cors", format!("{:?}", c.cors)),
            ("reload", format!("{:?}", c.reload)),
        ]
    };
    section(running).into_iter().zip(section(read)).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0).collect()
}
