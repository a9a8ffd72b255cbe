"""The pass manager: runs named passes in order, checks the graph after each, and records what each changed.

A pass has a stable name (verb-object, e.g. `fold-constants`; never its class name), declared parameters
(JSON-serialisable, recorded in the bundle so a compile can be reproduced) and a `run` that edits the graph and
returns counts. The record of every pass goes into the manifest's `provenance.passes`, so it must be
deterministic: counts and sorted, capped name lists only, no timings.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from ..errors import InternalError, XrtcError

log = logging.getLogger("xrtc.passes")

REMOVED_NAMES_CAP = 20  # removed node names kept per pass record (the count is always exact)


def _graph_io(graph) -> list:
    """The inputs and outputs of `graph` and of every subgraph (If/Loop/Scan bodies), depth-first."""
    out, stack = [], [graph]
    while stack:
        g = stack.pop()
        out += list(g.input) + list(g.output)
        for node in g.node:
            for attr in node.attribute:
                stack += ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
    return out


class PassState:
    """The model being compiled, held either as an ONNX ModelProto or as an onnx-graphsurgeon Graph.

    Passes ask for the form they need (`state.model` or `state.graph`); the conversion happens only on a switch.
    Reading `model` after graph edits exports the graph (the manager does, to check the graph after each pass).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model: onnx.ModelProto | None = model
        self._graph = None
        self.matched: list[str] = []  # node names a pass matched (pattern passes fill it; the record keeps them)
        # Graph inputs/outputs that are sequences, maps or optionals, by name: onnx-graphsurgeon round-trips only
        # tensors (it writes a map as a tensor, and fails on an optional), so they cross it as placeholder tensors and get their
        # type back on export.
        self._io_types: dict[str, onnx.TypeProto] = {}

    @property
    def model(self) -> onnx.ModelProto:
        if self._model is None:
            import onnx_graphsurgeon as gs

            self._model = gs.export_onnx(self._graph)
            self._graph = None
            for vi in _graph_io(self._model.graph):
                if vi.name in self._io_types:
                    vi.type.CopyFrom(self._io_types[vi.name])
        return self._model

    @model.setter
    def model(self, model: onnx.ModelProto) -> None:
        self._model, self._graph = model, None

    @property
    def graph(self):
        """The onnx-graphsurgeon Graph (imported on first use)."""
        if self._graph is None:
            import onnx_graphsurgeon as gs

            _drop_io_value_info(self._model.graph)
            for vi in _graph_io(self._model.graph):
                if vi.type.WhichOneof("value") not in (None, "tensor_type"):
                    self._io_types[vi.name] = onnx.TypeProto()
                    self._io_types[vi.name].CopyFrom(vi.type)
                    vi.type.CopyFrom(onnx.helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None))
            self._graph = gs.import_onnx(self._model)
            self._model = None
        return self._graph


def _drop_io_value_info(graph: onnx.GraphProto) -> None:
    """Removes `value_info` entries that repeat a graph input's or output's name (old exporters and quantisers write
    them, often with a type but no shape). They are redundant: graph inputs and outputs declare their own types.
    Why: onnx-graphsurgeon 0.6.1 imports `value_info` before the graph outputs and then keeps the tensor it already
    has, so an output declared `float32[1, 4, 8, 8]` came back shapeless after any graphsurgeon pass, and the model
    failed the checker ("Field 'shape' of 'type' is required but missing")."""
    io_names = {v.name for v in graph.input} | {v.name for v in graph.output}
    kept = [v for v in graph.value_info if v.name not in io_names]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


@dataclass
class PassRecord:
    """What one pass did; `to_json()` is what the manifest stores."""

    name: str
    params: dict[str, Any]
    nodes_before: int
    nodes_after: int
    changed: int  # the pass's own count of edits (meaning documented per pass)
    removed: list[str] = field(default_factory=list)  # sorted, capped at REMOVED_NAMES_CAP
    removed_count: int = 0
    matched: list[str] = field(default_factory=list)  # sorted, capped at REMOVED_NAMES_CAP
    matched_count: int = 0
    max_abs_err: float | None = None  # with --validate-passes: the error after this pass vs the source model
    rolled_back: str = ""  # why the pass's edits were undone (its output failed the checker or --validate-passes)

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "params": self.params, "nodes_before": self.nodes_before,
               "nodes_after": self.nodes_after, "changed": self.changed, "removed": self.removed,
               "removed_count": self.removed_count, "matched": self.matched, "matched_count": self.matched_count}
        if self.max_abs_err is not None:
            out["max_abs_err"] = float(f"{self.max_abs_err:.3g}")
        if self.rolled_back:
            out["rolled_back"] = self.rolled_back
        return out


