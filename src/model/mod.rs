//! Loading ONNX models: the runtime library, sessions, and what each model takes and gives.

pub mod golden;
pub mod labels;
pub mod source;
pub mod views;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::Session;

use crate::config::{InferenceConfig, ModelConfig};
use crate::schema::InstancePlan;
use crate::schema::InstanceSchema;
use crate::tensor;
use crate::tensor::rows::{Outputs, Rows};
use crate::tensor::signature::{self, FeedPlan, Signature, TensorInfo};

const ORT_LIBRARY: &str = "libonnxruntime.so.1.31.1";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "ONNX Runtime library not found (looked in: {}); run scripts/fetch-onnxruntime.sh, \
         or set ORT_DYLIB_PATH to a {ORT_LIBRARY}",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    LibraryMissing(Vec<PathBuf>),
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error("model '{model}': {message}")]
    Model { model: String, message: String },
    /// The model file could not be fetched, or is not the one its `sha256` pins.
    #[error("model '{model}' version '{version}': {message}")]
    Source { model: String, version: String, message: String },
    #[error("model '{model}' version '{version}' failed its golden check ({}): {}", .file.display(), .problems.join("; "))]
    Golden { model: String, version: String, file: PathBuf, problems: Vec<String> },
}

/// Runs the model's golden file, if it has one, on `session`.
pub fn check_golden(spec: &ModelSpec, model: &ModelConfig, session: &mut Session) -> Result<(), LoadError> {
    for unread in golden::unread(model) {
        tracing::warn!(
            model = %spec.name,
            version = %spec.version,
            file = %unread.display(),
            read = %golden::path_for(model).map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
            "a golden file named like the model is not read: only the entry's `golden`, else the first of \
             <schema stem>.golden.json and <model name>.golden.json beside the schema, is"
        );
    }
    let Some(file) = golden::path_for(model) else { return Ok(()) };
    let fail = |problems: Vec<String>| LoadError::Golden {
        model: spec.name.clone(),
        version: spec.version.clone(),
        file: file.clone(),
        problems,
    };
    let golden = golden::read(&file).map_err(|e| fail(vec![e]))?;
    golden::check(spec, session, &golden).map_err(fail)?;
    tracing::info!(model = %spec.name, version = %spec.version, cases = golden.cases.len(), file = %file.display(), "golden check passed");
    Ok(())
}

/// Where the runtime library is looked for, first match wins: the explicit setting (config,
/// `--ort-library` or `ORT_DYLIB_PATH`), `.ort/` under the working directory, the executable's
/// own folder, then `.ort/` of the checkout when the executable sits in its `target/<profile>/`.
/// Every place is found from where the program runs, never from where it was built: a build
/// folder is gone once a platform moves the result (a PaaS slug, an image layer).
pub fn library_candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path.to_path_buf()];
    }
    let mut out = vec![PathBuf::from(".ort").join(ORT_LIBRARY)];
    if let Some(dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        out.push(dir.join(ORT_LIBRARY));
        out.push(dir.join("libonnxruntime.so"));
        if let Some(checkout) = dir.parent().and_then(Path::parent) {
            out.push(checkout.join(".ort").join(ORT_LIBRARY));
        }
    }
    out
}

/// ONNX Runtime allows one environment per process; every caller after the first shares it.
static RUNTIME: Mutex<Option<Environment>> = Mutex::new(None);

/// Loads the runtime library and builds the process-wide ONNX Runtime environment, once.
pub fn init_runtime(config: &InferenceConfig) -> Result<Environment, LoadError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(env) = runtime.as_ref() {
        return Ok(env.clone());
    }
    let env = build_runtime(config)?;
    *runtime = Some(env.clone());
    Ok(env)
}

