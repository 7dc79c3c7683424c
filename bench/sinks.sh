#!/usr/bin/env bash
# What each prediction log sink costs, and what a PostgreSQL restart costs.
#  1. 1-row POST /predict at 64 connections (wrk) against five servers started side by side
#     from the release binary, one per sink (files, stdout, postgres, object_store, and
#     postgres with acknowledge = "written"), loaded
#     one at a time in interleaved rounds (this machine's speed drifts between runs); prints the
#     medians and each sink / files.
#  2. The postgres server under the same load while PostgreSQL restarts (pg_ctl restart -m
#     fast): wrk's latency percentiles and maximum, and 200 answers against rows in the table.
#  3. How many rows per second the one writer inserts: PostgreSQL is stopped while 32-row
#     requests pile lines up in the writer's buffer, then started; the backlog's drain rate.
# PostgreSQL (Debian's package, a throwaway cluster as user nobody) and moto (S3) are started
# here and stopped at the end, with everything they wrote.
# Usage: bench/sinks.sh [seconds per round, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
rounds="${2:-3}"
command -v wrk >/dev/null || { echo "bench: wrk is missing: apt-get install wrk" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { echo "bench: PostgreSQL is missing: apt-get install postgresql" >&2; exit 1; }
[ -x .venv/bin/moto_server ] || { echo "bench: moto is missing: .venv/bin/pip install -r tests/sinks/requirements.txt" >&2; exit 1; }
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet

out="$(mktemp -d)"
chmod 755 "$out"
pids=()
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(setpriv --reuid=65534 --regid=65534 --clear-groups)
pg_port=55433 s3_port=55434
pgctl() { "${as_pg[@]}" "$pgbin/pg_ctl" -D "$out/pg/data" -l "$out/pg/log" -w \
  -o "-p $pg_port -k $out/pg -c listen_addresses=127.0.0.1 -c max_connections=20" "$@" >/dev/null; }
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  [ -d "$out/pg/data" ] && pgctl stop -m immediate 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT
mkdir -p "$out/pg"
[ "$(id -u)" = 0 ] && chown 65534:65534 "$out/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$out/pg/data" -U postgres -A trust >/dev/null
pgctl start
.venv/bin/moto_server -p "$s3_port" >"$out/moto.log" 2>&1 &
pids+=($!)
until curl -sf "localhost:$s3_port/" >/dev/null; do sleep 0.1; done
curl -sf -X PUT "localhost:$s3_port/bench" >/dev/null
psql_() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -tAc "$1"; }

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true
# The postgres sink again, answering each request once its row is committed, in a table of its own.
sed -E -e "s#^(path|schema) = \"#\\1 = \"$PWD/#" -e 's/^lossy = false.*/lossy = false\nacknowledge = "written"/' runtime.toml >"$out/written.toml"
printf '\n[prediction_log.postgres]\ntable = "inferd_predictions_written"\n' >>"$out/written.toml"
start() { # name port sink url [args...]
  local name=$1 port=$2 sink=$3 url=$4
  shift 4
  mkdir -p "$out/$name"
  INFERD_PREDICTION_LOG_DIR="$out/$name" INFERD_PREDICTION_LOG_SINK="$sink" INFERD_PREDICTION_LOG_URL="$url" \
    ./target/release/inferd serve --host 127.0.0.1 --port "$port" "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  until curl -sf "localhost:$port/ready" >/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$out/$name.log" >&2; exit 1; }
    sleep 0.01
  done
}
start files 18201 files ""
start stdout 18202 stdout ""
start postgres 18203 postgres "postgres://postgres@127.0.0.1:$pg_port/postgres"
start object_store 18204 object_store "s3://bench/predictions"
start postgres_written 18205 postgres "postgres://postgres@127.0.0.1:$pg_port/postgres" --config "$out/written.toml"
sinks="files:18201 stdout:18202 postgres:18203 object_store:18204 postgres_written:18205"

