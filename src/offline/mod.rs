//! Offline work on the serving core: `inferd replay` (logged traffic re-scored on another
//! version) and `inferd score` (batch scoring of a file). Both load the model as `serve` does
//! (sessions, warm-up, golden check, inference threads) and feed its batcher from many
//! concurrent chunks, so that batches stay full and every inference thread stays busy.
//! `inferd schema` (schema.rs) loads an .onnx file alone, to write its instance schema.

pub mod lines;
pub mod replay;
pub mod schema;
pub mod score;
pub mod sources;

use std::collections::{BTreeMap, HashMap};
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

/// Chunks kept in flight per inference thread: enough to fill the next batch while one runs.
const IN_FLIGHT_PER_SESSION: usize = 4;

/// A chunk is sent once it holds `max_batch_rows` instances or this much text, whichever
/// comes first: large instances make small chunks.
const CHUNK_BYTES: usize = 1 << 20;

/// Text held for chunks sent and not yet answered (their instances, and what the caller keeps
/// beside them, such as replay's logged answers); reading waits while there is more. With one
/// line of at most `MAX_LINE_BYTES` being read and one chunk being filled, the text held is at
/// most `IN_FLIGHT_BYTES + 2 × (CHUNK_BYTES + MAX_LINE_BYTES)`, whatever the input.
const IN_FLIGHT_BYTES: usize = 16 << 20;

/// An instance's JSON text longer than this is not parsed as a `serde_json::Value` (which
/// takes many times its text's size) to list every field's error: it gets the decoder's error.
const VALUE_PARSE_BYTES: usize = 256 << 10;

/// An instance longer than this is checked for an array or object inside it before the decoder
/// sees it: no field takes one, and the decoder keeps one whole for its message, as a JSON tree
/// about a hundred times its text (15 MB of `[0,0,...]` cost 1.4 GB). Shorter ones cost little.
const NESTED_CHECK_BYTES: usize = 4 << 10;

