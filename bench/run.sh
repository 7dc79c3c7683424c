#!/usr/bin/env bash
# Load benchmark of the release binary with wrk (Debian package `wrk`). Reports start-to-ready
# time, RSS idle and under load, and for 1-row POST /predict, GET /health and 1-row
# POST /v2/models/house_price/infer: req/s and p50/p99 latency at 1 and 64 connections, each
# case run ROUNDS times interleaved with the others (this machine's speed drifts by +-15%
# between runs), with the median round shown, and average rows per batch.
# Usage: bench/run.sh [seconds per round, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
rounds="${2:-3}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet

port=18181
log="$(mktemp)"
out="$(mktemp -d)"
start_ns=$(date +%s%N)
./target/release/inferd serve --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$log" "$out"' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do sleep 0.01; done
ready_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
stats() { curl -s "localhost:$port/models/house_price" | python3 -c 'import json,sys; s=json.load(sys.stdin)["stats"]; print(s["rows"], s["batches"])'; }

echo "start-to-ready: ${ready_ms} ms (process start to first 200 from /ready, polled every 10 ms)"
echo "RSS idle: $(rss)"
cases="predict:/predict health:/health infer_v2:/v2/models/house_price/infer"
for conns in 1 64; do
  threads=$(( conns < 2 ? 1 : 2 ))
  read -r rows0 batches0 < <(stats)
  for _ in $(seq "$rounds"); do
    for c in $cases; do
      name=${c%%:*}
      wrk -t"$threads" -c"$conns" -d"${secs}s" -s "bench/$name.lua" "http://127.0.0.1:$port${c#*:}" | grep BENCH >>"$out/$name-$conns"
    done
  done
  read -r rows1 batches1 < <(stats)
  avg=$(python3 -c "print(f'{($rows1-$rows0)/max(1,$batches1-$batches0):.2f}')")
  echo "c=$conns rows per batch (predict and v2 infer): $avg; RSS now $(rss)"
  for c in $cases; do
    name=${c%%:*}
    # Median round by req/s; every round's req/s in brackets.
    all=$(sed -E 's/.*rps=([0-9]+).*/\1/' "$out/$name-$conns" | tr '\n' ' ')
    median=$(sort -t= -k2 -n "$out/$name-$conns" | sed -n "$(( (rounds + 1) / 2 ))p")
    echo "c=$conns $name: ${median#BENCH } [rounds: ${all% }]"
  done
done
