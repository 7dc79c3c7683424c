#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: fetches the ONNX Runtime library,
# then runs the unit and integration tests (which start the real server on port 0).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
cargo test --locked "$@"
