//! The loaded models, by name and version, and the work of loading them: at start, and again
//! on reload, where versions whose files and settings did not change are kept as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use ort::environment::Environment;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::batch::{Batcher, Workers};
use crate::config::{BatchingConfig, Config, ModelConfig, ShadowConfig};
use crate::error::clip;
use crate::model::golden::Tolerance;
use crate::model::{self, LoadError};
use crate::observe::{Metrics, ModelMetrics};

/// What a loaded version was made from: equal fingerprints mean a reload keeps the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Fingerprint {
    /// SHA-256 of the `.onnx` file, hex.
    pub model_sha256: String,
    pub schema_sha256: Option<String>,
    pub golden_sha256: Option<String>,
    /// The entry and the batching and inference settings, as configured.
    #[serde(skip)]
    #[schema(ignore)]
    settings: String,
}

impl Fingerprint {
    pub fn of(entry: &ModelConfig, config: &Config) -> std::io::Result<Self> {
        // Which entry answers `/predict` or unversioned routes is routing, not the version.
        let routing_aside = ModelConfig { default: false, default_version: false, ..entry.clone() };
        Ok(Self {
            model_sha256: sha256_file(&entry.path)?,
            schema_sha256: entry.schema.as_deref().map(sha256_file).transpose()?,
            golden_sha256: model::golden::path_for(entry).as_deref().map(sha256_file).transpose()?,
            settings: format!("{routing_aside:?} {:?} {:?}", config.batching, config.inference),
        })
    }
}

/// The entry as it loads: a model named by URL replaced by its local copy (fetched into the
/// cache if need be, within `reload.timeout_ms`), and what it is made from, its `sha256` pin
/// checked.
pub fn prepare(entry: &ModelConfig, config: &Config) -> Result<(ModelConfig, Fingerprint), LoadError> {
    let refused =
        |message: String| LoadError::Source { model: entry.name.clone(), version: entry.version.clone(), message };
    let mut local = entry.clone();
    if let Some(url) = crate::config::url_of(&entry.path) {
        let within = std::time::Duration::from_millis(config.reload.timeout_ms);
        local.path =
            model::source::local_copy(url, entry.sha256.as_deref(), &config.model_store, within).map_err(refused)?;
    }
    let fingerprint = Fingerprint::of(&local, config).map_err(|e| unreadable(entry, e))?;
    if let Some(pin) = entry.sha256.as_deref().filter(|pin| !pin.eq_ignore_ascii_case(&fingerprint.model_sha256)) {
        let got = &fingerprint.model_sha256;
        return Err(refused(format!(
            "{}: sha256 mismatch: expected {}, got {got}",
            entry.path.display(),
            pin.to_ascii_lowercase()
        )));
    }
    Ok((local, fingerprint))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    crate::reading::note(path);
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// One loaded model version. Dropped when no registry and no request holds it any more: its
/// queue is then closed (it is empty: every job belongs to a request that held it) and its
/// inference threads end.
pub struct Version {
    pub batcher: Batcher,
    pub fingerprint: Fingerprint,
    pub loaded_at: SystemTime,
    /// The settings it was started with.
    pub batching: BatchingConfig,
    pub sessions: usize,
    workers: Mutex<Option<Workers>>,
}

impl Version {
    /// The inference threads, for a shutdown that waits for them; `None` once taken.
    fn take_workers(&self) -> Option<Workers> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Closes the queue (queued rows still run) and waits for the inference threads.
    pub fn close_and_join(&self) {
        self.batcher.close();
        if let Some(workers) = self.take_workers() {
            workers.join();
        }
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        self.batcher.close();
        if let Some(workers) = self.workers.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            // Not on the dropping thread, which may be a runtime worker: a batch may be running.
            let _ = std::thread::Builder::new().name("retire-model".into()).spawn(move || workers.join());
        }
    }
}

/// Every loaded version of one model name.
pub struct ModelVersions {
    /// Keyed by version, in version-string order.
    pub versions: BTreeMap<String, Arc<Version>>,
    pub default_version: String,
    /// The canary split of unversioned requests: (version, weight), when configured.
    pub traffic: Vec<(String, u32)>,
    pub shadow: Option<ShadowConfig>,
}

/// Why a request names no loaded model version.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteError {
    #[error("model '{0}' is not served here")]
    ModelNotFound(String),
    #[error("model '{0}' is configured but unloaded; POST /v2/repository/models/{0}/load loads it")]
    ModelUnloaded(String),
    #[error("model '{model}' has no version '{version}'")]
    VersionNotFound { model: String, version: String },
}

