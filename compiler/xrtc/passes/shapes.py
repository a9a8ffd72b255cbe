"""`infer-shapes`: ONNX shape inference, so later passes (and the compute estimate) see tensor shapes."""

from __future__ import annotations

import onnx

from .base import Pass, PassState


class InferShapes(Pass):
    """Adds inferred types and shapes (value_info) with onnx.shape_inference, non-strict: a node whose shape
    cannot be inferred is left without one rather than failing the compile.

    changed = number of value_info entries added.
    """

    name = "infer-shapes"
    description = "infer tensor types and shapes (onnx.shape_inference, strict off)"
    PARAMS = {
        "strict_mode": (bool, False, "fail on any inference error instead of skipping the node"),
        "data_prop": (bool, False, "propagate constant shape values through shape-computing ops"),
    }

    def apply(self, state: PassState) -> int:
        model = state.model
        before = len(model.graph.value_info)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False,
                                                     strict_mode=self.params["strict_mode"],
                                                     data_prop=self.params["data_prop"])
        state.model = inferred
        return len(inferred.graph.value_info) - before
