#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike wall time on a shared
# machine, a count is the same from one run to the next, so small costs (a log line, a metric)
# can be measured and compared.
#
# The release server runs under callgrind with instrumentation off while it starts. For each
# case a client sends warm-up requests on one keep-alive connection, then the script turns
# instrumentation on and zeroes the counters (callgrind_control), sends N requests one at a
# time, waits for the background threads (log writer, prediction log) to write what those
# requests left them, dumps the counters and turns instrumentation off again. The count covers
# every thread of the server, so the access log's writer and the prediction log's are in it.
#
# Cases: GET /health; 1-row and 32-row POST /predict on the default model (house_price);
# 1-row POST /models/house_price_linear/predict. Each on two servers:
#   on   runtime.toml as shipped: access log, metrics and prediction log (to a temporary folder);
#   off  bench/observability_off.toml: the same, with the three of them off.
# Prints a markdown table: per case, on, off and the share of "on" that observability costs.
#
# With SINK=URL arguments (`postgres=postgres://...`, `object_store=s3://...`, `stdout=`), one
# more "on" server per argument with its prediction log on that sink; the table gains a column
# each, the instructions per request against the files sink's. `traces=` is one more "on"
# server exporting OpenTelemetry traces (every request sampled, the default sampler) to an
# OTLP/HTTP receiver the script starts (python3, answering 200 to every export), in batches
# sized so that each case's window holds the export of the spans it made (see `measure`).
#
# Usage: bench/instructions.sh [requests per case, default 400] [SINK=URL ...]
# BENCH_PORT (default 18471) is the first of the two ports used. Needs valgrind (Debian package
# `valgrind`; installed with apt-get when missing and running as root), curl and python3.
# Everything the servers write goes to a temporary folder removed at exit; only the processes
# this script started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-400}"
shift || true
sinks=("$@")
base_port="${BENCH_PORT:-18471}"
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/instructions.sh [requests per case >= 1]" >&2; exit 2; }
if ! command -v callgrind_control >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "bench: installing valgrind" >&2
    apt-get install -y -qq valgrind >/dev/null
  else
    echo "bench: valgrind is missing (apt-get install valgrind)" >&2
    exit 1
  fi
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet --bin inferd

tmp="$(mktemp -d "${TMPDIR:-/tmp}/inferd-instructions.XXXXXX")"
server=""
receiver=""
receiver_port=$((${BENCH_PORT:-18471} + 20))
stop() {
  [[ -n "$server" ]] || return 0
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=""
}
trap 'stop; [[ -z "$receiver" ]] || kill "$receiver" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# name config port [sink url]: runs the cases against one server under callgrind; appends to
# $tmp/results
measure() {
  local name=$1 config=$2 port=$3 sink=${4:-files} url=${5:-} otel=()
  if [[ $sink == traces ]]; then
    sink=files
    # Spans leave in batches of 3n, never on the timer: a traced case makes 6 spans a request,
    # so its n requests fill exactly two batches, and with n >= 200 both are sent within its
    # window (the 30 warm-up requests before each case put the batch edges inside it). With the
    # default batch (512), a window held one export more or fewer than its spans made.
    otel=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$receiver_port" OTEL_BSP_SCHEDULE_DELAY=3600000
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE=$((3 * n)) OTEL_BSP_MAX_QUEUE_SIZE=$((6 * n)))
  fi
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
    echo "bench: something already answers on port $port; set BENCH_PORT to a free pair" >&2
    exit 1
  fi
  # valgrind runs the server in its own process, so $! is the pid callgrind_control takes.
  env "${otel[@]}" INFERD_PREDICTION_LOG_SINK="$sink" INFERD_PREDICTION_LOG_URL="$url" \
    INFERD_PREDICTION_LOG_DIR="$tmp/predictions-$name" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$tmp/callgrind-$name.out" \
    ./target/release/inferd serve --config "$config" --host 127.0.0.1 --port "$port" >"$tmp/$name.log" 2>&1 &
  server=$!
  local waited=0
  until curl -sf -o /dev/null "http://127.0.0.1:$port/ready"; do
    if ! kill -0 "$server" 2>/dev/null || ((waited > 2400)); then
      echo "bench: the $name server did not get ready under valgrind:" >&2
      tail -n 20 "$tmp/$name.log" >&2
      exit 1
    fi
    sleep 0.05
    waited=$((waited + 1))
  done
  echo "bench: $name server ready; $n requests per case" >&2
  python3 - "$name" "$port" "$server" "$n" "$tmp/callgrind-$name.out" >>"$tmp/results" <<'PY'
