"""Triton source for each non-GEMM group, generated from the group (shapes, strides and constants are literals in the
source, so one source text = one kernel; its sha256 names it and dedupes identical layers).

Every kernel takes only pointers (the buffers in `params` order); Triton 3.6 appends two scratch pointers when it
compiles (recorded by aot.py). Float math runs in fp32; loads convert from the buffer's dtype, stores convert to it.
"""

from __future__ import annotations

import math

from .ir import View, contiguous_strides, expr_leaves

_TL = {"float16": "tl.float16", "float32": "tl.float32", "bfloat16": "tl.bfloat16", "int64": "tl.int64",
       "int32": "tl.int32", "bool": "tl.int1", "int8": "tl.int8", "uint8": "tl.uint8"}


def is_float(dtype: str) -> bool:
    return dtype in ("float16", "float32", "bfloat16", "float64")


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _lit(value, dtype: str) -> str:
    if is_float(dtype):
        v = float(value)
        if math.isinf(v):
            return 'float("inf")' if v > 0 else 'float("-inf")'
        if math.isnan(v):
            return 'float("nan")'
        return repr(v)
    if dtype == "bool":
        return "True" if bool(value) else "False"
    return str(int(value))


def offset_code(view: View, out_shape, var: str = "o") -> str:
    """Element offset into `view`'s buffer for flat offsets `var` over the contiguous `out_shape` (the view is
    broadcast to it)."""
    v = view.broadcast_to(out_shape)
    if v is None:
        raise ValueError(f"view {view.shape} does not broadcast to {out_shape}")
    if v.is_contiguous() and tuple(v.shape) == tuple(out_shape):
        return f"({var} + {v.offset})" if v.offset else var
    terms = []
    total = 1
    for d in out_shape:
        total *= d
    for d, cs, s in zip(out_shape, contiguous_strides(out_shape), v.strides):
        if s == 0 or d == 1:
            continue
        idx = var if cs == 1 else f"({var} // {cs})"
        if cs * d < total:
            idx = f"({idx} % {d})"
        terms.append(idx if s == 1 else f"{idx} * {s}")
    if v.offset:
        terms.append(str(v.offset))
    return " + ".join(terms) if terms else "0 * " + var


