#!/usr/bin/env bash
# Offline checks of the Kubernetes and KServe manifests (no cluster, no kubectl):
#  - core kinds against Kubernetes' schemas (PyPI kubernetes-validate, pinned; strict mode);
#  - ServiceMonitor, ServingRuntime, InferenceService against schemas/*.json;
#  - cross-references (selectors, ports, probes vs inferd's routes, drain timing, volumes);
#  - inferd started with the Deployment's runtime.toml/env, and as the ServingRuntime on KServe
#    model folders (model.onnx + schema.json; version folders) with its settings ConfigMap.
# Usage: deploy/kubernetes/check.sh   (INFERD_BIN picks the binary; default target/debug/inferd)
set -euo pipefail
cd "$(dirname "$0")/../.."

PIP_PKGS=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4)

fail_setup() {
  echo "not ok - setup: $1"
  echo "kubernetes: 0 passed, 1 failed"
  exit 1
}

# Python tools in the repo's .venv (shared with scripts/test.sh).
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian keeps ensurepip in a separate package.
    rm -rf .venv
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
      || fail_setup "cannot create .venv: install python3-venv"
    python3 -m venv .venv || fail_setup "cannot create .venv"
  fi
fi
if ! .venv/bin/python - <<'EOF' 2>/dev/null
import importlib.metadata as m
want = {"kubernetes-validate": "1.37.0", "jsonschema": "4.26.0", "PyYAML": "6.0.4"}
raise SystemExit(any(m.version(k) != v for k, v in want.items()))
EOF
then
  .venv/bin/python -m pip install --quiet "${PIP_PKGS[@]}" \
    || fail_setup "pip install ${PIP_PKGS[*]} into .venv failed"
fi

# The server binary and the ONNX Runtime library it loads.
bin="${INFERD_BIN:-target/debug/inferd}"
if [ ! -x "$bin" ]; then
  cargo build --locked --quiet || fail_setup "cargo build --locked failed"
  [ -x "$bin" ] || fail_setup "$bin missing after cargo build"
fi
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ ! -f .ort/libonnxruntime.so.1.31.1 ]; then
  ./scripts/fetch-onnxruntime.sh >/dev/null || fail_setup "scripts/fetch-onnxruntime.sh failed"
fi

exec timeout 300 .venv/bin/python deploy/kubernetes/check.py "$bin"
