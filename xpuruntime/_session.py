"""The tiny Python loader: a thin shell over the C++ runtime (xpuruntime._core). The work happens in C++."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import _core, _errors, _ort_backend

_core.set_error_factory(_errors.from_status)


class IOInfo(NamedTuple):
    """An input or output: name, NumPy dtype name ("string" for string tensors; for a sequence, map or optional
    its type, e.g. "sequence<map<int64, tensor(float32)>>", with shape ()), shape (ints; str for a named dynamic
    dim; None when unknown)."""

    name: str
    dtype: str
    shape: tuple


class Session:
    """A bundle loaded for one device, running one variant. ``run()`` is thread-safe and releases the GIL.

    The variant is picked by the C++ runtime: the bundle's preference order, first one whose engine and device are
    present (or exactly ``engine`` / ``variant`` when given). ``explain()`` says which ran and why.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", *, engine: str | None = None,
                 variant: str | None = None, trusted_keys=None, require_signature: bool = False,
                 fallback=None, cache_dir: str | os.PathLike | None = None):
        if not isinstance(device, str) or not device:
            raise _errors.InvalidArgument(f"device must be a non-empty string such as 'cpu', got {device!r}")
        if fallback is not None and (isinstance(fallback, str) or
                                     not all(isinstance(d, str) and d for d in fallback)):
            raise _errors.InvalidArgument(f"fallback must be a list of device names such as ['cpu'] (or None for "
                                          f"the bundle's chain, [] for none), got {fallback!r}")
        keys = _trusted_keys(trusted_keys)
        _ort_backend.register()
        _ort_backend.take_created()
        opened = time.perf_counter()
        self._bundle = _core.Bundle(os.fspath(path), keys, bool(require_signature))
        creating = time.perf_counter()
        if cache_dir is None and device.lower() == "npu":
            cache_dir = default_cache_dir()  # NPU variants compile at load: keep that work by default
        self._session = _core.Session(self._bundle, device, engine or "", variant or "",
                                      None if fallback is None else list(fallback),
                                      os.fspath(cache_dir) if cache_dir else "")
        self.inputs = [IOInfo(*info) for info in self._session.inputs]
        self.outputs = [IOInfo(*info) for info in self._session.outputs]
        self._output_names = [o.name for o in self.outputs]
        created_at = time.perf_counter()
        self._explain = json.loads(self._session.describe())
        self._load = _load_profile(self._explain.pop("load", {}), creating - opened, created_at - creating)
        self._signer = self._bundle.signer
        self._values = None  # the ONNX Runtime handle, for bundles with sequences, maps or optionals
        created = _ort_backend.take_created()
        # The running ONNX Runtime CPU session's own run (the handle the core just created for the variant it chose:
        # the chosen variant's init is the last one): run() calls it directly (see _run_direct).
        self._direct = (created.direct if created is not None and self.engine == "onnxruntime" and
                        created.direct is not None else None)
        self._direct_names = None if self._direct is None else created.output_names
        value_types = _value_types(self.manifest)
        if value_types:
            # The core parsed and checked these types (formats/xrtpkg.md, "Value types") and chose the variant; the
            # C API carries only tensors, so such values go straight to ONNX Runtime's Python API.
            self.inputs = [i._replace(dtype=value_types.get(("in", i.name), i.dtype)) for i in self.inputs]
            self.outputs = [o._replace(dtype=value_types.get(("out", o.name), o.dtype)) for o in self.outputs]
            if self.engine != "onnxruntime" or created is None:
                name = next(n for _, n in value_types)
                raise _errors.Unimplemented(
                    f"'{name}' is a sequence, map or optional, which only ONNX Runtime runs; variant "
                    f"{self.variant!r} uses {self.engine}: load with engine='onnxruntime'")
            self._values = created
            self._value_kinds = value_types
            self._direct = None

    def run(self, feeds: Mapping[str, Any], output_names: list[str] | None = None, *, outputs_on: str = "host",
            stream=None) -> dict[str, Any]:
        """Runs once. ``feeds`` maps every input name to a tensor whose dtype matches exactly: a numpy array
        (converted with ``np.ascontiguousarray`` only when it is not C-contiguous), or any DLPack tensor
        (``__dlpack__`` / ``__dlpack_device__``: torch, cupy, jax, numpy >= 1.22), taken without a copy. CPU DLPack
        tensors are host memory; CUDA tensors must be C-contiguous and on the session's device. A cuda session copies
        host inputs to the device (and outputs back) and copies device inputs device-to-device into its captured
        graph's input buffers (``explain()["engine_info"]["copies"]``). Engines that take only host memory (cpu
        sessions, ONNX Runtime variants run through its Python API) refuse device tensors (Unimplemented, naming the
        input and its device).

        ``outputs_on="host"`` (default) returns numpy arrays that own (through the runtime) their memory.
        ``outputs_on="device"`` leaves the outputs where the session's device computed them, with no copy to the
        host: a cuda session returns DLPack-capable arrays in device memory (``torch.from_dlpack(out["y"])``,
        ``cupy.from_dlpack(...)``; each owns its own allocation, freed when the last reference goes); a cpu session
        returns numpy arrays as with "host".

        ``stream`` (cuda sessions): the CUDA stream to order the run on, as an integer CUstream handle or an object
        with ``cuda_stream`` (torch.cuda.Stream) or ``ptr`` (cupy Stream). The run waits for the work already on it;
        work queued on it afterwards sees the outputs. With ``outputs_on="device"`` and a stream the call returns
        without waiting for the GPU. None: the CUDA legacy default stream (torch's default stream), and the outputs
        are complete when run() returns. DLPack inputs are exported for that stream (``__dlpack__(stream=...)``).
        ``output_names`` selects a subset of the outputs."""
        session = self._session
        if session is None:
            raise _errors.FailedPrecondition("run() on a closed session: load the bundle again")
        if self._values is not None:
            if stream is not None:
                raise _errors.InvalidArgument("stream: this bundle runs on ONNX Runtime's Python API (sequences, maps "
                                              "or optionals), which takes no CUDA stream")
            return self._run_values(feeds, output_names)
        placed = outputs_on != "host" or stream is not None
        if self._direct is not None and not placed and type(feeds) is dict and len(feeds) == len(self.inputs) and \
                all(type(v) is np.ndarray and v.dtype.kind in _DIRECT_KINDS and v.flags.c_contiguous
                    for v in feeds.values()):
            results = self._run_direct(feeds)
            if results is not None:
                return self._selected(results, output_names)
        # Hot path first (tiny models: every microsecond counts); the diagnostics below run only on failure.
        try:
            names = list(feeds)
            arrays = [v if type(v) is np.ndarray and v.flags.c_contiguous else self._tensor(name, v, stream)
                      for name, v in feeds.items()]
            if placed:
                results = dict(zip(self._output_names,
                                   session.run(names, arrays, _outputs_on_device(outputs_on), _stream_handle(stream))))
            else:
                results = dict(zip(self._output_names, session.run(names, arrays)))
        except (TypeError, AttributeError):
            if not isinstance(feeds, Mapping):
                raise _errors.InvalidArgument(
                    f"run() takes a dict of input name -> array, got {type(feeds).__name__}; inputs are "
                    + ", ".join(i.name for i in self.inputs)) from None
            bad_names = [n for n in feeds if not isinstance(n, str)]
            if bad_names:
                raise _errors.InvalidArgument(f"input names must be str, got {bad_names!r:.80}") from None
            raise
        return self._selected(results, output_names)

    def _run_direct(self, feeds: dict) -> dict | None:
        """ONNX Runtime CPU variants: the session's own run, without the hop through the C++ core and back (measured
        5-17 us per call of the runtime's, bench/call_overhead.py), for the inputs the core would hand over as they
        are (a dict of C-contiguous numeric or bool numpy arrays, one per input). The core's checks are not lost:
        ONNX Runtime checks names, dtypes and shapes against the same graph (the manifest's inputs and the variant's
        graph are written from one graph), and where it refuses, None sends the call down the core's path, which
        raises the typed error (InvalidArgument naming the input) or runs it. Thread-safe: ONNX Runtime's run is,
        and it releases the GIL."""
        try:
            return dict(zip(self._output_names, self._direct(self._direct_names, feeds, None)))
        except Exception:  # noqa: BLE001 - the core path says what is wrong, through xpuruntime's error types
            return None

    def _selected(self, results: dict, output_names):
        """`results` restricted to `output_names` (None: all), in that order; unknown names are InvalidArgument."""
        if output_names is None:
            return results
        unknown = [n for n in output_names if n not in results]
        if unknown:
            raise _errors.InvalidArgument(f"unknown output name(s) {unknown}; outputs are {self._output_names}")
        return {n: results[n] for n in output_names}

    def _run_values(self, feeds, output_names):
        """run() for bundles with sequences, maps or optionals: the inputs are checked here (names; tensors: dtype,
        rank, static dims; values: the outer kind) and run on ONNX Runtime's Python API, whose outputs are checked
        against the manifest's kinds (a list for a sequence, a dict for a map)."""
        if not isinstance(feeds, Mapping):
            raise _errors.InvalidArgument(f"run() takes a dict of input name -> value, got {type(feeds).__name__}")
        specs = {i.name: i for i in self.inputs}
        unknown = [n for n in feeds if n not in specs]
        if unknown:
            raise _errors.InvalidArgument(f"unknown input(s) {unknown!r:.200}; inputs are {list(specs)}")
        for spec in self.inputs:
            if spec.name not in feeds:
                raise _errors.InvalidArgument(f"input '{spec.name}' ({spec.dtype}) is missing")
            _check_value(spec, feeds[spec.name], "input")
        handle = self._values
        try:
            got = handle.session.run(handle.output_names, {n: feeds[n] for n in handle.input_names})
        except Exception as err:  # ONNX Runtime's own type errors: the caller's values
            raise _errors.InvalidArgument(f"onnxruntime refused the inputs: {str(err)[:400]}") from None
        results = dict(zip(self._output_names, got))
        for spec in self.outputs:
            _check_value(spec, results[spec.name], "output", engine=True)
        return self._selected(results, output_names)

    def _tensor(self, name, value, stream):
        """An input that is not a C-contiguous ndarray: a DLPack tensor is handed over as is (a CUDA one as the
        capsule its ``__dlpack__(stream=...)`` returns, so its producer orders itself before ``stream``); anything
        else, or a CPU DLPack tensor that is not C-contiguous, through ``_contiguous`` (a copy)."""
        if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack_device__"):
            try:
                device_type, _ = value.__dlpack_device__()
            except Exception as err:
                raise _errors.InvalidArgument(f"input '{name}': __dlpack_device__() failed: {err}") from None
            if device_type in _DLPACK_CUDA:
                if not _dlpack_c_contiguous(value):
                    raise _errors.InvalidArgument(
                        f"input '{name}' is a non-contiguous CUDA tensor: pass a C-contiguous one (e.g. "
                        "tensor.contiguous())")
                handle = _stream_handle(stream)
                return value.__dlpack__(stream=handle if handle else 1)  # 1: the legacy default stream (DLPack)
            if device_type in _DLPACK_HOST and _dlpack_c_contiguous(value):
                return value
            if device_type not in _DLPACK_HOST:
                raise _errors.InvalidArgument(
                    f"input '{name}' is on DLPack device type {device_type}; the runtime takes cpu and cuda tensors")
            value = np.from_dlpack(value)  # a strided CPU tensor: numpy view, then a contiguous copy
        return self._contiguous(name, value)

    def _contiguous(self, name, value) -> np.ndarray:
        """A C-contiguous copy of a strided (or non-ndarray) input. Defined behaviour for hostile views: an array whose
        dtype, rank or static dims do not match the input is refused (InvalidArgument) before any copy, and a copy that
        cannot be allocated (e.g. a 0-stride view claiming TiBs) is ResourceExhausted, never a raw numpy error."""
        spec = next((i for i in self.inputs if i.name == name), None)
        if spec is not None and isinstance(value, np.ndarray):
            shape = tuple(value.shape)
            static_ok = len(shape) == len(spec.shape) and all(
                not isinstance(want, int) or want == got for want, got in zip(spec.shape, shape))
            dtype_ok = value.dtype.name == spec.dtype or (spec.dtype == "string" and value.dtype.kind in "UOS")
            if not dtype_ok or not static_ok:
                raise _errors.InvalidArgument(
                    f"input '{name}' expects {spec.dtype}{list(spec.shape)}, got {value.dtype.name}{list(shape)}")
        try:
            array = np.asarray(value, order="C")  # not ascontiguousarray: it makes a scalar [1]
        except (MemoryError, ValueError) as err:
            raise _errors.ResourceExhausted(
                f"input '{name}': cannot make a C-contiguous copy ({err}); pass a C-contiguous array") from None
        if array.dtype.hasobject and (spec is None or spec.dtype != "string"):
            raise _errors.InvalidArgument(f"input '{name}': arrays of Python objects are not tensors; pass a numeric "
                                          "or bool array")
        return array

    def load_profile(self) -> dict:
        """Where this session's load went, in seconds (``xrtc run --profile-load``): ``open_s`` (reading and
        verifying the bundle's header, table and manifest; a signed bundle is read and verified whole here),
        ``verify_s`` (reading and verifying the chosen variant's sections on first use, inside session creation),
        ``engine_init_s`` (the engine's init of the chosen variant: import or compile), ``other_s`` (the rest of
        session creation: variant choice, failed tries) and ``load_s`` (all of it). ``sections_verified_on_use``
        says whether verification was deferred to first use (unsigned bundles opened from a file)."""
        return dict(self._load)

    def explain(self) -> dict:
        """Which variant, engine and device run, and why; the variants skipped and why. With a decision log in the
        bundle (xrtc >= 0.2), also ``decisions``: the running variant's entry (precision, order rule, measured
        accuracy, fallback) and, per node, the precision and kernel it runs with, the rule, and the alternatives
        rejected (``xrtc explain`` shows the same for every variant). A bundle compiled with
        ``--allow-unverified`` (the accuracy gate could not check it) adds ``unverified``: the reason."""
        bundle = self._open_bundle("explain()")
        out = dict(self._explain)
        # the engine's own record as it is now: an engine may add to it after load (the cuda engine once its GEMMs
        # leave their stand-ins for cuBLASLt)
        engine_info = json.loads(self._session.describe()).get("engine_info")
        if engine_info is not None:
            out["engine_info"] = engine_info
        unverified = self.manifest.get("unverified")
        if unverified:
            out["unverified"] = unverified.get("reason", "") if isinstance(unverified, dict) else str(unverified)
        cpp = self._cpp_choice(out)
        if cpp:
            out["cpp_runs"] = cpp
        section = self.manifest.get("decisions")
        if section:
            if not isinstance(section, str):
                raise _errors.DataCorrupt(f"the manifest's 'decisions' is {type(section).__name__}, not a section "
                                          "name; re-create the bundle with xrtc")
            out["decisions"] = decisions_view(bundle.section(section), out.get("variant", ""), section)
        return out

    def _cpp_choice(self, explain: dict) -> dict | None:
        """When this session runs a variant whose engine only Python has (ONNX Runtime, registered by this loader
        through its Python API: its wheel ships no C/C++ headers), the variant C/C++ applications and `xrt-run`
        take instead on the same bundle and device: the next one in the manifest's order, for this device, whose
        engine is not Python-only. Both paths apply the same rule; only the engines present differ."""
        if explain.get("engine") not in _PYTHON_ONLY_ENGINES:
            return None
        device = explain.get("device", "")
        order = [v for v in self.manifest.get("variants", [])
                 if v.get("device") == device or device in v.get("fallback_devices", [])]
        ids = [v.get("id") for v in order]
        running = explain.get("variant")
        later = order[ids.index(running) + 1:] if running in ids else []
        nxt = next((v for v in later if v.get("engine") not in _PYTHON_ONLY_ENGINES), None)
        return {"variant": nxt.get("id") if nxt else None,
                "why": f"engine {explain.get('engine')} is available only through the Python loader; C/C++ "
                       + (f"applications and xrt-run take the next variant for device {device}, {nxt.get('id')}: "
                          f"pass variant={nxt.get('id')!r} (or --variant) to run the same one on both"
                          if nxt else f"applications and xrt-run find no other variant for device {device}")}

    def _open_bundle(self, what: str):
        bundle = self._bundle
        if bundle is None:
            raise _errors.FailedPrecondition(f"{what} on a closed session: load the bundle again")
        return bundle

    @property
    def engine(self) -> str:
        return self._explain.get("engine", "")

    @property
    def variant(self) -> str:
        return self._explain.get("variant", "")

    @property
    def signer(self) -> bytes | None:
        """The raw 32-byte Ed25519 public key that signed the bundle (its signature was verified), or None."""
        return self._signer

    @property
    def manifest(self) -> dict:
        """The bundle's manifest (verified by the runtime when the bundle was opened). FailedPrecondition once
        closed."""
        return json.loads(self._open_bundle("manifest").manifest)

    def close(self) -> None:
        """Releases the engine and the bundle; arrays returned by run() stay valid."""
        self._session = None
        self._bundle = None
        self._direct = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<xpuruntime.Session variant={self.variant!r} engine={self.engine!r} inputs={[i.name for i in self.inputs]}>"


