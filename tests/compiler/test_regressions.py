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
    # convert_model drops a statically empty input (ReduceL1's `axes` of shape [0]): binding by position would then
    # feed `axes` data to nothing, or the wrong parameter. The compiler must leave that variant out and say why.
    model = save(tmp_path, [helper.make_node("ReduceL1", ["data", "axes"], ["y"], keepdims=1)],
                 [helper.make_tensor_value_info("data", TensorProto.FLOAT, [3, 2, 2]),
                  helper.make_tensor_value_info("axes", TensorProto.INT64, [0])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1])], opset=18, name="reduce")
    bundle = tmp_path / "r.xrtpkg"
    run_tool("xrtc", "compile", model, "-o", bundle, check=True)
    manifest = xrt.load(bundle).manifest
    engines = [v["engine"] for v in manifest["variants"]]
    excluded = {e["engine"]: e["reason"] for e in manifest["excluded"]}
    assert "openvino" not in engines and "drops unused or empty inputs" in excluded["openvino"], manifest
    data = np.arange(12, dtype=np.float32).reshape(3, 2, 2) - 6
    out = xrt.load(bundle).run({"data": data, "axes": np.zeros(0, np.int64)})["y"]
    assert out.tolist() == [[[float(np.abs(data).sum())]]]