echo "== 1. 1-row /predict, 64 connections, ${secs}s x ${rounds} rounds per sink"
for _ in $(seq "$rounds"); do
  for sink in $sinks; do
    wrk -t2 -c64 -d"${secs}s" -s bench/predict.lua "http://127.0.0.1:${sink#*:}/predict" | grep BENCH >>"$out/${sink%%:*}.rps"
  done
done
median() { sed -E 's/.*rps=([0-9]+).*/\1/' "$out/$1.rps" | sort -n | sed -n "$(((rounds + 1) / 2))p"; }
files=$(median files)
for sink in $sinks; do
  name=${sink%%:*}
  all=$(sed -E 's/.*rps=([0-9]+).*/\1/' "$out/$name.rps" | tr '\n' ' ')
  python3 -c "m = $(median "$name"); print(f'$name: median {m} req/s, {m / $files:.3f} of files [rounds: ${all% }]')"
done

echo "== 2. PostgreSQL restarted 5 s into a 15 s load of the postgres sink"
served_before=$(curl -s localhost:18203/metrics | awk '/^inferd_requests_total\{.*outcome="ok"/ {s += $2} END {print s + 0}')
wrk -t2 -c64 -d15s --latency -s bench/predict.lua "http://127.0.0.1:18203/predict" >"$out/restart.wrk" &
wrk_pid=$!
sleep 5
t0=$(date +%s.%N)
pgctl restart -m fast
echo "pg_ctl restart took $(python3 -c "import time; print(f'{time.time() - $t0:.2f}')") s"
wait "$wrk_pid"
grep -E "Latency|50%|99%|BENCH|Non-2xx" "$out/restart.wrk" | sed 's/^/  /'
until [ "$(curl -s localhost:18203/ready -o /dev/null -w '%{http_code}')" = 200 ]; do sleep 0.1; done
sleep 1
served=$(curl -s localhost:18203/metrics | awk '/^inferd_requests_total\{.*outcome="ok"/ {s += $2} END {print s + 0}')
rows=$(psql_ "select count(*) from inferd_predictions")
echo "postgres sink: $served predictions answered 200 (1 row each), $rows rows in the table: $((served - rows)) lost"

echo "== 3. rows per second one writer inserts (the backlog of a 10 s outage, drained)"
pgctl stop -m fast
wrk -t2 -c16 -d10s -s bench/predict32.lua "http://127.0.0.1:18203/predict" >/dev/null || true
lines() { curl -s localhost:18203/metrics | awk '/^inferd_prediction_log_lines_total / {print $2}'; }
backlog_start=$(lines)
pgctl start
python3 - "$backlog_start" <<'PY'
import sys, time, urllib.request
def lines():
    text = urllib.request.urlopen("http://127.0.0.1:18203/metrics").read().decode()
    return next(float(l.split()[1]) for l in text.splitlines() if l.startswith("inferd_prediction_log_lines_total "))
start = float(sys.argv[1]); t0 = time.time(); last = start; samples = []
# Until the writer has reconnected (after its backoff, 5 s at most) and then made no progress
# for a second.
while True:
    time.sleep(0.25)
    now = lines(); samples.append((time.time(), now))
    if now == last and now > start and samples[-4][1] == now if len(samples) >= 4 else False: break
    if time.time() - t0 > 60: sys.exit("bench: the backlog did not drain within 60 s")
    last = now
rows = last - start
# From the sample before the first rows arrived (the writer reconnects after its backoff) to
# the last sample still short of the total.
first = next(i for i, (t, n) in enumerate(samples) if n > start)
began = samples[first - 1][0] if first > 0 else t0
ended = next(t for t, n in samples if n == last)
print(f"drained {rows:.0f} rows in {ended - began:.2f} s: {rows / (ended - began):.0f} rows/s (at least; 0.25 s samples)")
PY
