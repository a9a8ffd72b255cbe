"""Static estimates over an ONNX graph, used to order variants. Deterministic: no timing, no engine calls."""

from __future__ import annotations

from dataclasses import dataclass

import onnx


# Dynamic input dims are pinned before estimating: the first (batch) dim to 1, every other dynamic dim to this
# nominal size. NOTE: pinning them all to 1 made convolutional models with dynamic H/W (ppocrv4_det/rec, nudenet)
# look like 2-6 MFLOP graphs, ordering ONNX Runtime first where OpenVINO measured up to 2.3x faster.
NOMINAL_DYNAMIC_DIM = 224

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)

RULE = (f"est. = 2 x MACs of Conv/ConvTranspose/MatMul/Gemm, dynamic input dims as 1 (first) or "
        f"{NOMINAL_DYNAMIC_DIM} (others)")


@dataclass(frozen=True)
class ComputeEstimate:
    """2 x MACs of Conv/ConvTranspose/MatMul/Gemm (the ops that dominate CPU time in the models we see).
    See RULE for how dynamic dims count; `unknown` counts the ops skipped because a shape was not inferred."""

    flops: int
    counted: int
    unknown: int

    def text(self) -> str:
        return format_flops(self.flops)


def format_flops(flops: float) -> str:
    """3 significant digits: "4.25 GFLOP", "564 MFLOP", "20 MFLOP", "128 FLOP"."""
    for scale, unit in ((1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _shapes(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    shapes: dict[str, list[int] | None] = {}

    def dims_of(value: onnx.ValueInfoProto) -> list[int] | None:
        t = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not t.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim]

    def visit(graph: onnx.GraphProto) -> None:
        for value in [*graph.input, *graph.output, *graph.value_info]:
            shapes[value.name] = dims_of(value)
        for init in graph.initializer:
            shapes[init.name] = [int(d) for d in init.dims]
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and attr.HasField("t"):
                        shapes[node.output[0]] = [int(d) for d in attr.t.dims]
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)

    visit(model.graph)
    return shapes


def _prod(dims: list[int]) -> int:
    out = 1
    for d in dims:
        out *= max(int(d), 1)
    return out


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _nodes(sub)


def _pin_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose dynamic input dims are pinned (see NOMINAL_DYNAMIC_DIM) and whose top-level inferred shapes are
    dropped, so inference recomputes them from the pinned inputs."""
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    for init in pinned.graph.initializer:
        # Inference needs the dims of weights, not their values (only small integer tensors feed shape
        # computations); dropping large float payloads keeps its serialise/parse round trip cheap.
        if init.data_type in _FLOAT_TYPES and _prod(list(init.dims)) > 1024:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("double_data")
            init.ClearField("int32_data")  # float16/bfloat16 payloads live here when not raw
    initializers = {t.name for t in pinned.graph.initializer}
    for value in pinned.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        t = value.type.tensor_type
        if not t.HasField("shape"):
            continue
        for index, dim in enumerate(t.shape.dim):
            if not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.dim_value = 1 if index == 0 else NOMINAL_DYNAMIC_DIM
    del pinned.graph.value_info[:]
    return pinned


def estimate_compute(model: onnx.ModelProto) -> ComputeEstimate:
    """Estimates compute from shapes inferred (ONNX shape inference, non-strict) on a copy with pinned inputs."""
    inferred = onnx.shape_inference.infer_shapes(_pin_inputs(model), check_type=False, strict_mode=False,
                                                 data_prop=True)
    shapes = _shapes(inferred)
    macs = counted = unknown = 0
    for node in _nodes(inferred.graph):
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
            continue
        ins = [shapes.get(name) for name in node.input[:2]]
        out = shapes.get(node.output[0]) if node.output else None
        if len(ins) < 2 or ins[0] is None or ins[1] is None or (op != "ConvTranspose" and out is None):
            unknown += 1
            continue
        a, b = ins
        if op == "Conv" and len(b) >= 2:
            macs += _prod(out) * _prod(b[1:])  # each output: Cin/group x kernel MACs
        elif op == "ConvTranspose" and len(b) >= 2:
            macs += _prod(a) * _prod(b[1:])  # each input element scatters into Cout/group x kernel outputs
        elif op == "MatMul" and a:
            macs += _prod(out) * max(a[-1], 1)
        elif op == "Gemm" and len(a) == 2:
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            macs += _prod(out) * max(a[0] if trans_a else a[1], 1)
        else:
            unknown += 1
            continue
        counted += 1
    return ComputeEstimate(flops=2 * macs, counted=counted, unknown=unknown)
