"""ONNX Runtime as a backend of the C++ runtime, through ONNX Runtime's Python API.

ONNX Runtime ships no C/C++ headers on the registries we build from, so its variants run through its Python API:
this module registers a backend with the C++ core, which calls back here (re-acquiring the GIL) to create and run
sessions. onnxruntime is imported only when a bundle's ONNX Runtime variant is first initialised.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import threading

from . import _core, _errors
from .onnx_tensors import ExternalDataError, check_inline

_lock = threading.Lock()
_registered = False
# The handle the last _init() on this thread created: the Python loader takes it to run bundles whose inputs or
# outputs are sequences, maps or optionals, which the C API does not carry (formats/xrtpkg.md, "Value types").
_created = threading.local()
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


# Variant options a bundle may set (SECURITY.md, "The engine boundary"): anything else is refused, naming the key.
# graph_optimization_level records what xrtc applied offline (the runtime always finishes with ORT_ENABLE_ALL).
_ALLOWED = {"graph_optimization_level": ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"),
            "enable_cpu_mem_arena": ("0", "1"),
            "intra_op_num_threads": None}  # an integer >= 0, clamped to the CPUs this process may use
_CALLER_KEYS = ("xrt.cache_dir",)  # added by the core from the caller's options; ONNX Runtime keeps no cache


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), which bounds a bundle's thread count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def session_options(options_json: str):
    """The onnxruntime.SessionOptions for a variant's options, allow-listed and bounded: an unknown key or a bad
    value raises InvalidArgument; intra_op_num_threads over usable_cpus() is clamped to it (0 = ONNX Runtime's
    default, which is the CPU count)."""
    import onnxruntime

    try:
        options = json.loads(options_json)
    except (ValueError, RecursionError):  # the core caps nesting at 16 levels; this is for direct callers
        options = None
    if not isinstance(options, dict):
        raise _errors.InvalidArgument("onnxruntime: variant options must be a JSON object of strings")
    so = onnxruntime.SessionOptions()
    # The artifact was optimised offline up to options["graph_optimization_level"] (machine-independent rewrites);
    # the machine-specific ones (ORT_ENABLE_ALL: layout transforms) still run here, where the machine is known.
    so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The artifact type the manifest promises: an ONNX model, never ONNX Runtime's own (flatbuffer) format.
    so.add_session_config_entry("session.load_model_format", "ONNX")
    for key, value in options.items():
        if key in _CALLER_KEYS:
            continue
        if key not in _ALLOWED:
            raise _errors.InvalidArgument(
                f"onnxruntime: variant option {key!r} is not allowed in a bundle; allowed: {', '.join(sorted(_ALLOWED))}"
                " (paths and other host settings come from the caller)")
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None
        allowed = _ALLOWED[key]
        if key == "intra_op_num_threads":
            if text is None or not text.isdigit() or len(text) > 19:
                raise _errors.InvalidArgument(f"onnxruntime: option intra_op_num_threads is {value!r:.80}; expected "
                                              "an integer >= 0")
            so.intra_op_num_threads = min(int(text), usable_cpus())
        elif text not in allowed:
            raise _errors.InvalidArgument(f"onnxruntime: option {key} is {value!r:.80}; allowed: {', '.join(allowed)}")
        elif key == "enable_cpu_mem_arena" and text == "0":  # policy memory = "low"
            so.enable_cpu_mem_arena = False
            so.enable_mem_pattern = False
    return so


def _init(device: str, artifacts: dict, options_json: str) -> _Handle:
    import onnxruntime

    so = session_options(options_json)
    if "model" not in artifacts:
        raise _errors.InvalidArgument("onnxruntime: the variant has no 'model' artifact; rebuild the bundle with xrtc")
    model = bytes(artifacts["model"])  # private: ONNX Runtime never sees the bundle's own memory
    try:
        check_inline(model)  # the one external-data walk (xpuruntime.onnx_tensors), shared with xrtc
    except ExternalDataError as err:
        raise _errors.DataCorrupt(f"onnxruntime: {err}") from None
    session = onnxruntime.InferenceSession(model, so, providers=[_PROVIDERS[device]])
    handle = _Handle(session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    _created.handle = handle
    return handle


def take_created():
    """The handle the last init on this thread created (then forgotten), or None."""
    handle = getattr(_created, "handle", None)
    _created.handle = None
    return handle


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
