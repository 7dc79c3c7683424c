#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: fetches the ONNX Runtime library,
# installs the standard Open Inference Protocol client (tritonclient), PyJWT and schemathesis
# into .venv and Prometheus' promtool and Chromium (Debian packages), then runs the unit and
# integration tests (which start the real server on port 0) and the deployment checks under
# deploy/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
# Every time (a no-op when satisfied): the checks below add their own tools to the same venv.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/oip/requirements.txt -r tests/auth/requirements.txt \
  -r tests/openapi/requirements.txt
# Debian packages: Prometheus' promtool (metrics tests), Chromium (the CORS browser tests) and
# util-linux's setpriv.
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
# setpriv runs the server as an unprivileged user in the SIGTERM tests (CI runs as root).
command -v setpriv >/dev/null || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked "$@" 2>&1 | tee "$log" || status=$?
# The deployment checks (each deploy/*/check.sh prints `ok - ...` lines and `NAME: N passed, N
# failed`) use the debug binary the tests just built; they install their own tools (nginx,
# systemd-analyze, promtool, hadolint, honcho, kubernetes-validate). A filter given for cargo
# runs the cargo tests alone.
if [ "$#" = 0 ]; then
  for check in docker heroku systemd nginx kubernetes monitoring; do
    echo "== deploy/${check}/check.sh"
    bash "deploy/${check}/check.sh" 2>&1 | tee -a "$log" || status=1
  done
else
  echo "deployment checks not run: arguments were given for cargo test"
fi
# cargo ends on the doc-test binary's "0 passed"; close on the total instead.
awk '/^test result:/ { p += $4; f += $6 }
     /^[a-z]+: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
