"""`--target npu-intel` on a machine without an NPU: everything that can be checked without one.

What these tests cannot show: a run on an Intel NPU. The NPU variant's IR is checked by OpenVINO reading it and
running it on its CPU plugin (against ONNX Runtime within the fp16 tolerance); the NPU itself is reached only
through the fallback path here, which is what the tests exercise."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.helper as oh
import pytest

import xpuruntime as xrt
import xrtpkg
from xpuruntime.policy import Policy
from xrt_testutil import CORPUS, SAMPLE, run_tool
from xrtc.build import compile_model
from xrtc.errors import NoVariantError, UsageError

CLS = CORPUS / "models" / "ppocr_mobile_v2_cls.onnx"
SHAPE = {"image": [1, 3, 64, 64]}


def npu_available() -> bool:
    import openvino as ov

    return "NPU" in ov.Core().available_devices


@pytest.fixture(scope="module")
def npu_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("npu") / "sample-npu.xrtpkg"
    return compile_model(str(SAMPLE), "npu-intel", str(path), policy=Policy(shapes=SHAPE))


@pytest.fixture(scope="module")
def multi_bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "sample-multi.xrtpkg"
    return compile_model(str(SAMPLE), "npu-intel,cpu", str(path), policy=Policy(shapes=SHAPE))


def test_dynamic_dims_fail_listing_each_dim_and_the_flag(tmp_path):
    proc = run_tool("xrtc", "compile", SAMPLE, "--target", "npu-intel", "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2, proc.stderr
    assert "needs static shapes" in proc.stderr and "image[0] (batch)" in proc.stderr
    assert "--shape image=batchx3x64x64" in proc.stderr  # the flag that fixes it, dims to fill in named
    assert not (tmp_path / "x.xrtpkg").exists()


def test_npu_variant_is_static_fp16_ir_with_requirements(npu_bundle):
    m = npu_bundle.manifest
    (v,) = m["variants"]
    assert v["id"] == "npu-intel-openvino" and v["device"] == "npu" and v["precision"] == "fp16"
    assert v["requires"] == {"engine": "openvino", "engine_version": ">=2025.0,<2027", "devices": ["NPU"]}
    assert v["fallback_devices"] == ["cpu"] and v["options"]["INFERENCE_PRECISION_HINT"] == "f16"
    assert m["model"]["inputs"][0]["shape"] == [1, 3, 64, 64]
    # OpenVINO reads the IR back: static shapes, fp16 weights (compressed)
    import openvino as ov

    bundle = xrtpkg.read(npu_bundle.path)
    core = ov.Core()
    weights = bundle.data("npu-intel-openvino.bin")
    model = core.read_model(bundle.data("npu-intel-openvino.xml").decode(),
                            ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
    assert all(p.get_partial_shape().is_static for p in model.inputs)
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.f16 for op in model.get_ops())
    # ... and its outputs on OpenVINO CPU match ONNX Runtime within the fp16 tolerance (the gate's record)
    acc = v["accuracy"]
    print("npu-intel IR on OpenVINO CPU vs ONNX Runtime:", acc)
    assert acc["passed"] and acc["ran_on"] == "cpu" and (acc["rtol"], acc["atol"]) == (1e-2, 5e-3)


def test_verify_checks_the_npu_ir_on_cpu(npu_bundle):
    proc = run_tool("xrtc", "verify", npu_bundle.path, "--json")
    assert proc.returncode == 0, proc.stderr
    (comparison,) = json.loads(proc.stdout)["comparisons"]
    assert comparison["variant"] == "npu-intel-openvino" and comparison["passed"]


@pytest.mark.skipif(npu_available(), reason="an NPU is present: the fallback path is not taken")
def test_fallback_runs_the_next_device_and_says_why(npu_bundle):
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with xrt.load(npu_bundle.path, device="npu", cache_dir=False) as session:  # the bundle's chain: ["cpu"]
        info = session.explain()
        out = session.run({"image": x})
    assert info["device"] == "cpu" and info["requested_device"] == "npu" and info["variant"] == "npu-intel-openvino"
    assert "no usable variant for device npu" in info["fallback"] and "the bundle's fallback chain" in info["fallback"]
    assert "devices present here: cpu" in info["fallback"]
    with xrt.load(npu_bundle.path, device="npu", fallback=["cpu"]) as session:
        assert "the caller's fallback" in session.explain()["fallback"]
        np.testing.assert_array_equal(session.run({"image": x})["probabilities"], out["probabilities"])
    proc = run_tool("xrtc", "run", npu_bundle.path, "--device", "npu", "--shape", "image=1x3x64x64")
    assert proc.returncode == 0 and "fallback: no usable variant for device npu" in proc.stdout


@pytest.mark.skipif(npu_available(), reason="an NPU is present: strict mode would succeed")
def test_strict_mode_names_missing_device_and_devices_present(npu_bundle):
    with pytest.raises(xrt.Unavailable) as info:
        xrt.load(npu_bundle.path, device="npu", fallback=[])
    message = str(info.value)
    assert "no usable variant for device npu" in message and "no fallback allowed" in message
    assert "devices present here: cpu" in message and "has no device npu" in message
    proc = run_tool("xrtc", "run", npu_bundle.path, "--device", "npu", "--fallback", "none")
    assert proc.returncode == 5 and "no fallback allowed" in proc.stderr


def test_compile_cache_hit_on_second_load(npu_bundle, tmp_path, monkeypatch):
    # The NPU path compiles at load; on this machine the same code path runs through OpenVINO's CPU plugin.
    cache = tmp_path / "cache"
    first = xrt.load(npu_bundle.path, device="npu", cache_dir=cache).explain()["engine_info"]
    second = xrt.load(npu_bundle.path, device="npu", cache_dir=cache).explain()["engine_info"]
    assert first["cache"] == "miss" and second["cache"] == "hit", (first, second)
    assert second["compiled_from"] == "compile cache" and any(cache.iterdir())
    assert "cache" not in xrt.load(npu_bundle.path, device="npu", cache_dir=False).explain()["engine_info"]
    # device="npu" caches by default, in the user's cache folder ($XRT_CACHE_DIR here)
    monkeypatch.setenv("XRT_CACHE_DIR", str(tmp_path / "default"))
    info = xrt.load(npu_bundle.path, device="npu").explain()["engine_info"]
    assert info["cache_dir"] == str(tmp_path / "default") and info["cache"] == "miss"


def test_multi_target_bundle_picks_the_variant_that_fits(multi_bundle):
    ids = [v["id"] for v in multi_bundle.manifest["variants"]]
    assert ids[0] == "npu-intel-openvino" and set(ids[1:]) == {"cpu-openvino", "cpu-onnxruntime"}
    with xrt.load(multi_bundle.path) as session:  # device cpu: a CPU variant, not the NPU IR
        assert session.explain()["variant"].startswith("cpu-")
    if not npu_available():
        with xrt.load(multi_bundle.path, device="npu") as session:
            info = session.explain()
        # falling back to cpu prefers the bundle's CPU variants (built for it) over running the NPU IR there
        assert info["device"] == "cpu" and info["variant"].startswith("cpu-") and "fallback" in info
    text = run_tool("xrtc", "inspect", multi_bundle.path, check=True).stdout
    assert "npu-intel-openvino: engine openvino, device npu, precision fp16, requires openvino >=2025.0,<2027 on NPU" \
        in text
    assert "falls back to: cpu" in text


def det_model(path):
    """A model OpenVINO 2026.4 cannot convert (no Det) but ONNX Runtime runs."""
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 3])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["r"], name="relu"), oh.make_node("Det", ["r"], ["y"], name="det")],
                          "det", [x], [y])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_unconvertible_model_fails_npu_naming_ops_but_multi_target_keeps_cpu(tmp_path):
    model = det_model(tmp_path / "det.onnx")
    with pytest.raises(NoVariantError) as info:
        compile_model(str(model), "npu-intel", str(tmp_path / "a.xrtpkg"))
    assert "npu-intel-openvino" in str(info.value) and "Det" in str(info.value)
    result = compile_model(str(model), "npu-intel,cpu", str(tmp_path / "b.xrtpkg"))
    assert [v["id"] for v in result.manifest["variants"]] == ["cpu-onnxruntime"]
    reasons = {f"{e['target']}-{e['engine']}": e["reason"] for e in result.manifest["excluded"]}
    assert "Det" in reasons["npu-intel-openvino"] and "Det" in reasons["cpu-openvino"]


def test_npu_precision_policy(tmp_path):
    need_cls = CLS.exists() or pytest.skip(f"corpus model missing: {CLS}")
    assert need_cls
    # fp32 cannot hold on the NPU: prefer builds fp16 and says why; fixed refuses
    result = compile_model(str(SAMPLE), "npu-intel", str(tmp_path / "p.xrtpkg"),
                           policy=Policy.from_dict({"execution": {"precision": "fp32"}, "shapes": SHAPE}))
    assert result.manifest["variants"][0]["precision"] == "fp16"
    log = json.loads(xrtpkg.read(result.path).data("decisions.json"))
    assert any("no fp32 math" in w for w in log["warnings"])
    from xrtc.errors import PolicyViolationError
    with pytest.raises(PolicyViolationError, match="no fp32 math"):
        compile_model(str(SAMPLE), "npu-intel", str(tmp_path / "f.xrtpkg"),
                      policy=Policy.from_dict({"execution": {"precision": {"choice": "fp32", "mode": "fixed"}},
                                               "shapes": SHAPE}))
    # int8 with calibration: a QDQ IR for the NPU
    samples = np.random.default_rng(1).standard_normal((8, 1, 3, 48, 192)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=samples)
    cal = str(tmp_path / "cal.npz")
    shapes = {"x": [1, 3, 48, 192]}
    loose = {"int8": {"rtol": 0.5, "atol": 0.1}}  # random calibration data: a coarse quantisation
    result = compile_model(str(CLS), "npu-intel", str(tmp_path / "q.xrtpkg"), calibration_path=cal,
                           policy=Policy.from_dict({"execution": {"precision": "int8"}, "shapes": shapes,
                                                    "tolerance": loose}))
    (v,) = result.manifest["variants"]
    assert v["precision"] == "int8" and v["accuracy"]["passed"], v
    xml = xrtpkg.read(result.path).data("npu-intel-openvino.xml").decode()
    assert "FakeQuantize" in xml or "i8" in xml or "u8" in xml
    # an int8 tolerance this quantisation cannot meet (its error is ~5e-3): the NPU variant falls back to fp16, not fp32
    # fp16 here runs on the CPU plugin (no NPU), whose f16 hint measures ~7e-3 on this softmax: a looser fp16 tolerance
    strict = {"int8": {"rtol": 0.0, "atol": 1e-5}, "fp16": {"rtol": 5e-2, "atol": 1e-2}}
    result = compile_model(str(CLS), "npu-intel", str(tmp_path / "r.xrtpkg"), calibration_path=cal,
                           policy=Policy.from_dict({"execution": {"precision": "int8"}, "shapes": shapes,
                                                    "tolerance": strict}))
    (v,) = result.manifest["variants"]
    log = json.loads(xrtpkg.read(result.path).data("decisions.json"))
    assert v["precision"] == "fp16" and "int8 over tolerance" in log["variants"][0]["fallback"], log["variants"][0]


def test_bad_target_lists(tmp_path):
    for bad in ("npu-intel,npu-intel", "cpu,", "npu-amd"):
        proc = run_tool("xrtc", "compile", SAMPLE, "--target", bad, "-o", tmp_path / "x.xrtpkg")
        assert proc.returncode == 2, (bad, proc.stderr)
    with pytest.raises(UsageError):
        compile_model(str(SAMPLE), "npu-intel", str(tmp_path / "y.xrtpkg"))