fn build_runtime(config: &InferenceConfig) -> Result<Environment, LoadError> {
    let candidates = library_candidates(config.ort_library.as_deref());
    let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| LoadError::LibraryMissing(candidates.clone()))?;
    let library = |message: String| LoadError::Library { path: path.clone(), message };
    let env = ort::init_from(path)
        .map_err(|e| library(e.to_string()))?
        .with_name("inferd")
        .with_telemetry(false)
        .build()
        .map_err(|e| library(e.to_string()))?;
    tracing::info!(path = %path.display(), "ONNX Runtime library loaded");
    Ok(env)
}

/// Everything about a model except its sessions; shared by HTTP handlers and inference threads.
#[derive(Debug)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    /// The graph's inputs and outputs, by the graph's names (what sessions are fed and read by).
    pub signature: Signature,
    /// The outputs as clients see them: the graph's, renamed by the config's `outputs`; in
    /// the graph's order. Every encoder but `/v2`'s names outputs by these.
    pub outputs: Vec<TensorInfo>,
    /// The outputs as `/v2` names them: `outputs` with the config's `rename_v2`, else the graph's.
    pub v2_outputs: Vec<TensorInfo>,
    pub schema: InstanceSchema,
    pub plan: FeedPlan,
    /// The schema compiled: each field's type, range and rules, as the decoders check them.
    pub decoder: InstancePlan,
    /// Probabilities keyed by class, when the model asks for it.
    pub classes: Option<views::Classes>,
    /// The model's prediction for the schema's first example, as `/predict` writes it: the
    /// example answer of the OpenAPI document. `None` when the example cannot run.
    pub example_prediction: Option<serde_json::Value>,
}