/// Why a long instance is refused before it is decoded: an array or object inside it.
pub fn nested(text: &[u8]) -> Option<String> {
    if text.len() <= NESTED_CHECK_BYTES {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0u32, false, false);
    for &b in text {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ if in_string => {}
            b'[' | b'{' if depth >= 1 => {
                return Some(format!(
                    "an array or object inside the instance ({} bytes): no field takes one",
                    text.len()
                ))
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The model version to run: one the configuration names, or an `.onnx` file with its schema.
pub fn load_target(
    config: &Config,
    model: &str,
    version: Option<&str>,
    onnx: Option<(PathBuf, PathBuf)>,
) -> Result<Arc<Version>, String> {
    let entry = match onnx {
        Some((path, schema)) => ModelConfig {
            schema: Some(schema),
            version: version.unwrap_or("candidate").to_owned(),
            // The log holds the answers under the configured model's public names: the file
            // is compared under the same ones.
            outputs: config.default_version(model).map(|m| m.outputs.clone()).unwrap_or_default(),
            ..ModelConfig::new(model, path)
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
    let (local, fingerprint) = registry::prepare(&entry, config).map_err(|e| e.to_string())?;
    registry::load_version(&env, &local, config, &metrics, fingerprint).map(Arc::new).map_err(|e| e.to_string())
}

/// Closes the version's queue and waits for its inference threads, before the command returns
/// and the process exits: ONNX Runtime's static destructors racing a thread that still held a
/// session crashed about one exit in ten (a segfault after the command's last line).
pub fn retire(version: &Version) {
    tokio::task::block_in_place(|| version.close_and_join());
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

/// Instances for one `Runner::push`, with the bytes of text held for them.
pub struct Chunk {
    texts: Vec<String>,
    bytes: usize,
    rows: usize,
}

impl Chunk {
    /// Adds an instance's JSON text; `held` counts what the caller keeps for it until it is
    /// answered.
    pub fn add(&mut self, text: String, held: usize) {
        self.bytes += text.len() + held;
        self.texts.push(text);
    }

    pub fn is_full(&self) -> bool {
        self.texts.len() >= self.rows || self.bytes >= CHUNK_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

/// Scores instances in chunks through `version`'s batcher, many chunks in flight; `done` gets
/// each chunk's results in input order (the chunks themselves in order too).
pub struct Runner {
    version: Arc<Version>,
    in_flight: usize,
    chunk_rows: usize,
    tasks: JoinSet<Vec<Scored>>,
    /// Chunk ids by task, and the rows and bytes of each chunk not yet handed to `done`.
    ids: HashMap<tokio::task::Id, u64>,
    sizes: BTreeMap<u64, (usize, usize)>,
    held: usize,
    next: u64,
    /// Chunks finished out of order, waiting for those before them.
    finished: BTreeMap<u64, Vec<Scored>>,
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
            ids: HashMap::new(),
            sizes: BTreeMap::new(),
            held: 0,
            next: 0,
            finished: BTreeMap::new(),
            emitted: 0,
            rows: 0,
            busy: Duration::ZERO,
            started: None,
        }
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        self.version.batcher.spec()
    }

    pub fn chunk(&self) -> Chunk {
        Chunk { texts: Vec::with_capacity(self.chunk_rows), bytes: 0, rows: self.chunk_rows }
    }

    /// Queues one chunk; while the window is full (in chunks or in bytes), waits for the
    /// oldest chunks and hands every chunk now complete, in order, to `done`.
    pub async fn push(&mut self, chunk: Chunk, done: &mut impl FnMut(Vec<Scored>)) {
        self.started.get_or_insert_with(Instant::now);
        let rows = chunk.texts.len();
        self.rows += rows as u64;
        self.held += chunk.bytes;
        let id = self.next;
        self.next += 1;
        self.sizes.insert(id, (rows, chunk.bytes));
        let batcher = self.version.batcher.clone();
        let task = self.tasks.spawn(async move { score_chunk(&batcher, chunk.texts).await });
        self.ids.insert(task.id(), id);
        while self.tasks.len() >= self.in_flight || (self.held >= IN_FLIGHT_BYTES && !self.tasks.is_empty()) {
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
        if let Some(joined) = self.tasks.join_next_with_id().await {
            let (task, scored) = match joined {
                Ok((task, scored)) => (task, Ok(scored)),
                Err(e) => (e.id(), Err(format!("scoring failed: {e}"))),
            };
            let id = self.ids.remove(&task).expect("every task has a chunk id");
            let scored = scored.unwrap_or_else(|message| {
                let rows = self.sizes.get(&id).map_or(0, |&(rows, _)| rows);
                (0..rows).map(|_| refused(message.clone())).collect()
            });
            self.finished.insert(id, scored);
        }
        while let Some(scored) = self.finished.remove(&self.emitted) {
            let (_, bytes) = self.sizes.remove(&self.emitted).expect("every chunk has its size");
            self.held -= bytes;
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
    let decoded = decode::json::body(crate::decode::Model::of(spec), body.as_bytes(), Envelope::Predict, chunk.len());
    drop(body); // not held while the chunk runs: it would double the text in flight
    if let Ok((rows, _)) = decoded {
        return match infer(batcher, rows).await {
            Ok(outputs) => outputs.into_iter().map(Scored::Outputs).collect(),
            Err(message) => chunk.iter().map(|_| refused(message.clone())).collect(),
        };
    }
    let mut out = Vec::with_capacity(chunk.len());
    for text in chunk {
        if text.len() > VALUE_PARSE_BYTES {
            out.push(score_alone(batcher, &text).await);
            continue;
        }
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

/// One instance through the compiled decoder alone: its outputs, or the decoder's error.
async fn score_alone(batcher: &Batcher, text: &str) -> Scored {
    let body = format!("{{\"instances\":[{text}]}}");
    match decode::json::body(crate::decode::Model::of(batcher.spec()), body.as_bytes(), Envelope::Predict, 1) {
        Ok((rows, _)) => match infer(batcher, rows).await {
            Ok(mut outputs) => Scored::Outputs(outputs.pop().unwrap_or_default()),
            Err(message) => refused(message),
        },
        Err(e) => refused(e.to_string()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_long_instance_with_an_array_or_object_inside_is_refused_before_decoding() {
        let pad = "x".repeat(NESTED_CHECK_BYTES);
        let long = |text: &str| format!(r#"{{"pad": "{pad}", {text}}}"#);
        assert!(nested(long(r#""a": [1, 2]"#).as_bytes()).is_some());
        assert!(nested(long(r#""a": {"b": 1}"#).as_bytes()).is_some());
        assert!(nested(long(r#""a": "[{", "b": "\"[", "c": 1"#).as_bytes()).is_none(), "inside strings");
        assert!(nested(format!("[1, 2, \"{pad}\"]").as_bytes()).is_none(), "a plain row");
        assert!(nested(format!("[1, [2], \"{pad}\"]").as_bytes()).is_some());
        assert!(nested(br#"{"a": [1, 2]}"#).is_none(), "short: the decoder's own message");
    }
}
