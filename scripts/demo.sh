#!/usr/bin/env bash
# The main job on the embedded default: compile samples/sample_cnn.onnx for the CPU, inspect the bundle, run it from
# Python and from the C++ runner, verify it against ONNX Runtime on the source model, profile it, and write an HTML
# report (its path is the last line).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
X=.venv/bin
MODEL=${1:-samples/sample_cnn.onnx}
OUT=build/demo/$(basename "${MODEL%.onnx}").xrtpkg
mkdir -p build/demo
set -x
$X/xrtc compile "$MODEL" --target cpu -o "$OUT" --force
$X/xrtc inspect "$OUT"
$X/python -P - "$OUT" <<'PY'
import sys, numpy as np, xpuruntime as xrt
sess = xrt.load(sys.argv[1])
print("inputs:", sess.inputs, "\noutputs:", sess.outputs, "\nruns:", sess.explain()["variant"])
shape = [d if isinstance(d, int) else 1 for d in sess.inputs[0].shape]
out = sess.run({sess.inputs[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)})
print({k: (v.dtype, v.shape) for k, v in out.items()})
PY
$X/xrt-run "$OUT" --shape image=1x3x64x64 --bench 200
$X/xrtc verify "$OUT" --model "$MODEL" --shape image=2x3x64x64
$X/xrtc profile "$OUT" --shape image=1x3x64x64 --top 8 --trace build/demo/trace.json --force
$X/xrtc report "$OUT" --shape image=1x3x64x64 -o build/demo/report.html --force
{ set +x; } 2>/dev/null
echo "demo: the report is $(pwd)/build/demo/report.html (open it in a browser); the trace is build/demo/trace.json (ui.perfetto.dev)"