class _Emitter:
    """Renders an expression as Triton statements; leaves become loads through their pointer parameter."""

    def __init__(self, out_shape, ptr_of, mask: str, var: str = "o") -> None:
        self.out_shape, self.ptr_of, self.mask, self.var = tuple(out_shape), ptr_of, mask, var
        self.lines: list[str] = []
        self.count = 0
        self.memo: dict = {}

    def tmp(self, code: str) -> str:
        self.count += 1
        name = f"t{self.count}"
        self.lines.append(f"{name} = {code}")
        return name

    def load(self, view: View, dtype: str, shape=None, var=None) -> str:
        shape = self.out_shape if shape is None else shape
        off = offset_code(view, shape, var or self.var)
        code = f"tl.load({self.ptr_of(view.buf)} + {off}, mask={self.mask}, other=0)"
        return self.tmp(code + (".to(tl.float32)" if is_float(dtype) else ""))

    def emit(self, e) -> str:
        key = repr(e)
        if key in self.memo:
            return self.memo[key]
        out = self._emit(e)
        self.memo[key] = out
        return out

    def _emit(self, e) -> str:
        kind = e[0]
        if kind == "leaf":
            return self.load(e[1], e[2])
        if kind == "const":
            return _lit(e[1], e[2])
        if kind == "gather":
            table, ids, dtype = e[1], e[2], e[3]
            n = self.out_shape[-1]
            row_shape = self.out_shape[:-1]
            sub = _Emitter(row_shape, self.ptr_of, self.mask, f"({self.var} // {n})")
            sub.count = self.count + 100 * (len(self.lines) + 1)
            idx = sub.emit(ids)
            self.lines += sub.lines
            self.count = sub.count
            col = f"({self.var} % {n})"
            off = f"{idx} * {table.strides[0]} + {col}" + (f" * {table.strides[1]}" if table.strides[1] != 1 else "")
            if table.offset:
                off += f" + {table.offset}"
            return self.tmp(f"tl.load({self.ptr_of(table.buf)} + {off}, mask={self.mask}, other=0)"
                            + (".to(tl.float32)" if is_float(dtype) else ""))
        name, args, attrs, dtype = e[1], e[2], dict(e[3]), e[4]
        a = [self.emit(x) for x in args]
        binary = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/", "Equal": "==", "Less": "<", "Greater": ">",
                  "LessOrEqual": "<=", "GreaterOrEqual": ">=", "And": "&", "Or": "|", "Xor": "^"}
        if name in binary:
            if name == "Div" and not is_float(dtype):
                return self.tmp(f"{a[0]} // {a[1]}")
            return self.tmp(f"{a[0]} {binary[name]} {a[1]}")
        if name == "Pow":
            p = float(attrs["exponent"])
            if p == 2.0:
                return self.tmp(f"{a[0]} * {a[0]}")
            if p == 3.0:
                return self.tmp(f"{a[0]} * {a[0]} * {a[0]}")
            if p == 0.5:
                return self.tmp(f"tl.sqrt({a[0]})")
            if p == 1.0:
                return a[0]
            if p == -1.0:
                return self.tmp(f"1.0 / {a[0]}")
            return self.tmp(f"tl.exp(tl.log({a[0]}) * {p!r})")  # only reached for positive bases (matcher checks)
        simple = {"Sqrt": "tl.sqrt({0})", "Exp": "tl.exp({0})", "Log": "tl.log({0})", "Neg": "-{0}",
                  "Abs": "tl.abs({0})", "Reciprocal": "1.0 / {0}", "Relu": "tl.maximum({0}, 0.0)",
                  "Erf": "tl.math.erf({0})", "Sigmoid": "tl.sigmoid({0})", "Not": "{0} == 0",
                  "Tanh": "1.0 - 2.0 / (tl.exp(2.0 * {0}) + 1.0)", "Floor": "tl.floor({0})", "Ceil": "tl.ceil({0})"}
        if name in simple:
            return self.tmp(simple[name].format(*a))
        if name == "Gelu":
            if attrs.get("approximate", "none") == "tanh":
                inner = self.tmp(f"0.7978845608028654 * ({a[0]} + 0.044715 * {a[0]} * {a[0]} * {a[0]})")
                return self.tmp(f"0.5 * {a[0]} * (2.0 - 2.0 / (tl.exp(2.0 * {inner}) + 1.0))")
            return self.tmp(f"0.5 * {a[0]} * (1.0 + tl.math.erf({a[0]} * 0.7071067811865476))")
        if name == "Where":
            return self.tmp(f"tl.where({a[0]}, {a[1]}, {a[2]})")
        if name in ("Max", "Min"):
            fn = "tl.maximum" if name == "Max" else "tl.minimum"
            acc = a[0]
            for x in a[1:]:
                acc = self.tmp(f"{fn}({acc}, {x})")
            return acc
        if name == "Clip":
            lo, hi = attrs.get("min"), attrs.get("max")
            x = a[0]
            if lo is not None:
                x = self.tmp(f"tl.maximum({x}, {lo!r})")
            if hi is not None:
                x = self.tmp(f"tl.minimum({x}, {hi!r})")
            return x
        if name == "Cast":
            src = dtype_of(args[0])
            if is_float(dtype):
                return a[0] if is_float(src) else self.tmp(f"{a[0]}.to(tl.float32)")
            if dtype == "bool":
                return self.tmp(f"{a[0]} != 0")
            return self.tmp(f"{a[0]}.to({_TL[dtype]})")
        raise ValueError(f"no Triton code for elementwise op {name}")


def dtype_of(e) -> str:
    return e[-1]