# numpy dtype kinds run() hands straight to ONNX Runtime (bool, ints, floats); strings go through the core, which
# rebuilds them as str (a bytes array would reach ONNX Runtime as its repr).
_DIRECT_KINDS = frozenset("biuf")

# DLPack device types (dlpack.h): kDLCPU, kDLCUDAHost (pinned host memory); kDLCUDA, kDLCUDAManaged.
_DLPACK_HOST = (1, 3)
_DLPACK_CUDA = (2, 13)


def _dlpack_c_contiguous(value) -> bool:
    """Whether a DLPack producer's tensor is C-contiguous, judged from the attributes torch, cupy and jax arrays
    share (is_contiguous() / flags); producers without them are left to the runtime's own check."""
    is_contiguous = getattr(value, "is_contiguous", None)
    if callable(is_contiguous):
        return bool(is_contiguous())
    flags = getattr(value, "flags", None)
    if flags is not None:
        try:
            return bool(flags["C_CONTIGUOUS"])
        except (KeyError, TypeError):
            return bool(getattr(flags, "c_contiguous", True))
    return True


def _outputs_on_device(outputs_on) -> bool:
    if outputs_on == "device":
        return True
    if outputs_on == "host":
        return False
    raise _errors.InvalidArgument(f"outputs_on must be 'host' (numpy) or 'device' (left on the session's device), "
                                  f"got {outputs_on!r}")


