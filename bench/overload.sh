#!/usr/bin/env bash
# Goodput under overload: 32-row POST /predict with wrk at 64 and at 1,024 connections, against
# the default queue (32768 rows), a 4096-row one and a 64-row one, in interleaved rounds. For each case:
# 200s per second (goodput), 503s per second, and from the server's own access log the p99
# server time of admitted (200) requests and the p50/p99 server time of shed (503) ones.
# Usage: bench/overload.sh [seconds per round, default 8] [rounds, default 3]
# INFERD_BIN=path runs another build (an older commit's, say) against the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
rounds="${2:-3}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet
bin="${INFERD_BIN:-./target/release/inferd}"
ulimit -n "$(ulimit -Hn)"

out="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$out"' EXIT
# The same models by absolute path, a 64-row queue, and requests of at most 64 rows.
sed -E -e "s#^(path|schema) = \"#\\1 = \"$PWD/#" -e 's/^queue_capacity_rows = .*/queue_capacity_rows = 64/' \
  -e 's/^max_instances_per_request = .*/max_instances_per_request = 64/' runtime.toml >"$out/small.toml"
sed -E -e "s#^(path|schema) = \"#\1 = \"$PWD/#" -e 's/^queue_capacity_rows = .*/queue_capacity_rows = 4096/' runtime.toml >"$out/q4096.toml"

start() { # name port [args...]
  local name=$1 port=$2
  shift 2
  INFERD_PREDICTION_LOG_DIR="$out/predictions-$name" \
    "$bin" serve --host 127.0.0.1 --port "$port" "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "localhost:$port/ready" >/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$out/$name.log" >&2; exit 1; }
    sleep 0.01
  done
}
start default 18301
start small 18302 --config "$out/small.toml"
start q4096 18303 --config "$out/q4096.toml"

declare -A port=([default]=18301 [q4096]=18303 [small]=18302)
for round in $(seq "$rounds"); do
  for server in default q4096 small; do
    for conns in 64 1024; do
      log="$out/$server.log"
      from=$(wc -l <"$log")
      result=$(wrk -t2 -c"$conns" -d"${secs}s" --timeout 30s -s bench/predict32.lua \
        "http://127.0.0.1:${port[$server]}/predict" | grep BENCH)
      # Server-side times of this round's requests, from the access log.
      times=$(tail -n +"$((from + 1))" "$log" | python3 -c '
import json, sys
ok, shed = [], []
for line in sys.stdin:
    try: l = json.loads(line)
    except ValueError: continue
    if l.get("message") != "request" or l.get("route") != "/predict": continue
    (ok if l["status"] == 200 else shed if l["status"] == 503 else []).append(l["latency_ms"])
def pct(v, p): return sorted(v)[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
print(f"ok_p99_ms={pct(ok, .99):.2f} shed_p50_ms={pct(shed, .5):.3f} shed_p99_ms={pct(shed, .99):.3f}")')
      echo "round=$round server=$server c=$conns ${result#BENCH } $times" | tee -a "$out/results"
    done
  done
done
echo "medians of goodput (200s/s) by case:"
for server in default q4096 small; do
  for conns in 64 1024; do
    grep "server=$server c=$conns " "$out/results" | sed -E 's/.*ok_rps=([0-9]+).*/\1/' | sort -n |
      sed -n "$(( (rounds + 1) / 2 ))p" | xargs printf "  %s c=%s: %s\n" "$server" "$conns"
  done
done
