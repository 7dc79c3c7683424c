#!/usr/bin/env bash
# One command from a fresh clone to a running service on the bundled model: fetches the
# ONNX Runtime library, builds the release binary, serves on $PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
cargo build --release --locked
exec ./target/release/inferd serve "$@"