def _stream_handle(stream) -> int:
    """A CUstream as an integer: None -> 0 (the legacy default stream), an int, or torch's ``cuda_stream`` / cupy's
    ``ptr`` attribute."""
    if stream is None:
        return 0
    if isinstance(stream, int) and not isinstance(stream, bool):
        handle = stream
    else:
        handle = getattr(stream, "cuda_stream", getattr(stream, "ptr", None))
    if not isinstance(handle, int) or isinstance(handle, bool) or not 0 <= handle < 2 ** 64:
        raise _errors.InvalidArgument(f"stream must be a CUstream handle (int) or a torch/cupy stream, got "
                                      f"{type(stream).__name__}")
    return handle


def _value_types(manifest: dict) -> dict:
    """{("in"|"out", name): rendered type} for the manifest's sequences, maps and optionals (already validated by
    the core, which rendered the same text)."""
    model = manifest.get("model", {})
    out = {}
    for role, key in (("in", "inputs"), ("out", "outputs")):
        for entry in model.get(key, []):
            if "type" in entry:
                out[(role, entry["name"])] = render_type(entry["type"])
    return out


def render_type(t) -> str:
    """'sequence<map<int64, tensor(float32)>>' for {"sequence": {"map": {"key": "int64", "value": "float32"}}}."""
    if isinstance(t, str):
        return f"tensor({t})"
    (kind, inner), = t.items()
    if kind == "map":
        return f"map<{inner['key']}, {render_type(inner['value'])}>"
    return f"{kind}<{render_type(inner)}>"


