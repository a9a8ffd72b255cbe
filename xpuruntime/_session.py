"""The tiny Python loader: a thin shell over the C++ runtime (xpuruntime._core). The work happens in C++."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import _core, _errors, _ort_backend

_core.set_error_factory(_errors.from_status)


class IOInfo(NamedTuple):
    """An input or output: name, NumPy dtype name, shape (ints; str for a named dynamic dim; None when unknown)."""

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
        self._bundle = _core.Bundle(os.fspath(path), keys, bool(require_signature))
        if cache_dir is None and device.lower() == "npu":
            cache_dir = default_cache_dir()  # NPU variants compile at load: keep that work by default
        self._session = _core.Session(self._bundle, device, engine or "", variant or "",
                                      None if fallback is None else list(fallback),
                                      os.fspath(cache_dir) if cache_dir else "")
        self.inputs = [IOInfo(*info) for info in self._session.inputs]
        self.outputs = [IOInfo(*info) for info in self._session.outputs]
        self._output_names = [o.name for o in self.outputs]
        self._explain = json.loads(self._session.describe())
        self._signer = self._bundle.signer

    def run(self, feeds: Mapping[str, Any], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Runs once. ``feeds`` maps every input name to an array (converted with ``np.ascontiguousarray`` only when
        it is not already a C-contiguous ndarray; the dtype must match exactly). Returns ``{output name: array}``,
        arrays owning (through the runtime) their memory; ``output_names`` selects a subset."""
        session = self._session
        if session is None:
            raise _errors.FailedPrecondition("run() on a closed session: load the bundle again")
        # Hot path first (tiny models: every microsecond counts); the diagnostics below run only on failure.
        try:
            names = list(feeds)
            arrays = [v if type(v) is np.ndarray and v.flags.c_contiguous else self._contiguous(name, v)
                      for name, v in feeds.items()]
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
        if output_names is None:
            return results
        unknown = [n for n in output_names if n not in results]
        if unknown:
            raise _errors.InvalidArgument(f"unknown output name(s) {unknown}; outputs are {self._output_names}")
        return {n: results[n] for n in output_names}

    def _contiguous(self, name, value) -> np.ndarray:
        """A C-contiguous copy of a strided (or non-ndarray) input. Defined behaviour for hostile views: an array whose
        dtype, rank or static dims do not match the input is refused (InvalidArgument) before any copy, and a copy that
        cannot be allocated (e.g. a 0-stride view claiming TiBs) is ResourceExhausted, never a raw numpy error."""
        spec = next((i for i in self.inputs if i.name == name), None)
        if spec is not None and isinstance(value, np.ndarray):
            shape = tuple(value.shape)
            static_ok = len(shape) == len(spec.shape) and all(
                not isinstance(want, int) or want == got for want, got in zip(spec.shape, shape))
            if value.dtype.name != spec.dtype or not static_ok:
                raise _errors.InvalidArgument(
                    f"input '{name}' expects {spec.dtype}{list(spec.shape)}, got {value.dtype.name}{list(shape)}")
        try:
            array = np.ascontiguousarray(value)
        except (MemoryError, ValueError) as err:
            raise _errors.ResourceExhausted(
                f"input '{name}': cannot make a C-contiguous copy ({err}); pass a C-contiguous array") from None
        if array.dtype.hasobject:
            raise _errors.InvalidArgument(f"input '{name}': arrays of Python objects are not tensors; pass a numeric "
                                          "or bool array")
        return array

    def explain(self) -> dict:
        """Which variant, engine and device run, and why; the variants skipped and why. With a decision log in the
        bundle (xrtc >= 0.2), also ``decisions``: the running variant's entry (precision, order rule, measured
        accuracy, fallback) and, per node, the precision and kernel it runs with, the rule, and the alternatives
        rejected (``xrtc explain`` shows the same for every variant). A bundle compiled with
        ``--allow-unverified`` (the accuracy gate could not check it) adds ``unverified``: the reason."""
        out = dict(self._explain)
        if self.manifest.get("unverified"):
            out["unverified"] = self.manifest["unverified"].get("reason", "")
        section = self.manifest.get("decisions")
        if section and self._bundle is not None:
            log = json.loads(self._bundle.section(section))
            vid = out.get("variant", "")
            out["decisions"] = {
                "variant": next((v for v in log["variants"] if v["id"] == vid), None),
                "warnings": log.get("warnings", []),
                "nodes": [{"name": n["name"], "op": n["op"], **n["choices"].get(vid, {}), "why": n["why"],
                           "rejected": n["rejected"]} for n in log["nodes"]],
            }
        return out

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
        return json.loads(self._bundle.manifest)

    def close(self) -> None:
        """Releases the engine and the bundle; arrays returned by run() stay valid."""
        self._session = None
        self._bundle = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<xpuruntime.Session variant={self.variant!r} engine={self.engine!r} inputs={[i.name for i in self.inputs]}>"


def default_cache_dir() -> str:
    """$XRT_CACHE_DIR, else $XDG_CACHE_HOME/xpuruntime/engine-cache, else ~/.cache/xpuruntime/engine-cache."""
    explicit = os.environ.get("XRT_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xpuruntime", "engine-cache")


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
