#!/usr/bin/env bash
# What metrics and the prediction log cost: 1-row POST /predict at 64 connections with wrk
# against three servers started side by side from the release binary, loaded one at a time in
# interleaved rounds (this machine's speed drifts between runs):
#   on   the default runtime.toml: metrics and the lossless prediction log on, access log on;
#   off  metrics and prediction log turned off, access log on;
#   bare off, and service logs at warn (no access log line per request).
# Prints each round's req/s, the medians and on/off. Afterwards it checks that the "on" server
# wrote one prediction log line per prediction it served.
# Usage: bench/observability.sh [seconds per round, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
rounds="${2:-3}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet

out="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$out"' EXIT
# The same models, by absolute path, with metrics and the prediction log off.
sed -E -e "s#^(path|schema) = \"#\\1 = \"$PWD/#" -e 's/^enabled = true/enabled = false/' runtime.toml >"$out/off.toml"
[ "$(grep -c '^enabled = false' "$out/off.toml")" = 2 ] || { echo "bench: cannot turn metrics and the prediction log off" >&2; exit 1; }

start() { # name port log-level [args...]
  local name=$1 port=$2 level=$3
  shift 3
  RUST_LOG="$level" INFERD_PREDICTION_LOG_DIR="$out/predictions" \
    ./target/release/inferd serve --host 127.0.0.1 --port "$port" "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "localhost:$port/ready" >/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$out/$name.log" >&2; exit 1; }
    sleep 0.01
  done
}
start on 18191 info
start off 18192 info --config "$out/off.toml"
start bare 18193 warn --config "$out/off.toml"

for _ in $(seq "$rounds"); do
  for variant in on:18191 off:18192 bare:18193; do
    wrk -t2 -c64 -d"${secs}s" -s bench/predict.lua "http://127.0.0.1:${variant#*:}/predict" | grep BENCH >>"$out/${variant%%:*}"
  done
done
median() { sed -E 's/.*rps=([0-9]+).*/\1/' "$out/$1" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p"; }
for variant in on off bare; do
  all=$(sed -E 's/.*rps=([0-9]+).*/\1/' "$out/$variant" | tr '\n' ' ')
  echo "$variant: median $(median "$variant") req/s [rounds: ${all% }]"
done
python3 -c "on, off = $(median on), $(median off); print(f'on/off: {on / off:.3f} ({(1 - on / off) * 100:.1f}% cost)')"

# Stop the "on" server gracefully, then compare its prediction log with what it answered:
# every request has one row, so ok requests are predictions served. Rows computed for a request
# whose client hung up before the answer (wrk stopping mid-request) are not logged.
metrics=$(curl -s localhost:18191/metrics)
served=$(awk '/^inferd_requests_total\{.*outcome="ok"/ {s += $2} END {print s}' <<<"$metrics")
rows=$(awk '/^inferd_rows_total\{/ {s += $2} END {print s}' <<<"$metrics")
kill -TERM "${pids[0]}"
wait "${pids[0]}" || true
lines=$(cat "$out"/predictions/*.jsonl | wc -l)
echo "prediction log: $lines lines; $served ok requests of one row; $rows rows run through ONNX Runtime"
