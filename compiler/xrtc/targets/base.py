"""What a compile target is: the `Target` record every target module exports as `TARGET`.

The plan (xrtc.plan) and the build (xrtc.build) ask a Target everything target-specific: its device and engines, the
precisions it builds (and why not the others), the kernel knobs it honours, its precision fallback chain, the engine
options of its variants and its lowering. Nothing outside `xrtc.targets` names a target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from ..variants import BuiltVariant, LeftOut, Lowering, VariantRequest  # noqa: F401 - what a lowering takes and returns

_REASON_CHARS = 600


class BuildFailed(Exception):
    """An engine could not build or load its variant; the message is the (deterministic) reason its LeftOut (stage
    build-failed) records."""


@dataclass(frozen=True)
class Target:
    """One compile target. `lower(requests, plan, workdir, clock, *, precompile, archs) -> Lowering` builds the
    variants requested of this target (xrtc.variants.VariantRequest, in the plan's order: never one the plan excluded
    or the gate dropped) and returns them as BuiltVariant / LeftOut records; `variant_options(variant, policy,
    warnings) -> variant` sets a planned variant's engine options (and may exclude it, or add warnings)."""

    name: str
    device: str  # the manifest's `device` of its variants
    engines: tuple[str, ...]  # in the order the plan lists its variants (`<name>-<engine>`)
    default_precision: str  # when the policy sets none
    # per engine, per precision: None = built, else the reason it is not
    precisions: dict[str, dict[str, str | None]]
    # per engine, per kernel family: the choices honoured; and what the engine does with the knob, in words
    kernels: dict[str, dict[str, set[str]]]
    engine_kernels: dict[str, str]
    # precision -> the precision the accuracy gate rebuilds at when a `prefer` precision is over tolerance
    fallback: dict[str, str]
    lower: Callable
    variant_options: Callable
    # Set where the device compiles for one shape: the reason, said when input dims are still dynamic.
    static_shapes: str | None = None
    # per precision: a warning the plan gives when a variant of this target is built at it (a rule, not a figure)
    precision_notes: dict[str, str] = field(default_factory=dict)
    runs_on_host: bool = False  # the variants run on the compiling machine's own CPU
    # The accuracy gate's candidate runs the variant with these options over its own (e.g. f32 compute for a device
    # the gate cannot run) and, with `emulate_fp16`, also measures fp16 arithmetic by emulation.
    gate_options: dict[str, str] = field(default_factory=dict)
    emulate_fp16: bool = False
    # gate(lowering, variant, samples, references, tol, workdir, candidate) -> record, for targets the runtime may
    # not run here (no device); None = the runtime runs the candidate.
    gate: Callable | None = None
    # The NoVariantError text when this target alone builds nothing, from its LeftOut records (None: the generic one).
    none_built: Callable[[list[LeftOut]], str] | None = None
    # Engines whose lowering converts the fp32 graph to the variant's precision itself (xrtc's fp16 pass and the
    # gate's per-node fp16 fallback leave their variants alone).
    converts_precision: tuple[str, ...] = ()

    def precision_problem(self, engine: str, precision: str) -> str | None:
        return self.precisions[engine].get(precision)

    def fallback_for(self, precision: str) -> str | None:
        return self.fallback.get(precision)


def condense(text: str, workdir: str) -> str:
    """One deterministic line from an engine's error: temp paths removed, whitespace collapsed, length capped.
    OpenVINO puts the useful part after "Summary:"; keep it first."""
    text = text.replace(workdir + os.sep, "").replace(workdir, ".")
    summary = ""
    if "Summary:" in text:
        summary = " ".join(text.split("Summary:", 1)[1].split()).lstrip("- ")
    flat = " ".join(text.split())
    out = f"{summary}; details: {flat}" if summary else flat
    return out if len(out) <= _REASON_CHARS else out[: _REASON_CHARS - 4].rsplit(" ", 1)[0] + " ..."  # whole words
