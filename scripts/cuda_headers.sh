#!/usr/bin/env bash
# Unpacks cuda.h and cublasLt.h (and the headers they include) from pinned PyPI wheels into a cache folder, for
# building the cuda plugin on machines without a CUDA toolkit or GPU. Only include/ is kept; nothing is installed and
# nothing lands in the repository. Idempotent; prints the include folder.
# Env: XRT_CUDA_HEADERS_CACHE (default ~/.cache/xrt-cuda-headers), PYTHON (a Python with pip; default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
CUBLAS=13.0.2.14     # nvidia-cublas: cublasLt.h, cublas_api.h (the oldest CUDA 13 release: runs on every 13.x)
CUDART=13.0.96       # nvidia-cuda-runtime: cuda.h, driver_types.h, cuda_fp16.h ...
CCCL=13.0.85        # nvidia-cuda-cccl: nv/target, which cuda_fp16.h (included by cublas_api.h) needs
CRT=13.0.88         # nvidia-cuda-crt: crt/host_defines.h and the other crt/ headers cuda_runtime's headers include
cache=${XRT_CUDA_HEADERS_CACHE:-$HOME/.cache/xrt-cuda-headers}
dest=$cache/cublas-${CUBLAS}_cudart-${CUDART}_crt-${CRT}_cccl-${CCCL}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ ! -f "$dest/include/cublasLt.h" ] || [ ! -f "$dest/include/cuda.h" ]; then
  tmp=$(mktemp -d "$cache.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$cache"; mktemp -d "$cache.tmp.XXXXXX"; })
  trap 'rm -rf "$tmp"' EXIT
  echo "cuda_headers: downloading nvidia-cublas==$CUBLAS, nvidia-cuda-runtime==$CUDART, nvidia-cuda-crt==$CRT, nvidia-cuda-cccl==$CCCL (~425 MB, headers only kept)" >&2
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      -d "$tmp/whl" "nvidia-cublas==$CUBLAS" "nvidia-cuda-runtime==$CUDART" "nvidia-cuda-crt==$CRT" "nvidia-cuda-cccl==$CCCL" >&2
  mkdir -p "$tmp/x"
  for w in "$tmp"/whl/*.whl; do
    "$PY" - "$w" "$tmp/x" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("nvidia/cu13/include/")])
PYEOF
  done
  rm -rf "$dest" && mkdir -p "$dest" && mv "$tmp/x/nvidia/cu13/include" "$dest/include"
fi
echo "$dest/include"
