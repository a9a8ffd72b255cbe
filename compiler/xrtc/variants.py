"""What travels between the compile's stages, typed: the variant a target is asked to build (`VariantRequest`), the
variant it built (`BuiltVariant`), a variant left out and at which stage (`LeftOut`), and the accuracy gate's outcome
per variant (`GateOutcome`). The manifest's dicts are made from these only when the bundle is packaged
(xrtc.package): the records carry the manifest entry and reasons verbatim, so the bundle's bytes do not depend on
this typing.

A leaf module: it imports nothing from the rest of xrtc but its errors, so every stage (plan, targets, settle,
package) can use it without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InternalError

# Where a variant was left out: the plan excluded it (a fixed knob, or a target requirement it cannot meet), its
# engine could not build it, or the accuracy gate dropped it (crashed, or over tolerance at its target's highest
# precision).
Stage = Literal["policy-excluded", "build-failed", "gate-dropped"]
STAGES: tuple[str, ...] = ("policy-excluded", "build-failed", "gate-dropped")

Section = tuple[str, bytes, bool]  # (bundle section name, bytes, compress?)


@dataclass(frozen=True)
class VariantRequest:
    """One variant a target's lowering is asked to build: the plan's variant at the precision the accuracy gate
    settled on (its engine options set for that precision) and the graph its engine gets (after its precision
    passes). Variants the plan excluded or the gate dropped are never requested."""

    id: str
    target: str
    device: str
    engine: str
    precision: str
    options: dict[str, str]
    model: Any  # onnx.ModelProto
    notes: tuple[str, ...] = ()

    @classmethod
    def from_plan(cls, planned: dict, model) -> "VariantRequest":
        """From a plan variant (xrtc.plan's dict form, as stored in the bundle's plan)."""
        return cls(id=planned["id"], target=planned["target"], device=planned["device"], engine=planned["engine"],
                   precision=planned["precision"], options=dict(planned.get("options", {})), model=model,
                   notes=tuple(planned.get("notes", ())))


@dataclass
class BuiltVariant:
    """A variant an engine built: its manifest entry (without `accuracy`: the gate's outcome adds it at packaging)
    and its payload sections, in the order they go into the bundle. `engine` is the engine that built it (the
    entry's own `engine`)."""

    entry: dict
    sections: list[Section]

    def __post_init__(self) -> None:
        for key in ("id", "target", "device", "engine", "precision"):
            if not isinstance(self.entry.get(key), str):
                raise InternalError(f"built variant {self.entry.get('id')!r} has no {key!r} in its manifest entry; "
                                    "this is a bug in xrtc's target code")

    @property
    def id(self) -> str:
        return self.entry["id"]

    @property
    def target(self) -> str:
        return self.entry["target"]

    @property
    def engine(self) -> str:
        return self.entry["engine"]

    @property
    def precision(self) -> str:
        return self.entry["precision"]


@dataclass(frozen=True)
class LeftOut:
    """A variant that is not in the bundle: which one, why (the deterministic reason the manifest's `excluded` and
    the decision log record) and at which stage."""

    target: str
    engine: str
    reason: str
    stage: Stage
    device: str | None = None
    precision: str | None = None  # the precision it was planned / built at, where known

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InternalError(f"left-out stage {self.stage!r} is not one of {STAGES}; this is a bug in xrtc")

    @property
    def id(self) -> str:
        return f"{self.target}-{self.engine}"

    def manifest_entry(self) -> dict:
        """The manifest's `excluded` item (formats/xrtpkg.md, "Manifest")."""
        return {"target": self.target, "engine": self.engine, "reason": self.reason}


# passed: measured within tolerance at the precision planned; fell-back: within tolerance after the gate rebuilt it
# (a lower precision, or some nodes kept in fp32); dropped: left out (see LeftOut); unmeasured: kept without a
# measurement (no samples the model accepts, no device and too big to interpret): the bundle says so.
Verdict = Literal["passed", "fell-back", "dropped", "unmeasured"]
VERDICTS: tuple[str, ...] = ("passed", "fell-back", "dropped", "unmeasured")

# Gate-record keys that steer the gate's advice and are not stored in the bundle.
_NOT_STORED = ("failures", "fp16_atol_needed", "atol_needed")


@dataclass(frozen=True)
class GateOutcome:
    """What the accuracy gate decided for one variant. `record` is the last measurement (the manifest's `accuracy`
    format: passed, rtol, atol, samples, max_abs_err per output, ran_on, ...; None when not measured); `fallback`
    why it was rebuilt (the last rebuild); `reason` why it was dropped or is unmeasured."""

    variant_id: str
    verdict: Verdict
    precision: str  # the precision it was last built at
    record: dict | None = None
    fallback: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise InternalError(f"gate verdict {self.verdict!r} is not one of {VERDICTS}; this is a bug in xrtc")

    @property
    def max_abs_err(self) -> dict[str, float]:
        """The measured max abs error per output ({} when not measured)."""
        return dict((self.record or {}).get("max_abs_err", {}))

    @property
    def fell_back_to(self) -> str | None:
        """The precision it fell back to (its own where the per-node fallback kept it), or None."""
        return self.precision if self.fallback else None

    def manifest_accuracy(self) -> dict | None:
        """The variant's `accuracy` in the manifest: the measurement without the gate's working keys; None when it
        was not measured (unmeasured, or no gate ran)."""
        if self.record is None or self.verdict == "unmeasured":
            return None
        return {k: v for k, v in self.record.items() if k not in _NOT_STORED}


@dataclass
class Lowering:
    """What a target's lowering produced: the built variants in preference order, the variants left out with the
    reason, the versions of the engines tried (built or not), and the target's compute estimate where it made one
    (analysis.ComputeEstimate)."""

    built: list[BuiltVariant] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)
    estimate: object = None

    @property
    def entries(self) -> list[dict]:
        """The built variants' manifest entries, in preference order."""
        return [b.entry for b in self.built]

    @property
    def payloads(self) -> list[Section]:
        """Every built variant's sections, in variant order (the bundle's order)."""
        return [s for b in self.built for s in b.sections]

    def merge(self, other: "Lowering") -> None:
        self.built += other.built
        self.left_out += other.left_out
        self.tools.update(other.tools)
