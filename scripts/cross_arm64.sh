#!/usr/bin/env bash
# make cross-arm64: the C++ runtime for a 64-bit Arm device, built on this x86-64 machine, and checked under
# qemu-aarch64 against the x86-64 build on the same bundle.
#
#   1. sysroot  ~/.cache/xrt-cross/sysroot-arm64: Debian's arm64 packages of the build dependencies, fetched with
#               `apt-get download` and unpacked with `dpkg -x` (NOT installed: arm64 multiarch -dev packages would
#               replace the amd64 ones this machine builds with). glibc/libstdc++ come with g++-aarch64-linux-gnu.
#   2. OpenVINO ~/.cache/xrt-cross/openvino-<ver>-aarch64: OpenVINO's aarch64 wheel (pip download --platform),
#               unpacked: it carries the C++ SDK (headers, CMake config, libopenvino + the Arm CPU plugin).
#   3. build    build/cross-arm64: libxrt.so, libxrt_backend_openvino.so, xrt-run (aarch64-linux-gnu-g++);
#               the stripped sizes are printed.
#   4. run      the sample model compiled by this machine's xrtc (.venv) is run by xrt-run on x86-64 and under
#               qemu-aarch64 with the same inputs (--seed); the outputs must agree within tolerance.
#
# Exit 0: built and VERIFIED under qemu; 3: built, but the run under qemu was NOT VERIFIED (reason printed);
# anything else: the build failed. XRT_QEMU_TIMEOUT (seconds, default 600) bounds the emulated run
# (it takes seconds: the sample model runs under qemu-aarch64 in ~5 s on a loaded 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
OV_VERSION=$(sed -n 's/^openvino = \["openvino==\([0-9.]*\)"\]$/\1/p' pyproject.toml)
cache=${XRT_CROSS_CACHE:-$HOME/.cache/xrt-cross}
sysroot=$cache/sysroot-arm64
ovroot=$cache/openvino-$OV_VERSION-aarch64
build=build/cross-arm64
timeout_s=${XRT_QEMU_TIMEOUT:-600}
# MinSizeRel (-Os): the device build favours size (libxrt core goal <= 500 kB stripped); Release (-O3) also works.
build_type=${XRT_CROSS_BUILD_TYPE:-MinSizeRel}
CORE_GOAL_BYTES=500000
mkdir -p "$cache"

for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "cross-arm64: $tool missing (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2; exit 2; }
done
[ -x .venv/bin/xrtc ] || { echo "cross-arm64: run scripts/setup.sh first (the x86-64 build compiles the bundle)" >&2; exit 2; }