def _check_value(spec: IOInfo, value, role: str, engine: bool = False) -> None:
    """The outer kind of a value against its spec: a tensor's dtype/rank/static dims, a sequence is a list, a map
    a dict, an optional None or its element. Engine outputs that do not match are Internal; inputs InvalidArgument."""
    error = _errors.Internal if engine else _errors.InvalidArgument
    kind = spec.dtype.split("<", 1)[0]
    def fail(what):
        raise error(f"{role} '{spec.name}': expected {spec.dtype}, given {what}")
    if kind == "optional":
        if value is None:
            return
        kind = spec.dtype[len("optional<"):].split("<", 1)[0].split("(", 1)[0]
        if kind == "tensor":
            return  # checked by the engine against the graph
    if kind == "sequence":
        if not isinstance(value, list):
            fail(type(value).__name__)
    elif kind == "map":
        if not isinstance(value, dict):
            fail(type(value).__name__)
    else:  # a tensor
        if not isinstance(value, np.ndarray):
            fail(type(value).__name__)
        dtype_ok = value.dtype.name == spec.dtype or (spec.dtype == "string" and value.dtype.kind in "UOS")
        rank_ok = len(value.shape) == len(spec.shape) and all(
            not isinstance(w, int) or w == g for w, g in zip(spec.shape, value.shape))
        if not dtype_ok or not rank_ok:
            fail(f"{value.dtype}{list(value.shape)}")


