"""Graph clean-up passes built on onnx-graphsurgeon: fold constants, drop dead nodes, sort topologically."""

from __future__ import annotations

import logging

from .base import Pass, PassState

log = logging.getLogger("xrtc.passes")


def _variables_produced(graph) -> set[str]:
    """Names of tensors computed by nodes (graph inputs excluded), over the graph and its subgraphs."""
    import onnx_graphsurgeon as gs

    names: set[str] = set()
    graphs = [graph, *graph.subgraphs(recursive=True)]
    for g in graphs:
        for node in g.nodes:
            names.update(t.name for t in node.outputs if isinstance(t, gs.Variable))
    return names


def _constants(graph) -> set[str]:
    import onnx_graphsurgeon as gs

    names: set[str] = set()
    for g in [graph, *graph.subgraphs(recursive=True)]:
        names.update(name for name, t in g.tensors().items() if isinstance(t, gs.Constant))
    return names


class FoldConstants(Pass):
    """Evaluates every subgraph whose inputs are all constant (with ONNX Runtime, through graphsurgeon) and
    replaces its outputs by constants. The folded nodes stay until `eliminate-dead-nodes` removes them.

    changed = number of node outputs replaced by constants.

    NOTE: `flatten_subgraphs` is off: graphsurgeon 0.6.1 inlines an `If` with a constant condition but leaves
    dangling references to its second output (silero_vad_16k_op15 breaks: "Node input '/model/decoder/If_1_output_1'
    is not a graph input, initializer, or output of a previous node"). No size threshold: ONNX Runtime's own
    optimiser folds the same constants anyway, so a threshold here would not make the bundle smaller.
    """

    name = "fold-constants"
    leaves_valid_graph = False  # folded `Constant` nodes are left without outputs until eliminate-dead-nodes
    description = "fold constant subgraphs into initializers (onnx-graphsurgeon fold_constants)"
    PARAMS = {
        # Off: onnx-graphsurgeon 0.6.1's fold_shape ignores Shape's opset-15 start/end attributes and folds the whole
        # shape (silently wrong numbers: 142 ONNX node-suite cases). ONNX Runtime's offline optimiser folds Shape
        # correctly for its variant, and OpenVINO does for its own.
        "fold_shapes": (bool, False, "fold Shape nodes whose input shape is static (graphsurgeon; see the comment)"),
        "flatten_subgraphs": (bool, False, "inline If nodes with constant conditions (off: see NOTE)"),
        "size_threshold": (int, None, "largest tensor, in bytes, to fold (None: no limit)"),
    }

    def apply(self, state: PassState) -> int:
        graph = state.graph
        variables = _variables_produced(graph)
        graph.fold_constants(fold_shapes=self.params["fold_shapes"],
                             flatten_subgraphs=self.params["flatten_subgraphs"],
                             size_threshold=self.params["size_threshold"], error_ok=True)
        return len(variables & _constants(graph))


class EliminateDeadNodes(Pass):
    """Removes nodes and tensors that do not contribute to any graph output (graphsurgeon `cleanup`). Graph
    inputs are kept even when unused: they are part of the model's interface.

    changed = number of nodes removed.
    """

    name = "eliminate-dead-nodes"
    description = "remove nodes that feed no graph output (onnx-graphsurgeon cleanup)"
    PARAMS = {
        "remove_unused_node_outputs": (bool, False, "also drop unused outputs of kept nodes"),
    }

    def apply(self, state: PassState) -> int:
        graph = state.graph
        before = sum(len(g.nodes) for g in [graph, *graph.subgraphs(recursive=True)])
        graph.cleanup(remove_unused_node_outputs=self.params["remove_unused_node_outputs"],
                      remove_unused_graph_inputs=False)
        return before - sum(len(g.nodes) for g in [graph, *graph.subgraphs(recursive=True)])


class SortTopologically(Pass):
    """Sorts nodes so every node comes after its producers (graphsurgeon `toposort`); required by the ONNX spec and
    by the engines, and run last because earlier edits may leave nodes out of order.

    changed = number of nodes whose position changed.
    """

    name = "sort-topologically"
    description = "order nodes topologically (onnx-graphsurgeon toposort)"
    PARAMS = {}

    def apply(self, state: PassState) -> int:
        graph = state.graph
        before = [id(n) for n in graph.nodes]
        graph.toposort()
        return sum(1 for a, b in zip(before, [id(n) for n in graph.nodes]) if a != b)
