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


class RaiseIrVersion(Pass):
    """Raises the model's IR version to at least `min_ir_version` (default 4).

    IR < 4 requires every initializer to be listed as a graph input; constant folding adds initializers that are not
    inputs, which IR 3 models (e.g. the onnx-caffe2 `light_*` models) then fail the checker on. IR 4 only relaxes
    that rule, so raising it changes no semantics. Initializers already listed as inputs stay listed.

    changed = 1 if the version was raised, else 0.
    """

    name = "raise-ir-version"
    description = "raise the IR version to at least 4 so folded constants need not be graph inputs"
    PARAMS = {"min_ir_version": (int, 4, "lowest IR version to leave the model at")}

    def apply(self, state: PassState) -> int:
        model = state.model
        if model.ir_version >= self.params["min_ir_version"]:
            return 0
        model.ir_version = self.params["min_ir_version"]
        return 1
