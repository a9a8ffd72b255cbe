"""The cuda plugin from Python and the runner: a bundle compiled with --target cuda loads with device="cuda" and
matches ONNX Runtime on a machine with an NVIDIA GPU; on one without, the load fails with UNAVAILABLE whose message
carries the plugin's reason ("libcuda.so.1 not found: no NVIDIA driver; ..."), and xrt-run exits 5 saying the same.
The plugin's own logic is tested against a fake driver in runtime_cpp/backends/cuda/tests (ctest)."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import models  # noqa: E402

pytest.importorskip("triton")
xrt = pytest.importorskip("xpuruntime")


def _has_gpu() -> bool:
    try:
        cu = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int()
    return cu.cuInit(0) == 0 and cu.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def _plugin_installed() -> bool:
    return os.path.exists(os.path.join(os.path.dirname(xrt.__file__), "libxrt_backend_cuda.so"))


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory):
    from xrtc.tools.compile import compile_model

    d = tmp_path_factory.mktemp("cuda_mlp")
    model = models.mlp(batch=4)
    onnx.save(model, str(d / "mlp.onnx"))
    compile_model(str(d / "mlp.onnx"), "cuda", str(d / "mlp.xrtpkg"))
    return d / "mlp.onnx", d / "mlp.xrtpkg"


@pytest.mark.skipif(not _plugin_installed(), reason="xpuruntime was built without the cuda plugin (no CUDA headers: "
                    "scripts/cuda_headers.sh)")
def test_load_on_cuda_runs_on_a_gpu_or_names_the_missing_driver(mlp_bundle):
    model_path, bundle = mlp_bundle
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    if not _has_gpu():
        with pytest.raises(xrt.Unavailable) as err:
            xrt.load(str(bundle), device="cuda", fallback=[])
        assert "libcuda.so.1 not found: no NVIDIA driver; this variant needs a CUDA GPU" in str(err.value)
        return
    sess = xrt.load(str(bundle), device="cuda", fallback=[])
    info = sess.explain()
    assert info["engine"] == "cuda" and info["engine_info"]["launches_per_run"] >= 1
    got = sess.run({"x": x})["y"]
    ref = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(f"cuda mlp fp16 rel err {rel:.3g}")
    assert rel < 5e-3


def test_runner_exit_code_and_reason_without_a_gpu(mlp_bundle):
    runner = os.environ.get("XRT_RUN")
    if not runner:
        pytest.skip("XRT_RUN (the ctest build's xrt-run) is not set: scripts/test.sh sets it")
    lib = os.path.join(os.path.dirname(os.path.dirname(runner)), "lib", "libxrt_backend_cuda.so")
    if not os.path.exists(lib):
        pytest.skip(f"the ctest build has no cuda plugin ({lib})")
    if _has_gpu():
        pytest.skip("this machine has a GPU: the runner's GPU path is checked by bench/gpu/run.sh")
    r = subprocess.run([runner, str(mlp_bundle[1]), "--device", "cuda"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 5, r.stderr
    assert "libcuda.so.1 not found: no NVIDIA driver; this variant needs a CUDA GPU" in r.stderr
