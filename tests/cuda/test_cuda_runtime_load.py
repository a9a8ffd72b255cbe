"""The cuda plugin from Python and the runner: a bundle compiled with --target cuda loads with device="cuda" and
matches ONNX Runtime on a machine with an NVIDIA GPU; on one without, the load fails with UNAVAILABLE whose message
carries the plugin's reason ("libcuda.so.1 not found: no NVIDIA driver; ..."), and xrt-run exits 5 saying the same.
The plugin's own logic is tested against a fake driver in runtime_cpp/backends/cuda/tests (ctest); here the plans
xrtc writes also go through the plugin's validation (cuda_plan_check), so the two sides of PLAN.md stay in step."""
from __future__ import annotations

import ctypes
import json
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


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


@pytest.mark.skipif(not _plugin_installed() or not _has_gpu(), reason="needs the cuda plugin and an NVIDIA GPU")
@pytest.mark.skipif(_has_gpu() and _torch_cuda() is None, reason="torch with CUDA is not installed: the DLPack "
                    "producer of this test")
def test_torch_cuda_tensors_in_and_device_outputs_out_without_host_copies(mlp_bundle):
    torch = _torch_cuda()
    model_path, bundle = mlp_bundle
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    sess = xrt.load(str(bundle), device="cuda", fallback=[])
    host = sess.run({"x": x})["y"]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        xt = torch.from_numpy(x).cuda()  # produced on a side stream: the run must order itself after it
        out = sess.run({"x": xt}, outputs_on="device", stream=side)["y"]
        assert out.__dlpack_device__() == (2, 0)
        yt = torch.from_dlpack(out)  # no copy: the runtime's device allocation
        got = (yt * 1).cpu().numpy()  # work queued on the same stream sees the output
    assert np.array_equal(got, host), "the same graph on the same input"
    ref = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    print(f"torch cuda in, device out: rel err {float(np.linalg.norm(got - ref) / np.linalg.norm(ref)):.3g}")
    # Without a stream: torch's default stream, outputs complete on return.
    default = sess.run({"x": torch.from_numpy(x).cuda()}, outputs_on="device")["y"]
    assert np.array_equal(torch.from_dlpack(default).cpu().numpy(), host)


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


@pytest.mark.parametrize("name,precision,matmul", [("mlp", "fp16", None), ("mlp", "fp32", None), ("bert", "fp16", None),
                                                  ("bert", "tf32", None), ("bert", "tf32", "cublas")])
