"""The cuda target's intermediate form: buffers, strided views over them, elementwise expressions, and the steps
(GEMMs and Triton kernels) of the execution plan. Pure data; no ONNX, no Triton.

Shapes are static in plan version 1 (every input dim bound at compile): views carry concrete strides, so layout
changes (Transpose, Expand, Slice, Reshape of contiguous data) cost nothing at run time; kernels read through them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Buffer:
    """One allocation the plan names (a plan `tensor`). kind: input | output | weight | arena."""

    name: str
    dtype: str  # numpy dtype name: float16 float32 int64 int32 bool ...
    shape: tuple
    kind: str
    data: np.ndarray | None = None  # weights only, already in `dtype`

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """A strided window onto a buffer (strides and offset in elements)."""

    buf: int
    shape: tuple
    strides: tuple
    offset: int = 0

    @staticmethod
    def whole(buf: int, shape) -> "View":
        return View(buf, tuple(shape), contiguous_strides(shape), 0)

    def is_contiguous(self) -> bool:
        return self.offset == 0 and all(s == c for s, c, d in zip(self.strides, contiguous_strides(self.shape),
                                                                      self.shape) if d != 1)

    def broadcast_to(self, shape) -> "View | None":
        """Numpy broadcasting (right-aligned); None when the shapes do not broadcast."""
        shape = tuple(shape)
        if len(shape) < len(self.shape):
            return None
        pad = len(shape) - len(self.shape)
        dims, strides = [], []
        for i, d in enumerate(shape):
            j = i - pad
            if j < 0:
                dims.append(d)
                strides.append(0)
            elif self.shape[j] == d:
                dims.append(d)
                strides.append(self.strides[j] if d != 1 else 0)
            elif self.shape[j] == 1:
                dims.append(d)
                strides.append(0)
            else:
                return None
        return View(self.buf, tuple(dims), tuple(strides), self.offset)

    def transpose(self, perm) -> "View":
        return View(self.buf, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.offset)

    def reshape(self, shape) -> "View | None":
        """A view of the new shape over the same elements; None unless the data is contiguous (then it is free)."""
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape, dtype=np.int64)) != int(np.prod(self.shape, dtype=np.int64)):
            return None
        live = [(d, s) for d, s in zip(self.shape, self.strides) if d != 1]
        if all(s == c for (d, s), c in zip(live, contiguous_strides([d for d, _ in live]))):
            return View(self.buf, shape, contiguous_strides(shape), self.offset)
        return None

    def slice(self, axis: int, start: int, stop: int, step: int) -> "View":
        n = len(range(start, stop, step))
        shape = list(self.shape)
        strides = list(self.strides)
        shape[axis] = n
        off = self.offset + start * self.strides[axis]
        strides[axis] = self.strides[axis] * step
        return View(self.buf, tuple(shape), tuple(strides), off)


# Expressions: ("leaf", View, dtype) | ("const", value, dtype) | ("op", name, (args...), attrs-tuple, dtype)
#              | ("gather", table View [V, N], ids expr over out.shape[:-1], dtype)
# `dtype` is the ONNX-level numpy dtype name of the value (float math runs in fp32 inside kernels).
def expr_dtype(e) -> str:
    return e[-1]


def expr_leaves(e) -> list:
    if e[0] == "leaf":
        return [e]
    if e[0] == "const":
        return []
    if e[0] == "gather":
        return [("leaf", e[1], e[3])] + expr_leaves(e[2])
    return [leaf for a in e[2] for leaf in expr_leaves(a)]


def has_gather(e) -> bool:
    """Whether the expression reads through a gather (an index computed per element, not a strided view)."""
    if e[0] == "gather":
        return True
    return e[0] == "op" and any(has_gather(a) for a in e[2])


def map_leaves(e, fn):
    """The expression with each leaf's view replaced by fn(view) (None from fn: returns None)."""
    if e[0] == "leaf":
        v = fn(e[1])
        return None if v is None else ("leaf", v, e[2])
    if e[0] == "const":
        return e
    if e[0] == "gather":
        return None  # gathers are not re-viewed (materialise first)
    args = []
    for a in e[2]:
        m = map_leaves(a, fn)
        if m is None:
            return None
        args.append(m)
    return ("op", e[1], tuple(args), e[3], e[4])


@dataclass
class Lazy:
    """A value not yet written anywhere: an elementwise expression of `shape`."""

    expr: tuple
    shape: tuple
    nodes: list = field(default_factory=list)  # ONNX nodes folded into it


@dataclass
class GemmStep:
    a: int
    b: int
    c: int
    bias: int | None
    m: int
    n: int
    k: int
    epilogue: str  # none | bias | gelu_bias | relu_bias | relu
    nodes: list
    # the same GEMM as a generated Triton kernel (matmul = triton's codegen): the plugin runs it while cuBLASLt is
    # still loading, so the first results do not wait for cuBLASLt's start-up (PLAN.md "stand-in kernels")
    stand_in: "KernelStep | None" = None
    # the library that runs it: cublasLt (epilogues fused) or cublas (matmul = cublas: a plain cublasGemmEx,
    # epilogue always none; bias and activation run in an elementwise Triton kernel after it)
    library: str = "cublasLt"


@dataclass
class KernelStep:
    group: str  # elementwise | layernorm | attention | gather ...
    source: str  # the Triton source of one @triton.jit function named `kernel`
    params: list  # buffer ids passed as pointers, in order
    writes: list  # buffer ids written
    reads: list  # buffer ids read
    grid: tuple
    num_warps: int
    nodes: list
    num_stages: int = 2
    config: dict = field(default_factory=dict)  # what explain shows (block sizes, shapes)
