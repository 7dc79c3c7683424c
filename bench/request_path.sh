#!/usr/bin/env bash
# The request path against the ceiling: what inferd serves of a model, next to what ONNX Runtime
# alone does with it on one thread (bench/ceiling.rs, inferd's own session options).
#
# In each round, interleaved (this machine's speed drifts 15-30% between runs, so every share is
# taken within a round and the median round is shown, every round's share in brackets):
#   - ceiling rows/s per batch size for models/wide_mlp.onnx and models/compute_mlp.onnx;
#   - wide_mlp (bench/wide_mlp.toml), 32-row requests at 64 connections: POST /predict
#     (bench/predict_wide32.lua), POST /v2/models/wide_mlp/infer with JSON data
#     (bench/infer_wide32.lua) and with the binary tensor extension (bench/infer_wide_binary.lua;
#     "n/a (status)" where the server does not answer it with 200); ModelInfer over gRPC with the
#     tensor in raw_input_contents, 64 calls in flight on 4 HTTP/2 connections (bench/grpc_load.rs,
#     a load generator on tonic's client); then the same three /v2 cases with 1-row requests
#     (bench/infer_wide1.lua, bench/infer_wide1_binary.lua, grpc_load --rows 1); and the 32-row
#     gRPC call again from h2load (nghttp2's load generator, in C), the body grpc_load sends,
#     its calls counted OK from the server's inferd_grpc_requests_total (h2load sees HTTP only);
#   - compute_mlp (bench/compute_mlp.toml), 1-row POST /predict at 64 connections, with the
#     config's max_batch_rows (64) and with INFERD_MAX_BATCH_ROWS=1;
#   - the default model (./runtime.toml, house_price), on a server started afresh each round:
#     start-to-ready, RSS idle once ready, 1-row POST /predict and GET /health at 64 and at 1
#     connection (bench/predict.lua, bench/health.lua).
# Then a markdown table (case | inferd | ceiling | share) and the targets, met or not met.
#
# Usage: bench/request_path.sh [seconds per case, default 5] [rounds, default 3]
# CEILING_SECS (default 1) is the ceiling's seconds per batch size; BENCH_PORT (default 18461)
# the first of the four ports used; GRPC_CONNS and GRPC_STREAMS (default 4 and 16) grpc_load's
# connections and calls in flight on each (h2load's too). Needs wrk (Debian package `wrk`), h2load
# (`nghttp2-client`), curl and python3; builds
# models/compute_mlp.onnx (git-ignored) when missing, with numpy and onnx from
# models/requirements.txt (in .venv-models/, made when no python at hand has them).
# The servers log to, and keep their prediction logs in, a temporary folder removed at exit;
# only the processes this script started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
rounds="${2:-3}"
ceiling_secs="${CEILING_SECS:-1}"
base_port="${BENCH_PORT:-18461}"
[[ "$secs" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ ]] ||
  { echo "usage: bench/request_path.sh [seconds per case, whole >= 1] [rounds >= 1]" >&2; exit 2; }
for tool in wrk h2load curl python3; do
  package=$tool
  [[ $tool == h2load ]] && package=nghttp2-client
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install $package)" >&2; exit 1; }
done

