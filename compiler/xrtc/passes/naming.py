"""`name-nodes`: give every unnamed node a unique, deterministic name."""

from __future__ import annotations

import onnx

from .base import Pass, PassState


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


class NameNodes(Pass):
    """Names unnamed nodes `<op_type>_<n>` (n counts per op type in graph order, skipping names already taken).

    Exporters such as Paddle's leave node names empty; named nodes let pass records list what was removed and let
    diagnostics and engine profiles point at a node. Existing names are never changed.

    changed = number of nodes named.
    """

    name = "name-nodes"
    optional = False  # later stages rely on it: a failure stops the compile
    description = "give unnamed nodes unique deterministic names"
    PARAMS = {}

    def apply(self, state: PassState) -> int:
        model = state.model
        graphs = list(_graphs(model.graph))
        taken = {node.name for g in graphs for node in g.node if node.name}
        counters: dict[str, int] = {}
        named = 0
        for g in graphs:
            for node in g.node:
                if node.name:
                    continue
                while True:
                    n = counters.get(node.op_type, 0)
                    counters[node.op_type] = n + 1
                    candidate = f"{node.op_type}_{n}"
                    if candidate not in taken:
                        break
                node.name = candidate
                taken.add(candidate)
                named += 1
        return named
