"""Policies: how a model must run, written down ("policy as code"). Pure Python, no engine imports.

One policy model for the compiler (`xrtc compile --policy`), the Python API and, later, the training extension:

    policy = xrt.KernelPolicy(matmul="cublasLt", attention=xrt.Knob("flash_v2", "fixed"))
    execution = xrt.ExecutionPolicy(precision="fp16", static_shape=True)
    xrt.Policy(kernel=policy, execution=execution).to_toml()

Every knob has a mode: ``fixed`` (must hold, or the compile fails naming the node and the reason), ``prefer`` (use
when possible, record a warning and the reason when not) or ``auto`` (let tuning decide, record the measurements).
A bare value is the short form of ``prefer``. The TOML file has the same content (formats: ``Policy.from_toml``);
every error names the key, the bad value and the allowed values, through ``PolicyError`` (an ``InvalidArgument``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._errors import InvalidArgument

MODES = ("fixed", "prefer", "auto")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")

# Kernel choices per op family. "engine" = the engine's own choice (the default). Which choices each target and
# engine can honour is the compiler's business (xrtc.plan), not the schema's: a policy is written once for many targets.
KERNEL_CHOICES = {
    "matmul": ("engine", "cublas", "cublasLt", "triton", "mlas", "onednn"),
    "conv": ("engine", "cudnn", "mlas", "onednn"),
    "attention": ("engine", "flash", "flash_v2", "mem_efficient", "math", "fused"),
}
MEMORY_CHOICES = ("default", "low")

# Tolerances per precision: an output passes when max|got - ref| <= atol * max(1, max|ref|) + rtol * |ref|
# elementwise (xrtc verify, the accuracy gate). fp32 differs from ONNX Runtime only by summation order and kernel
# choice; reduced precisions by their mantissa; int8 by its quantisation step. fp16 and tf32 keep 10 mantissa bits:
# one unit in the last place at 1.0 is ~1e-3, so atol 5e-3 allows ~5 of them, what a deep network (a 12-layer
# encoder) accumulates; atol 1e-3 refused every fp16 BERT-base on its tanh-bounded pooler output.
DEFAULT_TOLERANCES = {
    "fp32": {"rtol": 1e-3, "atol": 1e-4},
    "tf32": {"rtol": 1e-2, "atol": 5e-3},
    "fp16": {"rtol": 1e-2, "atol": 5e-3},
    "bf16": {"rtol": 5e-2, "atol": 1e-2},
    "int8": {"rtol": 1e-1, "atol": 5e-2},
}

_SHAPE_TEXT = re.compile(r"^\s*\d+(\s*x\s*\d+)*\s*$")


class PolicyError(InvalidArgument):
    """A policy (object or file) that does not follow the schema; the message names key, value and allowed values."""


def _fmt(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


@dataclass(frozen=True)
class Knob:
    """A choice and how firmly it is held. ``choice`` None is allowed only with mode ``auto``."""

    choice: Any = None
    mode: str = "prefer"

    def to_json(self) -> dict:
        return {"choice": self.choice, "mode": self.mode}


def _knob(where: str, value: Any, check) -> Knob:
    """Parses the short form (a bare value: mode prefer), a table/dict {choice, mode} or a Knob; `check(where,
    choice)` validates the choice."""
    if isinstance(value, Knob):
        choice, mode = value.choice, value.mode
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"choice", "mode"})
        if unknown:
            raise PolicyError(f"{where}: unknown key(s) {unknown}; a knob is a value or {{ choice = ..., mode = ... }}")
        choice, mode = value.get("choice"), value.get("mode", "prefer")
    else:
        choice, mode = value, "prefer"
    if mode not in MODES:
        raise PolicyError(f"{where}.mode = {_fmt(mode)}: not one of {', '.join(MODES)}")
    if choice is None:
        if mode != "auto":
            raise PolicyError(f"{where}: mode {mode} needs a choice; give one, or use mode = \"auto\"")
    else:
        check(where, choice)
    return Knob(choice, mode)


def _one_of(allowed: tuple):
    def check(where: str, choice: Any) -> None:
        if choice not in allowed:
            raise PolicyError(f"{where} = {_fmt(choice)}: not one of {', '.join(allowed)}")
    return check


def _is_bool(where: str, choice: Any) -> None:
    if not isinstance(choice, bool):
        raise PolicyError(f"{where} = {_fmt(choice)}: must be true or false")


def _threads(where: str, choice: Any) -> None:
    if isinstance(choice, bool) or not isinstance(choice, int) or not 0 <= choice <= 1024:
        raise PolicyError(f"{where} = {_fmt(choice)}: must be an integer from 0 (engine default) to 1024")


class _KnobSet:
    """A table of knobs (one policy section): validated at construction, canonical `to_json()`, equality by
    content. Subclasses set SECTION, FIELDS, _CHECKS (key -> choice validator) and DEFAULTS."""

    SECTION = ""
    FIELDS: tuple = ()
    _CHECKS: dict = {}
    DEFAULTS: dict = {}

    def __init__(self, **knobs: Any) -> None:
        unknown = sorted(set(knobs) - set(self.FIELDS))
        if unknown:
            raise PolicyError(f"[{self.SECTION}]: unknown key(s) {unknown}; known: {', '.join(self.FIELDS)}")
        self.knobs: dict[str, Knob] = {}
        for key, value in knobs.items():
            if value is not None:
                self.knobs[key] = _knob(f"[{self.SECTION}] {key}", value, self._CHECKS[key])

    def get(self, key: str) -> Knob:
        return self.knobs.get(key, self.DEFAULTS[key])

    def to_json(self) -> dict:
        return {k: self.knobs[k].to_json() for k in sorted(self.knobs)}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(self.knobs.items()))})"


class KernelPolicy(_KnobSet):
    """Kernel choices per op family: ``matmul``, ``conv``, ``attention``. Each is a choice (mode prefer), a
    ``Knob(choice, mode)`` or ``{"choice": ..., "mode": ...}``; unset means ``engine`` (the engine's own kernel)."""

    SECTION = "kernel"
    FIELDS = tuple(KERNEL_CHOICES)
    _CHECKS = {k: _one_of(v) for k, v in KERNEL_CHOICES.items()}
    DEFAULTS = {k: Knob("engine", "prefer") for k in KERNEL_CHOICES}


class ExecutionPolicy(_KnobSet):
    """How the graph executes: ``precision`` (fp32 | tf32 | fp16 | bf16 | int8), ``static_shape`` (bool),
    ``threads`` (0 = engine default), ``memory`` (default | low). Same knob forms as KernelPolicy. An unset
    precision means the target's default (fp32 on CPUs, fp16 on NPUs)."""

    SECTION = "execution"
    FIELDS = ("precision", "static_shape", "threads", "memory")
    _CHECKS = {"precision": _one_of(PRECISIONS), "static_shape": _is_bool, "threads": _threads,
               "memory": _one_of(MEMORY_CHOICES)}
    DEFAULTS = {"precision": Knob("fp32", "prefer"), "static_shape": Knob(False, "prefer"),
                "threads": Knob(0, "prefer"), "memory": Knob("default", "prefer")}


def _parse_shape(where: str, value: Any) -> list[int]:
    if isinstance(value, str) and _SHAPE_TEXT.match(value):
        return [int(d) for d in value.replace(" ", "").split("x")]
    if isinstance(value, (list, tuple)) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                 for d in value):
        return [int(d) for d in value]
    raise PolicyError(f"{where} = {_fmt(value)}: a shape is \"1x3x640x640\" or [1, 3, 640, 640] (integers >= 0)")


