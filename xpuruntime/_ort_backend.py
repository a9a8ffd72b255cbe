"""ONNX Runtime as a backend of the C++ runtime, through ONNX Runtime's Python API.

ONNX Runtime ships no C/C++ headers on the registries we build from, so its variants run through its Python API:
this module registers a backend with the C++ core, which calls back here (re-acquiring the GIL) to create and run
sessions. onnxruntime is imported only when a bundle's ONNX Runtime variant is first initialised.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading

from . import _core

_lock = threading.Lock()
_registered = False
# Engine devices this backend serves: the CPU provider ships in the `onnxruntime` wheel; "cuda" needs the
# onnxruntime-gpu wheel (xpuruntime[cuda]) and a GPU.
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class _Handle:
    __slots__ = ("session", "input_names", "output_names")

    def __init__(self, session, input_names, output_names):
        self.session = session
        self.input_names = input_names
        self.output_names = output_names


def _has_device(device: str) -> bool:
    provider = _PROVIDERS.get(device)
    if provider is None:
        return False
    if device == "cpu":
        return True
    import onnxruntime
    return provider in onnxruntime.get_available_providers()


def _init(device: str, artifacts: dict, options_json: str) -> _Handle:
    import onnxruntime

    options = json.loads(options_json)
    session_options = onnxruntime.SessionOptions()
    # The artifact was optimised offline up to options["graph_optimization_level"] (machine-independent rewrites);
    # the machine-specific ones (ORT_ENABLE_ALL: layout transforms) still run here, where the machine is known.
    session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = options.get("intra_op_num_threads")
    if threads is not None:
        session_options.intra_op_num_threads = int(threads)
    session = onnxruntime.InferenceSession(bytes(artifacts["model"]), session_options,
                                           providers=[_PROVIDERS[device]])
    return _Handle(session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])


def _execute(handle: _Handle, arrays: list):
    # Inputs arrive in the manifest's input order, which is the graph's (the compiler wrote both from one graph).
    return handle.session.run(handle.output_names, dict(zip(handle.input_names, arrays)))


def _version() -> str:
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def register() -> None:
    """Registers the backend once per process (cheap: imports nothing heavy)."""
    global _registered
    if _registered:
        return
    with _lock:
        if not _registered:
            _core.register_python_backend("onnxruntime", _version(), _has_device, _init, _execute)
            _registered = True
