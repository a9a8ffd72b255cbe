"""Compile targets. `cpu` is implemented; the others are planned and refused with exit code 4."""

from __future__ import annotations

from ..errors import UnsupportedTargetError, UsageError

IMPLEMENTED = ("cpu",)
PLANNED = ("npu-intel", "cuda", "tensorrt")


def check_target(name: str) -> str:
    """Returns `name` if implemented; UnsupportedTargetError (4) if planned; UsageError (2) if unknown."""
    if name in IMPLEMENTED:
        return name
    known = f"implemented: {', '.join(IMPLEMENTED)}; planned: {', '.join(PLANNED)}"
    if name in PLANNED:
        raise UnsupportedTargetError(f"target {name!r} is not implemented yet ({known}). Use --target cpu")
    raise UsageError(f"unknown target {name!r} ({known})")
