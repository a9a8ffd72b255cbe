#!/usr/bin/env bash
# make wheel-test: installs dist/'s wheel into a fresh venv in a throwaway folder, then, with the build packages'
# libraries out of reach, checks where every library of the installed ELF files resolves, compiles the sample model
# with xrtc, runs it with xrt.load (both CPU engines) and xrt-run, and builds a C++ application against the wheel's
# CMake package.
#
# "Out of reach" without uninstalling anything (other builds on this machine use the packages): in a private mount
# namespace (unshare; seen by these commands only) every header of the -dev packages the build uses (libssl-dev,
# libzstd-dev, libzip-dev, nlohmann-json3-dev, libgtest-dev) and the shared libraries they link to are /dev/null;
# LD_LIBRARY_PATH is cleared.
# Where unshare is not permitted (an unprivileged container) only the ldd check vouches for it, and this says so.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
wheel=$(realpath "${1:-$(ls -t dist/xpuruntime-*.whl 2>/dev/null | head -1)}")
[ -f "$wheel" ] || { echo "wheel-test: no wheel: run make wheel" >&2; exit 2; }
root=$(mktemp -d /tmp/xrt-wheel-test.XXXXXX)
trap 'rm -rf "$root"' EXIT
unset LD_LIBRARY_PATH PYTHONPATH XRT_BACKEND_PATH
echo "wheel-test: installing $(basename "$wheel")[openvino] into $root/venv" >&2
python3 -m venv "$root/venv"
"$root/venv/bin/pip" install -q --disable-pip-version-check "$wheel[openvino]"
site=$("$root/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$repo/samples/sample_cnn.onnx" "$root/"
cp -r "$repo/samples/cpp_app" "$root/cpp_app"

cat > "$root/steps.sh" <<STEPS
set -euo pipefail
cd "$root"
export PATH="$root/venv/bin:/usr/bin:/bin"
echo "== libraries of the installed ELF files"
python "$repo/scripts/wheel_check_libs.py" "$site" "$root/venv/bin"
echo "== xrtc compile"
xrtc compile -q sample_cnn.onnx -o sample.xrtpkg
echo "== xrt.load"
python - <<'PY'
import numpy as np, xpuruntime as xrt
x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
outs = {e: xrt.load("sample.xrtpkg", engine=e).run({"image": x})["probabilities"] for e in ("openvino", "onnxruntime")}
np.testing.assert_allclose(outs["openvino"], outs["onnxruntime"], rtol=1e-3, atol=1e-4)
print("xrt.load: openvino and onnxruntime agree:", outs["openvino"].round(4).tolist())
PY
echo "== xrt-run"
xrt-run sample.xrtpkg --engine openvino --shape image=1x3x64x64
STEPS
# The C++ SDK half: an application built with find_package(xpuruntime) from the wheel. Built with the -dev headers
# hidden, but not the shared libraries: the compiler itself (cc1) links libzstd.
build_app=false
if [ -x "$repo/.venv/bin/cmake" ] && command -v cc >/dev/null; then
  build_app=true
  cat > "$root/app.sh" <<STEPS
set -euo pipefail
cd "$root"
echo "== C application built against the wheel's CMake package (find_package(xpuruntime))"
"$repo/.venv/bin/cmake" -S cpp_app -B cpp_build -G Ninja -DCMAKE_MAKE_PROGRAM="$repo/.venv/bin/ninja" \
  -Dxpuruntime_DIR="$site/xpuruntime/cmake" >/dev/null
"$repo/.venv/bin/cmake" --build cpp_build >/dev/null
STEPS
  cat >> "$root/steps.sh" <<STEPS
echo "== the C application"
cpp_build/xrt_sample_app sample.xrtpkg
STEPS
fi

# What the build packages bring: their headers (the -dev packages) and the shared libraries they link to.
arch=$(dpkg --print-architecture 2>/dev/null || true)
headers=() libs=()
for lib in libssl.so.3 libcrypto.so.3 libzstd.so.1 libzip.so.4; do
  p=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64|AArch64/ {print $NF; exit}')
  [ -n "$p" ] && libs+=("$(realpath "$p")")
done
for pkg in libssl-dev libzstd-dev libzip-dev nlohmann-json3-dev libgtest-dev; do
  while IFS= read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && headers+=("$f"); done \
    < <({ dpkg -L "$pkg:$arch" 2>/dev/null || dpkg -L "$pkg" 2>/dev/null || true; } | grep '^/usr/include/')
done
# run_hidden SCRIPT FILE...: SCRIPT in a private mount namespace where each FILE is /dev/null.
run_hidden() {
  unshare --mount --propagation private bash -c 'for f in "${@:2}"; do mount --bind /dev/null "$f"; done
    exec bash "$1"' _ "$@"
}
if unshare --mount --propagation private true 2>/dev/null; then
  echo "wheel-test: hidden: ${#headers[@]} header files of the -dev packages; ${libs[*]}" >&2
  if $build_app; then run_hidden "$root/app.sh" "${headers[@]}"; fi
  run_hidden "$root/steps.sh" "${headers[@]}" "${libs[@]}"
else
  echo "wheel-test: NOTE: unshare not permitted here: the system libraries stay visible; the ldd check" \
       "is what shows the wheel carries its own" >&2
  if $build_app; then bash "$root/app.sh"; fi
  bash "$root/steps.sh"
fi
echo "PASSED wheel-test"
