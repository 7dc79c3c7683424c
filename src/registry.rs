//! The loaded models, by name, and the work of loading them.

use std::collections::HashMap;
use std::time::Instant;

use ort::environment::Environment;

use crate::batch::{Batcher, Workers};
use crate::config::Config;
use crate::model::{self, LoadError};

pub struct Registry {
    models: HashMap<String, Batcher>,
    default: String,
    _env: Environment,
}

impl Registry {
    /// Loads the runtime and every model, and starts their inference threads. Blocking.
    pub fn load(config: &Config) -> Result<(Self, Vec<Workers>), LoadError> {
        let env = model::init_runtime(&config.inference)?;
        let mut models = HashMap::new();
        let mut workers = Vec::new();
        for model_config in &config.models {
            let started = Instant::now();
            let (spec, sessions) = model::load(&env, model_config, &config.inference)?;
            let (batcher, threads) = Batcher::start(spec, sessions, &config.batching).map_err(|e| {
                LoadError::Model { model: model_config.name.clone(), message: format!("cannot start threads: {e}") }
            })?;
            tracing::info!(model = %model_config.name, version = %model_config.version, ms = started.elapsed().as_millis() as u64, "model loaded");
            models.insert(model_config.name.clone(), batcher);
            workers.push(threads);
        }
        Ok((Self { models, default: config.default_model().name.clone(), _env: env }, workers))
    }

    /// Runs every model's schema examples through the full path once, so that the first real
    /// request does not pay for lazy initialisation, and a model that cannot serve its own
    /// examples never reports ready.
    pub async fn warm_up(&self) -> Result<(), LoadError> {
        for (name, batcher) in &self.models {
            let schema = &batcher.spec().schema;
            match batcher.infer(schema.examples()).await {
                Ok(_) => {}
                // A derived schema's example (zeros, empty strings) is a guess the model may refuse.
                Err(e) if schema.is_derived() => tracing::warn!(
                    model = %name, error = ?e,
                    "warm-up with a generated example failed; give the model a schema file with real examples"
                ),
                Err(e) => {
                    return Err(LoadError::Model {
                        model: name.clone(),
                        message: format!("warm-up with the schema's examples failed: {e:?}"),
                    })
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Batcher> {
        self.models.get(name)
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    pub fn close(&self) {
        self.models.values().for_each(Batcher::close);
    }
}
