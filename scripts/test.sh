#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: fetches the ONNX Runtime library,
# installs the standard Open Inference Protocol client (tritonclient) into .venv and
# Prometheus' promtool (Debian package `prometheus`), then runs the unit and integration tests
# (which start the real server on port 0).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
if ! .venv/bin/python -c "import tritonclient.http" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet -r tests/oip/requirements.txt
fi
if ! command -v promtool >/dev/null; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# cargo ends on the doc-test binary's "0 passed"; close on the total instead.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
