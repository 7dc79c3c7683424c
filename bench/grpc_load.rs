//! A load generator for the Open Inference Protocol over gRPC: ModelInfer calls on a fixed
//! number of HTTP/2 connections, several calls in flight on each (HTTP/2 multiplexes), for a
//! fixed time after a warm-up. It is built on tonic's client (`tonic::client::Grpc` over a
//! `tonic::transport::Channel`, messages from `inferd::grpc::proto`), so the calls are what a
//! maintained gRPC client sends, not something hand-framed.
//!
//! The input's name and width come from ModelMetadata; the tensor goes in
//! `raw_input_contents` (FP32, shape `[rows, F]`, little-endian), as tritonclient.grpc sends it
//! by default. Its values are those of bench/wide_common.lua (Park-Miller, seed 42, in
//! -2.000..2.000, row after row), so 32 rows of the wide MLP are the rows the wrk scripts send.
//!
//! ```sh
//! cargo run --release --example grpc_load -- http://127.0.0.1:8080 wide_mlp --rows 32 \
//!     --connections 4 --streams 16 --secs 5 --warmup 1
//! ```
//! With `--write-request FILE` it writes the framed request body it would send and exits
//! (bench/request_path.sh hands it to h2load, a client in C, to see what a cheaper client gets).
//!
//! Output, one machine-readable line in the style of the wrk scripts':
//! `BENCH rps=2100 ok_rps=2100 rows_per_s=67200 p50_ms=29.1 p99_ms=41.0 errors=0 bad_answers=0`,
//! plus `code_<Code>=N` for each gRPC status other than OK that answers came back with (each
//! also told on stderr with its last message). A call counts when it ends inside the timed
//! window; latencies are of every call that counts, failed or not (as wrk's are).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use inferd::grpc::proto::model_infer_request::InferInputTensor;
use inferd::grpc::proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse};
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

#[derive(Debug, Parser)]
#[command(name = "grpc_load", about = "ModelInfer load over gRPC (h2c): req/s, rows/s, p50/p99")]
struct Args {
    /// The server, e.g. http://127.0.0.1:8080 (HTTP/2 by prior knowledge, as gRPC connects).
    addr: String,
    /// The model to call: one FP32 input of shape [-1, ...].
    model: String,
    /// Rows per request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    rows: u32,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Calls in flight on each connection (inferd allows 32 streams a connection).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    streams: u32,
    /// Seconds timed, after the warm-up.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds of calls before the timed ones, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Threads of the client's runtime (wrk's -t).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    threads: u32,
    /// Seconds a call may take before the client gives up on it (wrk's --timeout).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Write the request body (one gRPC-framed ModelInferRequest, as sent) to this file and
    /// exit, for a plain HTTP/2 load generator (h2load) to send.
    #[arg(long)]
    write_request: Option<std::path::PathBuf>,
}

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const METADATA: &str = "/inference.GRPCInferenceService/ModelMetadata";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (name, value) in [("--secs", args.secs), ("--timeout", args.timeout)] {
        if !value.is_finite() || value <= 0.0 {
            bail!("{name} must be a number of seconds above 0, got {value}");
        }
    }
    if !args.warmup.is_finite() || args.warmup < 0.0 {
        bail!("--warmup must be a number of seconds of 0 or more, got {}", args.warmup);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads as usize)
        .enable_all()
        .build()
        .context("cannot start the client's runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .with_context(|| format!("'{}' is not an address", args.addr))?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs_f64(args.timeout));
    // One Endpoint::connect is one HTTP/2 connection; its clones share it.
    let mut channels = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        channels.push(endpoint.connect().await.with_context(|| format!("cannot connect to {}", args.addr))?);
    }
    let request = Arc::new(infer_request(&mut Grpc::new(channels[0].clone()), &args.model, args.rows).await?);
    if let Some(path) = &args.write_request {
        // The gRPC frame: flag 0 (not compressed), the length big-endian, the message.
        let message = prost::Message::encode_to_vec(&*request);
        let mut body = Vec::with_capacity(5 + message.len());
        body.push(0);
        body.extend_from_slice(&u32::try_from(message.len()).context("a message over 4 GiB")?.to_be_bytes());
        body.extend_from_slice(&message);
        std::fs::write(path, &body).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("grpc_load: wrote {} ({} bytes)", path.display(), body.len());
        return Ok(());
    }

    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let window = Window { start, end: start + Duration::from_secs_f64(args.secs) };
    let mut callers = Vec::new();
    for channel in &channels {
        for _ in 0..args.streams {
            let grpc = Grpc::new(channel.clone());
            callers.push(tokio::spawn(caller(grpc, Arc::clone(&request), args.rows, window)));
        }
    }
    let mut total = Tally::default();
    for caller in callers {
        total.add(caller.await.context("a caller task failed")?);
    }
    total.report(args.secs, args.rows);
    Ok(())
}

