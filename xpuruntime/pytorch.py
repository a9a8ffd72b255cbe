"""The training side of the policy model: the same `xrt.KernelPolicy` / `xrt.ExecutionPolicy` applied to PyTorch.
Needs the `[torch]` extra (`pip install xpuruntime[torch]`); the rest of xpuruntime never imports torch.

    import xpuruntime.pytorch as xrt_torch
    xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt")   # or policy=xrt.KernelPolicy(...)
    with xrt_torch.autocast(fp16=True), xrt_torch.capture_graph():
        y = model(x); loss = criterion(y, t); loss.backward()
    xrt_torch.explain()        # what each call and context actually did

Contracts, per the policy modes: a choice PyTorch cannot honour on this device raises `xrt.Unavailable` under
`fixed` (nothing is changed) and is recorded as a warning under `prefer` (also logged). What PyTorch is told is
read back from PyTorch, not assumed: `explain()` reports the switches as PyTorch holds them, the attention backend
PyTorch selects for a probe (`torch._fused_sdp_choice`), the dtype each op class produced inside `autocast`, and
whether a graph was captured, replayed, or why not.

Mapping: matmul `cublas`/`cublasLt` -> `torch.backends.cuda.preferred_blas_library` (CUDA only); `engine` leaves
PyTorch's default; `mlas`, `onednn`, `triton` are not PyTorch eager choices. attention -> the scaled-dot-product
attention switches (`torch.backends.cuda.enable_*_sdp`, which PyTorch also consults on the CPU): `flash` (CUDA's
kernel, or PyTorch's CPU flash kernel), `flash_v2` (FlashAttention-2: CUDA only), `mem_efficient` and `fused`
(cuDNN attention: CUDA only), `math` everywhere; under `prefer` the math backend stays enabled as the fallback,
under `fixed` only the chosen backend is. The execution precision `tf32` / `fp32` -> the TF32 switches
(`torch.set_float32_matmul_precision`, `allow_tf32` of cuBLAS and cuDNN).
"""

from __future__ import annotations

import contextlib
import dis
import inspect
import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

try:
    import torch
except ImportError as _err:  # the extra is not installed: say how to get it
    raise ImportError("xpuruntime.pytorch needs PyTorch: pip install 'xpuruntime[torch]'") from _err

from . import _errors
from .policy import ExecutionPolicy, KernelPolicy, Knob, PolicyError

log = logging.getLogger("xpuruntime.pytorch")

_state: dict[str, Any] = {"kernel": None, "execution": None, "set": {}, "warnings": [], "autocast": [],
                          "graphs": []}

_CUDA_BLAS = {"cublas": "cublas", "cublasLt": "cublaslt"}
# attention choice -> (SDPA switches enabled, CUDA only?)
_SDPA = {"flash": ("flash", False), "flash_v2": ("flash", True), "mem_efficient": ("mem_efficient", True),
         "fused": ("cudnn", True), "math": ("math", False)}
_SDPA_SWITCHES = ("flash", "mem_efficient", "math", "cudnn")
_SDPA_NAMES = {0: "math", 1: "flash", 2: "mem_efficient", 3: "cudnn", -1: "none"}


def _cuda() -> bool:
    return torch.cuda.is_available()


def _device() -> str:
    return "cuda" if _cuda() else "cpu"


def _not_honoured(family: str, knob: Knob, why: str) -> None:
    text = f"{family}={knob.choice}: {why}"
    if knob.mode == "fixed":
        raise _errors.Unavailable(f"{text}; it is fixed, so nothing was changed. Use mode prefer, or run where "
                                  "it can hold")
    _state["warnings"].append(f"prefer {text}; PyTorch's default kept")
    log.warning("xpuruntime.pytorch: prefer %s; PyTorch's default kept", text)


def _sdpa_switches() -> dict[str, bool]:
    b = torch.backends.cuda
    return {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(),
            "math": b.math_sdp_enabled(), "cudnn": b.cudnn_sdp_enabled()}