def _tolerance(where: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or set(value) - {"rtol", "atol"} or not value:
        raise PolicyError(f"{where} = {_fmt(value)}: use {{ rtol = 1e-2, atol = 1e-3 }}")
    out = {}
    for key in ("rtol", "atol"):
        if key in value:
            v = value[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise PolicyError(f"{where}.{key} = {_fmt(v)}: must be a finite number >= 0")
            out[key] = float(v)
    return out


@dataclass
class Policy:
    """A whole policy: kernel and execution knobs, tolerances per precision, input shapes to bind, per-node
    precision overrides (``{"node name": "fp32"}``), ops kept in fp32 on top of the built-in list, and int8
    quantisation settings. ``to_json()`` is canonical (what bundles and plans record)."""

    kernel: KernelPolicy = field(default_factory=KernelPolicy)
    execution: ExecutionPolicy = field(default_factory=ExecutionPolicy)
    tolerance: dict[str, dict[str, float]] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    keep_fp32_ops: list[str] = field(default_factory=list)
    quantization: dict[str, Any] = field(default_factory=dict)

    SECTIONS = ("kernel", "execution", "tolerance", "shapes", "nodes", "precision", "quantization")
    QUANT_KEYS = {"per_channel": bool, "method": ("minmax", "entropy", "percentile")}

    def __post_init__(self) -> None:
        for key, value in list(self.tolerance.items()):
            if key not in PRECISIONS:
                raise PolicyError(f"[tolerance] {key}: not one of {', '.join(PRECISIONS)}")
            self.tolerance[key] = _tolerance(f"[tolerance] {key}", value)
        self.shapes = {str(k): _parse_shape(f"[shapes] {k}", v) for k, v in self.shapes.items()}
        for name, precision in self.nodes.items():
            if precision not in PRECISIONS:
                raise PolicyError(f"[nodes] \"{name}\" = {_fmt(precision)}: not one of {', '.join(PRECISIONS)}")
        if not all(isinstance(op, str) and op for op in self.keep_fp32_ops):
            raise PolicyError(f"[precision] keep_fp32_ops = {self.keep_fp32_ops!r}: must be a list of op type names")
        for key, value in self.quantization.items():
            rule = self.QUANT_KEYS.get(key)
            if rule is None:
                raise PolicyError(f"[quantization] {key}: unknown key; known: {', '.join(self.QUANT_KEYS)}")
            if rule is bool and not isinstance(value, bool):
                raise PolicyError(f"[quantization] {key} = {_fmt(value)}: must be true or false")
            if isinstance(rule, tuple) and value not in rule:
                raise PolicyError(f"[quantization] {key} = {_fmt(value)}: not one of {', '.join(rule)}")

    def tolerance_for(self, precision: str) -> dict[str, float]:
        return {**DEFAULT_TOLERANCES[precision], **self.tolerance.get(precision, {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "policy") -> "Policy":
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: a policy is a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.SECTIONS))
        if unknown:
            raise PolicyError(f"{source}: unknown section(s) {unknown}; known: {', '.join(cls.SECTIONS)}")

        def table(name: str) -> Mapping:
            value = data.get(name, {})
            if not isinstance(value, Mapping):
                raise PolicyError(f"{source}: [{name}] must be a table, got {_fmt(value)}")
            return value

        precision = table("precision")
        if set(precision) - {"keep_fp32_ops"}:
            raise PolicyError(f"{source}: [precision] unknown key(s) {sorted(set(precision) - {'keep_fp32_ops'})}; "
                              "known: keep_fp32_ops")
        keep = precision.get("keep_fp32_ops", [])
        if not isinstance(keep, list):
            raise PolicyError(f"[precision] keep_fp32_ops = {_fmt(keep)}: must be a list of op type names")
        try:
            return cls(kernel=KernelPolicy(**table("kernel")), execution=ExecutionPolicy(**table("execution")),
                       tolerance=dict(table("tolerance")), shapes=dict(table("shapes")), nodes=dict(table("nodes")),
                       keep_fp32_ops=list(keep), quantization=dict(table("quantization")))
        except PolicyError as err:
            raise PolicyError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str) -> "Policy":
        import tomllib

        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise PolicyError(f"policy file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise PolicyError(f"{path} is not valid TOML: {err}") from None
        return cls.from_dict(data, source=path)

    def to_json(self) -> dict:
        """Canonical content: only what was set (defaults stay implicit so a later default change shows in diffs
        of the resolved plan, not of the policy)."""
        out: dict[str, Any] = {}
        if self.kernel.knobs:
            out["kernel"] = self.kernel.to_json()
        if self.execution.knobs:
            out["execution"] = self.execution.to_json()
        if self.tolerance:
            out["tolerance"] = {k: dict(sorted(v.items())) for k, v in sorted(self.tolerance.items())}
        if self.shapes:
            out["shapes"] = dict(sorted(self.shapes.items()))
        if self.nodes:
            out["nodes"] = dict(sorted(self.nodes.items()))
        if self.keep_fp32_ops:
            out["precision"] = {"keep_fp32_ops": sorted(set(self.keep_fp32_ops))}
        if self.quantization:
            out["quantization"] = dict(sorted(self.quantization.items()))
        return out

    def to_toml(self) -> str:
        """The policy as a TOML file that `from_toml` reads back to an equal policy."""
        lines: list[str] = []

        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, str):
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if isinstance(v, list):
                return "[" + ", ".join(value(x) for x in v) + "]"
            if isinstance(v, dict):
                return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items() if x is not None) + " }"
            return repr(v)

        for section, content in self.to_json().items():
            lines.append(f"[{section}]")
            for key, v in content.items():
                lines.append(f"{value(key) if not re.match(r'^[A-Za-z0-9_-]+$', key) else key} = {value(v)}")
            lines.append("")
        return "\n".join(lines)

    def with_overrides(self, *, precision: str | None = None, shapes: Mapping[str, list[int]] | None = None,
                       static_shape: bool | None = None) -> "Policy":
        """A copy with CLI flags applied (flags win over the file): ``--precision`` keeps the file's mode for
        precision (prefer if none), ``--shape`` adds or replaces shapes."""
        execution = {k: v for k, v in self.execution.knobs.items()}
        if precision is not None:
            execution["precision"] = Knob(precision, execution.get("precision", Knob(None, "prefer")).mode)
        if static_shape is not None:
            execution["static_shape"] = Knob(static_shape, execution.get("static_shape", Knob(None, "prefer")).mode)
        return Policy(kernel=self.kernel, execution=ExecutionPolicy(**execution), tolerance=dict(self.tolerance),
                      shapes={**self.shapes, **{k: list(v) for k, v in (shapes or {}).items()}},
                      nodes=dict(self.nodes), keep_fp32_ops=list(self.keep_fp32_ops),
                      quantization=dict(self.quantization))


__all__ = ["Knob", "KernelPolicy", "ExecutionPolicy", "Policy", "PolicyError", "MODES", "PRECISIONS",
           "KERNEL_CHOICES", "DEFAULT_TOLERANCES"]
