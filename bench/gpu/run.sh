#!/usr/bin/env bash
# The GPU proof of --target cuda, run on the device machine in one call (build-check-benchmark):
#   bash bench/gpu/run.sh smoke   the plugin's GPU tests and xrt-run on the bundles in .carry/rt/b
#   bash bench/gpu/run.sh bert    + build xpuruntime there, export HF BertModel, compile it with --target cuda,
#                                 check against ONNX Runtime CPU fp32, benchmark against the peers (bench_bert.py)
#   bash bench/gpu/run.sh minilm  + all-MiniLM-L6-v2, a real checkpoint (minilm.py), after two calls that copied
#                                 carry.sh --minilm's chunks .carry/m1, .carry/m2 to /tmp/parts
# Inputs carried from the development machine (git-ignored, see README "Notes"): .carry/rt (libxrt.so,
# libxrt_backend_cuda.so, xrt-run, cuda_gpu_test built on Debian 12; libzip/libbz2 the device lacks) and .carry/whl
# (cp312 wheels the compiler needs there). Logs and tables go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${1:-smoke}
# Logs go to /tmp/o and come back as one archive ($OUT/logs.tgz: the device tool returns at most 8 files).
FINAL=${OUT:-/tmp/out}; OUT=/tmp/o; mkdir -p "$OUT" "$FINAL"
trap 'tar czf "$FINAL/logs.tgz" -C "$OUT" . 2>/dev/null; cp "$OUT/table.md" "$FINAL/" 2>/dev/null' EXIT
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
  [ -f "$b" ] || { echo "(no bundles carried in .carry/rt/b)"; break; }
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
# tests: the GPU halves of the Python suites (InferenceSession on cuda:0, xpuruntime.pytorch's capture and refusals,
# the cuda runtime's loads), run from /tmp so that the installed package, not the checkout, is imported
if [ "$stage" = tests ] || [ -n "${WITH_TESTS:-}" ]; then
  echo "== pytest on the GPU: tests/session tests/torch tests/cuda"
  (cd /tmp && timeout 240 python3 -m pytest "$OLDPWD/tests/session" "$OLDPWD/tests/torch" "$OLDPWD/tests/cuda/test_cuda_runtime_load.py" -q -rs \
      -p no:cacheprovider 2>&1) > "$OUT/pytest_gpu.txt"
  echo "pytest rc=$?"; grep -E "passed|failed|SKIPPED|FAILED|Error" "$OUT/pytest_gpu.txt" | tail -25 | cut -c1-300
fi
if [ "$stage" = sweep ]; then  # the generated kernels' configurations (sets codegen's layernorm/attention rules)
  (cd /tmp && timeout 400 python3 "$OLDPWD/bench/gpu/sweep_kernels.py" --kernels "${SWEEP_KERNELS:-layernorm,attention,gemm}" \
      --json "$OUT/sweep.json" 2>&1) > "$OUT/sweep.txt"
  echo "sweep rc=$?"; grep -E "^\||error|Error" "$OUT/sweep.txt" | tail -40 | cut -c1-300
  exit 0
fi
# xrtc profile on a cuda bundle (issue 17): the engine's own per-launch report mapped to ONNX nodes, and its trace
if [ "$stage" = profile ]; then
  P=/tmp/prof; mkdir -p $P; sh=2x16
  (cd /tmp && python3 -m xrtc compile $OLDPWD/tests/cuda/data/tiny_bert_sdpa_dynamo.onnx --target cuda --precision fp16 \
      --shape input_ids=$sh --shape attention_mask=$sh --shape token_type_ids=$sh -o $P/tiny.xrtpkg --force 2>&1 | tail -2)
  XRT_CUDA_PROFILE=1 XRT_CUDA_REPORT=$P/report.jsonl "$R/bin/xrt-run" $P/tiny.xrtpkg --device cuda --quiet 2>&1 | tail -1
  (cd /tmp && python3 -m xrtc profile $P/tiny.xrtpkg --cuda-report $P/report.jsonl --trace $OUT/trace.json \
      -o $OUT/profile.json 2>&1 | tail -30)
  echo "profile rc=$?"; python3 -c "import json; t=json.load(open('$OUT/trace.json')); ev=t['traceEvents'] if isinstance(t, dict) else t; print(len(ev), 'trace events;', sorted({str(e.get('tid')) for e in ev if isinstance(e, dict)}))"
  exit 0
