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
import warnings

from . import _core, _errors
from .onnx_tensors import ExternalDataError, check_inline, store_arrays

_lock = threading.Lock()
_registered = False
# The handle the last _init() on this thread created: the Python loader takes it to run bundles whose inputs or
# outputs are sequences, maps or optionals, which the C API does not carry (formats/xrtpkg.md, "Value types").
_created = threading.local()
# Engine devices this backend serves: the CPU provider ships in the `onnxruntime` wheel; "cuda" needs ONNX Runtime's
# GPU build (onnxruntime-gpu, installed in place of onnxruntime: README, "ONNX Runtime on CUDA") and a GPU.
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class _Handle:
    __slots__ = ("session", "input_names", "output_names", "bound", "store_values", "direct")

    def __init__(self, session, input_names, output_names, bound=None, store_values=(), direct=None):
        self.session = session
        self.input_names = input_names
        self.output_names = output_names
        self.bound = bound  # _Bound where the variant replays a CUDA graph
        self.store_values = store_values  # OrtValues over the weight store: ONNX Runtime uses them, never copies
        # CPU sessions: ONNX Runtime's run(output_names, feeds, run_options) under InferenceSession.run. That wrapper
        # only re-checks what the core already guarantees before execute() (every input present, checked against
        # the manifest; numpy arrays, not OrtValues) and retries on another provider (CUDA's fallback, never the
        # CPU's): skipping it saves ~4 us of the ~12 us the runtime adds per call on tiny models.
        self.direct = direct


class _Bound:
    """A CUDA-graph session's device buffers: ONNX Runtime captures the graph on the first run and replays it on
    later ones, which is valid only while every input and output stays at the same device address with the same
    shape. So the inputs and outputs are bound once (IO binding) to buffers of the session's static shapes; each run
    copies the caller's arrays into them and the outputs out. One run at a time per session (the lock)."""

    def __init__(self, session, device: str = "cuda", device_id: int = 0):
        import numpy as np
        import onnxruntime

        self.lock = threading.Lock()
        self.binding = session.io_binding()
        self.inputs, self.outputs = [], []
        for role, specs in (("input", session.get_inputs()), ("output", session.get_outputs())):
            for spec in specs:
                if not all(isinstance(d, int) for d in spec.shape) or spec.type not in _NUMPY_OF:
                    raise _errors.InvalidArgument(
                        f"onnxruntime: enable_cuda_graph needs static tensor shapes, but {role} {spec.name!r} is "
                        f"{spec.type} {spec.shape}; rebuild the bundle with --shape (or without the CUDA graph)")
                dtype = np.dtype(_NUMPY_OF[spec.type])
                value = onnxruntime.OrtValue.ortvalue_from_shape_and_type(spec.shape, dtype, device, device_id)
                (self.inputs if role == "input" else self.outputs).append((spec.name, value, dtype, list(spec.shape)))
                if role == "input":
                    self.binding.bind_ortvalue_input(spec.name, value)
                else:
                    self.binding.bind_ortvalue_output(spec.name, value)

    def run(self, session, arrays: list):
        import numpy as np

        with self.lock:
            for (name, value, dtype, shape), array in zip(self.inputs, arrays):
                array = np.asarray(array, order="C")  # a scalar input stays 0-d
                if list(array.shape) != shape or array.dtype != dtype:
                    raise _errors.InvalidArgument(
                        f"onnxruntime: input {name!r} is {array.dtype} {list(array.shape)}, but this variant replays a "
                        f"CUDA graph captured for {dtype} {shape}")
                value.update_inplace(array)  # host -> the bound device buffer
            session.run_with_iobinding(self.binding)
            return [value.numpy() for _, value, _, _ in self.outputs]  # device -> host copies


_NUMPY_OF = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
             "tensor(bool)": "bool"}


