"""Small ONNX models for the cuda target's tests, built with onnx.helper (checked in as code, F1)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def mlp(batch=4, dims=(32, 64, 48, 16), act="Relu", seed=0) -> onnx.ModelProto:
    """x[batch, d0] -> (MatMul + Add + act) per layer -> y[batch, dn] (no activation after the last layer)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [_init(f"w{i}", (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)),
                  _init(f"b{i}", (rng.standard_normal(b) * 0.1).astype(np.float32))]
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"], name=f"MatMul_{i}"),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"h{i}"], name=f"Add_{i}")]
        cur = f"h{i}"
        if i < len(dims) - 2:
            if act == "Gelu":
                nodes.append(helper.make_node("Gelu", [cur], [f"a{i}"], name=f"Gelu_{i}"))
            else:
                nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"{act}_{i}"))
            cur = f"a{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dims[-1]])], inits)
    opset = 20 if act == "Gelu" else 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model
