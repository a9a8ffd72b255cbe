"""ONNX graph -> cuda program (buffers + ordered GEMM and Triton-kernel steps), at static shapes.

1. Probe: ONNX Runtime CPU runs the graph once at the bound shapes for the values of the shape arithmetic
   (Shape/Gather/Concat/... on static data), which is folded away; ONNX shape inference, with those values folded
   in, gives every other tensor's shape and dtype (fallback: the full probe, every tensor exposed). Nothing from the
   probe's data path is kept. Data-movement nodes (Reshape, Transpose, GatherND with static indices, ...) become
   strided views, found by running the node on element offsets (an "index map") where no simple rule applies.
2. Match, in graph order: attention (MatMul(Q, K^T) [* or / scale] [+ mask] -> Softmax -> MatMul(P, V), with the head
   reshapes/transposes as free views and a scalar Mul on Q or K folded into the scale); LayerNormalization (the op, or
   ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add as torch exports it) with the elementwise producers of its input
   (residual Add, embedding Gathers) fused in front; GEMM = MatMul/Gemm with a constant weight, + bias Add, + Relu or
   Gelu (op or erf form) as the cuBLASLt epilogue (matmul = cublas: a plain cuBLAS GEMM, then the bias and activation
   in an elementwise Triton kernel; matmul = triton: a generated Triton GEMM); everything else elementwise is fused
   into lazy expressions that are written once, where a consumer needs memory. Reshape/Unsqueeze/Squeeze/Flatten/Transpose/Expand/Slice are views.
3. Any other node: UnsupportedModelError naming the nodes.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...errors import UnsupportedModelError, UsageError
from . import codegen
from .ir import Buffer, GemmStep, KernelStep, Lazy, View, expr_leaves, has_gather, map_leaves

log = logging.getLogger("xrtc.targets.cuda")

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Relu", "Erf",
               "Sigmoid", "Tanh", "Gelu", "Where", "Max", "Min", "Cast", "CastLike", "Equal", "Less", "Greater",
               "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Clip", "Floor", "Ceil"}
VIEWS = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Expand", "Identity", "Dropout", "Slice"}
# Ops whose outputs are static when their inputs are (shape arithmetic): evaluated by the probe, never run.
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
RUN_DTYPE = {"fp16": "float16", "fp32": "float32", "tf32": "float32"}
_NP = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
       onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "float64",
       onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8"}
ORT_CUDA_LATER = ("graphs with nodes outside the cuda target's patterns run on the ONNX Runtime CUDA variant "
                  "(cuda-onnxruntime) built beside it")


class Program:
    """Buffers and steps; `values` maps ONNX tensor names to a View or a Lazy while lowering."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.run_dtype = RUN_DTYPE[precision]
        self.buffers: list[Buffer] = []
        self.steps: list = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.notes: list[str] = []

    def add(self, buf: Buffer) -> int:
        self.buffers.append(buf)
        return len(self.buffers) - 1

    def dtypes(self) -> dict:
        return {i: b.dtype for i, b in enumerate(self.buffers)}


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _probe(model: onnx.ModelProto, feeds: dict) -> dict:
    """name -> ndarray for every tensor of the graph (ONNX Runtime CPU, all outputs exposed)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for node in m.graph.node:
        for out in node.output:
            if out and out not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=out))
                have.add(out)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _static_names(model: onnx.ModelProto, static: set) -> set:
    """Tensors whose values the bound input shapes and the constants decide (shape arithmetic and constant folds)."""
    static = set(static)
    for node in model.graph.node:
        if node.op_type in _NO_FOLD:
            continue
        if node.op_type in ("Shape", "Size", "Constant") or all((not n) or n in static for n in node.input):
            static.update(o for o in node.output if o)
    return static


def _bound(model: onnx.ModelProto, feeds: dict, vals: dict, drop: set) -> onnx.ModelProto:
    """A copy with the input dims bound to the feeds' shapes, `vals` as initializers and the nodes in `drop` (by
    index) removed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    keep = [n for i, n in enumerate(m.graph.node) if i not in drop]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    have = {i.name for i in m.graph.initializer}
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in vals.items() if k not in have)
    for inp in m.graph.input:
        if inp.name in feeds:
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, feeds[inp.name].shape):
                d.Clear()
                d.dim_value = int(size)
    del m.graph.value_info[:]
    return m


