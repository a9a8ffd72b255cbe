#!/usr/bin/env bash
# Idempotent set-up on Debian 12 + Python 3.11: system build packages, a .venv, and xpuruntime built from this
# checkout (C++ runtime, OpenVINO plugin, xrt-run, Python loader, xrtc). Re-runs rebuild only when sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# C++ build dependencies from Debian (the runtime core: OpenSSL for SHA-256, zstd, nlohmann-json; the runner: libzip;
# the C++ tests: GoogleTest; the fuzzers: clang with libFuzzer). OpenVINO's SDK comes from its PyPI wheel.
missing=()
arch=$(dpkg --print-architecture)
for pkg in g++ libssl-dev libzstd-dev nlohmann-json3-dev libgtest-dev libzip-dev pkg-config clang libclang-rt-14-dev; do
  # This machine's architecture (or arch-independent): a foreign multiarch copy (e.g. arm64) does not count.
  dpkg-query -W -f='${binary:Package} ${db:Status-Abbrev}\n' "$pkg" 2>/dev/null |
    awk -v p="$pkg" -v a="$pkg:$arch" '($1 == p || $1 == a) && $2 == "ii" {found = 1} END {exit !found}' ||
    missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# cuda.h / cublasLt.h for the cuda plugin, unpacked from pinned wheels into ~/.cache (no GPU or toolkit needed; the
# first time downloads ~425 MB in ~15 s, later runs only check the folder). CMake finds them there (XRT_BUILD_CUDA=AUTO).
XRT_CUDA_INCLUDE_DIR=$(PYTHON=.venv/bin/python bash scripts/cuda_headers.sh) && export XRT_CUDA_INCLUDE_DIR ||
  echo "setup: CUDA headers unavailable: the cuda plugin is not built" >&2
stamp=.venv/.xrt-build-stamp
digest=$( (git ls-files -co --exclude-standard -- pyproject.toml CMakeLists.txt runtime_cpp formats xpuruntime compiler \
           | sort | while IFS= read -r f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
           | xargs -0 sha256sum) | sha256sum | cut -c1-64)  # tracked files deleted in the work tree are skipped
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "setup: building xpuruntime (first time: a few minutes)" >&2
  .venv/bin/pip install -q --disable-pip-version-check "scikit-build-core==1.1.2" "nanobind==3.1.0" \
      "openvino==2026.4.1" "cmake==4.4.5" "ninja==1.13.2"
  # No build isolation: reuses the build folder (incremental rebuilds) and the openvino wheel installed above.
  .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -Cbuild-dir=build/wheel ".[openvino,dev,cuda-compile,report]"
  echo "$digest" > "$stamp"
fi
