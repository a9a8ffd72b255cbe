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


class PassState:
    """The model being compiled, held either as an ONNX ModelProto or as an onnx-graphsurgeon Graph.

    Passes ask for the form they need (`state.model` or `state.graph`); the conversion happens only on a switch.
    Reading `model` after graph edits exports the graph (the manager does, to check the graph after each pass).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model: onnx.ModelProto | None = model
        self._graph = None
        self.matched: list[str] = []  # node names a pass matched (pattern passes fill it; the record keeps them)

    @property
    def model(self) -> onnx.ModelProto:
        if self._model is None:
            import onnx_graphsurgeon as gs

            self._model = gs.export_onnx(self._graph)
            self._graph = None
        return self._model

    @model.setter
    def model(self, model: onnx.ModelProto) -> None:
        self._model, self._graph = model, None

    @property
    def graph(self):
        """The onnx-graphsurgeon Graph (imported on first use)."""
        if self._graph is None:
            import onnx_graphsurgeon as gs

            self._graph = gs.import_onnx(self._model)
            self._model = None
        return self._graph


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

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.name, "params": self.params, "nodes_before": self.nodes_before,
               "nodes_after": self.nodes_after, "changed": self.changed, "removed": self.removed,
               "removed_count": self.removed_count, "matched": self.matched, "matched_count": self.matched_count}
        if self.max_abs_err is not None:
            out["max_abs_err"] = float(f"{self.max_abs_err:.3g}")
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
    """Runs passes in order. After each pass (that declares `leaves_valid_graph`) the model must pass the ONNX
    checker: a pass that breaks the graph is a bug in xrtc, reported as InternalError naming the passes since the
    last check (rather than a confusing engine error later). The last pass must leave a valid graph.
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
        state = PassState(copy)
        records: list[PassRecord] = []
        unchecked: list[str] = []
        for p in self.passes:
            before = _node_names(state.model.graph)
            state.matched = []
            with self.clock.stage(p.name, log) if self.clock is not None else nullcontext():
                changed = self._apply(p, state)
                after_model = self._check(p, state, unchecked)
            after = _node_names(after_model.graph)
            removed = sorted(set(before) - set(after) - {""})
            matched = sorted(set(state.matched))
            record = PassRecord(p.name, dict(p.params), len(before), len(after), int(changed),
                                removed[:REMOVED_NAMES_CAP], len(removed), matched[:REMOVED_NAMES_CAP], len(matched))
            if self.validator is not None and p.leaves_valid_graph:
                record.max_abs_err = self.validator(p.name, after_model)
            log.debug("%s: %d -> %d nodes, changed %d, removed %d", p.name, len(before), len(after), changed,
                      len(removed))
            records.append(record)
        return state.model, records

    @staticmethod
    def _check(p: Pass, state: PassState, unchecked: list[str]) -> onnx.ModelProto:
        """Exports the model and, if `p` leaves a valid graph, runs the checker; `unchecked` lists the passes since
        the last check (cleared here when the check passes)."""
        model = state.model
        unchecked.append(p.name)
        if p.leaves_valid_graph:
            try:
                onnx.checker.check_model(model)
            except onnx.checker.ValidationError as err:
                raise InternalError(f"pass(es) {', '.join(unchecked)} produced an invalid model "
                                    f"({str(err).splitlines()[0]}). This is a bug in xrtc: please report it "
                                    "with the model") from err
            unchecked.clear()
        return model

    @staticmethod
    def _apply(p: Pass, state: PassState) -> int:
        try:
            return p.apply(state)
        except XrtcError:
            raise
        except Exception as err:  # a pass failing on a valid model is our bug; keep the cause attached
            raise InternalError(f"pass {p.name} failed: {type(err).__name__}: {err}. This is a bug in xrtc: "
                                "please report it with the model") from err
