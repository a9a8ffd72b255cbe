"""Graph passes and the pass manager. `default_pipeline()` is the pipeline `xrtc compile` runs for every target."""

from __future__ import annotations

from .base import Pass, PassManager, PassRecord, PassState
from .cleanup import EliminateDeadNodes, FoldConstants, SortTopologically
from .shapes import InferShapes


def default_pipeline() -> list[Pass]:
    """Target-independent passes, in order. Shapes first (folding `Shape` needs them), then fold, then remove what
    folding left dead, then sort (cleanup and toposort run last, as graph edits may leave nodes out of order)."""
    return [InferShapes(), FoldConstants(), EliminateDeadNodes(), SortTopologically()]


__all__ = ["Pass", "PassManager", "PassRecord", "PassState", "default_pipeline", "InferShapes", "FoldConstants",
           "EliminateDeadNodes", "SortTopologically"]