def test_compiled_plans_pass_the_plugins_validation(tmp_path, name, precision, matmul):
    runner = os.environ.get("XRT_RUN")
    check = runner and os.path.join(os.path.dirname(runner), "cuda_plan_check")
    if not check or not os.path.exists(check):
        pytest.skip("cuda_plan_check of the ctest build not found (scripts/test.sh sets XRT_RUN)")
    import xrtpkg

    model = models.mlp(batch=4) if name == "mlp" else models.bert()
    onnx.save(model, str(tmp_path / "m.onnx"))
    policy = []
    if matmul:  # the policy's GEMM library (matmul = cublas: plan GEMMs with "library": "cublas")
        (tmp_path / "p.toml").write_text(f'[kernel]\nmatmul = {{ choice = "{matmul}", mode = "fixed" }}\n')
        policy = ["--policy", "p.toml"]
    c = subprocess.run([sys.executable, "-m", "xrtc", "compile", "m.onnx", "--target", "cuda", "--precision", precision,
                        *policy, "-o", "m.xrtpkg"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stdout[-2000:] + c.stderr[-2000:]
    bundle = xrtpkg.read(str(tmp_path / "m.xrtpkg"))
    variant = next(v for v in bundle.manifest["variants"] if v["engine"] == "cuda")
    paths = []
    from xrtc.targets.cuda import emit

    arts = variant["artifacts"]
    data = {"plan": bundle.data(arts["plan"]), "kernels": bundle.data(arts["kernels"]) if "kernels" in arts else b"",
            "weights": emit.join_weights({r: bundle.data(s) for r, s in arts.items() if r.startswith("weights")})}
    if matmul == "cublas":
        gemms = json.loads(data["plan"])["gemms"]
        assert gemms and all(g["library"] == "cublas" and g["compute"] == "32F_FAST_TF32" for g in gemms)
    for role in ("plan", "weights", "kernels"):
        p = tmp_path / role
        p.write_bytes(data[role])
        paths.append(str(p))
    r = subprocess.run([check, *paths], capture_output=True, text=True, timeout=60)
    print(r.stdout.strip())
    assert r.returncode == 0, r.stdout + r.stderr


def _plan_of(bundle):
    import json

    import xrtpkg

    b = xrtpkg.read(str(bundle))
    (variant,) = [v for v in b.manifest["variants"] if v["engine"] == "cuda"]
    return json.loads(b.data(variant["artifacts"]["plan"]))


def test_stored_algorithms_puts_each_engine_choice_into_the_plan(mlp_bundle):
    from xrtc.errors import XrtcError
    from xrtc.targets.cuda.tune import stored_algorithms

    _, bundle = mlp_bundle
    plan = _plan_of(bundle)
    n = len(plan["gemms"])
    assert n >= 2 and all(g["algo"] == {"source": "heuristic"} for g in plan["gemms"])
    reported = [{"gemm": i, "algo": "tuned in the CUDA graph: candidate 3 of 9" if i == 0 else
                 "cuBLASLt heuristic (first candidate)", "config": f"{i + 1:02x}" * 64} for i in range(n)]
    tuned = stored_algorithms(plan, reported)
    assert tuned["gemms"][0]["algo"] == {"source": "tuned", "config": "01" * 64}
    assert tuned["gemms"][1]["algo"] == {"source": "heuristic", "config": "02" * 64}
    assert plan["gemms"][0]["algo"] == {"source": "heuristic"}, "the input plan is not modified"
    with pytest.raises(XrtcError, match="reported 1 GEMM algorithms for a plan of"):
        stored_algorithms(plan, reported[:1])
    with pytest.raises(XrtcError, match="not 64 bytes of hex"):
        stored_algorithms(plan, [dict(r, config="zz") for r in reported])


def test_tuning_gains_are_reported_per_gemm_configuration(mlp_bundle):
    """The plugin's per-GEMM tuning numbers (describe(): gemm_algos[i].tuning) grouped by configuration, with the gain
    over the heuristic's first; GEMMs the tuning did not time have no row."""
    from xrtc.targets.cuda.tune import gains_by_configuration

    _, bundle = mlp_bundle
    plan = _plan_of(bundle)
    reported = [{"gemm": 0, "tuning": {"candidates": 9, "chosen": 3, "heuristic_graph_ms": 0.5,
                                       "tuned_graph_ms": 0.45}}] + [{"gemm": i} for i in range(1, len(plan["gemms"]))]
    (row,) = gains_by_configuration(plan, reported)
    g = plan["gemms"][0]
    assert row == {"shape": f"{g['m']}x{g['n']}x{g['k']}", "epilogue": g["epilogue"], "gemms": 1, "candidates": 9,
                   "chosen": 3, "heuristic_graph_ms": 0.5, "tuned_graph_ms": 0.45, "gain_pct": 10.0}


def test_tune_runs_on_a_gpu_or_says_where_to_run_it(mlp_bundle, tmp_path, capsys, monkeypatch):
    from xrtc.cli import main

    _, bundle = mlp_bundle
    before = bundle.read_bytes()
    out = tmp_path / "tuned.xrtpkg"
    code = main(["tune", str(bundle), "-o", str(out), "--candidates", "8"])
    text = capsys.readouterr()
    assert bundle.read_bytes() == before, "the bundle tuned is never modified"
    if not (_has_gpu() and _plugin_installed()):
        assert code == 2 and not out.exists()
        assert "Run `xrtc tune` on the machine (GPU, driver, cuBLASLt) the bundle will run on" in text.err, text.err
        return
    assert code == 0, text.err
    print(text.out)
    plan = _plan_of(out)
    assert all(len(g["algo"]["config"]) == 128 for g in plan["gemms"])
    # without the GEMMs' stand-ins (PLAN.md) the algorithms are chosen, and described, before load returns
    monkeypatch.setenv("XRT_CUDA_STAND_INS", "0")
    sess = xrt.load(str(out), device="cuda", fallback=[])
    rows = [line for line in text.out.splitlines() if line.startswith("| ") and "%" in line]
    assert rows, "xrtc tune prints the gain of each GEMM configuration"
    for line in rows:  # the A B A B A B re-check keeps a candidate only where it beat the heuristic's first
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[6]) <= float(cells[5]), line
    notes = [a["algo"] for a in sess.explain()["engine_info"]["gemm_algos"]]
    assert all(n.startswith("stored ") and "accepted by cublasLtMatmulAlgoCheck" in n for n in notes), notes