# --- models, runtime, binaries ---------------------------------------------------------------
bench_python() { # a python with numpy and onnx, made from models/requirements.txt when none has them
  local py
  for py in .venv-models/bin/python .venv/bin/python python3; do
    if command -v "$py" >/dev/null && "$py" -c 'import numpy, onnx' 2>/dev/null; then echo "$py"; return; fi
  done
  echo "bench: making .venv-models with numpy and onnx from models/requirements.txt" >&2
  python3 -m venv .venv-models
  .venv-models/bin/pip install --quiet $(grep -E '^(numpy|onnx|protobuf)==' models/requirements.txt) >&2
  echo .venv-models/bin/python
}
missing=()
[[ -f models/wide_mlp.onnx ]] || missing+=(wide)
[[ -f models/compute_mlp.onnx ]] || missing+=(compute)
if ((${#missing[@]})); then
  "$(bench_python)" models/make_bench_models.py "${missing[@]}"
fi
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet --bin inferd --example ceiling --example grpc_load
bin=./target/release/inferd
ceiling=./target/release/examples/ceiling
grpc_load=./target/release/examples/grpc_load
grpc_conns="${GRPC_CONNS:-4}"
grpc_streams="${GRPC_STREAMS:-16}"

# --- servers ---------------------------------------------------------------------------------
tmp="$(mktemp -d "${TMPDIR:-/tmp}/inferd-request-path.XXXXXX")"
declare -A pid=()
stop() { # name: stops that server (only ever one this script started)
  local p="${pid[$1]:-}"
  [[ -n "$p" ]] || return 0
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "pid[$1]"
}
cleanup() {
  local name
  for name in "${!pid[@]}"; do stop "$name"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A port=([wide]=$base_port [compute]=$((base_port + 1)) [compute1]=$((base_port + 2)) [house]=$((base_port + 3)))
for name in "${!port[@]}"; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:${port[$name]}/"; then
    echo "bench: something already answers on port ${port[$name]}; set BENCH_PORT to a free range" >&2
    exit 1
  fi
done

ready_ms=0
start() { # name config [env assignments...]: starts a server, waits for /ready, sets ready_ms
  local name=$1 config=$2
  shift 2
  local t0
  t0=$(date +%s%N)
  env INFERD_PREDICTION_LOG_DIR="$tmp/predictions-$name" "$@" \
    "$bin" serve --config "$config" --host 127.0.0.1 --port "${port[$name]}" >"$tmp/$name.log" 2>&1 &
  pid[$name]=$!
  until curl -sf -o /dev/null "http://127.0.0.1:${port[$name]}/ready"; do
    if ! kill -0 "${pid[$name]}" 2>/dev/null; then
      echo "bench: the $name server ($config) exited before it was ready:" >&2
      tail -n 20 "$tmp/$name.log" >&2
      exit 1
    fi
    sleep 0.01
  done
  ready_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/${pid[$1]}/status"; }

# url body-file content-type [header]: one POST; prints its status, the answer in $tmp/answer
first_status() {
  local url=$1 body=$2 ctype=$3 extra=${4:-}
  curl -s -o "$tmp/answer" -w '%{http_code}' -X POST -H "content-type: $ctype" ${extra:+-H "$extra"} \
    --data-binary @"$body" "$url"
}

# wrk run: label script-path url conns -> appends "WRK round=R case=label key=value..." to results
results="$tmp/results"
: >"$results"
round=0
run_wrk() {
  local label=$1 script=$2 url=$3 conns=$4 threads=2
  ((conns > 1)) || threads=1
  local line
  line=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$script" "$url" | grep '^BENCH') ||
    { echo "bench: wrk gave no result for $label" >&2; exit 1; }
  echo "WRK round=$round case=$label ${line#BENCH }" >>"$results"
}
batch_stats() { # name model -> "rows batches"
  curl -s "http://127.0.0.1:${port[$1]}/models/$2" |
    python3 -c 'import json,sys; s=json.load(sys.stdin).get("stats",{}); print(s.get("rows",0), s.get("batches",0))' 2>/dev/null ||
    echo "0 0"
}
run_model_wrk() { # label script server model path conns: run_wrk plus rows per batch of that run
  local label=$1 script=$2 server=$3 model=$4 path=$5 conns=$6 r0 b0 r1 b1
  read -r r0 b0 < <(batch_stats "$server" "$model")
  run_wrk "$label" "$script" "http://127.0.0.1:${port[$server]}$path" "$conns"
  read -r r1 b1 < <(batch_stats "$server" "$model")
  echo "BATCH round=$round case=$label rows=$((r1 - r0)) batches=$((b1 - b0))" >>"$results"
}
run_model_grpc() { # label rows server model: grpc_load's line as run_model_wrk records wrk's
  local label=$1 rows=$2 server=$3 model=$4 r0 b0 r1 b1 line
  read -r r0 b0 < <(batch_stats "$server" "$model")
  line=$("$grpc_load" "http://127.0.0.1:${port[$server]}" "$model" --rows "$rows" --connections "$grpc_conns" \
    --streams "$grpc_streams" --secs "$secs" --warmup 1 --timeout 10 2>>"$tmp/grpc_load.log" | grep '^BENCH') ||
    { echo "bench: grpc_load gave no result for $label:" >&2; tail -n 5 "$tmp/grpc_load.log" >&2; exit 1; }
  read -r r1 b1 < <(batch_stats "$server" "$model")
  echo "WRK round=$round case=$label ${line#BENCH }" >>"$results"
  echo "BATCH round=$round case=$label rows=$((r1 - r0)) batches=$((b1 - b0))" >>"$results"
}
grpc_calls() { # name -> "ok all": the ModelInfer calls that server has counted, OK and in all
  curl -s "http://127.0.0.1:${port[$1]}/metrics" |
    awk '/^inferd_grpc_requests_total\{/ && /method="ModelInfer"/ { all += $NF; if (/code="OK"/) ok += $NF }
         END { printf "%d %d\n", ok, all }'
}
run_model_h2load() { # label rows server model body: h2load's calls, recorded as run_model_grpc does
  local label=$1 rows=$2 server=$3 model=$4 body=$5 r0 b0 r1 b1 ok0 all0 ok1 all1 out rps
  read -r r0 b0 < <(batch_stats "$server" "$model")
  read -r ok0 all0 < <(grpc_calls "$server")
  out=$(h2load -D "$secs" --warm-up-time=1 -c "$grpc_conns" -m "$grpc_streams" -t 1 -d "$body" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:${port[$server]}/inference.GRPCInferenceService/ModelInfer" 2>&1) ||
    { echo "bench: h2load failed for $label:" >&2; tail -n 5 <<<"$out" >&2; exit 1; }
  read -r ok1 all1 < <(grpc_calls "$server")
  read -r r1 b1 < <(batch_stats "$server" "$model")
  rps=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  [[ -n "$rps" && $((all1 - all0)) -gt 0 ]] || { echo "bench: no h2load result for $label:" >&2; echo "$out" >&2; exit 1; }
  # h2load reads HTTP statuses only (200 for every gRPC answer); the gRPC status is in the
  # trailers, which the server counts: the share OK (warm-up included) and the calls not OK.
  python3 -c 'import sys; rps, rows, ok, all_ = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"WRK round={sys.argv[5]} case={sys.argv[6]} rps={rps} ok_rps={rps * ok / all_:.1f} rows_per_s={rps * ok / all_ * rows:.0f} errors={all_ - ok}")' \
    "$rps" "$rows" $((ok1 - ok0)) $((all1 - all0)) "$round" "$label" >>"$results"
  echo "BATCH round=$round case=$label rows=$((r1 - r0)) batches=$((b1 - b0))" >>"$results"
}
run_ceiling() { # label model batches
  "$ceiling" "$2" "$3" "$ceiling_secs" 1 | grep -E '^CEILING ' | sed "s/^CEILING /CEIL round=$round model=$1 /" >>"$results"
}

echo "bench: $(nproc) CPUs, $secs s per case, $rounds rounds, ceiling $ceiling_secs s per batch size; load average $(cut -d' ' -f1-3 /proc/loadavg)"
start wide bench/wide_mlp.toml
start compute bench/compute_mlp.toml
start compute1 bench/compute_mlp.toml INFERD_MAX_BATCH_ROWS=1

# The bodies wrk sends, once by curl: the JSON paths must answer 200; the binary one may not yet.
body_of() { # lua-file -> writes the body wrk would send to $tmp/body (via a local capture)
  python3 - "$1" "$tmp/body" <<'PY'
import socket, subprocess, sys, threading
script, out = sys.argv[1:]
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
port = srv.getsockname()[1]
def read(conn):  # one request's body, or None when the peer closes first
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return body[:length]
def serve():
    while True:  # wrk first opens and closes a connection to check the address
        conn, _ = srv.accept()
        body = read(conn)
        if body is not None:
            open(out, "wb").write(body)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            conn.close()
            return
        conn.close()
t = threading.Thread(target=serve, daemon=True); t.start()
subprocess.run(["wrk", "-t1", "-c1", "-d1s", "-s", script, f"http://127.0.0.1:{port}/"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t.join(timeout=5)
if t.is_alive():
    sys.exit(f"bench: could not capture the body {script} sends")
PY
}
wide_url="http://127.0.0.1:${port[wide]}"
body_of bench/predict_wide32.lua
s=$(first_status "$wide_url/predict" "$tmp/body" application/json)
[[ "$s" == 200 ]] || { echo "bench: wide_mlp /predict answered $s: $(head -c 300 "$tmp/answer")" >&2; exit 1; }
body_of bench/infer_wide32.lua
s=$(first_status "$wide_url/v2/models/wide_mlp/infer" "$tmp/body" application/json)
[[ "$s" == 200 ]] || { echo "bench: wide_mlp /v2 infer answered $s: $(head -c 300 "$tmp/answer")" >&2; exit 1; }
body_of bench/infer_wide1.lua
s=$(first_status "$wide_url/v2/models/wide_mlp/infer" "$tmp/body" application/json)
[[ "$s" == 200 ]] || { echo "bench: wide_mlp 1-row /v2 infer answered $s: $(head -c 300 "$tmp/answer")" >&2; exit 1; }
binary_answer() { # lua-file rows: the status of that script's binary body, sent once
  body_of "$1"
  local hlen
  hlen=$(python3 -c 'import sys; b=open(sys.argv[1],"rb").read(); print(len(b)-int(sys.argv[2])*64*4)' "$tmp/body" "$2")
  first_status "$wide_url/v2/models/wide_mlp/infer" "$tmp/body" application/octet-stream \
    "Inference-Header-Content-Length: $hlen"
}
binary_status=$(binary_answer bench/infer_wide_binary.lua 32)
echo "bench: the binary infer body gets $binary_status"
[[ "$binary_status" == 200 ]] || echo "bench:   $(head -c 200 "$tmp/answer")"
if [[ "$binary_status" == 200 ]]; then
  s=$(binary_answer bench/infer_wide1_binary.lua 1)
  [[ "$s" == 200 ]] || { echo "bench: wide_mlp 1-row binary infer answered $s: $(head -c 300 "$tmp/answer")" >&2; exit 1; }
fi
echo "BINARY status=$binary_status" >>"$results"
# gRPC: one call at a time for a second must all be answered OK.
line=$("$grpc_load" "$wide_url" wide_mlp --rows 32 --connections 1 --streams 1 --secs 1 --warmup 0 2>"$tmp/grpc_load.log" |
  grep '^BENCH') || { echo "bench: grpc_load failed:" >&2; cat "$tmp/grpc_load.log" >&2; exit 1; }
[[ "$line" == *" errors=0 "* && "$line" != *" ok_rps=0 "* ]] ||
  { echo "bench: wide_mlp ModelInfer over gRPC: $line" >&2; cat "$tmp/grpc_load.log" >&2; exit 1; }
# The same call for h2load: the request body grpc_load sends, written once.
"$grpc_load" "$wide_url" wide_mlp --rows 32 --write-request "$tmp/infer32.grpc" 2>>"$tmp/grpc_load.log" ||
  { echo "bench: grpc_load could not write the request:" >&2; cat "$tmp/grpc_load.log" >&2; exit 1; }
for name in compute compute1; do
  python3 -c 'import json; print(json.dumps({"instances":[{f"features_{i}": (i % 7) / 7 - 0.4 for i in range(64)}]}))' >"$tmp/body"
  s=$(first_status "http://127.0.0.1:${port[$name]}/predict" "$tmp/body" application/json)
  [[ "$s" == 200 ]] || { echo "bench: compute_mlp ($name) /predict answered $s: $(head -c 300 "$tmp/answer")" >&2; exit 1; }
done
# 1-row /predict on compute_mlp: wrk script made here from the same row.
{
  echo '-- 1-row POST /predict on compute_mlp (written by bench/request_path.sh)'
  echo 'wrk.method = "POST"'
  echo 'wrk.headers["Content-Type"] = "application/json"'
  echo "wrk.body = '$(cat "$tmp/body")'"
  sed -n '/^local threads = {}/,$p' bench/wide_common.lua   # the answer counting, from setup() on
} >"$tmp/predict_compute1.lua"

for round in $(seq "$rounds"); do
  echo "bench: round $round of $rounds"
  run_ceiling wide models/wide_mlp.onnx 1,2,4,8,16,32,64,128,256
  run_model_wrk wide_predict bench/predict_wide32.lua wide wide_mlp /predict 64
  run_model_wrk wide_v2_json bench/infer_wide32.lua wide wide_mlp /v2/models/wide_mlp/infer 64
  if [[ "$binary_status" == 200 ]]; then
    run_model_wrk wide_v2_binary bench/infer_wide_binary.lua wide wide_mlp /v2/models/wide_mlp/infer 64
  fi
  run_model_grpc wide_grpc 32 wide wide_mlp
  run_model_h2load wide_grpc_h2load 32 wide wide_mlp "$tmp/infer32.grpc"
  run_model_wrk wide1_v2_json bench/infer_wide1.lua wide wide_mlp /v2/models/wide_mlp/infer 64
  if [[ "$binary_status" == 200 ]]; then
    run_model_wrk wide1_v2_binary bench/infer_wide1_binary.lua wide wide_mlp /v2/models/wide_mlp/infer 64
  fi
  run_model_grpc wide1_grpc 1 wide wide_mlp
  run_ceiling compute models/compute_mlp.onnx 1,2,4,8,16,32,64,128,256
  run_model_wrk compute_predict "$tmp/predict_compute1.lua" compute compute_mlp /predict 64
  run_model_wrk compute1_predict "$tmp/predict_compute1.lua" compute1 compute_mlp /predict 64
  # The default model on a fresh server: start-to-ready and RSS idle, then the load.
  start house runtime.toml
  sleep 0.2
  echo "HOUSE round=$round ready_ms=$ready_ms rss_kib=$(rss_kib house)" >>"$results"
  run_model_wrk house_predict_c64 bench/predict.lua house house_price /predict 64
  run_wrk house_health_c64 bench/health.lua "http://127.0.0.1:${port[house]}/health" 64
  run_wrk house_predict_c1 bench/predict.lua "http://127.0.0.1:${port[house]}/predict" 1
  run_wrk house_health_c1 bench/health.lua "http://127.0.0.1:${port[house]}/health" 1
  stop house
done

# --- report ----------------------------------------------------------------------------------
python3 - "$results" "$rounds" "$secs" "$grpc_conns" "$grpc_streams" <<'PY'
import statistics, sys
from collections import defaultdict

path, rounds, secs, grpc_conns, grpc_streams = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ceil = defaultdict(dict)      # (model, round) -> {batch: rows/s}
wrk = defaultdict(dict)       # case -> {round: {key: value}}
batch = defaultdict(dict)     # case -> {round: rows per batch}
house = {}                    # round -> {ready_ms, rss_kib}
binary_status = "?"
for line in open(path):
    kind, *pairs = line.split()
    kv = dict(p.split("=", 1) for p in pairs)
    r = int(kv.pop("round", 0))
    if kind == "CEIL":
        ceil[(kv["model"], r)][int(kv["batch"])] = float(kv["rows_per_s"])
    elif kind == "WRK":
        case = kv.pop("case")
        wrk[case][r] = {k: float(v) for k, v in kv.items()}
    elif kind == "BATCH":
        b = int(kv["batches"])
        batch[kv["case"]][r] = int(kv["rows"]) / b if b else float("nan")
    elif kind == "HOUSE":
        house[r] = {k: float(v) for k, v in kv.items()}
    elif kind == "BINARY":
        binary_status = kv["status"]
R = range(1, rounds + 1)
med = statistics.median
MAX_BATCH = 64  # batching.max_batch_rows of bench/*.toml: the largest batch inferd can run

def ceiling_best(model, r, limit=MAX_BATCH):
    sizes = {b: v for b, v in ceil[(model, r)].items() if b <= limit}
    b = max(sizes, key=sizes.get)
    return b, sizes[b]

def served_rows(case, rows_per_request):
    """rows/s of 200 answers, per round; None where the case was not run or answered no 200."""
    out = {}
    for r in R:
        m = wrk.get(case, {}).get(r)
        out[r] = None if m is None or m["ok_rps"] <= 0 else m["ok_rps"] * rows_per_request
    return out

def pct(x): return f"{100 * x:.0f}%"
def fmt(v): return f"{v:,.0f}"
def rounds_list(xs, f): return "(" + ", ".join(f(x) for x in xs) + ")"

rows, targets = [], []
def share_row(label, inferd, ceiling_of, ceiling_label, note=""):
    """inferd: {round: rows/s or None}; ceiling_of(r) -> rows/s."""
    ceilings = [ceiling_of(r) for r in R]
    if any(v is None for v in inferd.values()):
        rows.append((label, note or "n/a", f"{fmt(med(ceilings))} {ceiling_label}", "n/a"))
        return None
    shares = [inferd[r] / ceiling_of(r) for r in R]
    rows.append((label, f"{fmt(med(inferd.values()))} rows/s{note}", f"{fmt(med(ceilings))} rows/s {ceiling_label}",
                 f"{pct(med(shares))} {rounds_list(shares, pct)}"))
    return med(shares)

def batch_note(case):
    v = [batch[case][r] for r in R if r in batch[case]]
    return f", {med(v):.1f} rows/batch" if v else ""

# wide_mlp, 32-row requests at 64 connections
wide_best = [ceiling_best("wide", r) for r in R]
wide_ceiling = lambda r: ceiling_best("wide", r)[1]
wide_label = f"(best batch <= {MAX_BATCH}: {sorted(b for b, _ in wide_best)})"
wide_share = share_row("wide_mlp 32-row POST /predict, c=64", served_rows("wide_predict", 32), wide_ceiling,
                       wide_label, batch_note("wide_predict"))
share_row("wide_mlp 32-row /v2 infer JSON, c=64", served_rows("wide_v2_json", 32), wide_ceiling, wide_label,
          batch_note("wide_v2_json"))
def binary_row(label, case, rows_per_request):
    if binary_status == "200":
        return share_row(label, served_rows(case, rows_per_request), wide_ceiling, wide_label, batch_note(case))
    rows.append((label, f"n/a ({binary_status})", f"{fmt(med(wide_ceiling(r) for r in R))} rows/s {wide_label}", "n/a"))
    return None
grpc_label = f"gRPC ModelInfer raw, {grpc_conns} conn x {grpc_streams} calls"
binary_row("wide_mlp 32-row /v2 infer binary, c=64", "wide_v2_binary", 32)
grpc_share = share_row(f"wide_mlp 32-row {grpc_label}", served_rows("wide_grpc", 32), wide_ceiling, wide_label,
                       batch_note("wide_grpc"))
share_row(f"wide_mlp 32-row the same calls from h2load (C, HTTP/2), {grpc_conns} conn x {grpc_streams} calls",
          served_rows("wide_grpc_h2load", 32), wide_ceiling, wide_label, batch_note("wide_grpc_h2load"))
share_row(f"wide_mlp 1-row /v2 infer JSON, c=64", served_rows("wide1_v2_json", 1), wide_ceiling, wide_label,
          batch_note("wide1_v2_json"))
binary_row("wide_mlp 1-row /v2 infer binary, c=64", "wide1_v2_binary", 1)
share_row(f"wide_mlp 1-row {grpc_label}", served_rows("wide1_grpc", 1), wide_ceiling, wide_label,
          batch_note("wide1_grpc"))
def p50s(case):
    v = [wrk[case][r]["p50_ms"] for r in R if r in wrk.get(case, {})]
    return f"{med(v):.2f}" if v else "n/a"
rows.append(("wide_mlp p50 ms: 32-row JSON / binary / gRPC; 1-row JSON / binary / gRPC",
             " / ".join(p50s(c) for c in ("wide_v2_json", "wide_v2_binary", "wide_grpc")) + "; " +
             " / ".join(p50s(c) for c in ("wide1_v2_json", "wide1_v2_binary", "wide1_grpc")), "", ""))
rows.append(("wide_mlp ceiling at batch 32 / overall best", "",
             f"{fmt(med(ceil[('wide', r)][32] for r in R))} / "
             f"{fmt(med(ceiling_best('wide', r, 1 << 30)[1] for r in R))} rows/s "
             f"(best batch {sorted(ceiling_best('wide', r, 1 << 30)[0] for r in R)})", ""))

# compute_mlp, 1-row requests at 64 connections
comp_best = [ceiling_best("compute", r) for r in R]
comp_label = f"(best batch <= {MAX_BATCH}: {sorted(b for b, _ in comp_best)})"
comp = served_rows("compute_predict", 1)
comp1 = served_rows("compute1_predict", 1)
comp_share = share_row("compute_mlp 1-row POST /predict, c=64, max_batch_rows=64", comp,
                       lambda r: ceiling_best("compute", r)[1], comp_label, batch_note("compute_predict"))
comp1_share = share_row("compute_mlp 1-row POST /predict, c=64, max_batch_rows=1", comp1,
                        lambda r: ceil[("compute", r)][1], "(batch 1)", batch_note("compute1_predict"))
speedups = [comp[r] / comp1[r] for r in R] if all(comp[r] and comp1[r] for r in R) else None
rows.append(("compute_mlp max_batch_rows=64 over =1", f"{med(speedups):.1f}x {rounds_list(speedups, lambda x: f'{x:.1f}x')}"
             if speedups else "n/a", "", ""))
rows.append(("compute_mlp ceiling at batch 32 / overall best", "",
             f"{fmt(med(ceil[('compute', r)][32] for r in R))} / "
             f"{fmt(med(ceiling_best('compute', r, 1 << 30)[1] for r in R))} rows/s "
             f"(best batch {sorted(ceiling_best('compute', r, 1 << 30)[0] for r in R)})", ""))

# house_price: /predict against /health
def m(case, key): return [wrk[case][r][key] for r in R]
p64, h64 = m("house_predict_c64", "rps"), m("house_health_c64", "rps")
rps_shares = [p / h for p, h in zip(p64, h64)]
rows.append(("house_price 1-row POST /predict vs GET /health, c=64", f"{fmt(med(p64))} req/s{batch_note('house_predict_c64')}",
             f"{fmt(med(h64))} req/s (/health)", f"{pct(med(rps_shares))} {rounds_list(rps_shares, pct)}"))
p50p, p50h = m("house_predict_c1", "p50_ms"), m("house_health_c1", "p50_ms")
p50_ratio = [p / h for p, h in zip(p50p, p50h)]
rows.append(("house_price p50, c=1 (/predict vs /health)", f"{med(p50p):.3f} ms", f"{med(p50h):.3f} ms (/health)",
             f"{med(p50_ratio):.2f}x {rounds_list(p50_ratio, lambda x: f'{x:.2f}x')}"))
p99p1, p99h1 = m("house_predict_c1", "p99_ms"), m("house_health_c1", "p99_ms")
rows.append(("house_price p99, c=1 (/predict vs /health)", f"{med(p99p1):.3f} ms", f"{med(p99h1):.3f} ms (/health)", ""))
p99p, p99h = m("house_predict_c64", "p99_ms"), m("house_health_c64", "p99_ms")
rows.append(("house_price p99, c=64 (/predict vs /health)", f"{med(p99p):.3f} ms {rounds_list(p99p, lambda x: f'{x:.2f}')}",
             f"{med(p99h):.3f} ms (/health)", ""))
rss = [house[r]["rss_kib"] / 1024 for r in R]
ready = [house[r]["ready_ms"] for r in R]
rows.append(("house_price RSS idle once ready", f"{med(rss):.1f} MiB {rounds_list(rss, lambda x: f'{x:.1f}')}", "", ""))
rows.append(("house_price start-to-ready", f"{med(ready):.0f} ms {rounds_list(ready, lambda x: f'{x:.0f}')}", "", ""))
errors = {case: sum(int(v["errors"]) + int(v.get("non200", 0)) for v in by_round.values()) for case, by_round in wrk.items()}

print(f"\n### Request path against the ceiling ({rounds} rounds of {secs} s per case, median round; every round in brackets)\n")
print("| case | inferd | ceiling | share |")
print("| --- | --- | --- | --- |")
for row in rows:
    print("| " + " | ".join(row) + " |")
bad = {c: n for c, n in errors.items() if n}
if bad:
    print(f"\nsocket errors, non-200 answers or gRPC calls not OK under load: {bad}")
    for case, by_round in wrk.items():
        codes = defaultdict(int)
        for m in by_round.values():
            for k, v in m.items():
                if k.startswith("code_"):
                    codes[k[5:]] += int(v)
        if codes:
            print(f"  {case}: gRPC codes {dict(codes)}")

def target(text, ok, value):
    print(f"- {text}: {'met' if ok else 'not met'} ({value})")
print("\nTargets:")
target("wide_mlp 32-row /predict >= 80% of the ceiling", wide_share is not None and wide_share >= 0.8,
       pct(wide_share) if wide_share is not None else "n/a")
target("wide_mlp 32-row gRPC ModelInfer >= 85% of the ceiling", grpc_share is not None and grpc_share >= 0.85,
       pct(grpc_share) if grpc_share is not None else "n/a")
target("compute_mlp 1-row /predict >= 90% of the ceiling's best batch", comp_share is not None and comp_share >= 0.9,
       pct(comp_share) if comp_share is not None else "n/a")
target("compute_mlp 1-row /predict >= 6x max_batch_rows = 1", speedups is not None and med(speedups) >= 6,
       f"{med(speedups):.1f}x" if speedups else "n/a")
target("/predict >= 80% of /health req/s at c=64", med(rps_shares) >= 0.8, pct(med(rps_shares)))
target("/predict p50 <= 1.3x /health's at c=1", med(p50_ratio) <= 1.3, f"{med(p50_ratio):.2f}x")
target("/predict p99 at c=64 < 3 ms", med(p99p) < 3, f"{med(p99p):.3f} ms")
target("RSS idle <= 50 MiB", med(rss) <= 50, f"{med(rss):.1f} MiB")
target("start-to-ready < 150 ms", med(ready) < 150, f"{med(ready):.0f} ms")
PY