class Pass:
    """Base class. Subclasses set `name`, `description`, `PARAMS` and implement `apply`.

    `PARAMS` declares every parameter in one place: {name: (type, default, description)}. Instances take
    overrides as keyword arguments, checked against it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    target_specific: ClassVar[bool] = False
    # False when the pass leaves work for a later one (fold-constants leaves emptied nodes for
    # eliminate-dead-nodes): the manager then checks the graph only after the next pass that leaves it valid.
    leaves_valid_graph: ClassVar[bool] = True
    # True for optimisations the compile is correct without: when their output fails the checker (or
    # --validate-passes), the manager undoes them, records why, and goes on. False for passes later stages rely on
    # (node names, bound shapes, precision conversion): their failure stops the compile.
    optional: ClassVar[bool] = True
    PARAMS: ClassVar[dict[str, tuple[type, Any, str]]] = {}

    def __init__(self, **overrides: Any) -> None:
        unknown = sorted(set(overrides) - set(self.PARAMS))
        if unknown:
            raise XrtcError(f"pass {self.name}: unknown parameter(s) {unknown}; known: {sorted(self.PARAMS)}")
        self.params: dict[str, Any] = {}
        for key, (kind, default, _doc) in self.PARAMS.items():
            value = overrides.get(key, default)
            if value is not None and not isinstance(value, kind):
                raise XrtcError(f"pass {self.name}: parameter {key} must be {kind.__name__}, got {value!r}")
            self.params[key] = value

    def apply(self, state: PassState) -> int:
        """Edits `state` in place; returns the pass's count of edits."""
        raise NotImplementedError


def _node_names(graph: onnx.GraphProto, prefix: str = "") -> list[str]:
    """Node names of a graph and its subgraphs (subgraph nodes prefixed by their parent's name); unnamed nodes
    appear as "" (the name-nodes pass runs first, so later passes see none)."""
    names = []
    for node in graph.node:
        names.append(prefix + node.name if node.name else "")
        for attr in node.attribute:
            subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
            for sub in subgraphs:
                names.extend(_node_names(sub, prefix=f"{prefix}{node.name}/"))
    return names