def elementwise(expr, out_shape, out_buf: int, out_dtype: str, buf_dtype) -> tuple[str, list[int], tuple, int, dict]:
    """An elementwise kernel writing `expr` (broadcast to `out_shape`) contiguously into `out_buf`.
    Returns (source, pointer buffers in order, grid, num_warps, config)."""
    params = _params([leaf[1].buf for leaf in expr_leaves(expr)] + [out_buf])
    numel = 1
    for d in out_shape:
        numel *= d
    block = min(1024, next_pow2(max(numel, 16)))
    em = _Emitter(out_shape, lambda b: f"P{params.index(b)}", "m")
    value = em.emit(expr)
    body = [f"o = tl.program_id(0) * {block} + tl.arange(0, {block})", f"m = o < {numel}", *em.lines,
            f"tl.store(P{params.index(out_buf)} + o, {_store(value, dtype_of(expr), out_dtype)}, mask=m)"]
    warps = 4 if block >= 512 else 1
    return _function(params, body), params, (-(-numel // block), 1, 1), warps, {"block": block, "numel": numel}


def _store(value: str, src_dtype: str, out_dtype: str) -> str:
    if out_dtype == "bool":
        return f"({value} != 0).to(tl.int1)" if src_dtype != "bool" else f"{value}.to(tl.int1)"
    if src_dtype in ("bool",) or value in ("True", "False") or value.replace(".", "").replace("-", "").isdigit():
        return f"(tl.zeros([1], tl.float32) + {value}).to({_TL[out_dtype]})" if value[:1].isdigit() else \
            f"{value}.to({_TL[out_dtype]})"
    return f"{value}.to({_TL[out_dtype]})"


def layernorm_config(rows: int, n: int) -> tuple[int, int]:
    """(rows per program, warps) for a LayerNorm over `rows` rows of `n`: ~32 elements per thread, two rows per
    program past 1024 rows. Measured on the H200 (bench/gpu/sweep_kernels.py, add + LayerNorm, n = 768, fp16, in a
    CUDA graph): 128 rows 1.62 us (was 1.93 with 1 row / 4 warps), 4096 rows 4.31 us (was 4.94), 12288 rows 15.6 us
    (was 16.1)."""
    block = next_pow2(max(n, 16))
    r = 1 if rows <= 1024 else 2
    return r, max(1, min(8, r * block // 1024))


def layernorm(expr, out_shape, gamma: View | None, beta: View | None, eps: float, out_buf: int, out_dtype: str,
              stash: tuple | None = None, rows_per_program: int | None = None, warps: int | None = None,
              also: tuple | None = None):
    """`rows_per_program` rows (default: `layernorm_config`) per program, normalised over the last dim:
    y = (x - mean) / sqrt(var + eps) * gamma + beta, x = `expr` (residual adds, embedding gathers and the like fused
    in front). `stash` (buffer, dtype) also writes x (a pre-norm value a later node reads); `also` (buffer, dtype)
    writes y a second time (a graph output in its own dtype, beside the run-dtype copy later kernels read)."""
    n = out_shape[-1]
    rows = 1
    for d in out_shape[:-1]:
        rows *= d
    block = next_pow2(max(n, 16))
    r_default, w_default = layernorm_config(rows, n)
    r = rows_per_program or r_default
    warps = warps or (w_default if rows_per_program is None else max(1, min(8, block // 256)))
    bufs = [leaf[1].buf for leaf in expr_leaves(expr)]
    bufs += [v.buf for v in (gamma, beta) if v is not None]
    bufs += [out_buf] + ([stash[0]] if stash else []) + ([also[0]] if also else [])
    params = _params(bufs)
    em = _Emitter(out_shape, lambda b: f"P{params.index(b)}", "m")
    x = em.emit(expr)
    if r == 1:
        body = ["row = tl.program_id(0)", f"c = tl.arange(0, {block})", "cm = c < " + str(n), "m = cm",
                f"o = row * {n} + c", *em.lines, f"x = tl.where(m, {x}, 0.0)"]
        red, col = "0", ""
    else:
        body = [f"row = tl.program_id(0) * {r} + tl.arange(0, {r})", f"c = tl.arange(0, {block})",
                f"cm = c < {n}", f"m = (row[:, None] < {rows}) & cm[None, :]", f"o = row[:, None] * {n} + c[None, :]",
                *em.lines, f"x = tl.where(m, {x}, 0.0)"]
        red, col = "1", "[:, None]"
    if stash:
        body.append(f"tl.store(P{params.index(stash[0])} + o, x.to({_TL[stash[1]]}), mask=m)")
    body += [f"mean = tl.sum(x, {red}) / {n}", f"d = tl.where(m, x - mean{col}, 0.0)",
             f"var = tl.sum(d * d, {red}) / {n}", f"y = d * tl.rsqrt(var + {float(eps)!r}){col}"]
    for v, op in ((gamma, "*"), (beta, "+")):
        if v is not None:
            off = offset_code(v, (n,), "c")
            load = f"tl.load(P{params.index(v.buf)} + {off}, mask=cm, other=0).to(tl.float32)"
            body.append(f"y = y {op} {load}" + ("[None, :]" if r > 1 else ""))
    body.append(f"tl.store(P{params.index(out_buf)} + o, y.to({_TL[out_dtype]}), mask=m)")
    if also:
        body.append(f"tl.store(P{params.index(also[0])} + o, y.to({_TL[also[1]]}), mask=m)")
    grid = (-(-rows // r), 1, 1)
    return _function(params, body), params, grid, warps, {"block": block, "rows": rows, "n": n,
                                                          **({"rows_per_program": r} if r > 1 else {})}


MATH_MAX_KEYS = 1024


def attention_config(sq: int, sk: int, d: int, math_softmax: bool, batch_heads: int = 0) -> dict:
    """Block sizes, warps and pipeline stages of the attention kernel. Flash: 64 queries x 128 keys per step, 4
    warps, 3 stages where there are several key blocks (and shared memory allows). Measured on the H200
    (bench/gpu/sweep_kernels.py, BERT-base heads, fp16 with a mask, in a CUDA graph), against the 64 x 64 blocks
    used before: B=1 S=128 3.61 us (was 6.97), B=32 S=128 13.3 us (was 27.8), B=1 S=384 8.93 us (was 23.9).
    `preload` where every key fits one block (no loop: K, V and the mask loaded up front): B=32 S=128 12.05 us
    (13.28 without). `batch_heads` (B x H) picks 32-query blocks for small grids."""
    bd = next_pow2(max(d, 16))
    if math_softmax:
        return {"BM": min(32, next_pow2(max(sq, 16))), "BN": next_pow2(max(sk, 16)), "warps": 4, "stages": 2,
                "preload": True}
    bn = min(128 if bd <= 128 else 64, next_pow2(max(sk, 16)))
    stages = 3 if sk > bn and bd <= 64 else 2
    # 32-query blocks where 64-query blocks would leave most SMs idle (fewer than 128 programs): B=1 S=128 3.24 us
    # against 3.69 (bench/gpu/sweep_kernels.py, H200, with preload); B=32 S=128 keeps 64 (12.05 us against 17.3)
    bm = 32 if 0 < batch_heads * -(-sq // 64) < 128 else 64
    return {"BM": min(bm, next_pow2(max(sq, 16))), "BN": bn, "warps": 4, "stages": stages, "preload": sk <= bn}


def attention(q: View, k: View, v: View, mask: View | None, out: View, scale: float, precision: str,
              dtypes: dict, zero_masked_rows: bool = False, math_softmax: bool = False, config: dict | None = None,
              mask_expr: tuple | None = None):
    """Flash attention (online softmax, one pass over keys), static shapes; with `math_softmax` the policy's
    `attention = math` instead: every key in one block, the softmax normalised explicitly (max, exp, sum, divide)
    before P@V, like the unfused formula (keys <= MATH_MAX_KEYS). Views are 4-D [B, H, S, D] (k, v:
    [B, H, Sk, D]); mask broadcast to [B, H, Sq, Sk], added after scaling; keys past Sk get -inf. The exponent is
    taken against a finite max (0 while every key so far is -inf), so -inf mask entries never make NaN mid-row;
    a row whose every key is -inf ends with sum 0: NaN like Softmax, or 0 with `zero_masked_rows` (SDPA's guard).

    `mask_expr` (expression, (B or 1, 1, 1, Sk)), instead of `mask`: the mask as the elementwise expression that
    computes it (BERT's `(1 - attention_mask) * min` from the int64 input), evaluated per key block inside the kernel
    over one row of keys and broadcast to every head and query: the kernel that wrote the mask to memory, and its
    launch, go away."""
    b_, h_, sq, d = q.shape
    sk = k.shape[2]
    bd = next_pow2(max(d, 16))
    chosen = {**attention_config(sq, sk, d, math_softmax, b_ * h_), **(config or {})}
    bm, bn, warps, stages = chosen["BM"], chosen["BN"], chosen["warps"], chosen["stages"]
    # every key in one block: no loop, and K, V and the mask are loaded before the first dot, so their latencies
    # overlap instead of V's load waiting behind QK^T and the softmax (the kernel is latency-bound at S <= 128)
    preload = bool(chosen.get("preload")) and sk <= bn
    if math_softmax and sk > MATH_MAX_KEYS:
        raise ValueError(f"attention=math holds every key of a row at once: {sk} keys > {MATH_MAX_KEYS}")
    if mask is not None and mask_expr is not None:
        raise ValueError("attention takes a mask view or a mask expression, not both")
    mask_leaves = [leaf[1].buf for leaf in expr_leaves(mask_expr[0])] if mask_expr is not None else []
    bufs = [q.buf, k.buf, v.buf] + ([mask.buf] if mask is not None else []) + mask_leaves + [out.buf]
    params = _params(bufs)
    p = {b: f"P{params.index(b)}" for b in bufs}
    ip = {"fp32": "ieee", "tf32": "tf32"}.get(precision)
    dot_kw = f", input_precision=\"{ip}\"" if ip else ""
    dot_t = "tl.float32" if precision in ("fp32", "tf32") else _TL[dtypes[v.buf]]

    def base(vw: View) -> str:
        return f"{vw.offset} + b * {vw.strides[0]} + h * {vw.strides[1]}"

    body = ["pid = tl.program_id(0)", "bh = tl.program_id(1)", f"b = bh // {h_}", f"h = bh % {h_}",
            f"om = pid * {bm} + tl.arange(0, {bm})", f"on = tl.arange(0, {bn})", f"od = tl.arange(0, {bd})",
            f"mq = om < {sq}", f"md = od < {d}",
            f"q = tl.load({p[q.buf]} + {base(q)} + om[:, None] * {q.strides[2]} + od[None, :] * {q.strides[3]}, "
            f"mask=mq[:, None] & md[None, :], other=0).to({dot_t})",
            f"m_i = tl.full([{bm}], float(\"-inf\"), tl.float32)", f"l_i = tl.zeros([{bm}], tl.float32)",
            f"acc = tl.zeros([{bm}, {bd}], tl.float32)"]
    # one step over a block of keys (the loop body; with `preload`, the whole computation, run once)
    load_k = (f"kt = tl.load({p[k.buf]} + {base(k)} + kn[None, :] * {k.strides[2]} + od[:, None] * {k.strides[3]}, "
              f"mask=mk[None, :] & md[:, None], other=0).to({dot_t})")
    load_v = (f"vv = tl.load({p[v.buf]} + {base(v)} + kn[:, None] * {v.strides[2]} + od[None, :] * {v.strides[3]}, "
              f"mask=mk[:, None] & md[None, :], other=0).to({dot_t})")
    load_mask: list[str] = []
    if mask is not None:
        mv = mask.broadcast_to((b_, h_, sq, sk))
        load_mask = [f"am = tl.load({p[mask.buf]} + {base(mv)} + om[:, None] * {mv.strides[2]} + kn[None, :] * "
                     f"{mv.strides[3]}, mask=mq[:, None] & mk[None, :], other=0).to(tl.float32)"]
    elif mask_expr is not None:
        expr, stored = mask_expr
        if len(stored) != 4 or stored[1:3] != (1, 1) or stored[3] != sk or stored[0] not in (1, b_):
            raise ValueError(f"a mask expression over {tuple(stored)} is not one row of keys per batch")
        em = _Emitter(stored, lambda buf: p[buf], "mk", "mo")
        value = em.emit(expr)
        load_mask = [f"mo = b * {sk} + kn" if stored[0] > 1 else "mo = kn", *em.lines,
                     f"am = (tl.zeros([{bn}], tl.float32) + {value})[None, :]"]
    step = ["kn = start + on", f"mk = kn < {sk}", load_k] + ([load_v] if preload else []) + \
        (load_mask if preload else []) + [f"s = tl.dot(q, kt{dot_kw}) * {float(scale)!r}"]
    if load_mask:
        step += ([] if preload else load_mask) + ["s = s + am"]
    step.append("s = tl.where(mk[None, :], s, float(\"-inf\"))")
    if math_softmax:
        step += ["m = tl.max(s, 1)", "e = tl.exp(s - tl.where(m == float(\"-inf\"), 0.0, m)[:, None])",
                 "l_i = tl.sum(e, 1)",
                 "pr = tl.where(l_i[:, None] > 0, e / l_i[:, None], 0.0)" if zero_masked_rows else "pr = e / l_i[:, None]"]
        step += ([] if preload else [load_v]) + [f"acc = tl.dot(pr.to({dot_t}), vv{dot_kw})"]
        tail = []
    else:
        step += ["m_new = tl.maximum(m_i, tl.max(s, 1))", "m_use = tl.where(m_new == float(\"-inf\"), 0.0, m_new)",
                 "pr = tl.exp(s - m_use[:, None])", "alpha = tl.exp(m_i - m_use)", "l_i = l_i * alpha + tl.sum(pr, 1)"]
        step += ([] if preload else [load_v]) + [f"acc = acc * alpha[:, None] + tl.dot(pr.to({dot_t}), vv{dot_kw})",
                                                 "m_i = m_new"]
        tail = ["acc = tl.where(l_i[:, None] > 0, acc / l_i[:, None], 0.0)" if zero_masked_rows else
                "acc = acc / l_i[:, None]"]
    if preload:
        body += ["start = 0"] + step
    else:
        body += [f"for start in range(0, {sk}, {bn}):"] + ["    " + line for line in step]
    body += tail + [f"tl.store({p[out.buf]} + {base(out)} + om[:, None] * {out.strides[2]} + od[None, :] * "
                    f"{out.strides[3]}, acc.to({_TL[dtypes[out.buf]]}), mask=mq[:, None] & md[None, :])"]
    grid = (-(-sq // bm), b_ * h_, 1)
    return _function(params, body), params, grid, warps, {"BM": bm, "BN": bn, "BD": bd, "B": b_, "H": h_, "Sq": sq,
                                                          "Sk": sk, "D": d, "scale": scale,
                                                          "softmax": "math" if math_softmax else "flash",
                                                          "stages": stages, "preload": preload,
                                                          **({"mask": "computed"} if mask_expr is not None else {})}


def gemm_config(m: int, n: int, k: int, dtype: str) -> dict:
    """Tile sizes, warps, pipeline stages and the M-grouping of the Triton GEMM (`matmul = triton`). Small M (batch 1
    of a transformer: M = 128 rows) takes 64 x 64 tiles so the grid fills more SMs; larger M takes 128 x 128 tiles
    with 8 warps, grouped 8 tiles along M so neighbouring programs share B's tiles in L2."""
    bk = min(64 if dtype == "float16" else 32, next_pow2(max(k, 16)))
    if m <= 256:
        return {"BM": min(64, next_pow2(max(m, 16))), "BN": min(64, next_pow2(max(n, 16))), "BK": bk, "warps": 4,
                "stages": 4, "group_m": 1}
    return {"BM": 128, "BN": min(128, next_pow2(max(n, 16))), "BK": bk, "warps": 8, "stages": 3, "group_m": 8}


def gemm(a: int, b: int, bias: int | None, c: int, m: int, n: int, k: int, epilogue: str, precision: str,
         dtypes: dict, config: dict | None = None):
    """C[m, n] = A[m, k] @ B[k, n] (+ bias[n]) (then relu or erf-GELU), all contiguous: the policy's
    `matmul = triton`. Tiles of BM x BN accumulated in fp32 over BK-wide slices of k; tails masked; programs grouped
    `group_m` tiles along M (`gemm_config`, or `config` to override). Returns (source, params, grid, warps, config:
    its "stages" are the pipeline stages to compile with)."""
    cfg = {**gemm_config(m, n, k, dtypes[a]), **(config or {})}
    bm, bn, bk, gm = cfg["BM"], cfg["BN"], cfg["BK"], max(1, cfg["group_m"])
    tiles_m, tiles_n = -(-m // bm), -(-n // bn)
    bufs = [a, b] + ([bias] if bias is not None else []) + [c]
    params = _params(bufs)
    p = {x: f"P{params.index(x)}" for x in bufs}
    ip = {"fp32": "ieee", "tf32": "tf32"}.get(precision)
    dot_kw = f", input_precision=\"{ip}\"" if ip else ""
    if gm == 1:
        body = ["pid = tl.program_id(0)", f"pm = pid // {tiles_n}", f"pn = pid % {tiles_n}"]
    else:  # consecutive programs walk down `gm` tiles of M before moving along N: B's tiles stay in L2
        body = ["pid = tl.program_id(0)", f"group = pid // {gm * tiles_n}", f"first_m = group * {gm}",
                f"rows = tl.minimum({tiles_m} - first_m, {gm})", f"pm = first_m + (pid % {gm * tiles_n}) % rows",
                f"pn = (pid % {gm * tiles_n}) // rows"]
    body += [f"om = pm * {bm} + tl.arange(0, {bm})", f"on = pn * {bn} + tl.arange(0, {bn})",
             f"ok = tl.arange(0, {bk})", f"mm = om < {m}", f"mn = on < {n}",
             f"acc = tl.zeros([{bm}, {bn}], tl.float32)",
             f"for start in range(0, {k}, {bk}):",
             "    kk = start + ok", f"    mk = kk < {k}",
             f"    x = tl.load({p[a]} + om[:, None] * {k} + kk[None, :], mask=mm[:, None] & mk[None, :], other=0)",
             f"    w = tl.load({p[b]} + kk[:, None] * {n} + on[None, :], mask=mk[:, None] & mn[None, :], other=0)",
             f"    acc += tl.dot(x, w{dot_kw})"]
    if bias is not None:
        body.append(f"acc += tl.load({p[bias]} + on, mask=mn, other=0).to(tl.float32)[None, :]")
    if epilogue in ("relu", "relu_bias"):
        body.append("acc = tl.maximum(acc, 0.0)")
    elif epilogue in ("gelu", "gelu_bias"):
        body.append("acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))")
    body.append(f"tl.store({p[c]} + om[:, None] * {n} + on[None, :], acc.to({_TL[dtypes[c]]}), "
                "mask=mm[:, None] & mn[None, :])")
    grid = (tiles_m * tiles_n, 1, 1)
    return _function(params, body), params, grid, cfg["warps"], {"BM": bm, "BN": bn, "BK": bk, "m": m, "n": n,
                                                                 "k": k, "epilogue": epilogue,
                                                                 "stages": cfg["stages"], "group_m": gm}


def _params(bufs: list[int]) -> list[int]:
    out: list[int] = []
    for b in bufs:
        if b not in out:
            out.append(b)
    return out


def _function(params: list[int], body: list[str]) -> str:
    """The kernel's source. `GDC` (a constexpr, true in the sm_90+ cubins, false in the PTX and the interpreter)
    makes the kernel wait for the grid before it (griddepcontrol.wait) before anything else: such a kernel may be
    launched with programmatic dependent launch (PLAN.md), so its launch overlaps the previous kernel's tail."""
    args = ", ".join([f"P{i}" for i in range(len(params))] + ["GDC: tl.constexpr"])
    lines = ["import triton", "import triton.language as tl", "from triton.language.extra.cuda import gdc_wait", "",
             "", "@triton.jit", f"def kernel({args}):", "    if GDC:", "        gdc_wait()"]
    lines += ["    " + line for line in body]
    return "\n".join(lines) + "\n"