def _set_sdpa(enabled: set[str]) -> None:
    b = torch.backends.cuda
    b.enable_flash_sdp("flash" in enabled)
    b.enable_mem_efficient_sdp("mem_efficient" in enabled)
    b.enable_math_sdp("math" in enabled)
    b.enable_cudnn_sdp("cudnn" in enabled)


def set_kernel_policy(matmul: Any = None, attention: Any = None, conv: Any = None, *,
                      policy: KernelPolicy | None = None, exec_policy: ExecutionPolicy | None = None) -> dict:
    """Applies a kernel policy (keyword knobs, or ``policy=``: the same object ``xrtc``/``InferenceSession``
    take) and the execution precision's TF32 rule to PyTorch. Every fixed knob is checked before anything is
    changed. Returns what was set, as PyTorch reports it afterwards (also in ``explain()``)."""
    if policy is not None and (matmul, attention, conv) != (None, None, None):
        raise _errors.InvalidArgument("pass the knobs or policy=, not both")
    if policy is not None and not isinstance(policy, KernelPolicy):
        raise _errors.InvalidArgument(f"policy must be an xrt.KernelPolicy, got {policy!r}")
    if exec_policy is not None and not isinstance(exec_policy, ExecutionPolicy):
        raise _errors.InvalidArgument(f"exec_policy must be an xrt.ExecutionPolicy, got {exec_policy!r}")
    kernel = policy or KernelPolicy(matmul=matmul, attention=attention, conv=conv)  # validated by the schema
    cuda = _cuda()
    warnings_before = len(_state["warnings"])
    actions = []  # (what to set), run only after every knob was checked

    m = kernel.knobs.get("matmul")
    if m is not None and m.choice not in (None, "engine"):
        if m.choice in _CUDA_BLAS and cuda:
            actions.append(lambda lib=_CUDA_BLAS[m.choice]: torch.backends.cuda.preferred_blas_library(lib))
        elif m.choice in _CUDA_BLAS:
            _not_honoured("matmul", m, "cuBLAS/cuBLASLt are CUDA libraries and this machine has no CUDA device")
        else:
            _not_honoured("matmul", m, "not a library PyTorch eager mode lets one choose (it offers cublas and "
                          "cublasLt on CUDA)")
    a = kernel.knobs.get("attention")
    if a is not None and a.choice not in (None, "engine"):
        switch, cuda_only = _SDPA[a.choice]
        if cuda_only and not cuda:
            _not_honoured("attention", a, f"{a.choice} is a CUDA kernel and this machine has no CUDA device")
        else:
            enabled = {switch} if a.mode == "fixed" else {switch, "math"}
            actions.append(lambda enabled=enabled: _set_sdpa(enabled))
    c = kernel.knobs.get("conv")
    if c is not None and c.choice not in (None, "engine"):
        if c.choice == "cudnn" and cuda:
            actions.append(lambda: setattr(torch.backends.cudnn, "enabled", True))
        else:
            _not_honoured("conv", c, "PyTorch picks its convolution kernels itself (only cuDNN on CUDA can be "
                          "switched)")
    precision = exec_policy.knobs.get("precision") if exec_policy is not None else None
    if precision is not None and precision.choice in ("tf32", "fp32"):
        tf32 = precision.choice == "tf32"

        def set_tf32(tf32=tf32) -> None:
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        actions.append(set_tf32)

    for action in actions:
        action()
    _state["kernel"], _state["execution"] = kernel, exec_policy
    _state["set"] = _current_switches()
    return {"set": dict(_state["set"]), "warnings": _state["warnings"][warnings_before:]}