/// Which model version a request names.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The default model's unversioned route (`POST /predict`).
    Default { pin: Option<&'a str> },
    /// A model's unversioned route: its traffic split, or the pinned version (`pin`).
    Model { name: &'a str, pin: Option<&'a str> },
    /// One version, named: no traffic split, no shadow.
    Version { name: &'a str, version: &'a str },
}

/// A version that also runs a sample of another's requests (`shadow` in the config).
#[derive(Clone)]
pub struct Shadow {
    pub batcher: Batcher,
    pub sample_rate: f64,
    pub tolerance: Tolerance,
}

/// The models served now, with the OpenAPI document that describes them; replaced whole by a
/// reload. A request keeps the one it started with to its end.
pub struct Published {
    pub registry: Registry,
    pub openapi: serde_json::Value,
}

impl std::ops::Deref for Published {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        &self.registry
    }
}

/// Where the models served are published: empty until they are loaded and warmed up.
#[derive(Default)]
pub struct Current(arc_swap::ArcSwapOption<Published>);

impl Current {
    pub fn load(&self) -> Option<Arc<Published>> {
        self.0.load_full()
    }

    /// Publishes `registry`; returns the one it replaces, whose versions that the new one does
    /// not share end once the requests that hold it are done.
    pub fn publish(&self, registry: Registry, openapi: serde_json::Value) -> Option<Arc<Published>> {
        self.0.swap(Some(Arc::new(Published { registry, openapi })))
    }
}

/// The version a request runs on, and the one that shadows it, if any.
pub struct Route<'a> {
    pub version: &'a Arc<Version>,
    pub shadow: Option<Shadow>,
}

impl<'a> Route<'a> {
    /// A version named by the route: no traffic split, no shadow.
    pub fn direct(version: &'a Arc<Version>) -> Self {
        Self { version, shadow: None }
    }

    pub fn batcher(&self) -> &'a Batcher {
        &self.version.batcher
    }
}

/// What a reload did to one configured (or formerly configured) model version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Change {
    pub model: String,
    pub version: String,
    /// `loaded` (new or changed, loaded and checked), `unchanged`, `removed` (from the
    /// configuration), `unloaded` (by the repository API), or `failed`.
    pub result: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Registry {
    models: BTreeMap<String, ModelVersions>,
    /// Configured, but unloaded through the repository API: routes to them answer 503.
    unloaded: BTreeSet<String>,
    default: (String, String),
    env: Environment,
}

impl Registry {
    /// Loads the runtime and every model, warms every session up, runs the golden checks and
    /// starts the inference threads. Blocking.
    pub fn load(config: &Config, metrics: &Metrics) -> Result<Self, LoadError> {
        let env = model::init_runtime(&config.inference)?;
        let mut loaded = Vec::new();
        for entry in &config.models {
            let (local, fingerprint) = prepare(entry, config)?;
            loaded.push((entry, Arc::new(load_version(&env, &local, config, metrics, fingerprint)?)));
            metrics.model_loaded(&entry.name, &entry.version, "ok");
        }
        Ok(Self::assemble(config, env, loaded, BTreeSet::new()))
    }

    /// A registry for `config` built beside this one: versions whose fingerprint is unchanged
    /// are shared with it, the others are loaded, warmed up and checked. Blocking. On any
    /// failure nothing changes, and `Err` reports every version's outcome.
    /// Models named in `unloaded` are left out.
    pub fn reload(
        &self,
        config: &Config,
        unloaded: &BTreeSet<String>,
        metrics: &Metrics,
    ) -> Result<(Self, Vec<Change>), Vec<Change>> {
        let mut changes = Vec::new();
        let mut loaded = Vec::new();
        let mut failed = false;
        for entry in config.models.iter().filter(|m| !unloaded.contains(&m.name)) {
            let change =
                |result, error| Change { model: entry.name.clone(), version: entry.version.clone(), result, error };
            let prepared = prepare(entry, config);
            if let (Some(current), Ok((_, fingerprint))) = (self.version(&entry.name, &entry.version), &prepared) {
                if current.fingerprint == *fingerprint {
                    loaded.push((entry, current.clone()));
                    changes.push(change("unchanged", None));
                    continue;
                }
            }
            match prepared
                .and_then(|(local, fingerprint)| load_version(&self.env, &local, config, metrics, fingerprint))
            {
                Ok(version) => {
                    metrics.model_loaded(&entry.name, &entry.version, "ok");
                    loaded.push((entry, Arc::new(version)));
                    changes.push(change("loaded", None));
                }
                Err(e) => {
                    metrics.model_loaded(&entry.name, &entry.version, "failed");
                    tracing::error!(model = %entry.name, version = %entry.version, error = %e, "reload: model refused");
                    failed = true;
                    changes.push(change("failed", Some(e.to_string())));
                }
            }
        }
        for (name, model) in &self.models {
            for version in model.versions.keys() {
                let configured = config.models.iter().any(|m| m.name == *name && m.version == *version);
                if !configured || unloaded.contains(name) {
                    let result = if configured { "unloaded" } else { "removed" };
                    changes.push(Change { model: name.clone(), version: version.clone(), result, error: None });
                }
            }
        }
        if failed {
            return Err(changes);
        }
        Ok((Self::assemble(config, self.env.clone(), loaded, unloaded.clone()), changes))
    }

