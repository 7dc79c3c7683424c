#!/usr/bin/env bash
# Simulates a Heroku-style `git push` of the committed tree: the build step the platform runs
# (bin/detect, bin/compile BUILD_DIR CACHE_DIR ENV_DIR, as the inline buildpack calls them) in a
# scratch build folder without .git, the result moved to another path (as the slug moves from the
# build folder to /app), then the Procfile's `web` line started by a Procfile runner (honcho) on a
# random PORT: /ready, /predict, the process being inferd itself (exec), and a clean exit on
# SIGTERM within 30 s. The toolchain and pip come from the machine here, from the Rust and Python
# buildpacks on the platform.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
passed=0 failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
finish() {
  echo "heroku: ${passed} passed, ${failed} failed"
  [ "$failed" = 0 ]
}

if ! .venv/bin/honcho --version >/dev/null 2>&1; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet honcho==2.0.0
fi
honcho="$repo/.venv/bin/honcho"
if ! .venv/bin/python -c 'import yaml' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet PyYAML==6.0.4
fi

# The app's manifests, statically: app.json (read by app-setup and the Deploy button) and
# heroku.yml's setup (read by `heroku create --manifest`) provision Heroku Postgres and send the
# prediction log there; DATABASE_URL is left to the add-on and runtime.toml names no other
# database; every config var is documented. One `ok`/`not ok` line each.
manifest_checks="$(.venv/bin/python - <<'PY'
import json, re, tomllib, yaml

def line(ok, what, why=""):
    print(f"ok - {what}" if ok else f"not ok - {what}: {why}")

try:
    app = json.load(open("app.json"))
    line(True, "app.json parses as JSON")
except ValueError as e:
    line(False, "app.json parses as JSON", e)
    raise SystemExit
plans = [a["plan"] if isinstance(a, dict) else a for a in app.get("addons", [])]
pg = [p for p in plans if p.split(":")[0] == "heroku-postgresql"]
line(len(pg) == 1 and re.fullmatch(r"heroku-postgresql:essential-\d", pg[0]) is not None,
     "app.json addons: one Heroku Postgres on an essential plan (it sets DATABASE_URL)", plans)
env = app.get("env", {})
sink = env.get("INFERD_PREDICTION_LOG_SINK", {}).get("value")
line(sink == "postgres", "app.json env: INFERD_PREDICTION_LOG_SINK is postgres", sink)
owned = [k for k in ("DATABASE_URL", "INFERD_PREDICTION_LOG_URL") if k in env]
line(not owned, "app.json env leaves DATABASE_URL to the add-on (and sets no other URL)", owned)
vague = [k for k, v in env.items() if not isinstance(v, dict) or not v.get("description")
         or ("value" not in v and v.get("required") is not False)]
line(not vague, "app.json env: every var has a description and a value or required: false", vague)
cfg = tomllib.load(open("runtime.toml", "rb"))
url = cfg.get("prediction_log", {}).get("postgres", {}).get("url", "")
line(url == "", "runtime.toml sets no prediction_log.postgres.url, so DATABASE_URL is used", url)
setup = (yaml.safe_load(open("heroku.yml")) or {}).get("setup", {})
hplans = [a["plan"] if isinstance(a, dict) else a for a in setup.get("addons", [])]
line(hplans == pg and setup.get("config", {}).get("INFERD_PREDICTION_LOG_SINK") == sink,
     "heroku.yml setup: the same add-on and sink as app.json", (hplans, setup.get("config")))
readme = open("deploy/heroku/README.md").read()
undocumented = [k for k in list(env) + ["DATABASE_URL"] if f"`{k}`" not in readme]
line(not undocumented, "every app.json config var (and DATABASE_URL) is in deploy/heroku/README.md",
     undocumented)
PY
)" || manifest_checks="not ok - the manifest checks ran to the end: python exited early"
while IFS= read -r l; do
  case "$l" in
    "ok - "*) ok "${l#ok - }" ;;
    "not ok - "*) not_ok "${l#not ok - }" ;;
  esac
done <<<"$manifest_checks"

