"""Graph passes and the pass manager. `default_pipeline()` is the pipeline `xrtc compile` runs for every target."""

from __future__ import annotations

from .base import Pass, PassManager, PassRecord, PassState
from .cleanup import EliminateDeadNodes, FoldConstants, SortTopologically
from .naming import NameNodes
from .shapes import InferShapes, RaiseIrVersion


def default_pipeline() -> list[Pass]:
    """Target-independent passes, in order: names first (records and diagnostics refer to nodes by name); IR
    version next (folding adds initializers that IR 3 forbids); shapes (folding `Shape` needs them); fold; remove
    what folding left dead; sort last (graph edits may leave nodes out of order)."""
    return [NameNodes(), RaiseIrVersion(), InferShapes(), FoldConstants(), EliminateDeadNodes(), SortTopologically()]


__all__ = ["Pass", "PassManager", "PassRecord", "PassState", "default_pipeline", "InferShapes", "FoldConstants",
           "EliminateDeadNodes", "SortTopologically", "RaiseIrVersion", "NameNodes"]