def _known_shapes(model: onnx.ModelProto) -> dict | None:
    """name -> (shape, ONNX elem type) for every tensor ONNX shape inference fully resolves; None if it fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - the caller falls back to the full probe
        return None
    out = {}
    for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = v.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            out[v.name] = (tuple(int(d.dim_value) for d in t.shape.dim), t.elem_type)
    return out


def _probe_lean(model: onnx.ModelProto, feeds: dict, static: set) -> dict:
    """Values of the static tensors and every other tensor's shape and dtype (as zero-stride arrays that hold no
    data), without running the model's data path: ONNX shape inference gives the shapes Shape/Size nodes read, ORT
    runs only the static nodes after that, and shape inference with their values folded in gives the rest. Falls
    back to the full probe (every tensor exposed) where inference leaves a shape open."""
    import onnxruntime as ort

    nodes = list(model.graph.node)
    first = _known_shapes(_bound(model, feeds, {}, set()))
    if first is None:
        return _probe(model, feeds)
    vals: dict = {}
    for n in nodes:  # Shape / Size of data-path tensors: from the inferred shapes
        if n.op_type in ("Shape", "Size") and n.input[0] not in static:
            if n.input[0] not in first:
                return _probe(model, feeds)
            shape = np.array(first[n.input[0]][0], np.int64)
            if n.op_type == "Size":
                vals[n.output[0]] = np.array(int(np.prod(shape)), np.int64)
            else:
                start, end = _attr(n, "start", 0), _attr(n, "end", None)
                vals[n.output[0]] = shape[start:end]
    rest = [i for i, n in enumerate(nodes) if all((not o) or o in static for o in n.output)
            and not all((not o) or o in vals for o in n.output)]
    wanted = [o for i in rest for o in nodes[i].output if o]
    if wanted:
        sub = _bound(model, feeds, vals, {i for i in range(len(nodes)) if i not in rest})
        del sub.graph.output[:]
        sub.graph.output.extend(onnx.ValueInfoProto(name=o) for o in wanted)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
        used = {i.name for i in sess.get_inputs()}
        vals.update(zip([o.name for o in sess.get_outputs()],
                        sess.run(None, {k: v for k, v in feeds.items() if k in used})))
    folded = {i for i, n in enumerate(nodes) if all((not o) or o in vals for o in n.output)}
    known = _known_shapes(_bound(model, feeds, vals, folded))
    if known is None:
        return _probe(model, feeds)
    for n in nodes:
        for name in n.output:
            if not name or name in vals:
                continue
            if name not in known or known[name][1] not in _NP:
                return _probe(model, feeds)
            vals[name] = np.broadcast_to(np.zeros((), _NP[known[name][1]]), known[name][0])
    return vals


def _probe_feeds(model: onnx.ModelProto) -> dict:
    from ...model_io import model_io

    feeds = {}
    unbound = []
    for spec in model_io(model)[0]:
        shape = spec["shape"]
        if shape is None or any(not isinstance(d, int) for d in shape):
            unbound.append(f"{spec['name']}{list(shape) if shape is not None else '[?]'}")
            continue
        dtype = np.dtype(spec["dtype"])
        # zeros: valid indices for any Gather, valid masks; the probe keeps only shapes and shape arithmetic
        feeds[spec["name"]] = np.zeros(shape, dtype) if dtype.kind in "iub" else np.ones(shape, dtype)
    if unbound:
        raise UsageError(f"--target cuda compiles for static shapes (plan version 1), but these inputs have dynamic "
                         f"dims: {', '.join(unbound)}. Bind them with --shape NAME=AxB... (the largest shape you "
                         "will run) or [shapes] in the policy")
    return feeds


def lower_graph(model: onnx.ModelProto, precision: str, gelu_epilogue: bool = True,
                attention: str = "flash", matmul: str = "cublasLt", fuse_siblings: bool = True,
                stand_ins: bool = False) -> Program:
    """The cuda program for `model` (after xrtc's graph passes) at `precision` (fp16 | fp32 | tf32); `attention`:
    flash (online softmax) | math (explicit softmax over all keys at once); `matmul`: cublasLt | triton. With
    `stand_ins`, each cuBLASLt GEMM also gets its Triton twin (GemmStep.stand_in) for the runs before cuBLASLt has
    loaded."""
    return _Lowerer(model, precision, gelu_epilogue, attention, matmul, fuse_siblings, stand_ins).run()


class _Lowerer:
    def __init__(self, model, precision, gelu_epilogue, attention="flash", matmul="cublasLt", fuse_siblings=True,
                 stand_ins=False):
        self.fuse_siblings = fuse_siblings
        self.stand_ins = stand_ins
        self.attention_impl = attention
        self.matmul_impl = matmul
        self.model = model
        self.g = model.graph
        self.prog = Program(precision)
        self.gelu_epilogue = gelu_epilogue
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.feeds = _probe_feeds(model)
        self.static = _static_names(model, set(self.consts))
        self.vals = _probe_lean(model, self.feeds, self.static)
        self.vals.update(self.feeds)
        self.consumers: dict[str, list] = {}
        for node in self.g.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = [o.name for o in self.g.output]
        for name in self.graph_outputs:
            self.consumers.setdefault(name, []).append(None)  # a graph output counts as a consumer
        self.values: dict = {}
        self.done: set[int] = set()
        self.weight_cache: dict = {}
        self.direct_outputs: dict[str, int] = {}  # graph output -> its buffer, written by the kernel computing it

    # ---- helpers -------------------------------------------------------------------------------------------
    def dtype(self, name: str) -> str:
        return str(self.vals[name].dtype) if name in self.vals else str(self.consts[name].dtype)

    def shape(self, name: str) -> tuple:
        return tuple(int(d) for d in (self.vals[name] if name in self.vals else self.consts[name]).shape)

    def const(self, name: str) -> np.ndarray | None:
        if name in self.static:
            return self.consts[name] if name in self.consts else self.vals[name]
        return None

    def scalar(self, name: str):
        c = self.const(name)
        if c is not None and c.size == 1:
            return c.reshape(()).item()
        return None

    def single_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 else None

    def storage_dtype(self, onnx_dtype: str, fp32: bool = False) -> str:
        if codegen.is_float(onnx_dtype):
            if onnx_dtype == "float64":
                raise UnsupportedModelError("--target cuda: float64 tensors are not supported; convert the model "
                                            "to float32")
            return "float32" if fp32 else self.prog.run_dtype
        return onnx_dtype

    def weight(self, name: str, array: np.ndarray | None = None, dtype: str | None = None) -> View:
        """A constant as a weight buffer (run dtype for floats); identical constants share one buffer."""
        arr = self.const(name) if array is None else array
        dt = dtype or self.storage_dtype(str(arr.dtype))
        arr = np.ascontiguousarray(arr.astype(dt))
        key = (dt, arr.shape, arr.tobytes()) if arr.nbytes <= 4096 else (name, dt, arr.shape)
        if key not in self.weight_cache:
            self.weight_cache[key] = self.prog.add(Buffer(name, dt, tuple(arr.shape), "weight", arr))
        return View.whole(self.weight_cache[key], arr.shape)

    def arena(self, name: str, dtype: str, shape) -> int:
        return self.prog.add(Buffer(name, dtype, tuple(int(d) for d in shape), "arena"))

    def expr_of(self, name: str):
        """The value of tensor `name` as an expression (leaf of a view, a lazy expression, or a constant)."""
        c = self.const(name)
        if c is not None:
            # a constant of one repeated value (an all-true mask term folded from a Range comparison) is a scalar:
            # it broadcasts with stride 0, so it never pins an axis a mask could otherwise be collapsed along
            if c.size == 1 or (c.size <= 1 << 16 and bool((c == c.flat[0]).all())):
                return ("const", c.flat[0].item(), str(c.dtype))
            return ("leaf", self.weight(name), str(c.dtype))
        v = self.values[name]
        if isinstance(v, Lazy):
            return v.expr
        return ("leaf", self.materialize(name), self.dtype(name))

    def materialize(self, name: str, fp32: bool = False, dtype: str | None = None,
                    collapse_broadcast: bool = False) -> View:
        """A View holding tensor `name`: lazy expressions are written by an elementwise kernel. With
        `collapse_broadcast`, axes along which every input of the expression is broadcast (stride 0) are written
        once and read back with stride 0: an attention mask expanded from [B, 1, 1, S] to [B, 1, S, S] stays
        [B, 1, 1, S] in memory (S times fewer bytes written, and read by the attention kernel)."""
        c = self.const(name)
        if c is not None:
            return self.weight(name, dtype="float32" if fp32 and codegen.is_float(str(c.dtype)) else None)
        v = self.values[name]
        if isinstance(v, View):
            return v
        if isinstance(v, _OffsetMap):
            raise _Unsupported(f"{name!r} picks elements in an order no strided view expresses (a gather copy is "
                               "not built)")
        shape = v.shape
        out_dtype = dtype or self.storage_dtype(codegen.dtype_of(v.expr), fp32)
        collapsed = _collapse_broadcast(v.expr, shape) if collapse_broadcast else None
        if collapsed is not None:
            expr, stored, axes = collapsed
            buf = self.arena(name, out_dtype, stored)
            self.emit_elementwise(expr, stored, buf, out_dtype, v.nodes)
            whole = View.whole(buf, stored)
            view = View(buf, tuple(shape), tuple(0 if i in axes else st for i, st in enumerate(whole.strides)), 0)
        else:
            buf = self.arena(name, out_dtype, shape)
            self.emit_elementwise(v.expr, shape, buf, out_dtype, v.nodes)
            view = View.whole(buf, shape)
        self.values[name] = view
        return view

    def emit_elementwise(self, expr, shape, buf, out_dtype, nodes, group="elementwise"):
        src, params, grid, warps, cfg = codegen.elementwise(expr, shape, buf, out_dtype, self.prog.dtypes())
        reads = [p for p in params if p != buf]
        self.prog.steps.append(KernelStep(group, src, params, [buf], reads, grid, warps, list(nodes),
                                          config=cfg))

    def contiguous_run(self, name: str) -> View:
        """Tensor `name` as a contiguous, offset-0 view in the run dtype (what a GEMM operand needs)."""
        v = self.materialize(name)
        buf = self.prog.buffers[v.buf]
        if v.is_contiguous() and int(np.prod(v.shape)) == int(np.prod(buf.shape)) and buf.dtype == self.prog.run_dtype:
            return v
        out = self.arena(name + ".copy", self.prog.run_dtype, v.shape)
        self.emit_elementwise(("leaf", v, self.dtype(name)), v.shape, out, self.prog.run_dtype, [],
                              group="copy")
        return View.whole(out, v.shape)

    # ---- main loop -----------------------------------------------------------------------------------------
    def run(self) -> Program:
        prog = self.prog
        for inp in self.g.input:
            if inp.name in self.consts:
                continue
            dt = self.dtype(inp.name)
            if dt == "float64":
                raise UnsupportedModelError(f"--target cuda: input {inp.name!r} is float64; convert the model to "
                                            "float32")
            buf = prog.add(Buffer(inp.name, dt, self.shape(inp.name), "input"))
            prog.inputs.append(buf)
            self.values[inp.name] = View.whole(buf, self.shape(inp.name))
        self.match_attention()
        self.match_layernorm()
        unsupported = []
        for idx, node in enumerate(self.g.node):
            if idx in self.done or all((not o) or o in self.static for o in node.output):
                continue
            try:
                self.lower_node(idx, node)
            except _Unsupported as err:
                unsupported.append(f"{node.name} ({node.op_type}: {err})")
        if unsupported:
            raise UnsupportedModelError(
                f"--target cuda: {len(unsupported)} node(s) outside the cuda target's patterns: "
                f"{'; '.join(unsupported[:12])}{' ...' if len(unsupported) > 12 else ''}. {ORT_CUDA_LATER}")
        for name in self.graph_outputs:
            dt = self.dtype(name)
            if name in self.static:
                raise UnsupportedModelError(f"--target cuda: output {name!r} is a constant of the graph; the cuda "
                                            "target needs outputs computed from inputs")
            if name in self.direct_outputs:  # written by the kernel that computes it (lower_layernorm)
                prog.outputs.append(self.direct_outputs[name])
                continue
            v = self.values[name]
            buf = prog.add(Buffer(name, dt, self.shape(name), "output"))
            expr = v.expr if isinstance(v, Lazy) else ("leaf", v, dt)
            self.emit_elementwise(expr, self.shape(name), buf, dt, v.nodes if isinstance(v, Lazy) else [],
                                  group="output")
            prog.steps[-1].config["computes"] = expr[0] != "leaf"  # an expression, not a copy: never forwarded
            prog.outputs.append(buf)
        self._forward_outputs()
        return prog

    def _forward_outputs(self) -> None:
        """An output copied from an arena buffer that the producing step wrote whole: the producer writes the
        output directly (one launch and one copy fewer). Only when dtypes match and the buffer is read nowhere
        else."""
        prog = self.prog
        for out in prog.outputs:
            step_i = next(i for i, s in enumerate(prog.steps) if isinstance(s, KernelStep) and out in s.writes)
            step = prog.steps[step_i]
            if step.group != "output" or len(step.reads) != 1 or step.config.get("computes"):
                continue
            src = step.reads[0]
            sb, ob = prog.buffers[src], prog.buffers[out]
            if sb.kind != "arena" or sb.dtype != ob.dtype or sb.shape != ob.shape:
                continue
            if f"P{step.params.index(src)} + o," not in step.source:
                continue  # not a plain contiguous copy
            readers = [s for s in prog.steps if s is not step and src in _reads(s)]
            if readers:
                continue
            for s in prog.steps:
                _rename(s, src, out)
            prog.steps.pop(step_i)

    def lower_node(self, idx, node):
        if self.lower_node_matched(idx, node):
            return None
        op = node.op_type
        if op in ("MatMul", "Gemm") and self.lower_gemm(idx, node):
            return
        if op in ELEMENTWISE:
            return self.lower_elementwise(node)
        if op in VIEWS:
            return self.lower_view(node)
        if op == "Gather":
            return self.lower_gather(node)
        if op == "GatherND":
            if any(self.const(n) is None for n in node.input[1:]):
                raise _Unsupported("GatherND with computed indices")
            return self.lower_view(node)
        if op == "Softmax":
            raise _Unsupported("Softmax outside an attention pattern")
        if op == "MatMul":
            raise _Unsupported("MatMul of two computed tensors outside an attention pattern")
        raise _Unsupported("no cuda kernel for this op")

    # ---- elementwise and views -----------------------------------------------------------------------------
    def lower_elementwise(self, node):
        op = node.op_type
        out = node.output[0]
        dt = self.dtype(out)
        args = [self.expr_of(n) for n in node.input if n]
        attrs = ()
        if op == "Pow":
            p = self.scalar(node.input[1])
            if p is None:
                raise _Unsupported("Pow with a computed exponent")
            args, attrs = args[:1], (("exponent", float(p)),)
        elif op == "Gelu":
            attrs = (("approximate", _attr(node, "approximate", b"none").decode()
                      if isinstance(_attr(node, "approximate", b"none"), bytes) else _attr(node, "approximate")),)
        elif op == "Clip":
            lo = self.scalar(node.input[1]) if len(node.input) > 1 and node.input[1] else _attr(node, "min")
            hi = self.scalar(node.input[2]) if len(node.input) > 2 and node.input[2] else _attr(node, "max")
            args, attrs = args[:1], (("min", lo), ("max", hi))
        elif op == "CastLike":
            op, args = "Cast", args[:1]
        expr = ("op", op, tuple(args), attrs, dt)
        self.set_lazy(out, expr, [node.name])

    def set_lazy(self, out, expr, nodes):
        prev_nodes = []
        self.values[out] = Lazy(expr, self.shape(out), nodes + prev_nodes)
        users = self.consumers.get(out, [])
        fused = self.ln_inputs.get(out)
        if fused:  # a LayerNorm reads x twice (decomposed form): one reader
            users = [u for u in users if u not in fused] + ["layernorm"]
        # written once when read by several nodes (recomputing is cheap but duplicates loads); a graph output (None)
        # read by nothing else stays lazy: the output kernel computes it while writing the output (one launch less)
        # an attention mask read only by attention kernels stays lazy: each computes it from the model's input
        # (lower_attention), so no kernel writes it to memory
        if len(users) > 1 and not (out in self.keep_fp32 and all(u is not None and self.index_of(u) in self.done
                                                                 for u in users)):
            # broadcast axes stay stride 0 (a mask shared by every layer)
            self.materialize(out, fp32=out in self.keep_fp32, collapse_broadcast=None not in users)

    def lower_view(self, node):
        op = node.op_type
        src, out = node.input[0], node.output[0]
        shape = self.shape(out)
        v = self.values.get(src)
        if v is None:
            raise _Unsupported("view of an unknown tensor")

        def apply(view: View):
            if op in ("Identity", "Dropout"):
                return view
            if op in ("Reshape", "Unsqueeze", "Squeeze", "Flatten"):
                return view.reshape(shape)
            if op == "Transpose":
                perm = _attr(node, "perm") or list(reversed(range(len(view.shape))))
                return view.transpose(perm)
            if op == "Expand":
                return view.broadcast_to(shape)
            if op == "Slice":
                return self.slice_view(node, view)
            return None

        if isinstance(v, _OffsetMap):
            got = self.index_map(node, v)
            self.values[out] = got
            return
        plain = apply

        def apply(view: View):  # noqa: F811 - the direct view, else the node's index map (when it is affine)
            got = plain(view)
            if got is None and op != "Dropout":
                got = self.index_map(node, view)
                return got if isinstance(got, View) else None
            return got

        if isinstance(v, Lazy):
            if op in ("Identity", "Dropout", "Expand"):
                self.values[out] = Lazy(v.expr, shape, v.nodes + [node.name])
                return
            mapped = map_leaves(v.expr, lambda lv: (lambda b: None if b is None else apply(b))(
                lv.broadcast_to(v.shape)))
            if mapped is not None:
                self.values[out] = Lazy(mapped, shape, v.nodes + [node.name])
                return
            v = self.materialize(src)
        got = plain(v)
        if got is None:
            got = self.index_map(node, v)
            if isinstance(got, _OffsetMap):  # not a strided view by itself; a later view op may make it one
                self.values[out] = got
                return
        if got is None:
            copy = self.contiguous_run(src) if codegen.is_float(self.dtype(src)) else None
            got = apply(copy) if copy is not None else None
            if got is None:
                raise _Unsupported(f"{op} of a strided view that no copy makes contiguous")
        if tuple(got.shape) != shape:
            raise _Unsupported(f"{op}: view shape {got.shape} != inferred {shape}")
        self.values[out] = got

    def index_map(self, node, src):
        """The output of a data-movement node (any op that only picks elements of its first input: Reshape,
        Transpose, GatherND / Gather with static indices, ...) over `src` (a View or an _OffsetMap), found by running
        the node on the element offsets of `src`: a View when the offsets are affine in the output coordinates,
        else an _OffsetMap (which only another data-movement node may consume)."""
        offs = src.offsets if isinstance(src, _OffsetMap) else _view_offsets(src)
        others = []
        for name in node.input[1:]:
            if name and self.const(name) is None:
                raise _Unsupported(f"{node.op_type} with a computed index/shape input {name!r}")
            others.append(self.const(name) if name else None)
        got = _run_node(node, [offs] + others, self._opset())
        if tuple(got.shape) != self.shape(node.output[0]):
            raise _Unsupported(f"{node.op_type}: index map shape {got.shape} != inferred {self.shape(node.output[0])}")
        view = _affine_view(src.buf, got)
        return view if view is not None else _OffsetMap(src.buf, got)

    def slice_view(self, node, view: View):
        if len(node.input) < 3:
            starts, ends, axes, steps = _attr(node, "starts"), _attr(node, "ends"), _attr(node, "axes"), None
        else:
            get = [self.const(n) if n else None for n in node.input[1:5]] + [None] * 4
            if any(g is None for g in get[:2]):
                return None
            starts, ends = get[0].tolist(), get[1].tolist()
            axes = get[2].tolist() if get[2] is not None else None
            steps = get[3].tolist() if get[3] is not None else None
        axes = axes or list(range(len(starts)))
        steps = steps or [1] * len(starts)
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = a % len(view.shape)
            start, stop, step = slice(int(s), int(e), int(st)).indices(view.shape[a])
            view = view.slice(a, start, stop, step)
        return view

    def lower_gather(self, node):
        table = self.const(node.input[0])
        axis = _attr(node, "axis", 0)
        if table is None and self.const(node.input[1]) is not None and self.const(node.input[1]).ndim > 0:
            return self.lower_view(node)  # rows/columns picked by static indices: an index map
        index = self.scalar(node.input[1]) if table is None else None
        if index is not None and self.const(node.input[1]).ndim == 0:  # x[:, i]: a view
            v = self.values.get(node.input[0])
            if isinstance(v, Lazy):
                v = self.materialize(node.input[0])
            ax = axis % len(v.shape)
            i = int(index) % v.shape[ax]
            sl = v.slice(ax, i, i + 1, 1)
            self.values[node.output[0]] = View(sl.buf, sl.shape[:ax] + sl.shape[ax + 1:],
                                               sl.strides[:ax] + sl.strides[ax + 1:], sl.offset)
            return
        if table is None or table.ndim != 2 or axis != 0:
            raise _Unsupported("Gather other than rows of a constant 2-D table (embeddings)")
        ids = self.materialize(node.input[1])
        dt = str(table.dtype)
        expr = ("gather", self.weight(node.input[0]), ("leaf", ids, self.dtype(node.input[1])), dt)
        self.set_lazy(node.output[0], expr, [node.name])

    # ---- GEMM ----------------------------------------------------------------------------------------------
    def _bias_add(self, mm_out: str, n: int):
        """(Add node, bias array) when `mm_out` is read only by an Add of a constant [n] bias, not a graph output,
        and the sum is not followed by an activation a GEMM epilogue would take; else None."""
        user = self.single_consumer(mm_out)
        if user is None or user.op_type != "Add" or mm_out in self.graph_outputs or \
                user.output[0] in self.graph_outputs:
            return None
        b = self.const(user.input[1] if user.input[0] == mm_out else user.input[0])
        if b is None or b.size != n or b.shape[-1] != n or self.shape(user.output[0]) != self.shape(mm_out):
            return None
        nxt = self.single_consumer(user.output[0])
        if nxt is not None and nxt.op_type in ("Relu", "Gelu") or self.match_gelu(user.output[0]) is not None:
            return None
        return user, b.reshape(-1)

    def lower_fused_siblings(self, node) -> bool:
        """MatMuls of one input by constant weights, each + a bias (Q, K and V): one GEMM with the weights and biases
        concatenated ([k, n1 + n2 + ...]); each result is a strided view of its columns (Reshape/Transpose to heads
        stay free views). One launch instead of three, and a wider GEMM that runs nearer the tensor cores' peak."""
        x = node.input[0]
        sibs = []
        for u in self.consumers.get(x, []):
            if u is None or u.op_type != "MatMul" or u.input[0] != x or self.index_of(u) in self.done:
                continue
            w = self.const(u.input[1])
            if w is None or w.ndim != 2 or not codegen.is_float(str(w.dtype)):
                continue
            found = self._bias_add(u.output[0], w.shape[1])
            if found is not None:
                sibs.append((u, w, found[0], found[1]))
        if len(sibs) < 2 or node not in [s[0] for s in sibs] or len({s[1].shape[0] for s in sibs}) != 1:
            return False
        sibs.sort(key=lambda s: self.index_of(s[0]))
        a = self.contiguous_run(x)
        k = sibs[0][1].shape[0]
        if a.shape[-1] != k:
            return False
        widths = [s[1].shape[1] for s in sibs]
        total = sum(widths)
        m = int(np.prod(a.shape[:-1], dtype=np.int64))
        wcat = np.concatenate([s[1] for s in sibs], axis=1)
        bcat = np.concatenate([s[3] for s in sibs])
        names = [s[0].name for s in sibs]
        wb = self.weight("+".join(s[0].input[1] for s in sibs), array=wcat)
        bias = self.weight("+".join(names) + ".bias", array=bcat).buf
        out_shape = tuple(a.shape[:-1]) + (total,)
        c = self.arena("+".join(s[2].output[0] for s in sibs), self.prog.run_dtype, out_shape)
        nodes = [nm for s in sibs for nm in (s[0].name, s[2].name)]
        if self.matmul_impl == "triton":
            src, params, grid, warps, cfg = codegen.gemm(a.buf, wb.buf, bias, c, m, total, k, "bias",
                                                         self.prog.precision, self.prog.dtypes())
            self.prog.steps.append(KernelStep("gemm", src, params, [c], [p for p in params if p != c], grid, warps,
                                              nodes, num_stages=cfg["stages"], config=cfg))
        elif self.matmul_impl == "cublas":
            self.cublas_gemm(a.buf, wb.buf, c, bias, m, total, k, "bias", nodes, out_shape)
        else:
            self.prog.steps.append(self.gemm_step(a.buf, wb.buf, c, bias, m, total, k, "bias", nodes))
        whole = View.whole(c, out_shape)
        col = 0
        for (mm, _, add, _), width in zip(sibs, widths):
            self.values[add.output[0]] = View(c, out_shape[:-1] + (width,), whole.strides, col)
            col += width
            self.done.update((self.index_of(mm), self.index_of(add)))
        return True

    def lower_gemm(self, idx, node) -> bool:
        if node.op_type == "MatMul":
            w = self.const(node.input[1])
            if w is None or w.ndim != 2 or node.input[0] in self.static:
                return False
            if self.fuse_siblings and self.lower_fused_siblings(node):
                return True
            bias_arr = None
            alpha = 1.0
        else:
            if _attr(node, "transA", 0):
                raise _Unsupported("Gemm with transA=1")
            w = self.const(node.input[1])
            if w is None:
                return False
            if _attr(node, "transB", 0):
                w = w.T
            alpha = float(_attr(node, "alpha", 1.0))
            bias_arr = None
            if len(node.input) > 2 and node.input[2]:
                c = self.const(node.input[2])
                if c is None or c.size not in (w.shape[1],) or (c.ndim == 2 and c.shape[0] != 1):
                    raise _Unsupported("Gemm with a C that is not a constant row vector")
                bias_arr = c.reshape(-1) * float(_attr(node, "beta", 1.0))
        if not codegen.is_float(str(w.dtype)):
            raise _Unsupported("integer MatMul")
        k, n = w.shape
        a = self.contiguous_run(node.input[0])
        if a.shape[-1] != k:
            raise _Unsupported(f"MatMul inner dims {a.shape} x {w.shape}")
        m = int(np.prod(a.shape[:-1], dtype=np.int64))
        nodes = [node.name]
        out = node.output[0]
        # + bias
        user = self.single_consumer(out)
        if bias_arr is None and user is not None and user.op_type == "Add" and out not in self.graph_outputs:
            other = user.input[1] if user.input[0] == out else user.input[0]
            b = self.const(other)
            if b is not None and b.size == n and b.shape[-1] == n and self.shape(user.output[0]) == \
                    tuple(a.shape[:-1]) + (n,):
                bias_arr = b.reshape(-1)
                nodes.append(user.name)
                self.done.add(self.index_of(user))
                out = user.output[0]
        epilogue = "bias" if bias_arr is not None else "none"
        # + activation
        user = self.single_consumer(out) if out not in self.graph_outputs else None
        if user is not None and user.op_type == "Relu":
            epilogue = "relu_bias" if bias_arr is not None else "relu"
            nodes.append(user.name)
            self.done.add(self.index_of(user))
            out = user.output[0]
        elif self.matmul_impl in ("triton", "cublas") or (self.prog.precision == "fp16" and self.gelu_epilogue and
                                                          bias_arr is not None):
            gelu = self.match_gelu(out)
            if gelu is not None:
                last, gnodes = gelu
                epilogue = "gelu_bias" if bias_arr is not None else "gelu"
                nodes += [n.name for n in gnodes]
                self.done.update(self.index_of(n) for n in gnodes)
                out = last
            if gelu is not None and self.matmul_impl == "cublasLt":
                self.prog.notes.append(
                    f"GEMM {node.name}: GELU fused as cuBLASLt's GELU_BIAS epilogue, which is the tanh approximation "
                    "(ONNX Gelu / erf form differ by up to ~1e-3; within fp16 tolerance). fp32/tf32 builds keep "
                    "erf in a Triton kernel")
        if alpha != 1.0:
            w = w * alpha
        wb = self.weight(node.input[1] + (".T" if node.op_type == "Gemm" and _attr(node, "transB", 0) else "")
                         + (f".x{alpha}" if alpha != 1.0 else ""), array=w)
        bias = self.weight(node.name + ".bias", array=bias_arr).buf if bias_arr is not None else None
        c = self.arena(out, self.prog.run_dtype, tuple(a.shape[:-1]) + (n,))
        if self.matmul_impl == "triton":  # matmul = triton: a generated Triton GEMM (exact erf GELU in its epilogue)
            src, params, grid, warps, cfg = codegen.gemm(a.buf, wb.buf, bias, c, m, n, k, epilogue,
                                                         self.prog.precision, self.prog.dtypes())
            self.prog.steps.append(KernelStep("gemm", src, params, [c], [p for p in params if p != c], grid, warps,
                                              nodes, num_stages=cfg["stages"], config=cfg))
        elif self.matmul_impl == "cublas":
            self.cublas_gemm(a.buf, wb.buf, c, bias, m, n, k, epilogue, nodes, tuple(a.shape[:-1]) + (n,))
        else:
            self.prog.steps.append(self.gemm_step(a.buf, wb.buf, c, bias, m, n, k, epilogue, nodes))
        self.values[out] = View.whole(c, tuple(a.shape[:-1]) + (n,))
        return True

    def gemm_step(self, a, b, c, bias, m, n, k, epilogue, nodes) -> GemmStep:
        """A cuBLASLt GEMM; with stand-ins, its Triton twin too (exact erf GELU where cuBLASLt's epilogue takes the
        tanh form: both within the precision's tolerance, checked by the tests of both paths)."""
        step = GemmStep(a, b, c, bias, m, n, k, epilogue, nodes)
        if self.stand_ins and isinstance(m, int):
            src, params, grid, warps, cfg = codegen.gemm(a, b, bias, c, m, n, k, epilogue, self.prog.precision,
                                                         self.prog.dtypes())
            step.stand_in = KernelStep("gemm_stand_in", src, params, [c], [p for p in params if p != c], grid,
                                       warps, nodes, num_stages=cfg["stages"], config=cfg)
        return step

    def cublas_gemm(self, a, b, c, bias, m, n, k, epilogue, nodes, shape) -> None:
        """matmul = cublas: a plain cuBLAS GEMM (epilogue none) into its own arena buffer, then, where the GEMM had
        an epilogue, an elementwise Triton kernel writing c = act(gemm + bias): ONNX's exact erf GELU, not the
        tanh form of cuBLASLt's GELU_BIAS. Never a stand-in: the chosen library runs from the first run on."""
        if epilogue == "none":
            self.prog.steps.append(GemmStep(a, b, c, None, m, n, k, "none", nodes, library="cublas"))
            return
        dt = self.prog.run_dtype
        raw = self.arena(self.prog.buffers[c].name + ".gemm", dt, shape)
        self.prog.steps.append(GemmStep(a, b, raw, None, m, n, k, "none", nodes, library="cublas"))
        expr = ("leaf", View.whole(raw, shape), dt)
        if bias is not None:
            expr = ("op", "Add", (expr, ("leaf", View.whole(bias, (n,)), dt)), (), dt)
        if epilogue in ("relu", "relu_bias"):
            expr = ("op", "Relu", (expr,), (), dt)
        elif epilogue in ("gelu", "gelu_bias"):
            expr = ("op", "Gelu", (expr,), (("approximate", "none"),), dt)
        self.emit_elementwise(expr, shape, c, dt, nodes, group="gemm_epilogue")
        if epilogue in ("gelu", "gelu_bias"):
            self.prog.notes.append("matmul = cublas: each GEMM is a plain cuBLAS GEMM; its bias and GELU run in a "
                                   "Triton kernel after it, GELU in ONNX's exact erf form")

    def index_of(self, node) -> int:
        return self._index[id(node)]

    @property
    def _index(self):
        if not hasattr(self, "_idx_cache"):
            self._idx_cache = {id(n): i for i, n in enumerate(self.g.node)}
        return self._idx_cache

    def match_gelu(self, x: str):
        """The erf-GELU of tensor x: a Gelu node, or a closed elementwise subgraph (<= 6 nodes, one Erf, scalar
        constants only) with one exit that computes x * 0.5 * (1 + erf(x / sqrt(2))) (checked numerically)."""
        users = [u for u in self.consumers.get(x, []) if u is not None]
        if len(users) == 1 and users[0].op_type == "Gelu" and x not in self.graph_outputs:
            approx = _attr(users[0], "approximate", b"none")
            if (approx.decode() if isinstance(approx, bytes) else approx) == "none":
                return users[0].output[0], [users[0]]
            return None
        if x in self.graph_outputs or not users:
            return None
        # the nodes reachable from x through Mul/Div/Add/Erf (at most 8), then pruned until every input of each is
        # x, a value of the set or a scalar constant; whatever else reads the set's values lies outside it
        nodes, frontier = [], list(users)
        while frontier and len(nodes) <= 8:
            n = frontier.pop(0)
            if n is None or n in nodes or n.op_type not in ("Mul", "Div", "Add", "Erf"):
                continue
            nodes.append(n)
            for o in n.output:
                frontier += [u for u in self.consumers.get(o, []) if u not in nodes]
        while True:
            internal = {x} | {o for m in nodes for o in m.output}
            keep = [n for n in nodes if all(i in internal or self.scalar(i) is not None for i in n.input)]
            if len(keep) == len(nodes):
                break
            nodes = keep
        if len(nodes) > 6 or sum(n.op_type == "Erf" for n in nodes) != 1:
            return None
        produced = {o for n in nodes for o in n.output}
        exits = [o for o in produced if any(u is None or u not in nodes for u in self.consumers.get(o, []))]
        if len(exits) != 1:
            return None
        # evaluate on sample points
        t = np.linspace(-4, 4, 17)
        env = {x: t}
        order = sorted(nodes, key=self.index_of)
        for n in order:
            ins = [env[i] if i in env else float(self.scalar(i)) for i in n.input]
            env[n.output[0]] = {"Mul": lambda a, b: a * b, "Div": lambda a, b: a / b, "Add": lambda a, b: a + b,
                                "Erf": None}[n.op_type](*ins) if n.op_type != "Erf" else _erf(ins[0])
        want = 0.5 * t * (1 + _erf(t / np.sqrt(2)))
        if not np.allclose(env[exits[0]], want, atol=1e-5):
            return None
        return exits[0], order

    # ---- LayerNorm -----------------------------------------------------------------------------------------
    def match_layernorm(self):
        """Finds LayerNormalization nodes and the decomposed form; lowering happens at the node's position."""
        self.ln = {}
        self.ln_inputs = {}
        for i, node in enumerate(self.g.node):
            if node.op_type == "LayerNormalization":
                axis = _attr(node, "axis", -1)
                rank = len(self.shape(node.input[0]))
                if axis % rank != rank - 1 or len([o for o in node.output if o]) > 1:
                    continue
                gamma = node.input[1]
                beta = node.input[2] if len(node.input) > 2 and node.input[2] else None
                if self.const(gamma) is None or (beta and self.const(beta) is None):
                    continue
                self.ln[i] = dict(x=node.input[0], gamma=gamma, beta=beta, eps=float(_attr(node, "epsilon", 1e-5)),
                                  out=node.output[0], nodes=[node])
            elif node.op_type == "ReduceMean":
                found = self._decomposed_ln(node)
                if found:
                    self.ln[i] = found
        for m in self.ln.values():
            self.ln_inputs[m["x"]] = m["nodes"]

    def _reduce_last(self, node) -> bool:
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            c = self.const(node.input[1])
            axes = None if c is None else c.tolist()
        rank = len(self.shape(node.input[0]))
        return axes is not None and len(axes) == 1 and axes[0] % rank == rank - 1 and _attr(node, "keepdims", 1)

    def _decomposed_ln(self, rm):
        """x -> ReduceMean -> Sub(x, mean) = d; d -> Pow 2 (or Mul d d) -> ReduceMean -> Add eps -> Sqrt;
        Div(d, std) [-> Mul gamma] [-> Add beta]."""
        if not self._reduce_last(rm):
            return None
        x = rm.input[0]
        sub = self.single_consumer(rm.output[0])
        if sub is None or sub.op_type != "Sub" or sub.input[0] != x or sub.input[1] != rm.output[0]:
            return None
        d = sub.output[0]
        users = self.consumers.get(d, [])
        sq = next((u for u in users if u is not None and (u.op_type == "Pow" and self.scalar(u.input[1]) == 2.0 or
                                                           u.op_type == "Mul" and u.input[0] == d == u.input[1])),
                  None)
        div = next((u for u in users if u is not None and u.op_type == "Div" and u.input[0] == d), None)
        if sq is None or div is None or len(users) != 2:
            return None
        rm2 = self.single_consumer(sq.output[0])
        if rm2 is None or rm2.op_type != "ReduceMean" or not self._reduce_last(rm2):
            return None
        add = self.single_consumer(rm2.output[0])
        eps = None if add is None or add.op_type != "Add" else \
            self.scalar(add.input[1] if add.input[0] == rm2.output[0] else add.input[0])
        if eps is None:
            return None
        sqrt = self.single_consumer(add.output[0])
        if sqrt is None or sqrt.op_type != "Sqrt" or div.input[1] != sqrt.output[0] or \
                self.single_consumer(sqrt.output[0]) is not div:
            return None
        nodes = [rm, sub, sq, rm2, add, sqrt, div]
        out, gamma, beta = div.output[0], None, None
        n = self.shape(x)[-1]
        user = self.single_consumer(out)
        if user is not None and user.op_type == "Mul" and out not in self.graph_outputs:
            other = user.input[1] if user.input[0] == out else user.input[0]
            if self.const(other) is not None and self.const(other).size == n:
                gamma, out = other, user.output[0]
                nodes.append(user)
                user = self.single_consumer(out)
        if user is not None and user.op_type == "Add" and out not in self.graph_outputs:
            other = user.input[1] if user.input[0] == out else user.input[0]
            if self.const(other) is not None and self.const(other).size == n:
                beta, out = other, user.output[0]
                nodes.append(user)
        x_users = [u for u in self.consumers.get(x, []) if u not in (rm, sub)]
        return dict(x=x, gamma=gamma, beta=beta, eps=float(eps), out=out, nodes=nodes, x_other_users=x_users)

    def lower_layernorm(self, m):
        x = m["x"]
        shape = self.shape(x)
        n = shape[-1]
        v = self.values.get(x)
        if v is None:
            v = self.materialize(x)
        expr = v.expr if isinstance(v, Lazy) else ("leaf", v, self.dtype(x))
        gamma = self.weight(m["gamma"], array=self.const(m["gamma"]).reshape(n)) if m["gamma"] else None
        beta = self.weight(m["beta"], array=self.const(m["beta"]).reshape(n)) if m["beta"] else None
        out = m["out"]
        dt = self.storage_dtype(self.dtype(out))
        # a graph output: the kernel writes the output buffer itself, in the output's dtype (no output kernel
        # copying or converting it afterwards); beside the run-dtype copy where other kernels read the result
        also = None
        users = self.consumers.get(out, [])
        if None in users and out not in self.direct_outputs:
            obuf = self.prog.add(Buffer(out, self.dtype(out), shape, "output"))
            self.direct_outputs[out] = obuf
            if any(u is not None for u in users):
                also = (obuf, self.dtype(out))
                buf = self.arena(out, dt, shape)
            else:
                buf, dt = obuf, self.dtype(out)
        else:
            buf = self.arena(out, dt, shape)
        # x itself is read elsewhere (decomposed form with other readers) and is still lazy: the kernel stores it
        stash = None
        if isinstance(v, Lazy) and m.get("x_other_users"):
            sbuf = self.arena(x, self.storage_dtype(self.dtype(x)), shape)
            stash = (sbuf, self.prog.buffers[sbuf].dtype)
            self.values[x] = View.whole(sbuf, shape)
        src, params, grid, warps, cfg = codegen.layernorm(expr, shape, gamma, beta, m["eps"], buf, dt, stash,
                                                          also=also)
        writes = [buf] + ([stash[0]] if stash else []) + ([also[0]] if also else [])
        nodes = (v.nodes if isinstance(v, Lazy) else []) + [nd.name for nd in m["nodes"]]
        group = "add_layernorm" if any(l[1] for l in expr_leaves(expr)[1:]) and isinstance(v, Lazy) else "layernorm"
        if isinstance(v, Lazy) and v.expr[0] == "gather" or "gather" in repr(expr)[:2000]:
            group = "embed_layernorm"
        self.prog.steps.append(KernelStep(group, src, params, writes, [p for p in params if p not in writes], grid,
                                          warps, nodes, config=cfg))
        self.values[out] = View.whole(buf, shape)

    # ---- attention -----------------------------------------------------------------------------------------
    def match_attention(self):
        """MatMul(Q, K^T) [Mul/Div scalar] [Add mask] -> Softmax(last) -> MatMul(P, V)."""
        self.attn = {}
        self.keep_fp32: set[str] = set()
        for i, node in enumerate(self.g.node):
            if node.op_type != "MatMul" or any(self.const(n) is not None for n in node.input):
                continue
            if len(self.shape(node.input[0])) not in (3, 4):
                continue
            chain, cur, scale, masks = [node], node.output[0], 1.0, []
            ok = True
            while True:
                user = self.single_consumer(cur)
                if user is None:
                    ok = False
                    break
                if user.op_type in ("Mul", "Div"):
                    other = user.input[1] if user.input[0] == cur else user.input[0]
                    s = self.scalar(other)
                    if s is None or masks or (user.op_type == "Div" and user.input[0] != cur):
                        ok = False
                        break
                    scale = scale * s if user.op_type == "Mul" else scale / s
                elif user.op_type == "Add":
                    other = user.input[1] if user.input[0] == cur else user.input[0]
                    masks.append(other)
                elif user.op_type == "Softmax":
                    rank = len(self.shape(cur))
                    if _attr(user, "axis", -1 if self._opset() >= 13 else 1) % rank != rank - 1:
                        ok = False
                    break
                else:
                    ok = False
                    break
                chain.append(user)
                cur = user.output[0]
            if not ok or len(masks) > 1:
                continue
            softmax = self.single_consumer(cur)
            probs, guard = softmax.output[0], self._nan_guard(softmax.output[0])
            if guard:
                probs = guard[-1].output[0]
            pv = self.single_consumer(probs)
            if pv is None or pv.op_type != "MatMul" or pv.input[0] != probs:
                continue
            # anchored at P@V, where Q, K, V and the mask all exist; the nodes before it are skipped
            self.attn[self.index_of(pv)] = dict(qk=node, chain=chain + guard, softmax=softmax, pv=pv, scale=scale,
                                                mask=masks[0] if masks else None, zero_masked_rows=bool(guard))
            self.done.update(self.index_of(n) for n in chain + guard + [softmax])
            if masks:
                self.keep_fp32.add(masks[0])

    def _nan_guard(self, probs: str) -> list:
        """[IsNaN, Where] when softmax output `probs` is only read by Where(IsNaN(probs), 0, probs) (what torch's
        SDPA export adds: rows whose every key is masked with -inf give zeros instead of NaN); else []."""
        users = self.consumers.get(probs, [])
        isnan = next((u for u in users if u is not None and u.op_type == "IsNaN"), None)
        where = next((u for u in users if u is not None and u.op_type == "Where"), None)
        if len(users) != 2 or isnan is None or where is None:
            return []
        if self.consumers.get(isnan.output[0], []) != [where] or list(where.input[:1]) != [isnan.output[0]] or \
                where.input[2] != probs or self.scalar(where.input[1]) != 0:
            return []
        return [isnan, where]

    def _opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)

    def attn_operand(self, name: str):
        """(4-D view, scale factor) for a Q/K/V operand: a scalar Mul/Div on a view is folded into the scale."""
        v = self.values.get(name)
        scale = 1.0
        if isinstance(v, Lazy):
            e = v.expr
            if e[0] == "op" and e[1] in ("Mul", "Div") and len(e[2]) == 2:
                a, b = e[2]
                if a[0] == "leaf" and b[0] == "const":
                    scale = float(b[1]) if e[1] == "Mul" else 1.0 / float(b[1])
                    lv = a[1].broadcast_to(v.shape)
                    if lv is not None:
                        return self._as4d(lv), scale, v.nodes
                if b[0] == "leaf" and a[0] == "const" and e[1] == "Mul":
                    lv = b[1].broadcast_to(v.shape)
                    if lv is not None:
                        return self._as4d(lv), float(a[1]), v.nodes
        view = self.materialize(name)
        return self._as4d(view), scale, []

    def mask_expression(self, name: str, sk: int):
        """(expression, stored shape (B or 1, 1, 1, Sk)) for an attention mask still lazy, when it is the same for
        every head and query (BERT's padding mask), so the attention kernel can compute one row of it per key block;
        None otherwise (the mask is then written to memory once and read)."""
        v = self.values.get(name)
        if not isinstance(v, Lazy) or has_gather(v.expr) or not codegen.is_float(codegen.dtype_of(v.expr)) or \
                len(v.shape) > 4:
            return None
        shape4 = (1,) * (4 - len(v.shape)) + tuple(v.shape)
        if any(leaf[1].broadcast_to(shape4) is None for leaf in expr_leaves(v.expr)):
            return None
        collapsed = _collapse_broadcast(v.expr, shape4)
        expr, stored = (collapsed[0], collapsed[1]) if collapsed else (v.expr, shape4)
        if stored[1:3] != (1, 1) or stored[3] != sk or not expr_leaves(expr):
            return None
        return expr, tuple(stored)

    @staticmethod
    def _as4d(v: View) -> View:
        if len(v.shape) == 4:
            return v
        return View(v.buf, (1,) + tuple(v.shape), (0,) + tuple(v.strides), v.offset)

    def lower_attention(self, m):
        q, sq_, qn = self.attn_operand(m["qk"].input[0])
        kt, sk_, kn = self.attn_operand(m["qk"].input[1])
        v, sv_, vn = self.attn_operand(m["pv"].input[1])
        if sv_ != 1.0:
            raise _Unsupported("a scale on V")
        k = kt.transpose((0, 1, 3, 2))
        scale = m["scale"] * sq_ * sk_
        mask, mask_expr, mask_nodes = None, None, []
        if m["mask"] is not None:
            mask_expr = self.mask_expression(m["mask"], k.shape[2])
            if mask_expr is not None:
                mask_nodes = self.values[m["mask"]].nodes
        if m["mask"] is not None and mask_expr is None:
            mask = self.materialize(m["mask"], fp32=True, collapse_broadcast=True)
            if self.prog.buffers[mask.buf].dtype != "float32" and self.prog.buffers[mask.buf].dtype != \
                    self.prog.run_dtype:
                raise _Unsupported("attention mask of a non-float dtype")
            rank = len(mask.shape)
            if rank < 4:
                mask = View(mask.buf, (1,) * (4 - rank) + tuple(mask.shape), (0,) * (4 - rank) + tuple(mask.strides),
                            mask.offset)
        out_name = m["pv"].output[0]
        out_shape = self.shape(out_name)
        b_, h_, s_, d_ = (1,) * (4 - len(out_shape)) + out_shape
        # Layout: if the only reader transposes heads back (0,2,1,3), store [B, S, H, D] so that the transpose and
        # the following reshape are free views.
        user = self.single_consumer(out_name)
        if len(out_shape) == 4 and user is not None and user.op_type == "Transpose" and \
                list(_attr(user, "perm") or []) == [0, 2, 1, 3]:
            buf = self.arena(out_name, self.prog.run_dtype, (b_, s_, h_, d_))
            out4 = View.whole(buf, (b_, s_, h_, d_)).transpose((0, 2, 1, 3))
        else:
            buf = self.arena(out_name, self.prog.run_dtype, out_shape)
            out4 = self._as4d(View.whole(buf, out_shape))
        if q.shape[3] != d_ or k.shape[2] != v.shape[2]:
            raise _Unsupported(f"attention shapes q{q.shape} k{k.shape} v{v.shape}")
        try:
            src, params, grid, warps, cfg = codegen.attention(q, k, v, mask, out4, scale, self.prog.precision,
                                                              self.prog.dtypes(), m.get("zero_masked_rows", False),
                                                              self.attention_impl == "math", mask_expr=mask_expr)
        except ValueError as err:
            raise _Unsupported(f"{err}; use attention=flash") from err
        nodes = mask_nodes + qn + kn + vn + [n.name for n in m["chain"]] + [m["softmax"].name, m["pv"].name]
        self.prog.steps.append(KernelStep("attention", src, params, [buf], [p for p in params if p != buf], grid,
                                          warps, nodes, num_stages=cfg["stages"], config=cfg))
        self.values[out_name] = out4 if len(out_shape) == 4 else View(buf, out_shape, out4.strides[1:], 0)

    # the dispatcher for matched anchors
    def lower_node_matched(self, idx, node) -> bool:
        if idx in self.attn:
            self.lower_attention(self.attn[idx])
            return True
        if idx in self.ln:
            m = self.ln[idx]
            self.lower_layernorm(m)
            for n in m["nodes"]:
                self.done.add(self.index_of(n))
            return True
        return False