def _distributions() -> list[str]:
    """The installed distributions that provide the `onnxruntime` module."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(name)
            found.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


BOTH_INSTALLED = ("onnxruntime and onnxruntime-gpu are both installed; they write one `onnxruntime` module, so which "
                  "build you get is whichever was installed last. Keep one: `pip uninstall -y onnxruntime "
                  "onnxruntime-gpu && pip install onnxruntime-gpu` for CUDA variants (README, \"ONNX Runtime on "
                  "CUDA\"), or reinstall `onnxruntime` for the CPU only")


def cuda_unavailable() -> str | None:
    """None where onnxruntime's CUDAExecutionProvider is here, else why not and what to do (the reason a CUDA
    variant is skipped with)."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return None
    found = _distributions()
    if len(found) > 1:
        return f"onnxruntime has no CUDAExecutionProvider: {BOTH_INSTALLED}"
    return (f"onnxruntime {onnxruntime.__version__} ({', '.join(found) or 'unknown distribution'}) has no "
            "CUDAExecutionProvider: install ONNX Runtime's GPU build in place of the CPU one (`pip uninstall -y "
            "onnxruntime && pip install onnxruntime-gpu`; README, \"ONNX Runtime on CUDA\") on a machine with an "
            "NVIDIA GPU and driver")


def _split_device(device: str) -> tuple[str, int] | None:
    """"cuda:1" -> ("cuda", 1), "cpu" -> ("cpu", 0); None for a name this backend does not know."""
    kind, sep, ordinal = device.partition(":")
    if kind not in _PROVIDERS or (sep and not ordinal.isdigit()) or (kind == "cpu" and sep and ordinal != "0"):
        return None
    return kind, int(ordinal) if sep else 0


def _has_device(device: str) -> bool:
    """cpu: always. cuda[:N]: where the CUDA provider is here, or where an NVIDIA device is (then a variant's init
    fails naming the missing provider, and the runtime records that as the reason it skipped it)."""
    split = _split_device(device)
    if split is None:
        return False
    if split[0] == "cpu":
        return True
    return os.path.exists("/dev/nvidiactl") or cuda_unavailable() is None


# Variant options a bundle may set (SECURITY.md, "The engine boundary"): anything else is refused, naming the key.
# graph_optimization_level records what xrtc applied offline (the runtime always finishes with ORT_ENABLE_ALL).
_ALLOWED = {"graph_optimization_level": ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"),
            "enable_cpu_mem_arena": ("0", "1"),
            "intra_op_num_threads": None,  # an integer >= 0, clamped to the CPUs this process may use
            # CUDA provider options (cuda variants only): a CUDA graph per session, TF32 tensor-core math
            "enable_cuda_graph": ("0", "1"), "use_tf32": ("0", "1")}
_CUDA_KEYS = ("enable_cuda_graph", "use_tf32")
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


def cuda_provider_options(options_json: str, device: str) -> dict[str, str]:
    """The CUDA provider's options among a variant's (already checked by session_options); on a cpu device they
    are refused: a bundle's cpu variant asking for a CUDA graph is malformed."""
    options = json.loads(options_json)
    chosen = {k: str(options[k]) for k in _CUDA_KEYS if k in options}
    if chosen and device != "cuda":
        raise _errors.InvalidArgument(f"onnxruntime: variant options {', '.join(sorted(chosen))} apply to the CUDA "
                                      f"provider only, not to device {device!r}")
    return chosen