    fn assemble(
        config: &Config,
        env: Environment,
        loaded: Vec<(&ModelConfig, Arc<Version>)>,
        unloaded: BTreeSet<String>,
    ) -> Self {
        let mut models: BTreeMap<String, ModelVersions> = BTreeMap::new();
        for (entry, version) in loaded {
            let default_version = config.default_version(&entry.name).expect("entry is configured").version.clone();
            let of_model = || config.models.iter().filter(|m| m.name == entry.name);
            let traffic = of_model().find_map(|m| m.traffic.clone()).unwrap_or_default().into_iter().collect();
            let shadow = of_model().find_map(|m| m.shadow.clone());
            models
                .entry(entry.name.clone())
                .or_insert_with(|| ModelVersions { versions: BTreeMap::new(), default_version, traffic, shadow })
                .versions
                .insert(entry.version.clone(), version);
        }
        let default = config.default_model();
        Self { models, unloaded, default: (default.name.clone(), default.version.clone()), env }
    }

    fn version(&self, name: &str, version: &str) -> Option<&Arc<Version>> {
        self.models.get(name)?.versions.get(version)
    }

    /// The model version a route names; without a version, the model's default version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&Batcher, RouteError> {
        self.get_version(name, version).map(|v| &v.batcher)
    }

    pub fn get_version(&self, name: &str, version: Option<&str>) -> Result<&Arc<Version>, RouteError> {
        let model = self.models.get(name).ok_or_else(|| self.missing(name))?;
        let version = version.unwrap_or(&model.default_version);
        model.versions.get(version).ok_or_else(|| RouteError::VersionNotFound {
            model: clip(name).into_owned(),
            version: clip(version).into_owned(),
        })
    }

    /// The entry served at `POST /predict`; 503 while it is unloaded.
    pub fn default_model(&self) -> Result<&Batcher, RouteError> {
        self.get(&self.default.0, Some(&self.default.1))
    }

    /// Where requests go: the version answering `/predict`, each model's unversioned routes
    /// (default version, traffic, shadow) and the models unloaded. A reload that changes only
    /// this still swaps.
    pub fn routing(&self) -> (&(String, String), Vec<String>, &BTreeSet<String>) {
        let models =
            self.models.iter().map(|(name, m)| format!("{name} {} {:?} {:?}", m.default_version, m.traffic, m.shadow));
        (&self.default, models.collect(), &self.unloaded)
    }

    /// The version an unversioned request runs on: `pinned` (the `x-inferd-version` header)
    /// when given, else by the model's `traffic` weights (sticky per request id), else its
    /// default version; with the shadow that also runs it, when the model has one.
    pub fn route(&self, name: &str, request_id: &str, pinned: Option<&str>) -> Result<Route<'_>, RouteError> {
        let model = self.models.get(name).ok_or_else(|| self.missing(name))?;
        let chosen = pinned.or_else(|| pick(&model.traffic, request_id)).unwrap_or(&model.default_version);
        let version = model.versions.get(chosen).ok_or_else(|| RouteError::VersionNotFound {
            model: clip(name).into_owned(),
            version: clip(chosen).into_owned(),
        })?;
        let shadow = model.shadow.as_ref().filter(|s| s.version != chosen).and_then(|s| {
            model.versions.get(&s.version).map(|v| Shadow {
                batcher: v.batcher.clone(),
                sample_rate: s.sample_rate,
                tolerance: Tolerance { absolute: s.absolute, relative: s.relative },
            })
        });
        Ok(Route { version, shadow })
    }

    /// The version `target` runs on (`request_id` keeps a traffic split sticky).
    pub fn route_to(&self, target: Target<'_>, request_id: &str) -> Result<Route<'_>, RouteError> {
        match target {
            Target::Default { pin } => self.route_default(request_id, pin),
            Target::Model { name, pin } => self.route(name, request_id, pin),
            Target::Version { name, version } => self.get_version(name, Some(version)).map(Route::direct),
        }
    }

    /// The unversioned route of the default model (`POST /predict`).
    pub fn route_default(&self, request_id: &str, pinned: Option<&str>) -> Result<Route<'_>, RouteError> {
        self.route(&self.default.0, request_id, pinned)
    }

    fn missing(&self, name: &str) -> RouteError {
        match self.unloaded.contains(name) {
            true => RouteError::ModelUnloaded(name.to_owned()),
            false => RouteError::ModelNotFound(clip(name).into_owned()),
        }
    }

    /// Configured models unloaded through the repository API.
    pub fn unloaded(&self) -> &BTreeSet<String> {
        &self.unloaded
    }

    pub fn is_default(&self, name: &str, version: &str) -> bool {
        self.default.0 == name && self.default.1 == version
    }

    pub fn models(&self) -> &BTreeMap<String, ModelVersions> {
        &self.models
    }

    fn all(&self) -> impl Iterator<Item = (&String, &String, &Arc<Version>)> {
        self.models.iter().flat_map(|(name, model)| model.versions.iter().map(move |(v, version)| (name, v, version)))
    }

    /// Every model version with a working session; those without one, by name and version.
    pub fn not_ready(&self) -> Vec<String> {
        self.all()
            .filter(|(_, _, version)| !version.batcher.is_ready())
            .map(|(name, version, _)| format!("{name}:{version}"))
            .collect()
    }

    /// Closes every queue (queued rows still run) and hands over the inference threads.
    pub fn close(&self) -> Vec<Workers> {
        self.all().for_each(|(_, _, version)| version.batcher.close());
        self.all().filter_map(|(_, _, version)| version.take_workers()).collect()
    }
}

