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
    optional = False  # later stages rely on it: a failure stops the compile
    description = "raise the IR version to at least 4 so folded constants need not be graph inputs"
    PARAMS = {"min_ir_version": (int, 4, "lowest IR version to leave the model at")}

    def apply(self, state: PassState) -> int:
        model = state.model
        if model.ir_version >= self.params["min_ir_version"]:
            return 0
        model.ir_version = self.params["min_ir_version"]
        return 1


class BindShapes(Pass):
    """Binds input dimensions to the static sizes the policy gives (`[shapes]`, `--shape name=1x3x640x640`), then
    drops the stale inferred shapes so `infer-shapes` recomputes them. A size must match a static dim already in the
    model; an unknown input name or a rank mismatch is an error naming both.

    changed = number of dims bound.
    """

    name = "bind-shapes"
    optional = False  # later stages rely on it: a failure stops the compile
    description = "bind dynamic input dims to static sizes from the policy / --shape"
    PARAMS = {"shapes": (dict, None, "{input name: [dims]}")}

    def apply(self, state: PassState) -> int:
        from ..errors import UsageError

        shapes = self.params["shapes"] or {}
        model = state.model
        initializers = {t.name for t in model.graph.initializer}
        graph_inputs = {v.name: v for v in model.graph.input if v.name not in initializers}
        unknown = sorted(set(shapes) - set(graph_inputs))
        if unknown:
            raise UsageError(f"shape given for unknown input(s) {unknown}; the model's inputs are "
                             f"{sorted(graph_inputs)}")
        bound = 0
        for name, dims in sorted(shapes.items()):
            t = graph_inputs[name].type.tensor_type
            current = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            if len(current) != len(dims):
                raise UsageError(f"shape for input {name!r} has {len(dims)} dims {list(dims)}, the model's has "
                                 f"{len(current)}: {current}")
            for i, (dim, size) in enumerate(zip(t.shape.dim, dims)):
                static = dim.HasField("dim_value") and dim.dim_value >= 0  # exporters write -1 for dynamic
                if static and dim.dim_value != size:
                    raise UsageError(f"shape for input {name!r}: dim {i} is fixed at {dim.dim_value} in the model, "
                                     f"the policy asks {size}")
                if not static:
                    dim.Clear()
                    dim.dim_value = int(size)
                    bound += 1
        if bound:
            del model.graph.value_info[:]
        return bound


def dynamic_dims(model: onnx.ModelProto) -> list[str]:
    """The graph inputs' dims that are not static, as 'input[i] (name)' strings, in input order."""
    initializers = {t.name for t in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if not (dim.HasField("dim_value") and dim.dim_value >= 0):
                out.append(f"{value.name}[{i}]" + (f" ({dim.dim_param})" if dim.dim_param else ""))
    return out
