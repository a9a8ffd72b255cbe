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
xrtc compile sample_cnn.onnx -o sample.xrtpkg
echo "== xrt.load"
python - <<'PY'
import numpy as np, xpuruntime as xrt
x = np.random.default_rng(0).standard_normal((1, 3, 64, 64), dtype=np.float32)
outs = {e: xrt.load("sample.xrtpkg", engine=e).run({"image": x})["probabilities"] for e in ("openvino", "onnxruntime")}
np.testing.assert_allclose(outs["openvino"], outs["onnxruntime"], rtol=1e-3, atol=1e-4)
print("xrt.load: openvino and onnxruntime agree:", outs["openvino"].round(4).tolist())
PY
echo "== xrt-run"
xrt-run sample.xrtpkg --engine openvino
STEPS
if [ -x "$repo/.venv/bin/cmake" ]; then  # the C++ SDK half: find_package(xpuruntime) from the wheel
  cat >> "$root/steps.sh" <<STEPS
echo "== C++ application against the wheel's CMake package"
"$repo/.venv/bin/cmake" -S cpp_app -B cpp_build -G Ninja -DCMAKE_MAKE_PROGRAM="$repo/.venv/bin/ninja" \
  -Dxpuruntime_DIR="$site/xpuruntime/cmake" >/dev/null
"$repo/.venv/bin/cmake" --build cpp_build >/dev/null
ls cpp_build
STEPS
fi

# What the build packages bring: their headers (the -dev packages) and the shared libraries they link to.
masked=()
for lib in libssl.so.3 libcrypto.so.3 libzstd.so.1 libzip.so.4; do
  p=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64|AArch64/ {print $NF; exit}')
  [ -n "$p" ] && masked+=("$(realpath "$p")")
done
for pkg in libssl-dev libzstd-dev libzip-dev nlohmann-json3-dev libgtest-dev; do
  while IFS= read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && masked+=("$f"); done \
    < <(dpkg -L "$pkg" 2>/dev/null | grep '^/usr/include/' || true)
done
if unshare --mount --propagation private true 2>/dev/null; then
  echo "wheel-test: hidden: the headers of the -dev packages and ${masked[*]:0:4}" >&2
  unshare --mount --propagation private bash -c '
    for f in "$@"; do mount --bind /dev/null "$f"; done
    exec bash "$0"' "$root/steps.sh" "${masked[@]}"
else
  echo "wheel-test: NOTE: unshare not permitted here: the system libraries stay visible; the ldd check" \
       "is what shows the wheel carries its own" >&2
  bash "$root/steps.sh"
fi
echo "PASSED wheel-test"