fi
# a real checkpoint (all-MiniLM-L6-v2, 6 layers, hidden 384): its model.zip joined from the chunks two earlier calls
# left in /tmp/parts (carry.sh --minilm), exported, compiled per shape, checked against PyTorch and ORT, timed
if [ "$stage" = minilm ]; then
  M=/tmp/minilm; mkdir -p $M
  cat /tmp/parts/minilm.part0 /tmp/parts/minilm.part1 > $M/model.zip && (cd $M && sha256sum -c /tmp/parts/minilm.SHA256) || exit 1
  (cd /tmp && python3 $OLDPWD/bench/gpu/minilm.py export $M/model.zip $M 2>&1 | grep -v Warning | tail -3)
  for sh in 1x128 8x128; do
    b=${sh%x*}; s=${sh#*x}; k=b${b}s${s}
    (cd /tmp && python3 -m xrtc compile $M/minilm.onnx --target cuda --precision fp16 --shape input_ids=$sh \
        --shape attention_mask=$sh --shape token_type_ids=$sh -o $M/minilm_$k.xrtpkg --force > $OUT/minilm_compile_$k.log 2>&1)
    echo "minilm compile $k: rc=$? $(tail -n 2 $OUT/minilm_compile_$k.log | cut -c1-300)"
    XRT_CUDA_REPLAY_TIMING=300 XRT_CUDA_REPORT=$OUT/minilm_replay_$k.jsonl "$R/bin/xrt-run" $M/minilm_$k.xrtpkg --device cuda \
        --inputs $M/in_$k.npz --quiet 2>&1 | tail -1
    tail -1 $OUT/minilm_replay_$k.jsonl | cut -c1-300
    (cd /tmp && python3 $OLDPWD/bench/gpu/minilm.py check $M $M/minilm_$k.xrtpkg $k 2>&1 | grep -v Warning | tail -2)
    (cd /tmp && python3 $OLDPWD/bench/gpu/bench_bert.py coldstart $M/minilm_$k.xrtpkg $M/in_$k.npz 2>&1 | tail -1 | cut -c1-400)
  done
  exit 0
fi
[ "$stage" = smoke ] || [ "$stage" = tests ] && exit 0

# ---- bert: export, compile (fp16, one bundle per shape: v1 plans are static), check, time, peers ----
SHAPES=${SHAPES:-1x128 8x128 32x128 1x384}
D=/tmp/bert; mkdir -p $D
t0=$SECONDS
python3 bench/gpu/bench_bert.py export $D && python3 bench/gpu/bench_bert.py inputs $D $SHAPES || exit 1
echo "exported bert.onnx in $((SECONDS - t0)) s"
t0=$SECONDS
TF32_SHAPES=${TF32_SHAPES-1x128 32x128}  # TF32_SHAPES="" builds none
# fp16 with the policy's matmul = triton (GEMMs as Triton kernels: no cuBLASLt, so none of its start-up cost)
TRITON_SHAPES=${TRITON_SHAPES:-}
printf '[kernel]\nmatmul = "triton"\n' > $D/matmul_triton.toml
# fp16 with the policy's matmul = cublas (plain cublasGemmEx GEMMs, bias/GELU in a Triton kernel after each; no
# cuBLASLt): CUBLAS_SHAPES="1x128" builds and reports them like TRITON_SHAPES
CUBLAS_SHAPES=${CUBLAS_SHAPES:-}
printf '[kernel]\nmatmul = { choice = "cublas", mode = "fixed" }\n' > $D/matmul_cublas.toml
KEYS=""
for job in $(for sh in $SHAPES; do echo fp16:$sh; done; for sh in $TF32_SHAPES; do echo tf32:$sh; done;
             for sh in $TRITON_SHAPES; do echo tritonmm:$sh; done; for sh in $CUBLAS_SHAPES; do echo cublasmm:$sh; done); do
  prec=${job%%:*}; sh=${job#*:}; b=${sh%x*}; s=${sh#*x}
  k=b${b}s${s}; [ $prec = fp16 ] || k=${prec}_$k
  KEYS="$KEYS $k"
  policy=""; [ $prec = tritonmm ] && { prec=fp16; policy="--policy $D/matmul_triton.toml"; }
  [ $prec = cublasmm ] && { prec=fp16; policy="--policy $D/matmul_cublas.toml"; }
  (cd /tmp && python3 -m xrtc compile $D/bert.onnx --target cuda --precision $prec $policy --shape input_ids=${b}x${s} \
      --shape attention_mask=${b}x${s} --shape token_type_ids=${b}x${s} -o $D/bert_$k.xrtpkg --force > $OUT/compile_$k.log 2>&1;
   echo "compile $k: rc=$? $(tail -n 3 $OUT/compile_$k.log | cut -c1-300)") &
done
wait
echo "compiled ${SHAPES} in parallel in $((SECONDS - t0)) s"
for k in $KEYS; do
  B=$D/bert_$k.xrtpkg; shape=${k##*_}; rtol=5e-3; [ ${k%%_*} = tf32 ] && rtol=1e-2
  [ -f $B ] || { echo "$k: no bundle"; continue; }
  "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --save-outputs $D/out_$k.npz --force --json > $OUT/run_$k.json 2> $OUT/run_$k.err
  echo "$k: xrt-run rc=$? $(tail -c 400 $OUT/run_$k.err)"
  python3 bench/gpu/compare.py $D/bert.onnx $D/in_$shape.npz $D/out_$k.npz --rtol $rtol --label "$k" | tee $OUT/cmp_$k.txt
  # the run above is the first: on the GEMMs' Triton stand-ins (PLAN.md); this one waits for cuBLASLt at init
  XRT_CUDA_STAND_INS=0 "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --save-outputs $D/out_cublaslt_$k.npz --force --quiet > /dev/null 2>&1
  python3 bench/gpu/compare.py $D/bert.onnx $D/in_$shape.npz $D/out_cublaslt_$k.npz --rtol $rtol --label "$k-cublaslt-first" | tee $OUT/cmp_cublaslt_$k.txt
  rm -f $OUT/replay_$k.jsonl $OUT/profile_$k.jsonl
  XRT_CUDA_REPLAY_TIMING=300 XRT_CUDA_REPORT=$OUT/replay_$k.jsonl "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --quiet 2>&1 | tail -1
  # programmatic dependent launch (XRT_CUDA_PDL=1) between two runs without it (A B A: drift hits both)
  rm -f $OUT/replay_pdl_$k.jsonl $OUT/replay_again_$k.jsonl
  XRT_CUDA_PDL=1 XRT_CUDA_REPLAY_TIMING=300 XRT_CUDA_REPORT=$OUT/replay_pdl_$k.jsonl "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --quiet 2>&1 | tail -1
  XRT_CUDA_REPLAY_TIMING=300 XRT_CUDA_REPORT=$OUT/replay_again_$k.jsonl "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --quiet 2>&1 | tail -1
  XRT_CUDA_PROFILE=1 XRT_CUDA_REPORT=$OUT/profile_$k.jsonl "$R/bin/xrt-run" $B --device cuda --inputs $D/in_$shape.npz --quiet 2>&1 | tail -1
  (cd /tmp && python3 $OLDPWD/bench/gpu/bench_bert.py coldstart $B $D/in_$shape.npz) > $OUT/cold_$k.json 2>&1 || tail -5 $OUT/cold_$k.json
  # the same without the GEMMs' stand-ins: init waits for cuBLASLt (what the stand-ins save)
  (cd /tmp && XRT_CUDA_STAND_INS=0 python3 $OLDPWD/bench/gpu/bench_bert.py coldstart $B $D/in_$shape.npz) > $OUT/cold_noprefetch_$k.json 2>&1 || tail -5 $OUT/cold_noprefetch_$k.json
  # xrtc tune: up to 16 cuBLASLt candidates per GEMM configuration, each tried in the captured graph, the fastest
  # stored in a new bundle (golden data rechecked); then the tuned bundle's replay time and cold start
  T=$D/bert_${k}_tuned.xrtpkg; t1=$SECONDS
  # NO_TUNE=1: skip (a short run); matmul=triton or cublas: no cuBLASLt algorithm to tune
  if [ -z "${NO_TUNE:-}" ] && [ "${k%%_*}" != tritonmm ] && [ "${k%%_*}" != cublasmm ]; then
  (cd /tmp && python3 -m xrtc tune $B -o $T --force > $OUT/tune_$k.log 2>&1)
  echo "tune $k: rc=$? in $((SECONDS - t1)) s: $(tail -n 2 $OUT/tune_$k.log | cut -c1-400)"
  grep -E "^\|" $OUT/tune_$k.log | cut -c1-200
  XRT_CUDA_REPLAY_TIMING=300 XRT_CUDA_REPORT=$OUT/replay_tuned_$k.jsonl "$R/bin/xrt-run" $T --device cuda --inputs $D/in_$shape.npz --quiet 2>&1 | tail -1
  (cd /tmp && python3 $OLDPWD/bench/gpu/bench_bert.py coldstart $T $D/in_$shape.npz) > $OUT/cold_tuned_$k.json 2>&1 || tail -5 $OUT/cold_tuned_$k.json
  fi
  python3 - $k $OUT <<'PY'
import json, re, sys
k, out = sys.argv[1], sys.argv[2]
r = {"shape": k}
try:
    rep = [json.loads(l) for l in open(f"{out}/replay_{k}.jsonl")][-1]
    r.update(median_ms=rep["median_ms"], min_ms=rep["min_ms"], launches=rep["launches_per_replay"])
except Exception as e: r["replay_error"] = str(e)
for tag in ("pdl", "again"):
    try:
        rep = [json.loads(l) for l in open(f"{out}/replay_{tag}_{k}.jsonl")][-1]
        r[f"median_ms_{tag}"] = rep["median_ms"]
    except Exception as e: r[f"replay_{tag}_error"] = str(e)
try:
    m = re.search(r"rel_err ([0-9.e+-]+)", open(f"{out}/cmp_{k}.txt").read()); r["rel_err"] = float(m.group(1))
except Exception as e: r["rel_err_error"] = str(e)
try:
    c = json.loads(open(f"{out}/cold_{k}.json").read().strip().splitlines()[-1])
    r.update(cold_ms=c["open_to_first_result_ms"], cuda_init_ms=c["cuda_init_ms"],
             arena_bytes=c["engine_info"].get("device_bytes", {}).get("arena"), device_bytes=c["engine_info"].get("device_bytes"),
             gemm_algos=c["engine_info"].get("gemm_algos", [])[:2], init_ms=c["engine_info"].get("init_ms"),
             load_ms=c["load_ms"], first_run_ms=c["first_run_ms"], second_run_ms=c["second_run_ms"],
             load_profile_cold=c.get("load_profile"), kernels_with_pdl=c["engine_info"].get("kernels_with_pdl"),
             ort_version_lookup_ms=c.get("ort_version_lookup_ms"), later_runs=c.get("later_runs"),
             gemms_path=c["engine_info"].get("gemms_path"))
except Exception as e: r["cold_error"] = str(e)
try:
    c = json.loads(open(f"{out}/cold_noprefetch_{k}.json").read().strip().splitlines()[-1])
    r.update(cold_ms_no_stand_ins=c["open_to_first_result_ms"], init_ms_no_stand_ins=c["engine_info"].get("init_ms"),
             load_profile=c.get("load_profile"))
except Exception as e: r["cold_noprefetch_error"] = str(e)
try:
    line = [l for l in open(f"{out}/compile_{k}.log") if l.startswith("PASSED xrtc compile")][-1]
    r["built"] = line.split("built ", 1)[1].strip()
    if "not delivered" in line: print(f"WARNING {k}: the compile did not deliver the precision asked: {r['built']}")
except Exception as e: r["built_error"] = str(e)
try:
    rep = [json.loads(l) for l in open(f"{out}/replay_tuned_{k}.jsonl")][-1]
    c = json.loads(open(f"{out}/cold_tuned_{k}.json").read().strip().splitlines()[-1])
    notes = {}
    for a in c["engine_info"].get("gemm_algos", []): notes.setdefault(a["algo"], 0); notes[a["algo"]] += 1
    r.update(tuned_median_ms=rep["median_ms"], tuned_cold_ms=c["open_to_first_result_ms"],
             tuned_cublaslt_init_ms=c["engine_info"].get("init_ms", {}).get("cublaslt_algorithms"), tuned_notes=notes)
except Exception as e: r["tuned_error"] = str(e)
try:
    p = [json.loads(l) for l in open(f"{out}/profile_{k}.jsonl")][-1]
    r["profile_groups_ms"] = {g: round(v, 4) for g, v in p["groups"].items()}; r["profile_total_ms"] = p["total_ms"]
    sys.path.insert(0, "bench/gpu"); import bench_bert, xrtpkg
    bundle = xrtpkg.read(f"/tmp/bert/bert_{k}.xrtpkg")
    variant = next(v for v in bundle.manifest["variants"] if v["engine"] == "cuda")
    r["profile_gemms"] = bench_bert.gemm_rates(json.loads(bundle.data(variant["artifacts"]["plan"])), p)
except Exception as e: r["profile_error"] = str(e)
json.dump(r, open(f"/tmp/bert/ours_{k}.json", "w"), indent=1)
print("ours", json.dumps(r)[:900])
PY
done
# The ONNX Runtime CUDA variant each bundle carries (cuda-onnxruntime), run through xrt (Python: the C++ runner has
# no ONNX Runtime), checked against ORT CPU fp32; only where onnxruntime-gpu is importable (carried on PYTHONPATH).
ORT_MISSING=$(cd /tmp && python3 -c "import sys; sys.path.insert(0, '$OLDPWD/bench/gpu'); import bench_bert as b; print(b.ort_cuda_missing() or '')")
if [ -n "$ORT_MISSING" ]; then
  echo "cuda-onnxruntime via xrt SKIPPED: $ORT_MISSING"
else
  for k in $KEYS; do
    B=$D/bert_$k.xrtpkg; shape=${k##*_}; rtol=5e-3; [ ${k%%_*} = tf32 ] && rtol=1e-2
    [ -f $B ] || continue
    (cd /tmp && python3 -m xrtc run $B --device cuda --variant cuda-onnxruntime --inputs $D/in_$shape.npz \
        --save-outputs $D/out_ort_$k.npz --force) > $OUT/run_ort_$k.log 2>&1
    echo "$k cuda-onnxruntime via xrt: rc=$? $(tail -n 2 $OUT/run_ort_$k.log | cut -c1-300)"
    python3 bench/gpu/compare.py $D/bert.onnx $D/in_$shape.npz $D/out_ort_$k.npz --rtol $rtol --label "$k-ort" | tee $OUT/cmp_ort_$k.txt
    python3 - $k $OUT <<'PY'
import json, re, sys
k, out = sys.argv[1], sys.argv[2]
path = f"/tmp/bert/ours_{k}.json"
r = json.load(open(path))
m = re.search(r"rel_err ([0-9.e+-]+)", open(f"{out}/cmp_ort_{k}.txt").read())
r["ort_variant_rel_err"] = float(m.group(1)) if m else "no output (see run_ort log)"
json.dump(r, open(path, "w"), indent=1)
print("cuda-onnxruntime", k, "rel_err", r["ort_variant_rel_err"])
PY
  done
fi
cp /tmp/bert/ours_*.json $OUT/ 2>/dev/null
if [ -n "${NO_PEERS:-}" ]; then
  echo "peers skipped (NO_PEERS)"
else
  t0=$SECONDS
  python3 bench/gpu/bench_bert.py peers $D $SHAPES 2>&1 | grep -v Warning | tail -8
  echo "peers in $((SECONDS - t0)) s"
  t0=$SECONDS
  python3 bench/gpu/bench_bert.py ortpeers $D $SHAPES 2>&1 | grep -v Warning | tail -8
  echo "ORT CUDA peer in $((SECONDS - t0)) s"
  cp $D/peers.json $OUT/ 2>/dev/null
fi
python3 bench/gpu/bench_bert.py table $D | tee $OUT/table.md
python3 - $D <<'PY' | tee -a $OUT/table.md
import glob, json, sys
print("\n| bundle | built | heuristic (ms) | after `xrtc tune` (ms) | ratio | init: heuristic queries / stored algorithms checked (ms) | cold start: heuristic / tuned (ms) |")
print("|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(sys.argv[1] + "/ours_*.json")):
    r = json.load(open(f)); h, t = r.get("median_ms"), r.get("tuned_median_ms")
    ratio = f"{t / h:.3f}" if h and t else "-"
    fmt = lambda v, nd=3: f"{v:.{nd}f}" if isinstance(v, (int, float)) else "-"
    init = r.get("init_ms") or {}
    print(f"| {r['shape']} | {r.get('built', '-')[:40]} | {fmt(h)} | {fmt(t)} | {ratio} | {fmt(init.get('cublaslt_algorithms'), 1)} / "
          f"{fmt(r.get('tuned_cublaslt_init_ms'), 1)} | {fmt(r.get('cold_ms'), 1)} / {fmt(r.get('tuned_cold_ms'), 1)} |")
print("\n| bundle | graph replay ms: default / XRT_CUDA_PDL=1 / default again | PDL / default | kernels with PDL | cold start ms | without stand-ins (ms) | verify ms | engine init ms | init phases (ms) |")
print("|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(sys.argv[1] + "/ours_*.json")):
    r = json.load(open(f)); fmt = lambda v, nd=3: f"{v:.{nd}f}" if isinstance(v, (int, float)) else "-"
    a, b, c = r.get("median_ms"), r.get("median_ms_pdl"), r.get("median_ms_again")
    gain = f"{2 * b / (a + c):.3f}" if a and b and c else "-"
    lp = r.get("load_profile_cold") or {}
    ph = {k: v for k, v in (r.get("init_ms") or {}).items() if isinstance(v, (int, float)) and v >= 1}
    print(f"| {r['shape']} | {fmt(a)} / {fmt(b)} / {fmt(c)} | {gain} | {r.get('kernels_with_pdl', '-')} | "
          f"{fmt(r.get('cold_ms'), 1)} | {fmt(r.get('cold_ms_no_stand_ins'), 1)} | {fmt(lp.get('verify_s', 0) * 1e3, 1)} | {fmt(lp.get('engine_init_s', 0) * 1e3, 1)} | "
          f"{', '.join(f'{k} {v:.0f}' for k, v in ph.items())} |")
PY

# issue 14's GPU part: xpuruntime.pytorch (kernel policy, autocast, capture_graph) on a 6-layer transformer's
# training step, with and without capture_graph()
echo "== xpuruntime.pytorch: training step with and without capture_graph()"
timeout 120 python3 bench/gpu/bench_torch_capture.py --steps 20 2>&1 | grep -v Warning | tail -25 | tee $OUT/torch_capture.txt
