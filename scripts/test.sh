#!/usr/bin/env bash
# One command from a fresh clone to a passing test suite: fetches the ONNX Runtime library,
# installs the standard Open Inference Protocol client (tritonclient), PyJWT, schemathesis and
# moto (an S3-compatible server) into .venv and Prometheus' promtool, Chromium and PostgreSQL
# (Debian packages; the tests make throwaway clusters of their own), then runs the unit and
# integration tests (which start the real server on port 0) with the `external-tools` feature,
# and the deployment checks under deploy/. Plain `cargo test` needs none of those tools: it
# runs everything but the tests behind that feature.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnxruntime.sh
# Every time (a no-op when satisfied): the checks below add their own tools to the same venv.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/oip/requirements.txt -r tests/auth/requirements.txt \
  -r tests/openapi/requirements.txt -r tests/sinks/requirements.txt
# Debian packages: Prometheus' promtool (metrics tests), Chromium (the CORS browser tests) and
# PostgreSQL's server (the prediction log's postgres sink: initdb and pg_ctl, which Debian keeps
# in /usr/lib/postgresql/<major>/bin, off the PATH).
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v "${CHROMIUM:-chromium}" >/dev/null || missing+=(chromium)
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
have_initdb || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The external-tools tests fail, never skip, without their tools; say here what is missing.
need() { echo "scripts/test.sh: $1 is missing: $2" >&2; exit 1; }
command -v promtool >/dev/null || need promtool "apt-get install prometheus"
command -v "${CHROMIUM:-chromium}" >/dev/null || need chromium "apt-get install chromium, or set CHROMIUM to its path"
have_initdb || need "PostgreSQL's initdb (/usr/lib/postgresql/*/bin/initdb)" "apt-get install postgresql"
for tool in python schemathesis moto_server; do
  [ -x ".venv/bin/$tool" ] || need ".venv/bin/$tool" "pip install -r tests/{oip,auth,openapi,sinks}/requirements.txt"
done
# A tmpfs mount fills a disk in the prediction-log tests: that takes root (CI runs as root).
[ "$(id -u)" = 0 ] || need root "the tmpfs test mounts a filesystem; run as root (CI does)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --features external-tools "$@" 2>&1 | tee "$log" || status=$?
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