scratch="$(mktemp -d)"
runner=""
cleanup() {
  if [ -n "$runner" ]; then kill -KILL "$runner" 2>/dev/null || true; fi
  if [ -n "${web_pid:-}" ]; then kill -KILL "$web_pid" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
# Kept between runs (git-ignored), like the platform's build cache.
cache="${INFERD_HEROKU_CACHE:-$repo/target/heroku-cache}"
build="$scratch/build_$(date +%s)"
app="$scratch/app"

git clone --quiet --no-local "$repo" "$build"
rm -rf "$build/.git"
mkdir -p "$scratch/env"
started=$(date +%s)
if (cd "$build" && env -u ORT_DYLIB_PATH ./bin/detect "$build" >/dev/null &&
  env -u ORT_DYLIB_PATH -u CARGO_TARGET_DIR ./bin/compile "$build" "$cache" "$scratch/env") >"$scratch/build.log" 2>&1; then
  ok "bin/compile builds the slug in $(($(date +%s) - started)) s"
else
  not_ok "bin/compile failed: $(tail -5 "$scratch/build.log")"
  finish
  exit 1
fi

mv "$build" "$app"
size=$(du -sm "$app" | cut -f1)
ok "slug moved from the build folder to $app (${size} MiB)"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
started_ns=$(date +%s%N)
(cd "$app" && exec env -u ORT_DYLIB_PATH -u INFERD_CONFIG -u INFERD_HOST "$honcho" start -p "$port" web) \
  >"$scratch/run.log" 2>&1 &
runner=$!

# One HTTP call with the standard library (no curl needed): prints the status, then the body.
http() {
  python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
url, body = sys.argv[1], (sys.argv[2].encode() if len(sys.argv) > 2 else None)
req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
except OSError as e:
    print(0); print(e)
PY
}

ready=""
for _ in $(seq 600); do
  if [ "$(http "http://127.0.0.1:$port/ready" | sed -n 1p)" = 200 ]; then ready=1; break; fi
  kill -0 "$runner" 2>/dev/null || break
  sleep 0.1
done
if [ -n "$ready" ]; then
  ok "GET /ready is 200 on PORT=$port after $((($(date +%s%N) - started_ns) / 1000000)) ms"
else
  not_ok "never ready on PORT=$port: $(tail -5 "$scratch/run.log")"
fi

answer="$(http "http://127.0.0.1:$port/predict" "$(cat "$repo/example.json")")"
if [ "$(echo "$answer" | sed -n 1p)" = 200 ] &&
  echo "$answer" | tail -n +2 | python3 -c 'import json,sys; p=json.load(sys.stdin)["predictions"]; assert len(p) == 2 and all(x["price"] > 0 for x in p)'; then
  ok "POST /predict answers 200 with 2 predictions"
else
  not_ok "POST /predict: $answer"
fi

library=$(grep -o '"message":"ONNX Runtime library loaded","path":"[^"]*"' "$scratch/run.log" | sed 's/.*"path":"//; s/"$//' || true)
if [ "$library" = ".ort/libonnxruntime.so.1.31.1" ]; then
  ok "the library is the slug's own (.ort/ under the app's working directory)"
else
  not_ok "library loaded from '${library}', not the app's .ort/"
fi

web_pid=$(sed -n 's/.*web\.1 started (pid=\([0-9][0-9]*\)).*/\1/p' "$scratch/run.log" | head -1)
# Only a descendant of our honcho (which runs each process under a helper) is ever signalled.
descends_from_runner() {
  local pid="$1"
  for _ in 1 2 3; do
    pid=$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')
    [ -n "$pid" ] || return 1
    [ "$pid" = "$runner" ] && return 0
  done
  return 1
}
if [ -n "$web_pid" ] && ! descends_from_runner "$web_pid"; then web_pid=""; fi
if [ -n "$web_pid" ] && [ "$(cat "/proc/$web_pid/comm" 2>/dev/null)" = inferd ]; then
  ok "the Procfile's process (pid $web_pid) is inferd itself: the shell exec'd it"
else
  not_ok "the web process ${web_pid:-?} is $(cat "/proc/${web_pid:-0}/comm" 2>/dev/null || echo unknown), not inferd"
fi

# The platform sends SIGTERM to every process of the dyno and SIGKILL 30 s later.
stop_ns=$(date +%s%N)
kill -TERM "$runner"
[ -n "$web_pid" ] && kill -TERM "$web_pid" 2>/dev/null || true
exited=""
for _ in $(seq 300); do
  if ! kill -0 "$runner" 2>/dev/null && { [ -z "$web_pid" ] || ! kill -0 "$web_pid" 2>/dev/null; }; then exited=1; break; fi
  sleep 0.1
done
wait "$runner" 2>/dev/null || true
runner=""
stop_ms=$((($(date +%s%N) - stop_ns) / 1000000))
if [ -n "$exited" ] && grep -q '"message":"stopped"' "$scratch/run.log" && grep -q 'web.1 stopped (rc=0)' "$scratch/run.log"; then
  ok "SIGTERM: inferd drained and exited 0 in ${stop_ms} ms"
else
  not_ok "SIGTERM: no clean exit within 30 s: $(tail -5 "$scratch/run.log")"
fi
web_pid=""
finish