def _init(device: str, artifacts: dict, options_json: str) -> _Handle:
    import onnxruntime

    split = _split_device(device)
    if split is None:
        raise _errors.InvalidArgument(f"onnxruntime: unknown device {device!r} (known: cpu, cuda, cuda:N)")
    device, device_id = split
    so = session_options(options_json)
    cuda_options = cuda_provider_options(options_json, device)
    if device == "cuda":
        cuda_options["device_id"] = str(device_id)
        missing = cuda_unavailable()
        if missing:
            raise _errors.Unavailable(missing)
    if "model" not in artifacts:
        raise _errors.InvalidArgument("onnxruntime: the variant has no 'model' artifact; rebuild the bundle with xrtc")
    model = bytes(artifacts["model"])  # private: ONNX Runtime never sees the bundle's own memory
    store = artifacts.get("weights")  # the verified weight store (private memory the session keeps alive)
    try:
        # The one external-data walk (xpuruntime.onnx_tensors), shared with xrtc; store references are checked
        # against the store, anything else external is refused.
        parsed = check_inline(model, None if store is None else len(store))
        store_values = store_arrays(parsed, store) if store is not None else ([], [])
    except ExternalDataError as err:
        raise _errors.DataCorrupt(f"onnxruntime: {err}") from None
    ort_values = [onnxruntime.OrtValue.ortvalue_from_numpy(a) for a in store_values[1]]
    if ort_values:
        # Zero copy: OrtValues over the store's bytes; ONNX Runtime takes them instead of reading external data.
        so.add_external_initializers(store_values[0], ort_values)
    provider = (_PROVIDERS[device], cuda_options) if device == "cuda" else _PROVIDERS[device]
    try:
        session = onnxruntime.InferenceSession(model, so, providers=[provider])
    except Exception as err:  # onnxruntime raises untyped errors
        if cuda_options.get("enable_cuda_graph") != "1" or "graph" not in str(err).lower():
            raise
        # ONNX Runtime captures a CUDA graph only when every node runs on the CUDA provider; said, then run without.
        warnings.warn(f"onnxruntime: this variant cannot run in one CUDA graph ({str(err)[:300]}); running it "
                      "without (enable_cuda_graph off)", RuntimeWarning, stacklevel=2)
        cuda_options = dict(cuda_options, enable_cuda_graph="0")
        session = onnxruntime.InferenceSession(model, so, providers=[(_PROVIDERS[device], cuda_options)])
    bound = None
    if cuda_options.get("enable_cuda_graph") == "1":
        plain = dict(cuda_options, enable_cuda_graph="0")
        session, bound = _bind(session, lambda: onnxruntime.InferenceSession(
            model, so, providers=[(_PROVIDERS[device], plain)]), device_id=device_id)
    direct = getattr(session, "_sess", None) if device == "cpu" else None
    handle = _Handle(session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()], bound,
                     tuple(ort_values), getattr(direct, "run", None))
    _created.handle = handle
    return handle


def _bind(session, plain, device: str = "cuda", device_id: int = 0):
    """(session, _Bound) for a CUDA-graph session; where its inputs or outputs cannot be bound (a symbolic dim, a
    type outside _NUMPY_OF), warns and returns (plain(), None): the session recreated without the CUDA graph, so
    the variant still runs."""
    try:
        return session, _Bound(session, device, device_id)
    except Exception as err:  # _Bound's InvalidArgument, or onnxruntime's untyped errors
        warnings.warn(f"onnxruntime: this variant cannot replay a CUDA graph ({str(err)[:300]}); running it without "
                      "(enable_cuda_graph off)", RuntimeWarning, stacklevel=3)
        return plain(), None


def take_created():
    """The handle the last init on this thread created (then forgotten), or None."""
    handle = getattr(_created, "handle", None)
    _created.handle = None
    return handle


def _execute(handle: _Handle, arrays: list):
    # Inputs arrive in the manifest's input order, which is the graph's (the compiler wrote both from one graph).
    if handle.direct is not None:
        return handle.direct(handle.output_names, dict(zip(handle.input_names, arrays)), None)
    if handle.bound is not None:
        return handle.bound.run(handle.session, arrays)
    return handle.session.run(handle.output_names, dict(zip(handle.input_names, arrays)))


def _version() -> str:
    """The version of the distribution providing `onnxruntime` (the CPU or the GPU build)."""
    for name in _distributions():
        return importlib.metadata.version(name)
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
