#!/usr/bin/env bash
# Fuzzing (SECURITY.md): builds the libFuzzer targets with clang + ASan + UBSan in build/fuzz and runs, for
# SECONDS each (default 60): the C++ reader (xrtpkg_reader_fuzz), the C API load path (bundle_open_fuzz), the
# Python reader under atheris (tests/security/fuzz_xrtpkg_reader.py), and the engine hand-off: the OpenVINO plugin's
# artifact-type and options checks (ov_checks_fuzz, target ov_checks) and the ONNX Runtime backend's options
# allow-list and ONNX external-data walk (tests/security/fuzz_engine_boundary.py, target python_engine). Seeds:
# formats/golden/*.xrtpkg plus small real bundles compiled from samples/ and the corpus; for the hand-off targets,
# their artifacts and options and the hostile models of tests/security/hostile.py. Corpora grow in build/fuzz/corpus/; findings (crash-*, leak-*,
# oom-*, timeout-*) land in build/fuzz/artifacts/ and fail the script: turn each into a regression test in
# tests/security/regressions/.   Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# (targets: reader bundle_open python ov_checks python_engine)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(reader bundle_open python ov_checks python_engine)
X=$(pwd)/.venv/bin
B=build/fuzz
command -v clang++ >/dev/null || { echo "fuzz: clang++ not found: apt-get install clang libclang-rt-14-dev" >&2; exit 2; }
$X/python -c "import atheris" 2>/dev/null || $X/pip install -q --disable-pip-version-check "atheris==3.0.0"

$X/cmake -S . -B $B -G Ninja -DCMAKE_MAKE_PROGRAM=$X/ninja -DPython_EXECUTABLE=$X/python \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DXRT_BUILD_FUZZERS=ON -DXRT_BUILD_TESTS=OFF -DXRT_BUILD_OPENVINO=OFF -DXRT_BUILD_RUNNER=OFF >/dev/null
$X/cmake --build $B --target xrtpkg_reader_fuzz bundle_open_fuzz ov_checks_fuzz >/dev/null

# Seeds: every golden file, and real bundles (small ones: each execution hashes the whole input).
mkdir -p $B/seeds $B/artifacts
cp formats/golden/*.xrtpkg $B/seeds/
[ -f $B/seeds/sample_cnn.xrtpkg ] || $X/xrtc compile samples/sample_cnn.onnx --target cpu -o $B/seeds/sample_cnn.xrtpkg >$B/compile.log 2>&1
# The Python target also feeds each input to Session.explain()'s decision-log parser: seed it with a real log.
[ -f $B/seeds/decisions.json ] || $X/python -P -c "import sys, xrtpkg; sys.stdout.buffer.write(xrtpkg.read('$B/seeds/sample_cnn.xrtpkg').data('decisions.json'))" >$B/seeds/decisions.json
CORPUS=${XRT_CORPUS:-$HOME/.cache/xrt-corpus}
for m in oww_hey_mycroft ppocr_mobile_v2_cls; do  # compile to 1.5-1.8 MB bundles
  if [ -f "$CORPUS/models/$m.onnx" ] && [ ! -f $B/seeds/$m.xrtpkg ]; then
    $X/xrtc compile "$CORPUS/models/$m.onnx" --target cpu -o $B/seeds/$m.xrtpkg >$B/compile.log 2>&1
  fi
done

# Engine hand-off seeds: every artifact of the seed bundles (IR XML, blobs, ONNX), each variant's options as JSON,
# and the hostile ONNX models and options of tests/security/hostile.py.
if [ ! -d $B/seeds_engine ]; then
  mkdir -p $B/seeds_engine
  $X/python -P - $B/seeds $B/seeds_engine tests/security <<'PY'
import json, pathlib, sys
import xrtpkg
seeds, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sys.path.insert(0, sys.argv[3])
for path in sorted(seeds.glob("*.xrtpkg")):
    try:
        bundle = xrtpkg.read(path)
    except xrtpkg.FormatError:
        continue
    for i, v in enumerate(bundle.manifest.get("variants", [])):
        (out / f"{path.stem}.{i}.options.json").write_text(json.dumps(v.get("options", {})))
        for role, section in v.get("artifacts", {}).items():
            data = bundle.data(section)
            if len(data) <= 2 << 20:
                (out / f"{path.stem}.{i}.{role}").write_bytes(data)
import hostile
for name, model in hostile.onnx_models().items():
    (out / f"hostile.{name}.onnx").write_bytes(model)
(out / "hostile.options.json").write_text(json.dumps({"CACHE_DIR": "x", "INFERENCE_NUM_THREADS": "2000",
                                                      "intra_op_num_threads": "2000", "xrt.cache_dir": "/"}))
PY
fi

# Common flags: 2.5 GiB RSS cap, 10 s per input, 2 MiB inputs at most; leaks are detected (ASan's LeakSanitizer).
FLAGS=(-max_total_time="$SECONDS_EACH" -rss_limit_mb=2560 -timeout=10 -max_len=2097152 -print_final_stats=1)
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p $B/corpus/$t
  log=$B/fuzz-$t.log
  case $t in
    reader|bundle_open)
      bin=$B/bin/xrtpkg_reader_fuzz; [ $t = bundle_open ] && bin=$B/bin/bundle_open_fuzz
      # The library's UBSan checks abort (no recovery); ASan reports leaks at exit.
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        $bin "${FLAGS[@]}" -artifact_prefix=$B/artifacts/$t- $B/corpus/$t $B/seeds >"$log" 2>&1 || status=1 ;;
    ov_checks)
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        $B/bin/ov_checks_fuzz "${FLAGS[@]}" -artifact_prefix=$B/artifacts/$t- $B/corpus/$t $B/seeds_engine \
        >"$log" 2>&1 || status=1 ;;
    python_engine)
      $X/python -P tests/security/fuzz_engine_boundary.py "${FLAGS[@]}" -artifact_prefix=$B/artifacts/$t- \
        $B/corpus/$t $B/seeds_engine >"$log" 2>&1 || status=1 ;;
    python)
      # -P: the installed xrtpkg, not the source folder. Python code has no memory errors to sanitize; the
      # harness fails on any exception other than a typed FormatError.
      $X/python -P tests/security/fuzz_xrtpkg_reader.py "${FLAGS[@]}" -artifact_prefix=$B/artifacts/$t- \
        $B/corpus/$t $B/seeds >"$log" 2>&1 || status=1 ;;
    *) echo "fuzz: unknown target $t (reader, bundle_open, python, ov_checks, python_engine)" >&2; exit 2 ;;
  esac
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'exec/s: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  echo "fuzz $t: ${execs:-?} executions in ${SECONDS_EACH}s (${rate:-?}/s), corpus $(ls $B/corpus/$t | wc -l) files, $( ((status)) && echo "FAILED: see $log and $B/artifacts" || echo ok)"
  ((status == 0)) || break
done
exit $status