# Engines only the Python loader provides (see _cpp_choice).
_PYTHON_ONLY_ENGINES = ("onnxruntime",)

# A decision log bigger than this is refused by explain() rather than parsed (a 100k-node model's log is ~40 MiB).
MAX_DECISIONS_BYTES = 256 << 20


def decisions_view(raw: bytes, variant_id: str, section: str = "decisions.json") -> dict:
    """The part of a bundle's decision log (``decisions_format`` 1, formats/xrtpkg.md) that ``explain()`` shows for
    one variant. The log comes from the bundle, so it is hostile until checked: anything that is not the documented
    shape (not JSON, nested past the parser's limit, missing keys, wrong types, too big) is DataCorrupt naming the
    section and what is wrong; never a KeyError, RecursionError or JSONDecodeError."""
    def bad(problem: str) -> _errors.DataCorrupt:
        return _errors.DataCorrupt(f"section {section!r} (the decision log) {problem}; explain() cannot show it. "
                                   "Re-create the bundle with xrtc (`xrtc explain BUNDLE` shows the log)")

    if len(raw) > MAX_DECISIONS_BYTES:
        raise _errors.ResourceExhausted(f"section {section!r} (the decision log) is {len(raw)} bytes, over "
                                        f"explain()'s cap of {MAX_DECISIONS_BYTES}")
    try:
        log = json.loads(raw)
    except RecursionError:
        raise bad("nests too deeply to parse") from None
    except (ValueError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(f"is not JSON ({str(err)[:120]})") from None

    json_names = {dict: "an object", list: "an array", str: "a string"}

    def field(obj, key, kind, where):
        if not isinstance(obj, dict):
            raise bad(f"has {where or 'a top level'} of type {type(obj).__name__}, expected an object")
        path = f"{where}.{key}" if where else key
        if key not in obj:
            raise bad(f"has no '{path}'")
        value = obj[key]
        if not isinstance(value, kind):
            raise bad(f"has '{path}' of type {type(value).__name__}, expected {json_names[kind]}")
        return value

    variants = field(log, "variants", list, "")
    warnings = log.get("warnings", [])
    if not isinstance(warnings, list):
        raise bad(f"has warnings of type {type(warnings).__name__}, expected a list")
    chosen = None
    for i, v in enumerate(variants):
        if field(v, "id", str, f"variants[{i}]") == variant_id:
            chosen = v
            break
    nodes = []
    for i, n in enumerate(field(log, "nodes", list, "")):
        where = f"nodes[{i}]"
        choice = field(n, "choices", dict, where).get(variant_id, {})
        if not isinstance(choice, dict):
            raise bad(f"has {where}.choices[{variant_id!r}] of type {type(choice).__name__}, expected an object")
        nodes.append({"name": field(n, "name", str, where), "op": field(n, "op", str, where),
                      **choice,
                      "why": field(n, "why", str, where), "rejected": field(n, "rejected", list, where)})
    return {"variant": chosen, "warnings": warnings, "nodes": nodes}


def user_cache_dir(env: str, name: str) -> str:
    """$`env`, else $XDG_CACHE_HOME/xpuruntime/`name`, else ~/.cache/xpuruntime/`name`."""
    explicit = os.environ.get(env)
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xpuruntime", name)


def default_cache_dir() -> str:
    """$XRT_CACHE_DIR, else $XDG_CACHE_HOME/xpuruntime/engine-cache, else ~/.cache/xpuruntime/engine-cache."""
    return user_cache_dir("XRT_CACHE_DIR", "engine-cache")


def _trusted_keys(trusted_keys) -> list[bytes]:
    """``trusted_keys`` as raw 32-byte keys: each item is 32 raw bytes or the path of a ``.pub`` file
    (``xrtc keygen``). None means no keys; an empty collection is refused (a key list that failed to load)."""
    if trusted_keys is None:
        return []
    import xrtpkg  # shipped in the same wheel; imported only when keys are given

    try:
        keys = xrtpkg._signing.trusted_key_set(trusted_keys)
    except (ValueError, TypeError) as err:
        raise _errors.InvalidArgument(f"trusted_keys: {err}") from err
    except OSError as err:
        raise _errors.IOFailure(f"trusted_keys: cannot read {err.filename}: {err.strerror}") from err
    return sorted(keys)


def _load_profile(core: dict, open_s: float, create_s: float) -> dict:
    """The stages of one load from the core's timings (describe()'s "load") and the wall times measured here."""
    verify_s = float(core.get("section_verify_s", 0.0))
    init_s = float(core.get("engine_init_s", 0.0))
    return {"open_s": open_s, "verify_s": verify_s, "engine_init_s": init_s,
            "other_s": max(0.0, create_s - verify_s - init_s), "load_s": open_s + create_s,
            "sections_verified_on_use": bool(core.get("sections_verified_on_use", False))}


def load(path: str | os.PathLike, device: str = "cpu", *, engine: str | None = None,
         variant: str | None = None, trusted_keys=None, require_signature: bool = False, fallback=None,
         cache_dir: str | os.PathLike | None = None) -> Session:
    """Opens and verifies a ``.xrtpkg`` bundle and prepares it on ``device`` ("cpu" by default). Never compiles
    from ONNX: bundles are made by ``xrtc compile``.

    Signatures (format 1.1): a signed bundle's signature is always verified before anything else is parsed. Pass
    ``trusted_keys`` (32-byte raw Ed25519 public keys, or paths of ``.pub`` files from ``xrtc keygen``) to accept
    only bundles signed by one of them, or ``require_signature=True`` to refuse unsigned bundles (any signer);
    refusals raise PermissionDenied (alias SignatureError), a signature that does not match the bytes DataCorrupt.

    Devices: ``device="npu"`` uses the NPU when the engine reports one. Otherwise ``fallback`` decides: None takes
    the bundle's chain (an npu-intel variant declares ``["cpu"]``: its OpenVINO IR runs on the CPU too), a list
    such as ``["cpu"]`` is the caller's own chain, ``[]`` allows none (Unavailable / NotFound naming the missing
    device and the devices present). ``explain()`` says which device ran and why (``fallback``).
    ``cache_dir`` keeps engine compile caches (OpenVINO CACHE_DIR) for variants compiled at load (NPU variants,
    CPU IR without a matching blob): the second load imports instead of compiling; ``explain()["engine_info"]``
    says whether the cache was hit. With ``device="npu"`` it defaults to ``default_cache_dir()`` (the user's cache
    folder; ``$XRT_CACHE_DIR`` overrides); ``cache_dir=False`` turns it off. Other devices cache only when asked.
    """
    return Session(path, device, engine=engine, variant=variant, trusted_keys=trusted_keys,
                   require_signature=require_signature, fallback=fallback, cache_dir=cache_dir)