def _current_switches() -> dict:
    out = {"sdpa_enabled": _sdpa_switches(), "float32_matmul_precision": torch.get_float32_matmul_precision(),
           "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "device": _device()}
    if _cuda():
        out["preferred_blas_library"] = str(torch.backends.cuda.preferred_blas_library()).split(".")[-1]
    return out


def _sdpa_probe() -> str:
    """The attention backend PyTorch selects now for a small fp32 (fp16 on CUDA) probe on this device."""
    dtype = torch.float16 if _cuda() else torch.float32
    q = torch.zeros(1, 2, 16, 64, device=_device(), dtype=dtype)
    return _SDPA_NAMES.get(int(torch._fused_sdp_choice(q, q, q)), "unknown")


_OP_CLASSES = {
    "matmul": lambda a: a @ a,
    "linear": lambda a: torch.nn.functional.linear(a, a),
    "softmax": lambda a: torch.softmax(a, -1),
    "layer_norm": lambda a: torch.nn.functional.layer_norm(a, a.shape[-1:]),
    "add": lambda a: a + a,
}


@contextmanager
def autocast(fp16: bool = False, bf16: bool = False, *, exec_policy: ExecutionPolicy | None = None) -> Iterator[dict]:
    """Mixed precision on this device (CUDA when present, else CPU) through ``torch.autocast``: matmul-like ops
    run in fp16/bf16; which others compute in fp32 follows PyTorch's autocast lists for the device (on CUDA,
    softmax, norms and losses are cast up; on the CPU fewer are), and ``explain()`` shows the dtype each op class
    produced, measured. ``exec_policy`` (else the one given to set_kernel_policy) must agree: a fixed
    precision other than the one asked is InvalidArgument. Yields the record ``explain()`` keeps: the dtype each
    op class produced in this context (measured on a probe when first entered) and how often it was entered."""
    if fp16 and bf16:
        raise _errors.InvalidArgument("autocast: fp16=True and bf16=True: ask for one")
    policy = exec_policy or _state["execution"]
    knob = policy.knobs.get("precision") if policy is not None else None
    if not fp16 and not bf16:
        if knob is None or knob.choice not in ("fp16", "bf16"):
            raise _errors.InvalidArgument("autocast: pass fp16=True or bf16=True (or an exec_policy with precision "
                                          "fp16 or bf16)")
        fp16, bf16 = knob.choice == "fp16", knob.choice == "bf16"
    wanted = "fp16" if fp16 else "bf16"
    if knob is not None and knob.mode == "fixed" and knob.choice != wanted:
        raise PolicyError(f"autocast({wanted}=True) contradicts the policy's fixed precision {knob.choice}")
    device = _device()
    dtype = torch.float16 if fp16 else torch.bfloat16
    record = next((r for r in _state["autocast"] if (r["device"], r["dtype"]) == (device, wanted)), None)
    with torch.autocast(device_type=device, dtype=dtype):
        if record is None:  # probed once per device and dtype: a training loop enters this every step
            probe = torch.ones(4, 4, device=device)
            with torch.no_grad():  # matmul-like ops on an fp32 input; the others on a matmul's output, as in a net
                hidden = probe @ probe
                ops = {name: str(op(probe if name in ("matmul", "linear") else hidden).dtype).replace("torch.", "")
                       for name, op in _OP_CLASSES.items()}
            record = {"device": device, "dtype": wanted, "ops": ops, "entered": 0}
            _state["autocast"].append(record)
        record["entered"] += 1
        yield record


class _SkipBody(Exception):
    """Raised by the tracer at the first line of a replayed capture_graph() block: the body is skipped."""


class _SkipBlock:
    """Skips the statements of the `with` block running in `frame`: a line tracer on that frame raises _SkipBody
    at the block's first line, and __exit__ swallows it. The block must start on its own line (after the `with`
    line): a body on the `with` line itself fires no line event and runs, which __exit__ detects (it ends without
    _SkipBody) and refuses with InvalidArgument, so the caller does not replay the graph on top of it. Tracing is
    restored on exit."""

    def __init__(self, frame) -> None:
        self.frame = frame

    def _tracer(self, frame, event, arg):
        if event == "line":
            raise _SkipBody
        return self._tracer

    def __enter__(self) -> None:
        self.previous = sys.gettrace()
        self.frame.f_trace = self._tracer
        sys.settrace(lambda *a: None)  # frame tracers fire only while a global tracer is set

    def __exit__(self, kind, value, tb) -> bool:
        sys.settrace(self.previous)
        self.frame.f_trace = None
        if kind is None:
            raise _errors.InvalidArgument(
                "capture_graph(): the block's body ran although this run replays the captured graph: it is on the "
                "`with` line itself (`with capture_graph(): step()`), where it cannot be skipped. Start the block on "
                "its own line after the `with` line; the graph was not replayed this time")
        return kind is _SkipBody


_WITH_OPS = {"BEFORE_WITH", "LOAD_SPECIAL"} & set(dis.opmap)  # how CPython enters a `with` (<=3.13; 3.14+)


def _with_caller():
    """The frame whose `with` statement entered the calling @contextmanager generator (call this directly from
    it): the frame 2 up (1 is contextlib's __enter__). Refused (InvalidArgument) where that frame is not executing
    a `with` statement (the context entered through ExitStack, another wrapper or a direct __enter__() call) or is
    a generator (a context manager wrapping capture_graph()), as skipping its lines would skip the wrong code. The
    `with` check reads the caller's bytecode (CPython: BEFORE_WITH up to 3.13, LOAD_SPECIAL + CALL from 3.14); on
    an interpreter with neither opcode it is not made."""
    enter, caller = sys._getframe(2), sys._getframe(3)
    why = None
    if enter.f_code is not contextlib._GeneratorContextManager.__enter__.__code__:
        why = "it was not entered through its context manager's __enter__"
    elif caller.f_code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR):
        why = f"the code entering it, {caller.f_code.co_name}(), is a generator (e.g. a context manager wrapping it)"
    elif _WITH_OPS:
        ops = list(dis.get_instructions(caller.f_code))
        at = next((k for k, op in enumerate(ops) if op.offset == caller.f_lasti), None)
        if at is None or not (ops[at].opname == "BEFORE_WITH" or
                              (ops[at].opname == "CALL" and any(op.opname == "LOAD_SPECIAL"
                                                                for op in ops[max(0, at - 4):at]))):
            why = f"{caller.f_code.co_name}() at line {caller.f_lineno} does not enter it with a `with` statement"
    if why:
        raise _errors.InvalidArgument(
            f"capture_graph() must be entered directly by a `with` statement in a plain function or module (it skips "
            f"that block's lines when replaying), but {why}: write `with capture_graph():` around the step itself")
    return caller


