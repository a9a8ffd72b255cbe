"""Compile targets, one module each, registered below; planned ones are refused with exit code 4.
`--target` takes one target or several, comma-separated (`npu-intel,cpu`): the bundle then holds the variants of
each, in that order, and the runtime takes the first that fits the device present.

Adding a target: a module (or package) here exporting `TARGET` (a targets.base.Target), and one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from ..errors import UnsupportedTargetError, UsageError
from .base import Target

# Target name -> the module exporting its TARGET (imported on first use).
_MODULES = {"cpu": "cpu", "npu-intel": "npu_intel", "cuda": "cuda"}
PLANNED = ("tensorrt",)
IMPLEMENTED = tuple(_MODULES)


def registered() -> tuple[str, ...]:
    """The implemented targets, in registration order."""
    return tuple(_MODULES)


def get_target(name: str) -> Target:
    """The registered target `name` (checked with check_target first when it comes from the user)."""
    if name not in _MODULES:
        check_target(name)
    return importlib.import_module(f"{__name__}.{_MODULES[name]}").TARGET


def host_target() -> str:
    """The target whose variants run on the compiling machine's own CPU (what a bundle can always fall back to)."""
    return next(name for name in registered() if get_target(name).runs_on_host)


def check_target(name: str) -> str:
    """Returns `name` if implemented; UnsupportedTargetError (4) if planned; UsageError (2) if unknown."""
    if name in _MODULES:
        return name
    known = f"implemented: {', '.join(registered())}; planned: {', '.join(PLANNED)}"
    if name in PLANNED:
        raise UnsupportedTargetError(f"target {name!r} is not implemented yet ({known}). Use --target cpu")
    raise UsageError(f"unknown target {name!r} ({known})")


def parse_targets(text: str) -> list[str]:
    """'npu-intel,cpu' -> ['npu-intel', 'cpu'], each checked; duplicates and empty items are usage errors."""
    names = [t.strip() for t in text.split(",")]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise UsageError(f"--target {text!r}: give targets once each, comma-separated (e.g. npu-intel,cpu)")
    return [check_target(n) for n in names]
