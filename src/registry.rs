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
    /// Loads the runtime and every model, warms every session up, and starts the inference
    /// threads. Blocking.
    pub fn load(config: &Config) -> Result<(Self, Vec<Workers>), LoadError> {
        let env = model::init_runtime(&config.inference)?;
        let mut models = HashMap::new();
        let mut workers = Vec::new();
        for model_config in &config.models {
            let started = Instant::now();
            let (spec, mut sessions) = model::load(&env, model_config, &config.inference)?;
            model::warm_up(&spec, &mut sessions)?;
            let (batcher, threads) = Batcher::start(spec, sessions, &config.batching).map_err(|e| {
                LoadError::Model { model: model_config.name.clone(), message: format!("cannot start threads: {e}") }
            })?;
            tracing::info!(model = %model_config.name, version = %model_config.version, ms = started.elapsed().as_millis() as u64, "model loaded");
            models.insert(model_config.name.clone(), batcher);
            workers.push(threads);
        }
        Ok((Self { models, default: config.default_model().name.clone(), _env: env }, workers))
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
