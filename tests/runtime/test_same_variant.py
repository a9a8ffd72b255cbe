"""Python (`xrt.load`) and C++ (`xrt-run`) pick variants with the same rule (issue 11, item 6): the manifest's order,
first variant whose engine is present. They differ only where the first choice's engine is ONNX Runtime, which
exists only in Python processes (registered through its Python API: the wheel ships no C/C++ headers). There each
path names the variant the other runs, so C++ timings are not read as the Python application's."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import xpuruntime as xrt
from xrt_testutil import SAMPLE, run_tool


def conv_model(path):
    """~1.1 GFLOP of convolutions (over the compiler's 300 MFLOP rule): OpenVINO is the bundle's first choice."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((64, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
         helper.make_node("Relu", ["a"], ["b"], name="relu"),
         helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")], "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 112, 112])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def cpp_pick(bundle, *args) -> dict:
    proc = run_tool("xrt-run", bundle, "--json", *args, check=True)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pick")
    out = {"ort_first": folder / "sample.xrtpkg", "openvino_first": folder / "convs.xrtpkg"}
    run_tool("xrtc", "compile", SAMPLE, "--shape", "image=1x3x64x64", "-o", out["ort_first"], check=True)
    run_tool("xrtc", "compile", conv_model(folder / "convs.onnx"), "-o", out["openvino_first"], check=True)
    return out


def test_both_paths_pick_the_same_variant_when_both_have_its_engine(bundles):
    bundle = bundles["openvino_first"]
    order = [v["id"] for v in xrt.load(bundle).manifest["variants"]]
    assert order == ["cpu-openvino", "cpu-onnxruntime"]
    python = xrt.load(bundle).explain()
    cpp = cpp_pick(bundle)
    assert python["variant"] == cpp["session"]["variant"] == "cpu-openvino"
    assert "cpp_runs" not in python and "python_runs" not in cpp


def test_where_only_python_has_the_engine_each_path_names_the_others_pick(bundles):
    bundle = bundles["ort_first"]
    assert [v["id"] for v in xrt.load(bundle).manifest["variants"]] == ["cpu-onnxruntime", "cpu-openvino"]
    python = xrt.load(bundle).explain()
    cpp = cpp_pick(bundle)
    assert python["variant"] == "cpu-onnxruntime" and cpp["session"]["variant"] == "cpu-openvino"
    # each says what the other runs, and they agree
    assert python["cpp_runs"]["variant"] == cpp["session"]["variant"]
    assert cpp["python_runs"] == python["variant"]
    text = run_tool("xrt-run", bundle, "--bench", "3", "--warmup", "0", check=True).stdout
    assert "note: Python (xpuruntime.load) runs cpu-onnxruntime" in text and "timings here are cpu-openvino's" in text
    text = run_tool("xrtc", "run", bundle, check=True).stdout
    assert "C/C++ applications and xrt-run take the next variant for device cpu, cpu-openvino" in text
    # the advice works: pinned, both run the same variant, with the same outputs
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    pinned = xrt.load(bundle, variant=python["cpp_runs"]["variant"])
    assert pinned.explain()["variant"] == cpp_pick(bundle, "--variant", "cpu-openvino")["session"]["variant"]
    assert "cpp_runs" not in pinned.explain()
    ref = xrt.load(bundle).run({"image": x})["probabilities"]
    np.testing.assert_allclose(pinned.run({"image": x})["probabilities"], ref, rtol=1e-3, atol=1e-4)
