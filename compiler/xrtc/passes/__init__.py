"""Graph passes and the pass manager.

`graph_pipeline(policy)` is the target-independent pipeline `xrtc compile` and `xrtc plan` run; precision passes
(convert-float16, quantize-int8) run per variant after it. `from_spec` rebuilds a pipeline recorded in a plan.
"""

from __future__ import annotations

from .base import Pass, PassManager, PassRecord, PassState
from .cleanup import EliminateDeadNodes, FoldConstants, SortTopologically
from .fusion import EliminateIdentity, FoldBatchNorm, FuseMatMulAdd
from .naming import NameNodes
from .precision import ConvertFloat16, QuantizeInt8
from .shapes import BindShapes, InferShapes, RaiseIrVersion, dynamic_dims

# Every pass a plan may name (precision passes are built from the plan's nodes, not from the pipeline spec).
GRAPH_PASSES = {p.name: p for p in (NameNodes, RaiseIrVersion, BindShapes, InferShapes, FoldConstants,
                                    EliminateDeadNodes, EliminateIdentity, FoldBatchNorm, FuseMatMulAdd,
                                    SortTopologically)}


def default_pipeline() -> list[Pass]:
    """Target-independent passes, in order: names first (records and diagnostics refer to nodes by name); IR
    version next (folding adds initializers that IR 3 forbids); shapes (folding `Shape` needs them); fold; remove
    what folding left dead and Identity nodes; fold BatchNormalization into Conv and MatMul+Add into Gemm (int8
    quantisation must see folded weights); sort last (graph edits may leave nodes out of order)."""
    return [NameNodes(), RaiseIrVersion(), InferShapes(), FoldConstants(), EliminateDeadNodes(), EliminateIdentity(),
            FoldBatchNorm(), FuseMatMulAdd(), SortTopologically()]


def graph_pipeline(shapes: dict | None = None) -> list[Pass]:
    """The default pipeline, with `bind-shapes` before shape inference when the policy binds input shapes."""
    passes = default_pipeline()
    if shapes:
        passes.insert(2, BindShapes(shapes={k: list(v) for k, v in sorted(shapes.items())}))
    return passes


def to_spec(passes: list[Pass]) -> list[dict]:
    return [{"name": p.name, "params": dict(p.params)} for p in passes]


def from_spec(spec: list[dict]) -> list[Pass]:
    """Passes from a plan's `pipeline`; unknown names and parameters are errors naming the known ones."""
    from ..errors import UsageError

    out = []
    for item in spec:
        cls = GRAPH_PASSES.get(item.get("name")) if isinstance(item, dict) else None
        if cls is None:
            raise UsageError(f"plan pipeline: unknown pass {item!r}; known: {', '.join(sorted(GRAPH_PASSES))}")
        out.append(cls(**dict(item.get("params", {}))))
    return out


__all__ = ["Pass", "PassManager", "PassRecord", "PassState", "default_pipeline", "graph_pipeline", "to_spec",
           "from_spec", "GRAPH_PASSES", "InferShapes", "FoldConstants", "EliminateDeadNodes", "SortTopologically",
           "RaiseIrVersion", "NameNodes", "BindShapes", "EliminateIdentity", "FoldBatchNorm", "FuseMatMulAdd",
           "ConvertFloat16", "QuantizeInt8", "dynamic_dims"]
