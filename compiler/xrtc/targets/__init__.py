"""Compile targets. `cpu`, `npu-intel` and `cuda` are implemented; the others are planned and refused with exit code 4.
`--target` takes one target or several, comma-separated (`npu-intel,cpu`): the bundle then holds the variants of
each, in that order, and the runtime takes the first that fits the device present."""

from __future__ import annotations

from ..errors import UnsupportedTargetError, UsageError

IMPLEMENTED = ("cpu", "npu-intel", "cuda")
PLANNED = ("tensorrt",)


def check_target(name: str) -> str:
    """Returns `name` if implemented; UnsupportedTargetError (4) if planned; UsageError (2) if unknown."""
    if name in IMPLEMENTED:
        return name
    known = f"implemented: {', '.join(IMPLEMENTED)}; planned: {', '.join(PLANNED)}"
    if name in PLANNED:
        raise UnsupportedTargetError(f"target {name!r} is not implemented yet ({known}). Use --target cpu")
    raise UsageError(f"unknown target {name!r} ({known})")


def parse_targets(text: str) -> list[str]:
    """'npu-intel,cpu' -> ['npu-intel', 'cpu'], each checked; duplicates and empty items are usage errors."""
    names = [t.strip() for t in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UsageError(f"--target {text!r}: give targets once each, comma-separated (e.g. npu-intel,cpu)")
    return [check_target(n) for n in names]
