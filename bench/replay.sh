#!/usr/bin/env bash
# `inferd replay` and `inferd score` on a day's worth of logged traffic, against the ceiling.
#   1. A server on bench/wide_mlp.toml answers 4 requests of 32 rows of seeded random values:
#      128 real prediction-log lines.
#   2. They are repeated (request ids made unique) to ROWS lines (default 1,000,000).
#   3. `inferd replay` re-scores all of them on the same model: rows/s, and every answer must be
#      identical; `inferd score` scores their inputs as JSON Lines: rows/s.
#   4. bench/ceiling.rs: ONNX Runtime alone on wide_mlp at batch 64 (replay's batch), one thread.
# Usage: bench/replay.sh [rows, default 1000000]. Needs curl and python3; writes under a
# temporary folder removed at exit (about 1.2 GB for a million lines).
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
./scripts/fetch-onnxruntime.sh
cargo build --release --locked --quiet --bin inferd --example ceiling
out="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$out"' EXIT

INFERD_PREDICTION_LOG_DIR="$out/seed" ./target/release/inferd serve --config bench/wide_mlp.toml \
  --host 127.0.0.1 --port 18631 >"$out/server.log" 2>&1 &
pid=$!
until curl -sf localhost:18631/ready >/dev/null; do sleep 0.05; done
for seed in 1 2 3 4; do
  python3 -c "import json, random; r = random.Random($seed); print(json.dumps({'instances': [{f'features_{i}': round(r.uniform(-2, 2), 3) for i in range(64)} for _ in range(32)]}))" |
    curl -sf -XPOST localhost:18631/predict -H 'content-type: application/json' --data-binary @- >/dev/null
done
kill -TERM "$pid"; wait "$pid" || true; pid=""

python3 - "$out/seed" "$out/logs/predictions.jsonl" "$out/rows.jsonl" "$rows" <<'PY'
import json, pathlib, sys
seed, logs, inputs, rows = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
lines = [json.loads(l) for f in sorted(seed.iterdir()) for l in f.read_text().splitlines()]
assert len(lines) == 128, len(lines)
logs.parent.mkdir()
with logs.open("w") as log, inputs.open("w") as ins:
    for i in range(rows):
        line = dict(lines[i % len(lines)], request_id=f"replay-{i // 32}", instance=i % 32)
        log.write(json.dumps(line, separators=(",", ":")) + "\n")
        ins.write(json.dumps(line["inputs"], separators=(",", ":")) + "\n")
PY
echo "bench: $rows logged rows, $(du -h "$out/logs/predictions.jsonl" | cut -f1)"
./target/release/inferd replay --config bench/wide_mlp.toml --format json "$out/logs" >"$out/replay.json"
./target/release/inferd score --config bench/wide_mlp.toml --input "$out/rows.jsonl" --output "$out/scored.jsonl" 2>"$out/score.txt"
ceiling=$(./target/release/examples/ceiling models/wide_mlp.onnx 64 3 | sed -n 's/^CEILING batch=64 rows_per_s=\([0-9]*\).*/\1/p')
python3 - "$out/replay.json" "$out/score.txt" "$ceiling" <<'PY'
import json, re, sys
report = json.load(open(sys.argv[1]))
score = float(re.search(r"([0-9.]+) rows/s", open(sys.argv[2]).read()).group(1))
ceiling = float(sys.argv[3])
assert report["identical"] == report["replayed"], report
print(f"replay: {report['replayed']:,} rows in {report['seconds']:.1f} s, {report['rows_per_second']:,.0f} rows/s, all identical")
print(f"score:  {score:,.0f} rows/s")
print(f"ceiling (ONNX Runtime alone, batch 64, one thread): {ceiling:,.0f} rows/s")
print(f"replay / ceiling: {report['rows_per_second'] / ceiling:.0%}; score / ceiling: {score / ceiling:.0%}")
PY
