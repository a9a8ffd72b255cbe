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
    if str(options.get("enable_cpu_mem_arena", "1")) == "0":  # policy memory = "low"
        session_options.enable_cpu_mem_arena = False
        session_options.enable_mem_pattern = False
    model = bytes(artifacts["model"])
    _refuse_external_data(model)
    session = onnxruntime.InferenceSession(model, session_options, providers=[_PROVIDERS[device]])
    return _Handle(session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])


def _refuse_external_data(model: bytes) -> None:
    """A bundle never names a file (SECURITY.md): refuse an ONNX artifact with any tensor stored as external data.
    ONNX Runtime, given bytes, resolves such locations against the current directory whenever no optimizer happens
    to touch the tensor first, so a hostile bundle could read local files into its outputs."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    proto = onnx.load_from_string(model)  # parses only: loading from bytes never follows external data
    tensors = list(_get_all_tensors(proto))
    for sparse in proto.graph.sparse_initializer:
        tensors += [sparse.values, sparse.indices]
    named = [t.name or "(unnamed)" for t in tensors if uses_external_data(t)]
    if named:
        raise ValueError(f"the ONNX artifact stores tensor(s) {named[:5]} as external data (a file path); bundles "
                         "carry every tensor inline: rebuild the bundle with xrtc compile")


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