/// The request every call sends: the model's one input, from its metadata, as raw FP32.
async fn infer_request(grpc: &mut Grpc<Channel>, model: &str, rows: u32) -> anyhow::Result<ModelInferRequest> {
    grpc.ready().await.context("the connection is not ready")?;
    let asked = ModelMetadataRequest { name: model.to_owned(), version: String::new() };
    let codec = ProstCodec::<ModelMetadataRequest, ModelMetadataResponse>::default();
    let metadata = grpc
        .unary(tonic::Request::new(asked), PathAndQuery::from_static(METADATA), codec)
        .await
        .with_context(|| format!("ModelMetadata for '{model}'"))?
        .into_inner();
    let [input] = metadata.inputs.as_slice() else {
        bail!("model '{model}' has {} inputs; grpc_load sends one", metadata.inputs.len());
    };
    if input.datatype != "FP32" {
        bail!("input '{}' is {}; grpc_load sends FP32", input.name, input.datatype);
    }
    // The first dimension is the batch; the others must be fixed for one row's width.
    let per_row = match input.shape.split_first() {
        Some((_, rest)) if rest.iter().all(|d| *d > 0) => rest.iter().product::<i64>() as usize,
        _ => bail!("input '{}' has shape {:?}; grpc_load needs [-1, fixed...]", input.name, input.shape),
    };
    let mut shape = input.shape.clone();
    shape[0] = i64::from(rows);
    let bytes: Vec<u8> = wide_values(rows as usize * per_row).flat_map(f32::to_le_bytes).collect();
    eprintln!("grpc_load: {model} input {}{shape:?} FP32, {} bytes raw", input.name, bytes.len());
    Ok(ModelInferRequest {
        model_name: model.to_owned(),
        inputs: vec![InferInputTensor {
            name: input.name.clone(),
            datatype: "FP32".to_owned(),
            shape,
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_input_contents: vec![bytes],
        ..Default::default()
    })
}

/// bench/wide_common.lua's numbers: a Park-Miller generator from 42, each value
/// `(state % 4001 - 2000) / 1000`.
fn wide_values(count: usize) -> impl Iterator<Item = f32> {
    let mut state: u64 = 42;
    (0..count).map(move |_| {
        state = state * 16807 % 2_147_483_647;
        // In f64 first, as LuaJIT computes it, then rounded once to f32.
        (((state % 4001) as f64 - 2000.0) / 1000.0) as f32
    })
}

/// When the counted calls may end.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What the calls of one caller (or all of them) came to.
#[derive(Default)]
struct Tally {
    ok: u64,
    /// OK answers whose first output does not have `rows` rows.
    bad_answers: u64,
    /// Calls that ended with another status: how many by code, and the last message.
    failed: BTreeMap<String, (u64, String)>,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bad_answers += other.bad_answers;
        for (code, (n, message)) in other.failed {
            let entry = self.failed.entry(code).or_default();
            entry.0 += n;
            entry.1 = message;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    fn report(mut self, secs: f64, rows: u32) {
        let failed: u64 = self.failed.values().map(|(n, _)| n).sum();
        let calls = self.ok + self.bad_answers + failed;
        self.latencies_us.sort_unstable();
        let percentile = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let rank = ((q * self.latencies_us.len() as f64).ceil() as usize).clamp(1, self.latencies_us.len());
            f64::from(self.latencies_us[rank - 1]) / 1000.0
        };
        let mut line = format!(
            "BENCH rps={:.0} ok_rps={:.0} rows_per_s={:.0} p50_ms={:.3} p99_ms={:.3} errors={} bad_answers={}",
            calls as f64 / secs,
            self.ok as f64 / secs,
            (self.ok * u64::from(rows)) as f64 / secs,
            percentile(0.50),
            percentile(0.99),
            failed + self.bad_answers,
            self.bad_answers
        );
        for (code, (n, message)) in &self.failed {
            line.push_str(&format!(" code_{code}={n}"));
            eprintln!("grpc_load: {n} calls answered {code}, the last: {message}");
        }
        if self.bad_answers > 0 {
            eprintln!("grpc_load: {} OK answers without {rows} rows in their first output", self.bad_answers);
        }
        println!("{line}");
    }
}

/// One call in flight at a time, again and again until the window ends.
async fn caller(mut grpc: Grpc<Channel>, request: Arc<ModelInferRequest>, rows: u32, window: Window) -> Tally {
    let mut tally = Tally::default();
    let path = PathAndQuery::from_static(INFER);
    while Instant::now() < window.end {
        let sent = Instant::now();
        let outcome = match grpc.ready().await {
            Ok(()) => {
                let codec = ProstCodec::<ModelInferRequest, ModelInferResponse>::default();
                grpc.unary(tonic::Request::new((*request).clone()), path.clone(), codec).await
            }
            Err(e) => Err(tonic::Status::unavailable(format!("the connection is not ready: {e}"))),
        };
        let ended = Instant::now();
        if ended < window.start || ended > window.end {
            continue;
        }
        tally.latencies_us.push(u32::try_from((ended - sent).as_micros()).unwrap_or(u32::MAX));
        match outcome {
            Ok(answer) if has_rows(answer.get_ref(), rows) => tally.ok += 1,
            Ok(_) => tally.bad_answers += 1,
            Err(status) => {
                let entry = tally.failed.entry(format!("{:?}", status.code())).or_default();
                entry.0 += 1;
                entry.1 = status.message().to_owned();
            }
        }
    }
    tally
}

/// Whether an answer's first output has a raw tensor and `rows` rows.
fn has_rows(answer: &ModelInferResponse, rows: u32) -> bool {
    answer.outputs.first().and_then(|o| o.shape.first()) == Some(&i64::from(rows))
        && answer.raw_output_contents.len() == answer.outputs.len()
}