import glob, http.client, json, subprocess, sys, time

name, port, pid, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]

def example(schema):
    return json.load(open(f"schemas/{schema}.json"))["examples"][0]

def body(rows):
    return json.dumps({"instances": rows}).encode()

JSON = {"content-type": "application/json"}
cases = [
    ("GET /health", "GET", "/health", None, {}),
    ("POST /predict, 1 row", "POST", "/predict", body([example("house_price")]), JSON),
    ("POST /predict, 32 rows", "POST", "/predict", body([example("house_price")] * 32), JSON),
    ("POST house_price_linear, 1 row", "POST", "/models/house_price_linear/predict",
     body([example("house_price_linear")]), JSON),
]

def control(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, capture_output=True)

def counted(path):
    for line in open(path, errors="replace"):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"bench: no total in {path}")

conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def send(method, path, data, headers):
    conn.request(method, path, body=data, headers=headers)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f"bench: {method} {path} answered {answer.status}")

for case, method, path, data, headers in cases:
    for _ in range(30):
        send(method, path, data, headers)
    control("--instr=on")
    control("--zero")
    for _ in range(n):
        send(method, path, data, headers)
    time.sleep(0.5)  # the log writers' threads finish these requests' lines
    before = set(glob.glob(out + "*"))
    control("--dump")
    control("--instr=off")
    dumps = sorted(set(glob.glob(out + "*")) - before)
    if not dumps:
        sys.exit("bench: callgrind wrote no dump")
    total = sum(counted(d) for d in dumps)
    print(json.dumps({"server": name, "case": case, "instructions": total / n}), flush=True)
PY
  stop
}

: >"$tmp/results"
if printf '%s\n' "${sinks[@]}" | grep -q '^traces='; then
  python3 -c '
import http.server, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
' "$receiver_port" &
  receiver=$!
fi
measure on runtime.toml "$base_port"
measure off bench/observability_off.toml "$((base_port + 1))"
port=$((base_port + 2))
for spec in "${sinks[@]}"; do
  measure "${spec%%=*}" runtime.toml "$port" "${spec%%=*}" "${spec#*=}"
  port=$((port + 1))
done

python3 - "$tmp/results" "$n" <<'PY'
import json, sys

results = [json.loads(line) for line in open(sys.argv[1])]
count = {(r["server"], r["case"]): r["instructions"] for r in results}
cases = list(dict.fromkeys(r["case"] for r in results))
sinks = [s for s in dict.fromkeys(r["server"] for r in results) if s not in ("on", "off")]
print(f"\n### Instructions per request (callgrind, {sys.argv[2]} keep-alive requests per case, all threads)\n")
print("| case | observability on | off | observability's share |")
print("| --- | ---: | ---: | ---: |")
for case in cases:
    on, off = count[("on", case)], count[("off", case)]
    print(f"| {case} | {on:,.0f} | {off:,.0f} | {100 * (on - off) / on:.1f}% |")
if sinks:
    print("\n| case | files (on) | " + " | ".join(sinks) + " |")
    print("| --- | ---: |" + " ---: |" * len(sinks))
    for case in cases:
        on = count[("on", case)]
        cells = [f"{count[(s, case)]:,.0f} ({count[(s, case)] / on:.2f}x)" for s in sinks]
        print(f"| {case} | {on:,.0f} | " + " | ".join(cells) + " |")
health = "GET /health"
linear = "POST house_price_linear, 1 row"
for server in ("on", "off"):
    print(f"\n{linear} / {health}, observability {server}: {count[(server, linear)] / count[(server, health)]:.2f}x", end="")
print("\n\nTargets:")
def target(text, ok, value):
    print(f"- {text}: {'met' if ok else 'not met'} ({value})")
for case in ("POST /predict, 1 row", "POST /predict, 32 rows"):
    share = (count[("on", case)] - count[("off", case)]) / count[("on", case)]
    target(f"observability <= 5% of {case}", share <= 0.05, f"{100 * share:.1f}%")
ratio = count[("on", linear)] / count[("on", health)]
target(f"{linear} <= 2.5x {health}", ratio <= 2.5, f"{ratio:.2f}x")
PY
