//! The loaded models, by name and version, and the work of loading them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use ort::environment::Environment;

use crate::batch::{Batcher, Workers};
use crate::config::Config;
use crate::error::{clip, ApiError};
use crate::model::{self, LoadError};
use crate::observe::{Metrics, ModelMetrics};

/// Every loaded version of one model name.
pub struct ModelVersions {
    /// Keyed by version, in version-string order.
    pub versions: BTreeMap<String, Batcher>,
    pub default_version: String,
}

pub struct Registry {
    models: BTreeMap<String, ModelVersions>,
    default: (String, String),
    _env: Environment,
}

impl Registry {
    /// Loads the runtime and every model, warms every session up, and starts the inference
    /// threads. Blocking.
    pub fn load(config: &Config, metrics: &Metrics) -> Result<(Self, Vec<Workers>), LoadError> {
        let env = model::init_runtime(&config.inference)?;
        let mut models: BTreeMap<String, ModelVersions> = BTreeMap::new();
        let mut workers = Vec::new();
        for entry in &config.models {
            let started = Instant::now();
            let (spec, mut sessions) = model::load(&env, entry, &config.inference)?;
            model::warm_up(&spec, &mut sessions)?;
            let model_metrics = Arc::new(ModelMetrics::register(metrics, &entry.name, &entry.version));
            let factory = model::SessionFactory::new(&env, entry, &config.inference);
            let (batcher, threads) =
                Batcher::start(spec, sessions, factory, &config.batching, model_metrics).map_err(|e| {
                    LoadError::Model { model: entry.name.clone(), message: format!("cannot start threads: {e}") }
                })?;
            tracing::info!(model = %entry.name, version = %entry.version, ms = started.elapsed().as_millis() as u64, "model loaded");
            let default_version = config.default_version(&entry.name).expect("entry is configured").version.clone();
            models
                .entry(entry.name.clone())
                .or_insert_with(|| ModelVersions { versions: BTreeMap::new(), default_version })
                .versions
                .insert(entry.version.clone(), batcher);
            workers.push(threads);
        }
        let default = config.default_model();
        Ok((Self { models, default: (default.name.clone(), default.version.clone()), _env: env }, workers))
    }

    /// The model version a route names; without a version, the model's default version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&Batcher, ApiError> {
        let model = self.models.get(name).ok_or_else(|| ApiError::ModelNotFound(clip(name).into_owned()))?;
        let version = version.unwrap_or(&model.default_version);
        model.versions.get(version).ok_or_else(|| ApiError::VersionNotFound {
            model: clip(name).into_owned(),
            version: clip(version).into_owned(),
        })
    }

    /// The entry served at `POST /predict`.
    pub fn default_model(&self) -> &Batcher {
        self.get(&self.default.0, Some(&self.default.1)).expect("the default model is loaded")
    }

    pub fn is_default(&self, name: &str, version: &str) -> bool {
        self.default.0 == name && self.default.1 == version
    }

    pub fn models(&self) -> &BTreeMap<String, ModelVersions> {
        &self.models
    }

    /// Every model version with a working session; those without one, by name and version.
    pub fn not_ready(&self) -> Vec<String> {
        self.models
            .iter()
            .flat_map(|(name, model)| model.versions.iter().map(move |(version, b)| (name, version, b)))
            .filter(|(_, _, batcher)| !batcher.is_ready())
            .map(|(name, version, _)| format!("{name}:{version}"))
            .collect()
    }

    pub fn close(&self) {
        self.models.values().flat_map(|m| m.versions.values()).for_each(Batcher::close);
    }
}