class _OffsetMap:
    """Elements of buffer `buf` at the element offsets `offsets` (an int64 array of the value's shape): the result of
    a data-movement node that no strided view expresses (e.g. heads merged by a Reshape of a transposed view);
    consumed only by further data-movement nodes, which may make it a View again."""

    def __init__(self, buf: int, offsets: np.ndarray) -> None:
        self.buf, self.offsets, self.shape = buf, offsets, tuple(offsets.shape)


def _view_offsets(view: View) -> np.ndarray:
    offs = np.full(view.shape, view.offset, np.int64)
    for axis, (d, s) in enumerate(zip(view.shape, view.strides)):
        shape = [1] * len(view.shape)
        shape[axis] = d
        offs = offs + (np.arange(d, dtype=np.int64) * s).reshape(shape)
    return offs


def _affine_view(buf: int, offs: np.ndarray) -> View | None:
    """A View of `buf` whose element offsets are `offs`, or None when they are not affine in the coordinates."""
    if offs.size == 0:
        return None
    base = int(offs.reshape(-1)[0])
    strides = []
    for axis, d in enumerate(offs.shape):
        idx = [0] * offs.ndim
        if d > 1:
            idx[axis] = 1
        strides.append(int(offs[tuple(idx)]) - base if d > 1 else 0)
    view = View(buf, tuple(int(d) for d in offs.shape), tuple(strides), base)
    return view if base >= 0 and np.array_equal(_view_offsets(view), offs) else None


