"""Passes are transactions (issue 11, item 4): a pass whose output fails the ONNX checker (full check) or, under
--validate-passes, the numeric check is undone, recorded with its error, and the compile goes on.

The model is the failure class seen on an old quantized OCR model: opset 12, DynamicQuantizeLinear + ConvInteger,
with a `value_info` entry that repeats the graph output's name without a shape (old quantisers wrote those). The
graphsurgeon round trip behind `fold-constants` used to keep that shapeless entry for the output.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import xpuruntime as xrt
import xrtpkg
from xpuruntime.policy import Policy
from xrtc import passes
from xrtc.build import compile_model
from xrtc.cli import main as xrtc_main
from xrtc.passes.base import Pass


def old_quantized_model(path):
    rng = np.random.default_rng(0)
    weights = rng.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"], name="dql"),
        helper.make_node("ConvInteger", ["xq", "wq", "xzp", "w_zp"], ["ci"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["ci"], ["cf"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("Mul", ["xs", "w_scale"], ["s"], name="scale"),
        helper.make_node("Mul", ["cf", "s"], ["y"], name="dequant"),
        # a constant subgraph for fold-constants to fold (old exporters left Shape/Cast chains on weights)
        helper.make_node("Cast", ["w_zp"], ["zp_f"], to=TensorProto.FLOAT, name="zp_cast"),
        helper.make_node("Add", ["y", "zp_f"], ["out"], name="bias"),
    ]
    graph = helper.make_graph(
        nodes, "old_quantized", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(weights, "wq"), numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
         numpy_helper.from_array(np.array(128, np.uint8), "w_zp")],
        value_info=[helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])  # the old quantiser's entry
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=6)
    onnx.checker.check_model(model, full_check=True)  # a valid model: whatever breaks later is ours
    onnx.save(model, path)
    return path


def test_fold_constants_keeps_the_declared_output_shape(tmp_path):
    model = old_quantized_model(tmp_path / "q.onnx")
    out, records = passes.PassManager(passes.default_pipeline()).run(onnx.load(model))
    onnx.checker.check_model(out, full_check=True)
    fold = next(r for r in records if r.name == "fold-constants")
    assert not any(r.rolled_back for r in records) and fold.changed >= 1  # it folded, and nothing was undone
    assert [d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] == [1, 4, 8, 8]


def test_an_invalid_pass_output_is_rolled_back_and_the_compile_goes_on(tmp_path, monkeypatch, capsys):
    # Without the fix, the same model reproduces the seen failure ("Field 'shape' of 'type' is required but
    # missing" after fold-constants): it is now rolled back instead of stopping the compile.
    monkeypatch.setattr("xrtc.passes.base._drop_io_value_info", lambda graph: None)
    model = old_quantized_model(tmp_path / "q.onnx")
    bundle = tmp_path / "q.xrtpkg"
    assert xrtc_main(["compile", str(model), "--target", "cpu", "-o", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert "passes rolled back (" in printed and "fold-constants: output fails the ONNX checker: Field 'shape'" \
        in printed
    records = {p["name"]: p for p in xrtpkg.read(str(bundle)).manifest["provenance"]["passes"]}
    assert "Field 'shape' of 'type' is required but missing" in records["fold-constants"]["rolled_back"]
    assert "undone with fold-constants, eliminate-dead-nodes" in records["eliminate-dead-nodes"]["rolled_back"]
    # every graphsurgeon pass hit the same bug and was undone; the ModelProto ones ran
    assert "rolled_back" not in records["infer-shapes"] and "rolled_back" in records["sort-topologically"]
    assert xrtc_main(["inspect", str(bundle)]) == 0
    assert "pass     fold-constants: ROLLED BACK (output fails the ONNX checker" in capsys.readouterr().out
    decisions = json.loads(xrtpkg.read(str(bundle)).data("decisions.json"))
    assert any(w.startswith("pass fold-constants rolled back:") for w in decisions["warnings"])
    # the bundle runs and matches ONNX Runtime on the source model
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for variant in [v["id"] for v in xrt.load(bundle).manifest["variants"]]:
        got = xrt.load(bundle, variant=variant).run({"x": x})["out"]
        err = float(np.abs(got - ref).max())
        print(f"{variant}: max abs err {err:.3g}")
        assert err <= 1e-4 * max(1.0, float(np.abs(ref).max())), variant


class BreakWeights(Pass):
    """A deliberately wrong pass: scales the Conv's quantised weights' scale (a plausible folding bug)."""

    name = "break-scale"

    def apply(self, state):
        import onnx_graphsurgeon as gs

        graph = state.graph
        mul = next(n for n in graph.nodes if n.name == "scale")
        scale = mul.inputs[1]
        mul.inputs[1] = gs.Constant(scale.name + ".broken", np.asarray(scale.values * 1.5, scale.values.dtype))
        return 1


def test_validate_passes_rolls_back_a_pass_that_breaks_numerics(tmp_path):
    model = old_quantized_model(tmp_path / "q.onnx")
    result = compile_model(str(model), "cpu", str(tmp_path / "q.xrtpkg"), validate_passes=True,
                           policy=Policy(), extra_passes=[("eliminate-identity", BreakWeights())])
    records = {p["name"]: p for p in result.manifest["provenance"]["passes"]}
    assert "pass break-scale broke numerics" in records["break-scale"]["rolled_back"]
    assert "rolled_back" not in records["fold-batchnorm"] and records["fold-batchnorm"]["max_abs_err"] == 0
    assert all(v["accuracy"]["passed"] for v in result.manifest["variants"])


class BreakNames(Pass):
    """A required pass (later stages rely on it) that breaks the graph: the compile must stop, not go on."""

    name = "break-required"
    optional = False

    def apply(self, state):
        state.model.graph.node[0].input[0] = "nowhere"
        return 1


def test_a_required_pass_that_breaks_the_graph_still_stops_the_compile(tmp_path):
    from xrtc.errors import InternalError

    model = old_quantized_model(tmp_path / "q.onnx")
    with pytest.raises(InternalError, match="break-required produced an invalid model"):
        compile_model(str(model), "cpu", str(tmp_path / "q.xrtpkg"), policy=Policy(),
                      extra_passes=[("eliminate-identity", BreakNames())])