def _end_capture(end) -> None:
    """Calls `end` (ends the capture: torch.cuda.graph's __exit__) and raises InvalidArgument where PyTorch warns
    that the captured graph is empty (the block issued no CUDA work on the current stream and device: every replay
    would do nothing); PyTorch's other warnings are passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        end()
    empty = [w for w in caught if "CUDA Graph is empty" in str(w.message)]
    for w in caught:
        if w not in empty:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if empty:
        raise _errors.InvalidArgument(
            f"capture_graph(): the captured CUDA graph is empty ({str(empty[0].message)[:200]}): the block issued no "
            "CUDA work on the current stream and device, so replaying it would do nothing. Put the GPU work (on "
            "torch.cuda.current_device()) inside the block, or run it without capture_graph()")


class _GraphSite:
    """One capture_graph() call site: warm-up runs, then one captured run, then replays."""

    def __init__(self, where: str, warmup: int) -> None:
        self.where, self.warmup, self.calls, self.graph, self.replays = where, warmup, 0, None, 0
        self.record = {"site": where, "captured": False, "replays": 0, "why": "warming up"}


_sites: dict[str, _GraphSite] = {}


@contextmanager
def capture_graph(warmup: int = 3) -> Iterator[dict]:
    """CUDA-graph capture of the block (forward and backward) for static shapes. At each call site: the first
    ``warmup`` runs execute normally on a side stream (allocations and autograd state settle), the next run is
    captured into a CUDA graph and replayed, and later runs replay the graph instead of executing the block's
    Python (the block's statements are skipped; tensors it produced at capture, e.g. ``y`` and ``loss``, are
    updated in place by each replay). The block must therefore read its inputs from the same tensors each run
    (copy new data in with ``x.copy_(batch)``) and keep shapes fixed; ``.grad`` accumulates unless zeroed in
    place (``optimizer.zero_grad(set_to_none=False)``) outside the block. Without a CUDA device it raises
    ``xrt.Unavailable`` instead of silently doing nothing. ``xrt.InvalidArgument`` where it cannot work as said:
    the block does not start on its own line after the ``with`` line (its body would run and the graph replay too;
    found at the first replay, after that body ran), the captured graph is empty (the block issued no CUDA work on
    the current stream and device), or it is not entered directly by a ``with`` statement in a plain function or
    module (through ExitStack, a wrapping context manager or a generator: the lines to skip are not known)."""
    if not _cuda():
        reason = ("capture_graph() needs a CUDA device: CUDA graphs replay GPU work, and torch.cuda.is_available() "
                  f"is False here (PyTorch {torch.__version__}). Run the block without capture_graph() on this "
                  "machine")
        _state["graphs"].append({"captured": False, "why": reason})
        raise _errors.Unavailable(reason)
    caller = _with_caller()  # the frame with the `with` statement, checked
    where = f"{caller.f_code.co_filename}:{caller.f_lineno}"
    site = _sites.get(where)
    if site is None:
        site = _sites[where] = _GraphSite(where, warmup)
        _state["graphs"].append(site.record)
    site.calls += 1
    if site.calls <= site.warmup:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            yield site.record
        torch.cuda.current_stream().wait_stream(side)
        return
    if site.graph is None:
        graph = torch.cuda.CUDAGraph()
        capture = torch.cuda.graph(graph)
        capture.__enter__()
        try:
            yield site.record
        except BaseException:
            capture.__exit__(*sys.exc_info())  # ends the capture; the block's error goes on
            raise
        try:
            _end_capture(lambda: capture.__exit__(None, None, None))
        except _errors.InvalidArgument as err:
            site.record.update(captured=False, why=str(err))
            raise
        site.graph = graph
        site.record.update(captured=True, why=f"captured after {site.warmup} warm-up runs")
        graph.replay()  # capture records the work without running it
        return
    with _SkipBlock(caller):
        yield site.record
    site.graph.replay()
    site.replays += 1
    site.record["replays"] = site.replays


def explain() -> dict:
    """What the calls and contexts did: the kernel policy asked and the switches PyTorch holds now, the attention
    backend PyTorch selects for a probe, warnings (prefer knobs not honoured), each autocast context's measured
    dtype per op class, and each capture_graph() site (captured or not and why, replays)."""
    return {"device": _device(), "torch": torch.__version__,
            "kernel_policy": _state["kernel"].to_json() if _state["kernel"] else None,
            "exec_policy": _state["execution"].to_json() if _state["execution"] else None,
            "switches": _current_switches(), "attention_backend_selected": _sdpa_probe(),
            "warnings": list(_state["warnings"]), "autocast": list(_state["autocast"]),
            "capture_graph": list(_state["graphs"])}


def reset() -> None:
    """Forgets the recorded history (explain()) and restores PyTorch's default switches."""
    _set_sdpa(set(_SDPA_SWITCHES))
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    _state.update(kernel=None, execution=None, set={}, warnings=[], autocast=[], graphs=[])
    _sites.clear()


__all__ = ["set_kernel_policy", "autocast", "capture_graph", "explain", "reset"]
