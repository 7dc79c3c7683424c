//! Offline work on the serving core: `inferd replay` (logged traffic re-scored on another
//! version) and `inferd score` (batch scoring of a file). Both load the model as `serve` does
//! (sessions, warm-up, golden check, inference threads) and feed its batcher from many
//! concurrent chunks, so that batches stay full and every inference thread stays busy.

pub mod replay;
pub mod score;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::config::{Config, ModelConfig};
use crate::decode::{self, Envelope};
use crate::error::FieldError;
use crate::model::views::RowOutputs;
use crate::model::{self, ModelSpec};
use crate::observe::Metrics;
use crate::registry::{self, Version};
use crate::tensor::rows::Rows;

/// Rows per chunk handed to the batcher, in chunks of at most this many kept in flight per
/// inference thread: enough to fill the next batch while one runs.
const IN_FLIGHT_PER_SESSION: usize = 4;

/// The model version to run: one the configuration names, or an `.onnx` file with its schema.
pub fn load_target(
    config: &Config,
    model: &str,
    version: Option<&str>,
    onnx: Option<(PathBuf, PathBuf)>,
) -> Result<Arc<Version>, String> {
    let entry = match onnx {
        Some((path, schema)) => ModelConfig {
            name: model.to_owned(),
            path,
            schema: Some(schema),
            version: version.unwrap_or("candidate").to_owned(),
            default: false,
            default_version: false,
            probabilities_by_class: false,
            labels: None,
            golden: None,
            traffic: None,
            shadow: None,
        },
        None => {
            let configured = config.models.iter().filter(|m| m.name == model);
            let entry = match version {
                Some(version) => configured.clone().find(|m| m.version == version),
                None => config.default_version(model),
            };
            entry
                .ok_or_else(|| match version {
                    Some(v) => format!("model '{model}' version '{v}' is not in {}", source(config)),
                    None => format!("model '{model}' is not in {}", source(config)),
                })?
                .clone()
        }
    };
    let env = model::init_runtime(&config.inference).map_err(|e| e.to_string())?;
    let mut metrics_config = config.metrics.clone();
    metrics_config.enabled = false;
    let metrics = Metrics::new(&metrics_config).map_err(|e| e.to_string())?;
    let fingerprint = registry::Fingerprint::of(&entry, config).map_err(|e| format!("cannot read its files: {e}"))?;
    registry::load_version(&env, &entry, config, &metrics, fingerprint).map(Arc::new).map_err(|e| e.to_string())
}

fn source(config: &Config) -> String {
    config.source.as_ref().map_or("the configuration".into(), |s| s.config.display().to_string())
}

/// What became of one instance.
pub enum Scored {
    /// The outputs as `/predict` writes them: a JSON object's text.
    Outputs(String),
    /// Field errors (paths relative to the instance), or why its chunk could not run.
    Refused(Vec<FieldError>),
}

/// Scores instances in chunks through `version`'s batcher, many chunks in flight; `done` gets
/// each chunk's results in input order (the chunks themselves in order too).
pub struct Runner {
    version: Arc<Version>,
    in_flight: usize,
    pub chunk_rows: usize,
    tasks: JoinSet<(u64, Vec<Scored>)>,
    next: u64,
    /// Chunks finished out of order, waiting for those before them.
    finished: std::collections::BTreeMap<u64, Vec<Scored>>,
    emitted: u64,
    pub rows: u64,
    pub busy: Duration,
    started: Option<Instant>,
}

impl Runner {
    pub fn new(version: Arc<Version>) -> Self {
        let chunk_rows = version.batching.max_batch_rows;
        // Never more rows in flight than the queue takes.
        let fits = (version.batching.queue_capacity_rows / chunk_rows).max(1);
        let in_flight = (version.sessions * IN_FLIGHT_PER_SESSION).min(fits);
        Self {
            version,
            in_flight,
            chunk_rows,
            tasks: JoinSet::new(),
            next: 0,
            finished: Default::default(),
            emitted: 0,
            rows: 0,
            busy: Duration::ZERO,
            started: None,
        }
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        self.version.batcher.spec()
    }

    /// Queues one chunk of instances (each a JSON text); once the window is full, waits for
    /// the oldest chunks and hands every chunk now complete, in order, to `done`.
    pub async fn push(&mut self, chunk: Vec<String>, done: &mut impl FnMut(Vec<Scored>)) {
        self.started.get_or_insert_with(Instant::now);
        self.rows += chunk.len() as u64;
        let batcher = self.version.batcher.clone();
        let id = self.next;
        self.next += 1;
        self.tasks.spawn(async move { (id, score_chunk(&batcher, chunk).await) });
        while self.tasks.len() >= self.in_flight {
            self.collect_one(done).await;
        }
    }