# ---- 1. sysroot (once; a stamp names the packages it holds)
PKGS="libssl-dev libssl3 libzstd-dev libzstd1 libzip-dev libzip4 zlib1g libbz2-1.0 nlohmann-json3-dev"
if [ "$(cat "$sysroot/.packages" 2>/dev/null)" != "$PKGS" ]; then
  echo "cross-arm64: sysroot: apt-get download + dpkg -x ($PKGS)" >&2
  dpkg --print-foreign-architectures | grep -qx arm64 || {
    echo "cross-arm64: apt does not list arm64 packages: run 'dpkg --add-architecture arm64 && apt-get update'" \
         "(this installs nothing)" >&2; exit 2; }
  debs=$(mktemp -d) && chmod 755 "$debs" && rm -rf "$sysroot" && mkdir -p "$sysroot"  # _apt downloads into it
  (cd "$debs" && for p in $PKGS; do
     case $p in nlohmann-json3-dev) apt-get download -q "$p" ;; *) apt-get download -q "$p:arm64" ;; esac
   done) >/dev/null
  for d in "$debs"/*.deb; do dpkg -x "$d" "$sysroot"; done
  rm -rf "$debs"
  # Absolute symlinks (libfoo.so -> /lib/...) would point at the host: make them relative to the sysroot.
  find "$sysroot" -type l -lname '/*' | while IFS= read -r l; do
    ln -sfn "$sysroot$(readlink "$l")" "$l"
  done
  echo "$PKGS" > "$sysroot/.packages"
fi

# ---- 2. OpenVINO's aarch64 SDK from its wheel
if [ ! -f "$ovroot/openvino/cmake/OpenVINOConfig.cmake" ]; then
  echo "cross-arm64: OpenVINO $OV_VERSION aarch64 wheel" >&2
  mkdir -p "$cache/wheels"
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --platform manylinux_2_35_aarch64 \
      --python-version 3.11 -d "$cache/wheels" "openvino==$OV_VERSION"
  rm -rf "$ovroot" && mkdir -p "$ovroot"
  .venv/bin/python -m zipfile -e "$cache"/wheels/openvino-"$OV_VERSION"-*aarch64.whl "$ovroot"
fi

# ---- 3. cross build
toolchain=$cache/aarch64-toolchain.cmake
cat > "$toolchain.new" <<TC
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH "$sysroot;/usr/aarch64-linux-gnu")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# A device build is sized for the device: each function and object in its own section, unreferenced ones dropped.
set(CMAKE_C_FLAGS_INIT "-ffunction-sections -fdata-sections")
set(CMAKE_CXX_FLAGS_INIT "-ffunction-sections -fdata-sections")
# libzip.so's own dependencies (libz, libbz2) are resolved in the sysroot at link time.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,--gc-sections -Wl,-rpath-link,$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-Wl,--gc-sections -Wl,-rpath-link,$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-Wl,--gc-sections -Wl,-rpath-link,$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu")
TC
# CMake caches the flags of its first configure: a changed toolchain file starts the build folder afresh.
if ! cmp -s "$toolchain.new" "$toolchain" || [ "$(cat "$build.toolchain" 2>/dev/null)" != "$(sha256sum < "$toolchain.new")" ]; then
  rm -rf "$build"
fi
mv "$toolchain.new" "$toolchain"
mkdir -p "$build" && sha256sum < "$toolchain" > "$build.toolchain"
export PKG_CONFIG_LIBDIR="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
cmake=.venv/bin/cmake; [ -x "$cmake" ] || cmake=cmake
echo "cross-arm64: configure + build ($build)" >&2
"$cmake" -S . -B "$build" -G Ninja -DCMAKE_MAKE_PROGRAM="$repo/.venv/bin/ninja" \
  -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_BUILD_TYPE="$build_type" \
  -DXRT_BUILD_TESTS=OFF -DXRT_BUILD_CUDA=OFF -DXRT_BUILD_OPENVINO=ON \
  -DOpenVINO_DIR="$ovroot/openvino/cmake" -DCMAKE_INSTALL_PREFIX="$repo/$build/install" >"$build.configure.log" 2>&1 \
  || { tail -30 "$build.configure.log" >&2; exit 1; }
"$cmake" --build "$build" >"$build.build.log" 2>&1 || { tail -30 "$build.build.log" >&2; exit 1; }
"$cmake" --install "$build" --strip >/dev/null

lib=$build/install/lib; bin=$build/install/bin
file -L "$lib/libxrt.so" "$bin/xrt-run" | sed "s|$repo/||" >&2
echo
echo "| file (aarch64, stripped) | bytes | kB |"
echo "| --- | ---: | ---: |"
for f in "$lib/libxrt.so" "$lib/libxrt_backend_openvino.so" "$bin/xrt-run"; do
  n=$(stat -c %s "$f"); echo "| $(basename "$f") | $n | $((n / 1024)) |"
done
echo
core=$(stat -c %s "$lib/libxrt.so")
if [ "$core" -le $CORE_GOAL_BYTES ]; then
  echo "cross-arm64: libxrt.so (the core, no engine; $build_type) $core bytes <= goal $CORE_GOAL_BYTES"
else
  echo "cross-arm64: libxrt.so (the core, no engine; $build_type) $core bytes OVER the goal $CORE_GOAL_BYTES"
fi

# ---- 4. the same bundle on x86-64 and under qemu-aarch64
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A tiny model keeps OpenVINO's compile under emulation short; --no-precompile: the blob is x86-64 CPU specific.
.venv/bin/xrtc compile -q samples/sample_cnn.onnx -o "$work/sample.xrtpkg" --no-precompile >/dev/null
.venv/bin/xrt-run "$work/sample.xrtpkg" --engine openvino --shape image=1x3x64x64 --seed 7 --quiet --save-outputs "$work/x86_64.npz" >/dev/null
# The guest's C library must be the one its dynamic loader came with. qemu-user resolves the loader (PT_INTERP
# /lib/ld-linux-aarch64.so.1) under QEMU_LD_PREFIX: the cross toolchain's glibc (libc6-arm64-cross). A path missing
# there falls back to the host's file system, and the guest loader reads the host's /etc/ld.so.cache: on a machine
# with arm64 multiarch packages installed (libc6:arm64) that finds /lib/aarch64-linux-gnu/libc.so.6, another glibc
# build. ld.so and libc.so of two builds share private state (the thread stack cache): OpenVINO's first
# pthread_create then loops forever in glibc's stack-cache walk (one busy guest thread, no system calls). So the
# toolchain's lib folder comes first on the guest's library path.
cross_libc=/usr/aarch64-linux-gnu/lib
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
guest_libs="$cross_libc:$repo/$lib:$ovroot/openvino/libs:$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu"
# The architecture check on the real aarch64 build (seconds: no engine is loaded): an x86-64-only bundle is refused.
.venv/bin/xrtc compile -q samples/sample_cnn.onnx -o "$work/x86only.xrtpkg" --no-precompile --cpu-arch x86_64 \
  >/dev/null 2>&1
set +e
refusal=$(env LD_LIBRARY_PATH="$guest_libs" XRT_BACKEND_PATH="$repo/$lib" timeout 600 \
  qemu-aarch64 "$bin/xrt-run" "$work/x86only.xrtpkg" --shape image=1x3x64x64 2>&1)
rc=$?
set -e
if [ $rc -ne 5 ] || ! grep -q "this machine is aarch64" <<<"$refusal"; then
  echo "$refusal" >&2; echo "cross-arm64: FAILED: an x86_64-only bundle was not refused on aarch64 (exit $rc)"; exit 1
fi
echo "cross-arm64: an x86_64-only bundle is refused under qemu-aarch64 (exit 5):"
grep "requires.cpu_arch" <<<"$refusal" | sed 's/^ */  /'
echo "cross-arm64: xrt-run under qemu-aarch64 (timeout ${timeout_s}s)" >&2
start=$(date +%s)
set +e
env LD_LIBRARY_PATH="$guest_libs" XRT_BACKEND_PATH="$repo/$lib" timeout "$timeout_s" \
  qemu-aarch64 "$bin/xrt-run" "$work/sample.xrtpkg" --engine openvino --shape image=1x3x64x64 --seed 7 \
  --save-outputs "$work/aarch64.npz" >"$work/qemu.log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
sed 's/^/  qemu| /' "$work/qemu.log" >&2
if [ $rc -ne 0 ]; then
  why="xrt-run exited $rc after ${elapsed}s"; [ $rc -eq 124 ] && why="no result within ${timeout_s}s (timeout)"
  echo "cross-arm64: built; the architecture check passed under qemu-aarch64; the model run under qemu NOT" \
       "VERIFIED: $why"
  exit 3
fi
.venv/bin/python - "$work/x86_64.npz" "$work/aarch64.npz" "$elapsed" <<'PY'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert sorted(a.files) == sorted(b.files), (a.files, b.files)
for k in a.files:
    err = float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) if a[k].size else 0.0
    print(f"output {k}: shape {a[k].shape}, max |x86_64 - aarch64| = {err:.3g}")
    np.testing.assert_allclose(b[k], a[k], rtol=1e-3, atol=1e-4)
print(f"cross-arm64: VERIFIED: aarch64 xrt-run under qemu ({sys.argv[3]}s) matches x86-64 within rtol 1e-3, atol 1e-4")
PY