/// Opens `inference.sessions` sessions of one model and checks its schema against its inputs.
pub fn load(
    env: &Environment,
    model: &ModelConfig,
    inference: &InferenceConfig,
) -> Result<(Arc<ModelSpec>, Vec<Session>), LoadError> {
    let fail = |message: String| LoadError::Model { model: model.name.clone(), message };
    let mut sessions = (0..inference.sessions)
        .map(|_| open_session(env, &model.path, inference.intra_op_threads).map_err(|e| fail(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &sessions[0];
    let signature = Signature::from_outlets(
        first.inputs().iter().map(|o| (o.name(), o.dtype())),
        first.outputs().iter().map(|o| (o.name(), o.dtype())),
    )
    .map_err(|e| fail(e.to_string()))?;
    let schema = match &model.schema {
        Some(path) => InstanceSchema::from_file(path),
        None => InstanceSchema::derive(&signature, &model.name),
    }
    .map_err(|e| fail(e.to_string()))?;
    let plan = FeedPlan::new(&signature, schema.fields()).map_err(|e| fail(e.to_string()))?;
    let signature_outputs = signature.outputs.clone();
    let outputs = views::public_outputs(&signature.outputs, &model.outputs).map_err(fail)?;
    let v2_outputs = if model.rename_v2 { outputs.clone() } else { signature.outputs.clone() };
    let decoder = InstancePlan::compile(schema.document(), &plan, signature.matrix_width().is_some());
    if !decoder.fallback.is_empty() {
        tracing::info!(
            model = %model.name,
            keywords = %decoder.fallback.join(", "),
            "the schema has keywords the decoder does not compile; jsonschema checks them after decoding"
        );
    }
    let spec = ModelSpec {
        name: model.name.clone(),
        version: model.version.clone(),
        signature,
        outputs,
        v2_outputs,
        schema,
        plan,
        decoder,
        classes: classes(model, &signature_outputs).map_err(fail)?,
        example_prediction: None,
    };
    let example_prediction = example_prediction(&spec, &mut sessions[0]);
    Ok((Arc::new(ModelSpec { example_prediction, ..spec }), sessions))
}

/// The output and class names of a model with `probabilities_by_class`.
fn classes(model: &ModelConfig, outputs: &[signature::TensorInfo]) -> Result<Option<views::Classes>, String> {
    if !model.probabilities_by_class {
        return Ok(None);
    }
    let found = labels::class_probabilities(&model.path, model.labels.as_deref(), outputs)?;
    tracing::info!(model = %model.name, output = %found.output.name, classes = found.labels.len(), source = ?found.source, "probabilities keyed by class");
    Ok(Some(views::Classes { output: found.output.index, labels: found.labels, label: found.label }))
}

fn example_prediction(spec: &ModelSpec, session: &mut Session) -> Option<serde_json::Value> {
    let inputs = Rows::encode(&spec.plan, spec.schema.examples().get(..1)?, 0).ok()?;
    let outputs = run(spec, session, &inputs).ok()?;
    let batch = tensor::rows::Batch { inputs, outputs };
    Some(serde_json::Value::Object(views::row_outputs_json(spec, &batch, 0)))
}

/// Why a run failed. Whether the fault lies with the rows or with the session is decided by
/// the batcher, which can re-run known-good rows to tell.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the input tensors: {0}")]
    Inputs(ort::Error),
    #[error("ONNX Runtime failed: {0}")]
    Session(ort::Error),
    #[error("unexpected outputs: {0}")]
    Outputs(String),
    /// A fault injected by a test (see `batch::Fault`).
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

/// Runs encoded rows through one session; the rows' buffers are lent to ONNX Runtime, not copied.
pub fn run(spec: &ModelSpec, session: &mut Session, rows: &Rows) -> Result<Outputs, RunError> {
    let inputs = rows.inputs(&spec.plan).map_err(RunError::Inputs)?;
    let outputs = session.run(inputs).map_err(RunError::Session)?;
    Outputs::read(&outputs, &spec.signature.outputs, rows.len).map_err(RunError::Outputs)
}

/// Opens sessions of one model again, for an inference thread whose session failed.
pub struct SessionFactory {
    env: Environment,
    path: PathBuf,
    intra_op_threads: usize,
}

impl SessionFactory {
    pub fn new(env: &Environment, model: &ModelConfig, inference: &InferenceConfig) -> Self {
        Self { env: env.clone(), path: model.path.clone(), intra_op_threads: inference.intra_op_threads }
    }

    /// A fresh session, warmed up with the schema's examples.
    pub fn open(&self, spec: &ModelSpec) -> Result<Session, LoadError> {
        let mut session = open_session(&self.env, &self.path, self.intra_op_threads)
            .map_err(|e| LoadError::Model { model: spec.name.clone(), message: e.to_string() })?;
        warm_up(spec, std::slice::from_mut(&mut session))?;
        Ok(session)
    }
}

/// Runs the schema's examples through every session, so that no first request pays for lazy
/// initialisation and a model that cannot serve its own examples never reports ready.
pub fn warm_up(spec: &ModelSpec, sessions: &mut [Session]) -> Result<(), LoadError> {
    let fail = |message: String| LoadError::Model { model: spec.name.clone(), message };
    let rows = Rows::encode(&spec.plan, spec.schema.examples(), 0)
        .map_err(|e| fail(format!("the schema's examples cannot be encoded: {}", crate::error::examples_text(&e))))?;
    for session in sessions {
        match run(spec, session, &rows) {
            Ok(_) => {}
            // A derived schema's example (zeros, empty strings) is a guess the model may refuse.
            Err(error) if spec.schema.is_derived() => {
                tracing::warn!(
                    model = %spec.name, %error,
                    "warm-up with a generated example failed; give the model a schema file with real examples"
                );
                return Ok(());
            }
            Err(error) => return Err(fail(format!("warm-up with the schema's examples failed: {error}"))),
        }
    }
    Ok(())
}

pub fn open_session(env: &Environment, path: &Path, intra_op_threads: usize) -> ort::Result<Session> {
    crate::reading::note(path);
    Session::builder(env)?
        .with_intra_threads(intra_op_threads)?
        .with_inter_threads(1)?
        // A failed run comes back as an error, which the batcher reports (rate-limited); ONNX
        // Runtime's own line for it would let a client flood the log with refused rows.
        .with_log_level(ort::logging::LogLevel::Fatal)?
        .commit_from_file(path)
}