/// A version by weight, the same one for the same request id (its SHA-256 picks the slot).
fn pick<'a>(traffic: &'a [(String, u32)], request_id: &str) -> Option<&'a str> {
    let total: u64 = traffic.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let digest = Sha256::digest(request_id.as_bytes());
    let mut slot = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % total;
    traffic.iter().find_map(|(version, weight)| match slot.checked_sub(u64::from(*weight)) {
        Some(rest) => {
            slot = rest;
            None
        }
        None => Some(version.as_str()),
    })
}

fn unreadable(entry: &ModelConfig, e: std::io::Error) -> LoadError {
    LoadError::Model { model: entry.name.clone(), message: format!("cannot read its files: {e}") }
}

/// Loads one version (made from the files `fingerprint` describes): sessions, warm-up, golden
/// check, then its inference threads.
pub fn load_version(
    env: &Environment,
    entry: &ModelConfig,
    config: &Config,
    metrics: &Metrics,
    fingerprint: Fingerprint,
) -> Result<Version, LoadError> {
    let started = Instant::now();
    let fail = |message: String| LoadError::Model { model: entry.name.clone(), message };
    let (spec, mut sessions) = model::load(env, entry, &config.inference)?;
    model::warm_up(&spec, &mut sessions)?;
    model::check_golden(&spec, entry, &mut sessions[0])?;
    let model_metrics = Arc::new(ModelMetrics::register(metrics, &entry.name, &entry.version));
    let factory = model::SessionFactory::new(env, entry, &config.inference);
    let (batcher, workers) = Batcher::start(spec, sessions, factory, &config.batching, model_metrics)
        .map_err(|e| fail(format!("cannot start threads: {e}")))?;
    tracing::info!(model = %entry.name, version = %entry.version, ms = started.elapsed().as_millis() as u64, "model loaded");
    Ok(Version {
        batcher,
        fingerprint,
        loaded_at: SystemTime::now(),
        batching: config.batching.clone(),
        sessions: config.inference.sessions,
        workers: Mutex::new(Some(workers)),
    })
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn traffic_is_split_by_weight_and_sticky_per_request_id() {
        let traffic = vec![("1".to_owned(), 90), ("2".to_owned(), 10)];
        let ids: Vec<String> = (0..10_000).map(|i| format!("request-{i}")).collect();
        let twos = ids.iter().filter(|id| pick(&traffic, id) == Some("2")).count();
        assert!((800..1200).contains(&twos), "about 10%: {twos}");
        assert!(ids.iter().all(|id| pick(&traffic, id) == pick(&traffic, id)), "sticky");
        assert_eq!(pick(&[("1".to_owned(), 0), ("2".to_owned(), 5)], "x"), Some("2"));
        assert_eq!(pick(&[], "x"), None);
    }
}