def _run_node(node, inputs: list, opset: int) -> np.ndarray:
    """Output 0 of `node` on numpy `inputs` (None: an absent optional input), by ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    n = helper.make_node(node.op_type, names, ["out"], domain=node.domain or None)
    n.attribute.extend(node.attribute)
    vis = [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape))
           for nm, x in zip(names, inputs) if x is not None]
    g = helper.make_graph([n], "index_map", vis, [helper.make_tensor_value_info("out", onnx.TensorProto.UNDEFINED,
                                                                                 None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {nm: x for nm, x in zip(names, inputs) if x is not None}
    return np.asarray(ReferenceEvaluator(model).run(None, feeds)[0])


def _reads(step) -> list:
    if isinstance(step, GemmStep):
        return [step.a, step.b] + ([step.bias] if step.bias is not None else [])
    return step.reads


def _rename(step, old: int, new: int) -> None:
    if isinstance(step, GemmStep):
        if step.c == old:
            step.c = new
        if step.stand_in is not None:  # its Triton twin writes the same buffer
            _rename(step.stand_in, old, new)
        return
    if old in step.params:
        step.params = [new if p == old else p for p in step.params]
    step.writes = [new if p == old else p for p in step.writes]
    step.reads = [new if p == old else p for p in step.reads]


def _erf(x):
    from math import erf

    return np.vectorize(erf)(x)


class _Unsupported(Exception):
    pass


def _collapse_broadcast(expr, shape):
    """(expr, stored shape, axes) for an elementwise expression over `shape` whose every leaf is broadcast along
    `axes` (stride 0 there): the same expression over `shape` with those axes set to 1. None when there is no such
    axis or the expression has leaves other than strided views and constants (gathers)."""
    if has_gather(expr):
        return None
    shape = tuple(shape)
    full = []
    for leaf in expr_leaves(expr):
        b = leaf[1].broadcast_to(shape)
        if b is None:
            return None
        full.append(b)
    axes = {i for i, d in enumerate(shape) if d > 1 and all(b.strides[i] == 0 for b in full)}
    if not axes or not full:
        return None
    stored = tuple(1 if i in axes else d for i, d in enumerate(shape))

    def rewrite(e):
        if e[0] == "leaf":
            b = e[1].broadcast_to(shape)
            return ("leaf", View(b.buf, stored, tuple(0 if i in axes else st for i, st in enumerate(b.strides)),
                                 b.offset), e[2])
        if e[0] == "const":
            return e
        return (e[0], e[1], tuple(rewrite(a) for a in e[2]), *e[3:])

    return rewrite(expr), stored, axes
