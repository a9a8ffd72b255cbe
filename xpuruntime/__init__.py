"""xpuruntime: run `.xrtpkg` bundles made by `xrtc compile`.

    import xpuruntime as xrt
    sess = xrt.load("model.xrtpkg")          # device="cpu"
    out = sess.run({"x": x})                 # dict of numpy arrays -> dict of numpy arrays
    sess = xrt.InferenceSession("model.onnx", device="cpu", exec_policy=xrt.ExecutionPolicy(precision="fp16"))
                                             # compiled by xrtc on first use, then cached by content
"""

# The policy model (xpuruntime.policy), the error types and the ONNX tensor walker are pure Python: they import with no
# compiled runtime, so the compiler's planning (`xrtc plan`) runs where the C++ runtime is not built or cannot load.
# The runtime entry points (load, Session, IOInfo) import the compiled module (_core) on first use.
from ._errors import (AlreadyExists, DataCorrupt, Error, FailedPrecondition, Incompatible, Internal, InvalidArgument,
                      IOFailure, NotFound, PermissionDenied, ResourceExhausted, SignatureError, Unavailable,
                      Unimplemented)
from .policy import ExecutionPolicy, KernelPolicy, Knob, Policy, PolicyError

from ._version import VERSION as __version__

_RUNTIME = ("load", "Session", "IOInfo", "InferenceSession", "prune_bundle_cache")


def __getattr__(name: str):
    if name not in _RUNTIME:
        raise AttributeError(f"module 'xpuruntime' has no attribute {name!r}")
    import glob
    import os

    here = os.path.dirname(__file__)
    if not glob.glob(os.path.join(here, "_core*.so")) and not glob.glob(os.path.join(here, "_core*.pyd")):
        # A source checkout's folder shadows the installed package when Python runs from the repository root.
        raise ImportError(f"xpuruntime at {here} has no compiled runtime (_core): this is the source folder, or the "
                          "runtime was not built. Run from another directory, or with `python -P`, after installing "
                          "the package (pip install .)")
    from . import _inference, _session

    value = getattr(_inference if name in ("InferenceSession", "prune_bundle_cache") else _session, name)
    globals()[name] = value
    return value


__all__ = ["load", "Session", "IOInfo", "InferenceSession", "prune_bundle_cache", "Error", "InvalidArgument", "NotFound", "FailedPrecondition",
           "ResourceExhausted", "Unavailable", "Incompatible", "DataCorrupt", "Unimplemented", "Internal",
           "IOFailure", "AlreadyExists", "PermissionDenied", "SignatureError", "KernelPolicy", "ExecutionPolicy", "Knob",
           "Policy", "PolicyError", "__version__"]
