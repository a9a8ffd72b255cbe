#!/usr/bin/env python3
"""Writes samples/sample_cnn.onnx: the demo's embedded default model (deterministic: seeded weights, no timestamps).

A small image classifier in the shape of the real ones: Conv+BatchNorm+Relu blocks, a residual Add, global pooling,
Gemm, Softmax, with a dynamic batch dimension named "batch". ~60k parameters, so the demo stays fast; the real
third-party models are in the test corpus (tests/corpus/fetch.sh).
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_cnn.onnx")


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(20261125)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name))
        return name

    def conv_bn_relu(x, cin, cout, stride, tag, relu=True):
        w = const(f"{tag}.w", rng.normal(0, (2.0 / (cin * 9)) ** 0.5, (cout, cin, 3, 3)))
        nodes.append(helper.make_node("Conv", [x, w], [f"{tag}.conv"], name=f"{tag}/Conv", pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        bn = [const(f"{tag}.bn.{k}", v) for k, v in (("scale", rng.uniform(0.5, 1.5, cout)),
                                                       ("bias", rng.normal(0, 0.1, cout)),
                                                       ("mean", rng.normal(0, 0.1, cout)),
                                                       ("var", rng.uniform(0.5, 1.5, cout)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{tag}.conv", *bn], [f"{tag}.bn"],
                                      name=f"{tag}/BatchNormalization", epsilon=1e-5))
        if not relu:
            return f"{tag}.bn"
        nodes.append(helper.make_node("Relu", [f"{tag}.bn"], [f"{tag}.relu"], name=f"{tag}/Relu"))
        return f"{tag}.relu"

    x = conv_bn_relu("image", 3, 16, 2, "stem")
    y = conv_bn_relu(x, 16, 16, 1, "block1a")
    y = conv_bn_relu(y, 16, 16, 1, "block1b", relu=False)
    nodes.append(helper.make_node("Add", [x, y], ["block1.add"], name="block1/Add"))
    nodes.append(helper.make_node("Relu", ["block1.add"], ["block1.out"], name="block1/Relu"))
    z = conv_bn_relu("block1.out", 16, 32, 2, "block2")
    z = conv_bn_relu(z, 32, 64, 2, "block3")
    nodes.append(helper.make_node("GlobalAveragePool", [z], ["pool"], name="head/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="head/Flatten", axis=1))
    w = const("head.w", rng.normal(0, 0.1, (10, 64)))
    b = const("head.b", rng.normal(0, 0.1, 10))
    nodes.append(helper.make_node("Gemm", ["flat", w, b], ["logits"], name="head/Gemm", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="head/Softmax", axis=1))

    graph = helper.make_graph(
        nodes, "sample_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="xpuruntime-samples",
                              producer_version="1")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else OUT
    onnx.save(build(), out)
    print(out)
