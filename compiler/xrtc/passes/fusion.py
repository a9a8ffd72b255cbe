"""Pattern passes on onnx-graphsurgeon graphs: identity elimination, Conv+BatchNormalization folding, MatMul+Add to
Gemm. Each matches only what it can rewrite exactly (constant weights, single consumers, known ranks) and leaves the
rest alone; the matched node names go into the pass record (`PassState.matched`).

Both CPU engines fuse these patterns internally too; doing it in the graph matters for what comes after: int8
quantisation must see the folded weights (a BatchNormalization after a quantised Conv would rescale quantised
values), and the per-node plan and decision log describe the graph the engines actually get.
"""

from __future__ import annotations

import numpy as np

from .base import Pass, PassState


def _const(tensor):
    import onnx_graphsurgeon as gs

    return tensor.values if isinstance(tensor, gs.Constant) else None


def _graph_outputs(graph) -> set[str]:
    return {t.name for t in graph.outputs}


def _detach(state: PassState, matched, *nodes) -> None:
    """Disconnects `nodes` (the graph's cleanup then drops them) and records `matched` in the pass record."""
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()
    state.matched.append(matched.name)


class EliminateIdentity(Pass):
    """Removes `Identity` nodes by pointing their consumers at their input. An Identity whose output is a graph output
    and whose input is a graph input stays (the output name is part of the interface and must keep a producer).

    changed = number of Identity nodes removed.
    """

    name = "eliminate-identity"
    description = "remove Identity nodes (consumers read the Identity's input)"

    def apply(self, state: PassState) -> int:
        graph = state.graph
        outputs = _graph_outputs(graph)
        inputs = {t.name for t in graph.inputs}
        removed = 0
        for node in list(graph.nodes):
            if node.op != "Identity" or len(node.inputs) != 1 or len(node.outputs) != 1:
                continue
            src, dst = node.inputs[0], node.outputs[0]
            if dst.name in outputs:
                if src.name in inputs or src.name in outputs or _const(src) is not None or not src.inputs:
                    continue
                # The producer now writes the graph output directly; other readers of `src` read it there.
                producer = src.inputs[0]
                producer.outputs[producer.outputs.index(src)] = dst
                for consumer in list(src.outputs):
                    if consumer is not node:
                        consumer.inputs[consumer.inputs.index(src)] = dst
            else:
                for consumer in list(dst.outputs):
                    for i, t in enumerate(consumer.inputs):
                        if t is dst:
                            consumer.inputs[i] = src
            _detach(state, node, node)
            removed += 1
        graph.cleanup(remove_unused_graph_inputs=False)
        return removed


class FoldBatchNorm(Pass):
    """Folds an inference-mode `BatchNormalization` into the `Conv` that feeds it (constant weights, the Conv's output
    read only by the BatchNormalization): W' = W * s, B' = (B - mean) * s + beta with s = scale / sqrt(var + eps),
    computed in float64 and stored in the weights' dtype.

    changed = number of BatchNormalization nodes folded.
    """

    name = "fold-batchnorm"
    description = "fold BatchNormalization into the preceding Conv (constant weights only)"

    def apply(self, state: PassState) -> int:
        import onnx_graphsurgeon as gs

        graph = state.graph
        outputs = _graph_outputs(graph)
        folded = 0
        for bn in list(graph.nodes):
            if bn.op != "BatchNormalization" or len(bn.outputs) != 1 or len(bn.inputs) != 5:
                continue
            x = bn.inputs[0]
            if len(x.inputs) != 1 or len(x.outputs) != 1 or x.name in outputs:
                continue
            conv = x.inputs[0]
            if conv.op != "Conv" or len(conv.inputs) < 2:
                continue
            weight = _const(conv.inputs[1])
            params = [_const(t) for t in bn.inputs[1:]]
            bias = _const(conv.inputs[2]) if len(conv.inputs) > 2 else np.zeros(0)
            if weight is None or any(p is None for p in params) or bias is None or weight.dtype.kind != "f":
                continue
            scale, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
            channels = weight.shape[0]
            if any(p.size != channels for p in (scale, beta, mean, var)) or bias.size not in (0, channels):
                continue
            eps = float(bn.attrs.get("epsilon", 1e-5))
            s = scale / np.sqrt(var + eps)
            new_w = (weight.astype(np.float64) * s.reshape([-1] + [1] * (weight.ndim - 1))).astype(weight.dtype)
            b = bias.astype(np.float64) if bias.size else np.zeros(channels)
            new_b = ((b - mean) * s + beta).astype(weight.dtype)
            conv.inputs[1] = gs.Constant(f"{conv.name}.folded_weight", new_w)
            bias_tensor = gs.Constant(f"{conv.name}.folded_bias", new_b)
            if len(conv.inputs) > 2:
                conv.inputs[2] = bias_tensor
            else:
                conv.inputs.append(bias_tensor)
            conv.outputs[0] = bn.outputs[0]
            _detach(state, bn, bn)
            folded += 1
        graph.cleanup(remove_unused_graph_inputs=False)
        return folded


class FuseMatMulAdd(Pass):
    """Rewrites `MatMul(A, W) + b` as `Gemm(A, W, b)` when A is 2-D (from inferred shapes), W a constant 2-D matrix,
    b a constant of shape [N] or [1, N], and the MatMul's output is read only by the Add.

    changed = number of MatMul+Add pairs fused.
    """

    name = "fuse-matmul-add"
    description = "fuse MatMul + Add (2-D, constant weight and bias) into Gemm"

    def apply(self, state: PassState) -> int:
        import onnx_graphsurgeon as gs

        graph = state.graph
        outputs = _graph_outputs(graph)
        fused = 0
        for mm in list(graph.nodes):
            if mm.op != "MatMul" or len(mm.inputs) != 2 or len(mm.outputs) != 1:
                continue
            a, y = mm.inputs[0], mm.outputs[0]
            w = _const(mm.inputs[1])
            if w is None or w.ndim != 2 or a.shape is None or len(a.shape) != 2 or w.dtype.kind != "f":
                continue
            if len(y.outputs) != 1 or y.name in outputs or y.outputs[0].op != "Add":
                continue
            add = y.outputs[0]
            other = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
            b = _const(other)
            if b is None or b.dtype != w.dtype or b.shape not in ((w.shape[1],), (1, w.shape[1])):
                continue
            gemm = gs.Node("Gemm", name=f"{mm.name}.gemm", inputs=[a, mm.inputs[1], other],
                           outputs=[add.outputs[0]])
            graph.nodes.append(gemm)
            _detach(state, mm, mm, add)
            fused += 1
        if fused:
            graph.cleanup(remove_unused_graph_inputs=False)
            graph.toposort()
        return fused