class PassManager:
    """Runs passes in order, as transactions. After each pass that declares `leaves_valid_graph` the model must pass
    the ONNX checker (with strict shape inference, as the engines' loaders would, when the input model passes it) and,
    with a validator, the numeric check. A group of passes (those since the last check) that fails it is undone: the
    model goes back to the last checked state, each pass's record says why (`rolled_back`), and the next pass runs.
    A failing group with a non-optional pass (`Pass.optional`) stops the compile instead: InternalError for the
    checker, the validator's PassValidationError for numerics. The last pass must leave a valid graph.
    """

    def __init__(self, passes: list[Pass], clock=None, validator=None) -> None:
        """`validator`, when given, is called as `validator(pass_name, model)` after every pass that leaves a valid
        graph; it returns the measured error (recorded) or raises PassValidationError (--validate-passes)."""
        names = [p.name for p in passes]
        if len(set(names)) != len(names) or not all(names):
            raise InternalError(f"pass names must be non-empty and unique: {names}")
        if passes and not passes[-1].leaves_valid_graph:
            raise InternalError(f"the last pass ({names[-1]}) must leave a valid graph")
        self.passes = passes
        self.clock = clock
        self.validator = validator

    def run(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[PassRecord]]:
        """Runs the passes on a copy: `model` is never modified (passes and the tools they wrap edit in place, and
        callers keep using their model: the source as the accuracy reference, the fp32 graph for other variants)."""
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        full_check = any(p.optional for p in self.passes) and _passes_full_check(copy)
        checked = onnx.ModelProto()  # the last state that passed the checks: what a rollback returns to
        checked.CopyFrom(copy)
        state = PassState(copy)
        records: list[PassRecord] = []
        group: list[tuple[Pass, PassRecord]] = []  # passes since the last check
        for p in self.passes:
            before = _node_names(state.model.graph)
            state.matched = []
            with self.clock.stage(p.name, log) if self.clock is not None else nullcontext():
                try:
                    changed, error = self._apply(p, state), ""
                except InternalError as err:  # the pass itself failed on a valid model
                    if not p.optional:
                        raise
                    changed, error = 0, str(err).split(". This is a bug")[0]
                after_model = state.model
                after = _node_names(after_model.graph)
                removed = sorted(set(before) - set(after) - {""})
                matched = sorted(set(state.matched))
                record = PassRecord(p.name, dict(p.params), len(before), len(after), int(changed),
                                    removed[:REMOVED_NAMES_CAP], len(removed), matched[:REMOVED_NAMES_CAP],
                                    len(matched))
                records.append(record)
                group.append((p, record))
                if not error and p.leaves_valid_graph:
                    try:
                        self._check(group, after_model, full_check)
                        if self.validator is not None:
                            self._validate(group, record, after_model)
                    except _Rejected as err:
                        error = str(err)
                if error:
                    self._roll_back(group, error)
                    state.model = _copy(checked)
                    group = []
                elif p.leaves_valid_graph:
                    checked = _copy(after_model)
                    group = []
            log.debug("%s: %d -> %d nodes, changed %d, removed %d%s", p.name, len(before), len(after), changed,
                      len(removed), f"; rolled back: {error}" if error else "")
        return state.model, records

    @staticmethod
    def _check(group: list[tuple[Pass, PassRecord]], model: onnx.ModelProto, full_check: bool) -> None:
        """Raises _Rejected (the checker's first line) unless `model` passes the checker. A group with a required
        pass is held to the plain checker only (the rule before passes were transactions) and raises InternalError
        instead: a bug in xrtc, the compile cannot go on without that pass."""
        required = not all(p.optional for p, _ in group)
        try:
            onnx.checker.check_model(model, full_check=full_check and not required)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            names = ", ".join(p.name for p, _ in group)
            if required:
                raise InternalError(f"pass(es) {names} produced an invalid model ({first}). This is a bug in xrtc: "
                                    "please report it with the model") from err
            raise _Rejected(f"output fails the ONNX checker: {first[:300]}") from err

    def _validate(self, group: list[tuple[Pass, PassRecord]], record: PassRecord, model: onnx.ModelProto) -> None:
        """--validate-passes: records the error when the numerics hold; else raises _Rejected saying why. A group
        with a required pass re-raises the validator's PassValidationError."""
        from ..errors import PassValidationError

        try:
            record.max_abs_err = self.validator(record.name, model)
        except PassValidationError as err:
            if not all(p.optional for p, _ in group):
                raise
            raise _Rejected(str(err)[:400]) from err

    @staticmethod
    def _roll_back(group: list[tuple[Pass, PassRecord]], error: str) -> None:
        names = ", ".join(p.name for p, _ in group)
        for _p, record in group:
            record.rolled_back = error if len(group) == 1 else f"{error} (undone with {names})"
            record.max_abs_err = None
        log.warning("pass(es) %s rolled back, the compile goes on without them: %s", names, error)

    @staticmethod
    def _apply(p: Pass, state: PassState) -> int:
        try:
            return p.apply(state)
        except XrtcError:
            raise
        except Exception as err:  # a pass failing on a valid model is our bug; keep the cause attached
            raise InternalError(f"pass {p.name} failed: {type(err).__name__}: {err}. This is a bug in xrtc: "
                                "please report it with the model") from err


class _Rejected(Exception):
    """A group of optional passes left a graph the checks reject; the message is the reason their records keep
    (`rolled_back`). Caught in PassManager.run, which rolls the group back."""


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _passes_full_check(model: onnx.ModelProto) -> bool:
    """Whether the input passes the full check (checker + strict shape inference); passes are then held to it.
    A model that does not (custom domains, shapes ONNX cannot infer) is held to the plain checker, which it passed
    at load: a pass must not be blamed for what it was given."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
