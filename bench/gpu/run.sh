#!/usr/bin/env bash
# The GPU proof of --target cuda, run on the device machine in one call (build-check-benchmark):
#   bash bench/gpu/run.sh smoke   the plugin's GPU tests and xrt-run on the bundles in .carry/rt/b
#   bash bench/gpu/run.sh bert    + build xpuruntime there, export HF BertModel, compile it with --target cuda,
#                                 check against ONNX Runtime CPU fp32, benchmark against the peers (bench_bert.py)
# Inputs carried from the development machine (git-ignored, see README "Notes"): .carry/rt (libxrt.so,
# libxrt_backend_cuda.so, xrt-run, cuda_gpu_test built on Debian 12; libzip/libbz2 the device lacks) and .carry/whl
# (cp312 wheels the compiler needs there). Logs and tables go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${1:-smoke}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
R=$PWD/.carry/rt
NV=$(python3 -c "import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], 'cu13', 'lib'))")
export LD_LIBRARY_PATH=$R/lib:$R/sys:$NV${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export XRT_BACKEND_PATH=$R/lib
# xpuruntime (libxrt + the Python binding + xrtc) built there for its Python 3.12: the compiler runs there. The cuda
# plugin is the one carried (built against the same xrt.h); the runner is carried too (the device has no libzip headers).
build_xrt() {
  local t0=$SECONDS
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bt .carry/bt/*.whl &&
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/whl/*.whl || return 1
  PYTHONPATH=/tmp/bt CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install -q --no-deps --no-build-isolation --no-compile \
      --target /tmp/site -Cbuild-dir=/tmp/xrt-build -Ccmake.define.XRT_BUILD_RUNNER=OFF \
      -Ccmake.define.XRT_BUILD_OPENVINO=OFF -Ccmake.define.XRT_BUILD_CUDA=OFF . > "$OUT/build_xrt.log" 2>&1 ||
    { tail -30 "$OUT/build_xrt.log"; return 1; }
  cp "$R/lib/libxrt_backend_cuda.so" /tmp/site/xpuruntime/
  export PYTHONPATH=/tmp/site
  echo "built xpuruntime there in $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton, transformers, onnx, onnxruntime as o; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'onnx', onnx.__version__, 'onnxruntime', o.__version__)" | tee -a "$OUT/device.txt"

echo "== plugin GPU tests (real driver, cuBLASLt from $NV)"
"$R/bin/cuda_gpu_test" 2>&1 | tee "$OUT/gpu_test.log" | grep -E "OK|FAILED|PASSED|rel_err|Skipped|error" | cut -c1-400

echo "== xrt-run on the carried bundles"
for b in "$R"/b/*.xrtpkg; do
  name=$(basename "$b" .xrtpkg)
  model=$R/b/${name%%[0-9]*}.onnx
  python3 bench/gpu/compare.py "$model" "$OUT/$name.in.npz" --make-inputs
  "$R/bin/xrt-run" "$b" --device cuda --inputs "$OUT/$name.in.npz" --save-outputs "$OUT/$name.out.npz" --force --json > "$OUT/$name.run.json" 2> "$OUT/$name.run.err"
  echo "$name: rc=$? $(tail -c 300 "$OUT/$name.run.err")"
  python3 bench/gpu/compare.py "$model" "$OUT/$name.in.npz" "$OUT/$name.out.npz" --rtol 1e-2 --label "$name"
  python3 -c "import json,sys; d=json.load(open('$OUT/$name.run.json')); print(json.dumps(d)[:1500])" 2>&1 | cut -c1-1500
  XRT_CUDA_REPLAY_TIMING=200 XRT_CUDA_REPORT=$OUT/$name.replay.jsonl "$R/bin/xrt-run" "$b" --device cuda --quiet 2>&1 | tail -2
  cat "$OUT/$name.replay.jsonl" 2>/dev/null
  XRT_CUDA_PROFILE=1 XRT_CUDA_REPORT=$OUT/$name.profile.jsonl "$R/bin/xrt-run" "$b" --device cuda --quiet 2>&1 | tail -2
  cut -c1-600 "$OUT/$name.profile.jsonl" 2>/dev/null
done
build_xrt || { echo "xpuruntime build FAILED"; exit 1; }
(cd /tmp && python3 -c "import xpuruntime, xrtc; print('xpuruntime', xpuruntime.__version__, xpuruntime.__file__)")
[ "$stage" = smoke ] && exit 0
