#!/usr/bin/env bash
# Puts the ONNX Runtime shared library in .ort/ (git-ignored), where inferd looks for it.
# ort's own `download-binaries` feature cannot work offline, so the library is taken from the
# official Python wheel, which the package registry serves; version and checksum are pinned.
set -euo pipefail

ORT_VERSION="1.31.1"
WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
LIB="libonnxruntime.so.${ORT_VERSION}"

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${root}/.ort"

if [[ -f "${dest}/${LIB}" ]]; then
  exit 0
fi
if [[ "$(uname -sm)" != "Linux x86_64" ]]; then
  echo "fetch-onnxruntime: only Linux x86-64 is scripted; set ORT_DYLIB_PATH to your own ${LIB}" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
echo "fetch-onnxruntime: downloading onnxruntime==${ORT_VERSION} wheel" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 \
  "onnxruntime==${ORT_VERSION}" -d "${tmp}"

echo "${WHEEL_SHA256}  ${tmp}/${WHEEL}" | sha256sum --check --quiet -
python3 - "${tmp}/${WHEEL}" "${tmp}" "onnxruntime/capi/${LIB}" <<'PY'
import sys, zipfile
wheel, out, member = sys.argv[1:]
zipfile.ZipFile(wheel).extract(member, out)
PY
mkdir -p "${dest}"
mv "${tmp}/onnxruntime/capi/${LIB}" "${dest}/${LIB}"
echo "fetch-onnxruntime: installed ${dest}/${LIB}" >&2
