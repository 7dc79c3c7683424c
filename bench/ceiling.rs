//! The ceiling for a model: rows per second of ONNX Runtime alone, on one thread, with the
//! session options inferd uses (`inferd::model::open_session`), for each batch size. No HTTP,
//! no JSON, no queue: a `[B, W]` f32 tensor is lent to the session, run, and its first output
//! read, in a loop. What inferd serves of a model is measured against this.
//!
//! ```sh
//! cargo run --release --example ceiling -- models/wide_mlp.onnx              # 1,2,4..256, 2 s each
//! cargo run --release --example ceiling -- models/compute_mlp.onnx 1,64 5 1  # batches, secs, intra-op threads
//! ```
//! Output, one line per batch size and one for the best (machine-readable):
//! `CEILING batch=32 rows_per_s=118000 calls_per_s=3687 us_per_call=271.2`,
//! `CEILING_BEST batch=128 rows_per_s=131000`.
//! The runtime library is found as inferd finds it (`ORT_DYLIB_PATH`, `.ort/` under the working
//! directory, ...); `--config runtime.toml` takes `[inference]` from a config file instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use inferd::config::{Config, InferenceConfig};
use ort::value::TensorRef;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "ceiling", about = "ONNX Runtime rows/s for one model, per batch size, on one thread")]
struct Args {
    /// The .onnx file: one f32 input of shape [N, W] (or [N]), N dynamic.
    model: PathBuf,
    /// Batch sizes, comma-separated.
    #[arg(default_value = "1,2,4,8,16,32,64,128,256", value_parser = parse_batches)]
    batches: Batches,
    /// Seconds of timed runs per batch size (after a short warm-up).
    #[arg(default_value_t = 2.0)]
    secs: f64,
    /// ONNX Runtime intra-op threads of the session (inferd's inference.intra_op_threads).
    #[arg(default_value_t = 1)]
    intra_op_threads: usize,
    /// Take [inference] (the runtime library's path) from this config file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Batches(Vec<usize>);

fn parse_batches(text: &str) -> Result<Batches, String> {
    let sizes = text
        .split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("'{s}' is not a batch size (a whole number above 0)")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batches(sizes))
}

/// Distinct random batches cycled through, so the model never sees one input twice in a row.
const VARIANTS: usize = 8;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.secs.is_finite() || args.secs <= 0.0 {
        bail!("seconds per size must be a number above 0");
    }
    let inference = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let base = path.parent().map(PathBuf::from).unwrap_or_default();
            Config::from_toml_unchecked(&text, &base)?.inference
        }
        None => InferenceConfig {
            ort_library: std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(PathBuf::from),
            ..InferenceConfig::default()
        },
    };
    let env = inferd::model::init_runtime(&inference)?;
    let mut session = inferd::model::open_session(&env, &args.model, args.intra_op_threads)
        .with_context(|| format!("cannot open {}", args.model.display()))?;

    if session.inputs().len() != 1 {
        bail!("the model has {} inputs; the ceiling takes models with one f32 input", session.inputs().len());
    }
    let input = &session.inputs()[0];
    let name = input.name().to_owned();
    let dims: Vec<i64> = input.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    let width = match dims.as_slice() {
        [_] => None,
        [_, w] if *w > 0 => Some(*w as usize),
        _ => bail!("input '{name}' has shape {dims:?}; the ceiling takes [N, W] or [N]"),
    };
    let output = session.outputs()[0].name().to_owned();
    println!(
        "# model={} input={name}{dims:?} output={output} intra_op_threads={} secs_per_size={}",
        args.model.display(),
        args.intra_op_threads,
        args.secs
    );

    let mut rng = fastrand::Rng::with_seed(20261101);
    let mut best = (0usize, 0.0f64);
    let mut checksum = 0.0f64;
    for &batch in &args.batches.0 {
        let per_batch = batch * width.unwrap_or(1);
        let shape: Vec<usize> = match width {
            Some(w) => vec![batch, w],
            None => vec![batch],
        };
        let data: Vec<Vec<f32>> =
            (0..VARIANTS).map(|_| (0..per_batch).map(|_| rng.f32() * 4.0 - 2.0).collect()).collect();
        let mut once = |i: usize| -> anyhow::Result<f64> {
            let tensor = TensorRef::from_array_view((shape.clone(), data[i % VARIANTS].as_slice()))?;
            let outputs = session.run(ort::inputs![name.as_str() => tensor])?;
            let (_, values) = outputs[output.as_str()].try_extract_tensor::<f32>()?;
            Ok(values.first().copied().unwrap_or(0.0) as f64)
        };
        // Warm-up: the first runs of a new shape plan their memory.
        let warm = Instant::now();
        let mut i = 0;
        while i < 5 || warm.elapsed() < Duration::from_millis(200) {
            checksum += once(i)?;
            i += 1;
        }
        let budget = Duration::from_secs_f64(args.secs);
        let start = Instant::now();
        let mut calls = 0usize;
        let elapsed = loop {
            checksum += once(calls)?;
            calls += 1;
            let elapsed = start.elapsed();
            if elapsed >= budget {
                break elapsed.as_secs_f64();
            }
        };
        let rows_per_s = (calls * batch) as f64 / elapsed;
        println!(
            "CEILING batch={batch} rows_per_s={rows_per_s:.0} calls_per_s={:.0} us_per_call={:.1}",
            calls as f64 / elapsed,
            elapsed * 1e6 / calls as f64
        );
        if rows_per_s > best.1 {
            best = (batch, rows_per_s);
        }
    }
    if !checksum.is_finite() {
        bail!("the model gave a non-finite output");
    }
    println!("CEILING_BEST batch={} rows_per_s={:.0}", best.0, best.1);
    Ok(())
}
