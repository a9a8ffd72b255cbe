"""The plan interpreter: runs a cuda variant's plan on the CPU, exactly as the plugin would lay it out (one arena
at the planned offsets, weights from the weights section, launches in order), with the same Triton kernels under
Triton's interpreter (TRITON_INTERPRET) and numpy for the cuBLASLt GEMMs (fp32 accumulation, output rounded to the
GEMM's dtype, GELU_BIAS as the tanh approximation like cuBLASLt). It checks the lowering, the generated kernels and
the memory plan numerically where no GPU exists. Slow (seconds per kernel launch at small shapes): for small models.

NOTE: Triton's interpreter copies torch tensors to the host; our buffers are numpy arrays already on the host, so
the two copy hooks of its GridExecutor are bypassed while a launch runs (tied to the pinned Triton version).
"""

from __future__ import annotations

import contextlib
import json
import threading

import numpy as np

from . import aot

_lock = threading.Lock()


class _Dtype:
    """Stands in for a torch dtype. One instance per name for the whole process (`_dtype`): Triton's argument
    specialisation caches the type it derives from a dtype object by that object's identity, so a short-lived
    dtype object whose address is later reused by one of another name gets the other's cached type (an int64
    pointer read as fp16, and so on). That was the run-to-run fp16 difference of the plan interpreter."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return "torch." + self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Dtype) and other.name == self.name


_DTYPES: dict[str, _Dtype] = {}


def _dtype(name: str) -> _Dtype:
    if name not in _DTYPES:
        _DTYPES[name] = _Dtype(name)
    return _DTYPES[name]


class _Ptr:
    """What Triton's interpreter needs of a tensor argument: its address and dtype."""

    def __init__(self, array: np.ndarray, dtype: str) -> None:
        self.array, self.dtype = array, _dtype(dtype)

    def data_ptr(self) -> int:
        return self.array.ctypes.data


@contextlib.contextmanager
def _host_arguments():
    from triton.runtime import interpreter

    cls = interpreter.GridExecutor
    init, restore = cls._init_args_hst, cls._restore_args_dev
    cls._init_args_hst = lambda self, args, kwargs: (list(args), dict(kwargs))
    cls._restore_args_dev = lambda self, *a: None
    try:
        yield
    finally:
        cls._init_args_hst, cls._restore_args_dev = init, restore


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def run(plan: dict | bytes, weights: bytes, sources: dict | bytes, feeds: dict, stand_ins: bool = False) -> dict:
    """Outputs (name -> array) of the plan on `feeds` (input name -> array of the planned shape). With `stand_ins`,
    each GEMM runs its stand-in Triton kernel (the plugin's path while cuBLASLt loads) instead of numpy.

    Triton's interpreter must be on before `triton` is first imported (its own library functions are decorated at
    import): when this process imported triton without it (the compiler did, to build cubins), the plan runs in a
    child process with TRITON_INTERPRET=1."""
    import os
    import sys

    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        return _run_child(plan, weights, sources, feeds, stand_ins)
    return _run(plan, weights, sources, feeds, stand_ins)


def _run_child(plan, weights, sources, feeds, stand_ins=False) -> dict:
    import os
    import subprocess
    import sys
    import tempfile

    if isinstance(plan, dict):
        plan = json.dumps(plan).encode()
    if isinstance(sources, dict):
        sources = json.dumps(sources).encode()
    with tempfile.TemporaryDirectory(prefix="xrtc-interp-") as d:
        for name, data in (("plan.json", plan), ("weights.bin", weights), ("sources.json", sources)):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        np.savez(os.path.join(d, "feeds.npz"), **feeds)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        env = dict(os.environ, TRITON_INTERPRET="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        argv = [sys.executable, "-m", "xrtc.targets.cuda.interp", d] + (["--stand-ins"] if stand_ins else [])
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"plan interpreter failed: {proc.stderr.strip()[-1500:]}")
        with np.load(os.path.join(d, "outputs.npz"), allow_pickle=False) as out:
            return {k: out[k] for k in out.files}


def _run(plan, weights, sources, feeds, stand_ins=False) -> dict:
    if isinstance(plan, (bytes, bytearray)):
        plan = json.loads(plan)
    if isinstance(sources, (bytes, bytearray)):
        sources = json.loads(sources)
    arena = np.zeros(max(plan["arena_bytes"], 1), np.uint8)
    wbuf = np.frombuffer(weights, np.uint8).copy()
    arrays = []
    for t in plan["tensors"]:
        dt = np.dtype(t["dtype"])
        count = int(np.prod(t["shape"], dtype=np.int64))
        if t["storage"] == "arena":
            a = arena[t["offset"]:t["offset"] + t["bytes_max"]].view(dt)
        elif t["storage"] == "weight":
            a = wbuf[t["offset"]:t["offset"] + t["bytes_max"]].view(dt)
        elif t["storage"] == "input":
            x = np.asarray(feeds[t["name"]])
            if list(x.shape) != list(t["shape"]):
                raise ValueError(f"input {t['name']!r}: shape {list(x.shape)}, planned {t['shape']}")
            a = np.ascontiguousarray(x.astype(dt)).reshape(-1).copy()
        else:
            a = np.zeros(count, dt)
        arrays.append(a)
    with _lock, _host_arguments():
        for launch in plan["launches"]:
            if "gemm" in launch and stand_ins:
                if "stand_in" not in plan["gemms"][launch["gemm"]]:
                    raise ValueError(f"gemm {launch['gemm']} has no stand-in kernel")
                launch = plan["gemms"][launch["gemm"]]["stand_in"]
            if "gemm" in launch:
                g = plan["gemms"][launch["gemm"]]
                m, n, k = g["m"], g["n"], g["k"]
                a = arrays[g["a"]][:m * k].reshape(m, k).astype(np.float32)
                b = arrays[g["b"]][:k * n].reshape(k, n).astype(np.float32)
                c = a @ b * g.get("alpha", 1.0)
                if g["bias"] is not None:
                    c = c + arrays[g["bias"]][:n].astype(np.float32)
                if g["epilogue"] == "gelu_bias":
                    c = _gelu_tanh(c)
                elif g["epilogue"] in ("relu", "relu_bias"):
                    c = np.maximum(c, 0)
                out = arrays[g["c"]]
                out[:m * n] = c.reshape(-1).astype(out.dtype)
                continue
            kern = plan["kernels"][launch["kernel"]]
            fn = aot.load_kernel(sources[kern["source_sha256"]], interpret=True)
            args = [_Ptr(arrays[p["tensor"]], plan["tensors"][p["tensor"]]["dtype"]) for p in kern["params"]
                    if "tensor" in p]
            fn[tuple(launch["grid"])](*args, GDC=False)
    return {plan["tensors"][i]["name"]: arrays[i].reshape(plan["tensors"][i]["shape"]).copy()
            for i in plan["outputs"]}


if __name__ == "__main__":
    import os
    import sys

    folder = sys.argv[1]
    with open(os.path.join(folder, "plan.json"), "rb") as f:
        plan_bytes = f.read()
    with open(os.path.join(folder, "weights.bin"), "rb") as f:
        weight_bytes = f.read()
    with open(os.path.join(folder, "sources.json"), "rb") as f:
        source_bytes = f.read()
    with np.load(os.path.join(folder, "feeds.npz"), allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}
    np.savez(os.path.join(folder, "outputs.npz"), **_run(plan_bytes, weight_bytes, source_bytes, inputs,
                                                         "--stand-ins" in sys.argv[2:]))
