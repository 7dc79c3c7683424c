#!/usr/bin/env bash
# What access control costs: four release servers side by side (auth off twice, the second one
# showing how far two identical servers differ here; an API key; an HS256 JWT), loaded in turn with 1-row POST /predict at 64 connections (wrk), ROUNDS interleaved rounds,
# median round reported. Needs wrk (Debian) and PyJWT in .venv (scripts/test.sh installs it).
# Usage: bench/auth.sh [seconds per round, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
rounds="${2:-3}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
.venv/bin/python -c "import jwt" 2>/dev/null || { echo "bench: PyJWT is missing: run scripts/test.sh once" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet
bin="${INFERD_BIN:-target/release/inferd}"

tmp="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
key="inferd_bench_$(date +%s%N)"
sha=$(printf %s "$key" | sha256sum | cut -c1-64)
secret="bench-secret-$(date +%s%N)"
token=$(.venv/bin/python -c 'import jwt, sys, time; print(jwt.encode({"sub": "bench", "scope": "predict", "exp": int(time.time()) + 3600}, sys.argv[1], algorithm="HS256"))' "$secret")

start() { # name port env...
  local name="$1" port="$2"
  shift 2
  env -u INFERD_API_KEYS -u INFERD_JWT_SECRET "$@" "$bin" serve --host 127.0.0.1 --port "$port" \
    --prediction-log-dir "$tmp/$name-logs" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "localhost:$port/ready" >/dev/null; do sleep 0.05; done
}
start off 18301
start off2 18304
start key 18302 INFERD_API_KEYS="bench:predict:$sha"
start jwt 18303 INFERD_JWT_SECRET="$secret"
# Each credential really works before it is measured.
for c in "18302 x-api-key: $key" "18303 authorization: Bearer $token"; do
  port=${c%% *}
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "${c#* }" -H 'content-type: application/json' \
    -d @example.json "localhost:$port/predict")
  [ "$code" = 200 ] || { echo "bench: credential refused on $port ($code)" >&2; exit 1; }
done

run() { # name port header...
  local name="$1" port="$2"
  shift 2
  wrk -t2 -c64 -d"${secs}s" -s bench/predict.lua "$@" "http://127.0.0.1:$port/predict" | grep BENCH >>"$tmp/$name.out"
}
for _ in $(seq "$rounds"); do
  run off 18301
  run off2 18304
  run key 18302 -H "x-api-key: $key"
  run jwt 18303 -H "authorization: Bearer $token"
done
# Server CPU per request: utime + stime over the requests its rounds answered, less sensitive to
# how the cores were shared with wrk than req/s.
cpu_us() { # name pid
  local ticks requests
  ticks=$(awk '{print $14 + $15}' "/proc/$2/stat")
  requests=$(sed 's/.*rps=\([0-9]*\).*/\1/' "$tmp/$1.out" | awk -v s="$secs" '{t += $1 * s} END {print t}')
  awk -v t="$ticks" -v r="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }'
}
median() { sed 's/.*rps=\([0-9]*\).*/\1/' "$tmp/$1.out" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rounds_of() { sed 's/.*rps=\([0-9]*\).*/\1/' "$tmp/$1.out" | paste -sd, -; }
off=$(median off)
i=0
for name in off off2 key jwt; do
  m=$(median "$name")
  awk -v n="$name" -v m="$m" -v off="$off" -v r="$(rounds_of "$name")" -v cpu="$(cpu_us "$name" "${pids[$i]}")" \
    'BEGIN { printf "%-4s median %6d req/s (%+.1f%% against off), %s us of server CPU per request; rounds %s\n", n, m, (m - off) * 100 / off, cpu, r }'
  i=$((i + 1))
done
grep -c '"principal":"bench"' "$tmp/key.log" | xargs echo "access-log lines with principal bench (key server):"