    /// Waits for every chunk queued; returns the rows scored per second of scoring.
    pub async fn finish(&mut self, done: &mut impl FnMut(Vec<Scored>)) -> f64 {
        while !self.tasks.is_empty() {
            self.collect_one(done).await;
        }
        self.busy = self.started.map(|s| s.elapsed()).unwrap_or_default();
        self.rows as f64 / self.busy.as_secs_f64().max(1e-9)
    }

    async fn collect_one(&mut self, done: &mut impl FnMut(Vec<Scored>)) {
        if let Some(joined) = self.tasks.join_next().await {
            let (id, scored) = joined.unwrap_or_else(|e| (u64::MAX, vec![refused(format!("scoring failed: {e}"))]));
            self.finished.insert(id, scored);
        }
        while let Some(scored) = self.finished.remove(&self.emitted) {
            done(scored);
            self.emitted += 1;
        }
    }
}

fn refused(message: String) -> Scored {
    Scored::Refused(vec![FieldError { path: String::new(), message }])
}

/// Decodes the chunk as one `/predict` body with the model's compiled decoder (what `serve`
/// does) and runs it; a chunk with an invalid instance is taken one instance at a time, so
/// that each gets its own errors.
async fn score_chunk(batcher: &Batcher, chunk: Vec<String>) -> Vec<Scored> {
    let spec = batcher.spec();
    let mut body = String::with_capacity(chunk.iter().map(|t| t.len() + 1).sum::<usize>() + 16);
    body.push_str("{\"instances\":[");
    for (i, text) in chunk.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(text);
    }
    body.push_str("]}");
    if let Ok((rows, _)) = decode::body(spec.decoding(), body.as_bytes(), Envelope::Predict, chunk.len()) {
        return match infer(batcher, rows).await {
            Ok(outputs) => outputs.into_iter().map(Scored::Outputs).collect(),
            Err(message) => chunk.iter().map(|_| refused(message.clone())).collect(),
        };
    }
    let mut out = Vec::with_capacity(chunk.len());
    for text in chunk {
        let instance = match serde_json::from_str::<Value>(&text) {
            Ok(instance) => instance,
            Err(e) => {
                out.push(refused(format!("not JSON: {e}")));
                continue;
            }
        };
        out.extend(score_values(batcher, vec![instance]).await);
    }
    out
}

/// Checks each instance against the schema, runs the valid ones as one request, and answers
/// per instance.
async fn score_values(batcher: &Batcher, chunk: Vec<Value>) -> Vec<Scored> {
    let spec = batcher.spec();
    let mut out: Vec<Option<Scored>> = (0..chunk.len()).map(|_| None).collect();
    let mut valid = Vec::with_capacity(chunk.len());
    let mut positions = Vec::with_capacity(chunk.len());
    for (i, instance) in chunk.into_iter().enumerate() {
        let mut errors = Vec::new();
        spec.schema.check(0, &instance, &mut errors);
        if errors.is_empty() {
            positions.push(i);
            valid.push(instance);
        } else {
            for e in &mut errors {
                e.path = e.path.trim_start_matches("/instances/0").to_owned();
            }
            out[i] = Some(Scored::Refused(errors));
        }
    }
    if !valid.is_empty() {
        match run(batcher, &valid).await {
            Ok(rows) => rows.into_iter().zip(&positions).for_each(|(r, &i)| out[i] = Some(Scored::Outputs(r))),
            Err(message) => positions.iter().for_each(|&i| out[i] = Some(refused(message.clone()))),
        }
    }
    out.into_iter().map(|s| s.expect("every instance is answered")).collect()
}

async fn run(batcher: &Batcher, instances: &[Value]) -> Result<Vec<String>, String> {
    let spec = batcher.spec();
    let rows = Rows::encode(&spec.plan, instances, 0)
        .map_err(|errors| errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>().join("; "))?;
    infer(batcher, rows).await
}

/// Runs encoded rows; each row's outputs as JSON text.
async fn infer(batcher: &Batcher, rows: Rows) -> Result<Vec<String>, String> {
    let spec = batcher.spec();
    // Offline: no request deadline, but a bound so that a wedged session cannot hang the run.
    let deadline = Instant::now() + Duration::from_secs(600);
    let inferred =
        batcher.admit(rows.len).map_err(|e| e.to_string())?.infer(rows, deadline).await.map_err(|e| e.to_string())?;
    Ok(inferred
        .each_row()
        .map(|(batch, row)| serde_json::to_string(&RowOutputs { spec, batch, row, redact: &[] }).unwrap_or_default())
        .collect())
}
