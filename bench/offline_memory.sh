#!/usr/bin/env bash
# Peak RSS of `inferd score` and `inferd replay` on hostile input (issue 18): each input is
# generated on the fly into stdin (the gzip is a 4.5 MB file), so nothing big lands on disk.
#   idle           score of 3 rows; replay of 32 log lines
#   long line      score: a 300 MB line between two rows, on stdin
#   gzip bomb      replay: a 4.5 MB gzip holding one line of about 4.6 GB, then 32 log lines
#   CSV cell       score: a 400 MB quoted cell (a line end every 1 MiB inside it)
#   big outputs    replay: 300 log lines whose outputs are 15 MB each (4.5 GB on stdin)
#   nested         score: one 15 MB instance whose field holds an array of zeros
# Usage: bench/offline_memory.sh. Needs python3 and gzip; /usr/bin/time -v measures.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet --bin inferd
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
inferd=./target/release/inferd

gen() {
  python3 - "$@" <<'PY'
import json, sys
ref = json.load(open("models/house_price.reference.json"))["instances"]
kind, out = sys.argv[1], sys.stdout.buffer
mib = b"x" * (1 << 20)
def log(i, outputs):
    line = {"model": "house_price", "ts": "2026-12-03T00:00:00Z", "request_id": f"r{i}", "instance": 0,
            "inputs": ref[i % len(ref)]}
    text = json.dumps(line, separators=(",", ":"))[:-1]
    return (text + ',"outputs":' + outputs + "}\n").encode()
if kind == "rows":
    for row in ref[:3]:
        out.write((json.dumps(row) + "\n").encode())
elif kind == "long-line":
    out.write((json.dumps(ref[0]) + "\n").encode())
    out.write(b'{"lotsize": "')
    for _ in range(300):
        out.write(mib)
    out.write(b'"}\n')
    out.write((json.dumps(ref[1]) + "\n").encode())
elif kind == "csv-cell":
    fields = list(ref[0])
    row = lambda r: ",".join(str(r[f]) if not isinstance(r[f], str) else r[f] for f in fields)
    out.write((",".join(fields) + "\n" + row(ref[0]) + "\n").encode())
    out.write(b'"')
    for _ in range(400):
        out.write(mib[:-1] + b"\n")
    out.write(b'"' + row(ref[0])[row(ref[0]).index(","):].encode() + b"\n")
    out.write((row(ref[1]) + "\n").encode())
elif kind == "nested":
    out.write(b'{"lotsize": [' + b"0," * 7_500_000 + b"0]}\n")
elif kind == "log":
    for i in range(32):
        out.write(log(i, '{"price":0.0}'))
elif kind == "big-outputs":
    pad = b"[" + b"0.0," * (15_000_000 // 4) + b"0.0]"
    for i in range(300):
        out.write(log(i, "").replace(b'"outputs":}', b'"outputs":{"price":' + pad + b"}}"))
PY
}

measure() { # name, command...: peak RSS, wall time, and the run's summary
  local name="$1"; shift
  /usr/bin/time -v "$@" >"$out/stdout" 2>"$out/stderr" || true
  local kib wall summary
  kib=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$out/stderr")
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$out/stderr")
  summary=$(grep '^inferd score:' "$out/stderr" || grep -E '^(replayed|identical|different|unreadable)' "$out/stdout" | tr -s ' ' | paste -sd, -)
  printf '%-12s %5d MiB %8s   %s\n' "$name" $((kib / 1024)) "$wall" "$summary"
}

gen log | gzip >"$out/log.gz"
python3 -c "import sys; sys.stdout.buffer.write(b'\n')" >"$out/nl"
head -c 4600000000 /dev/zero | tr '\0' x | gzip -9 >"$out/bomb.gz"
gzip -c "$out/nl" >>"$out/bomb.gz"
cat "$out/log.gz" >>"$out/bomb.gz"
echo "gzip bomb: $(du -h "$out/bomb.gz" | cut -f1)"

gen rows | measure "score rows" $inferd score --input -
gen long-line | measure "long line" $inferd score --input -
gen csv-cell | measure "CSV cell" $inferd score --input - --input-format csv
measure "replay idle" $inferd replay "$out/log.gz"
measure "gzip bomb" $inferd replay "$out/bomb.gz"
gen big-outputs | measure "big outputs" $inferd replay -
gen nested | measure "nested" $inferd score --input -
