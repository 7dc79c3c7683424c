#!/usr/bin/env bash
# Load benchmark of the release binary with wrk (Debian package `wrk`): 1-row POST /predict
# and GET /health at 1 and 64 connections in one run, plus start-to-ready time, RSS idle and
# under load, average rows per batch, and 1-row /v2/models/house_price/infer at 64 connections.
# Usage: bench/run.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet

port=18181
log="$(mktemp)"
start_ns=$(date +%s%N)
./target/release/inferd serve --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do sleep 0.01; done
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
rss() { awk '/VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$pid/status"; }
stats() { curl -s "localhost:$port/models/house_price" | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; print(s["rows"], s["batches"])'; }

echo "start-to-ready: ${ready_ms} ms (process start to first 200 from /ready, polled every 10 ms)"
echo "RSS idle: $(rss)"
for conns in 1 64; do
  threads=$(( conns < 2 ? 1 : 2 ))
  read -r rows0 batches0 < <(stats)
  p=$(wrk -t"$threads" -c"$conns" -d"${secs}s" -s bench/predict.lua "http://127.0.0.1:$port/predict" | grep BENCH)
  read -r rows1 batches1 < <(stats)
  rss_load=$(rss)
  h=$(wrk -t"$threads" -c"$conns" -d"${secs}s" -s bench/health.lua "http://127.0.0.1:$port/health" | grep BENCH)
  avg=$(python3 -c "print(f'{($rows1-$rows0)/max(1,$batches1-$batches0):.2f}')")
  echo "c=$conns predict: ${p#BENCH } rows/batch=$avg rss_after=$rss_load"
  echo "c=$conns health:  ${h#BENCH }"
done
v=$(wrk -t2 -c64 -d"${secs}s" -s bench/infer_v2.lua "http://127.0.0.1:$port/v2/models/house_price/infer" | grep BENCH)
p=$(wrk -t2 -c64 -d"${secs}s" -s bench/predict.lua "http://127.0.0.1:$port/predict" | grep BENCH)
echo "c=64 v2 infer: ${v#BENCH }"
echo "c=64 predict:  ${p#BENCH } (again, right after v2 infer)"
