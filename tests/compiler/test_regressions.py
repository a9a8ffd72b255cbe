"""Bugs the ONNX node suite found in the compiler, each pinned by a small model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import xpuruntime as xrt
from xrt_testutil import run_tool


def save(tmp_path, nodes, inputs, outputs, opset=17, name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def test_shape_with_start_end_is_not_folded_wrongly(tmp_path):
    # graphsurgeon 0.6.1 folds Shape(start=1, end=2) of a static [2, 4, 24] input to [2, 4, 24] (ignores start/end).
    model = save(tmp_path, [helper.make_node("Shape", ["x"], ["s"], start=1, end=2)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 24])],
                 [helper.make_tensor_value_info("s", TensorProto.INT64, [1])], opset=15)
    bundle = tmp_path / "m.xrtpkg"
    run_tool("xrtc", "compile", model, "-o", bundle, check=True)
    x = np.zeros((2, 4, 24), np.float32)
    for variant in [v["id"] for v in xrt.load(bundle).manifest["variants"]]:
        out = xrt.load(bundle, variant=variant).run({"x": x})["s"]
        assert out.tolist() == [4], variant


def test_openvino_dropping_an_input_excludes_its_variant(tmp_path):
    # convert_model drops CastLike's `like` input (only its type matters): binding by position would then be wrong.
    model = save(tmp_path, [helper.make_node("CastLike", ["x", "like"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
                  helper.make_tensor_value_info("like", TensorProto.DOUBLE, [1])],
                 [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])], name="castlike")
    bundle = tmp_path / "c.xrtpkg"
    run_tool("xrtc", "compile", model, "-o", bundle, check=True)
    manifest = xrt.load(bundle).manifest
    engines = [v["engine"] for v in manifest["variants"]]
    excluded = {e["engine"]: e["reason"] for e in manifest["excluded"]}
    assert "openvino" not in engines and "inputs" in excluded["openvino"], manifest
    out = xrt.load(bundle).run({"x": np.array([1, 2, 3], np.float32), "like": np.zeros(1)})["y"]
    assert out.dtype == np.float64 and out.tolist() == [1.0, 2.0, 3.0]
