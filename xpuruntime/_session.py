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
                 variant: str | None = None):
        if not isinstance(device, str) or not device:
            raise _errors.InvalidArgument(f"device must be a non-empty string such as 'cpu', got {device!r}")
        _ort_backend.register()
        self._bundle = _core.Bundle(os.fspath(path))
        self._session = _core.Session(self._bundle, device, engine or "", variant or "")
        self.inputs = [IOInfo(*info) for info in self._session.inputs]
        self.outputs = [IOInfo(*info) for info in self._session.outputs]
        self._output_names = [o.name for o in self.outputs]
        self._explain = json.loads(self._session.describe())

    def run(self, feeds: Mapping[str, Any], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Runs once. ``feeds`` maps every input name to an array (converted with ``np.ascontiguousarray`` only when
        it is not already a C-contiguous ndarray; the dtype must match exactly). Returns ``{output name: array}``,
        arrays owning (through the runtime) their memory; ``output_names`` selects a subset."""
        session = self._session
        if session is None:
            raise _errors.FailedPrecondition("run() on a closed session: load the bundle again")
        if not isinstance(feeds, Mapping):
            raise _errors.InvalidArgument(
                f"run() takes a dict of input name -> array, got {type(feeds).__name__}; inputs are "
                + ", ".join(i.name for i in self.inputs))
        arrays = [v if type(v) is np.ndarray and v.flags.c_contiguous else np.ascontiguousarray(v)
                  for v in feeds.values()]
        results = dict(zip(self._output_names, session.run(list(feeds), arrays)))
        if output_names is None:
            return results
        unknown = [n for n in output_names if n not in results]
        if unknown:
            raise _errors.InvalidArgument(f"unknown output name(s) {unknown}; outputs are {self._output_names}")
        return {n: results[n] for n in output_names}

    def explain(self) -> dict:
        """Which variant, engine and device run, and why; the variants skipped and why."""
        return dict(self._explain)

    @property
    def engine(self) -> str:
        return self._explain.get("engine", "")

    @property
    def variant(self) -> str:
        return self._explain.get("variant", "")

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


def load(path: str | os.PathLike, device: str = "cpu", *, engine: str | None = None,
         variant: str | None = None) -> Session:
    """Opens and verifies a ``.xrtpkg`` bundle and prepares it on ``device`` ("cpu" by default). Never compiles
    from ONNX: bundles are made by ``xrtc compile``."""
    return Session(path, device, engine=engine, variant=variant)
