"""xpuruntime: run `.xrtpkg` bundles made by `xrtc compile`.

    import xpuruntime as xrt
    sess = xrt.load("model.xrtpkg")          # device="cpu"
    out = sess.run({"x": x})                 # dict of numpy arrays -> dict of numpy arrays
"""

import glob as _glob
import os as _os

if not _glob.glob(_os.path.join(_os.path.dirname(__file__), "_core*.so")):
    # A source checkout's folder shadows the installed package when Python runs from the repository root.
    raise ImportError(f"xpuruntime at {_os.path.dirname(__file__)} has no compiled runtime (_core): this is the "
                      "source folder. Run from another directory, or with `python -P`, after `make demo` installed "
                      "the package into .venv")

from ._errors import (AlreadyExists, DataCorrupt, Error, FailedPrecondition, Incompatible, Internal, InvalidArgument,
                      IOFailure, NotFound, PermissionDenied, ResourceExhausted, SignatureError, Unavailable,
                      Unimplemented)
from ._session import IOInfo, Session, load
from .policy import ExecutionPolicy, KernelPolicy, Knob, Policy, PolicyError

__version__ = "0.1.0"

__all__ = ["load", "Session", "IOInfo", "Error", "InvalidArgument", "NotFound", "FailedPrecondition",
           "ResourceExhausted", "Unavailable", "Incompatible", "DataCorrupt", "Unimplemented", "Internal",
           "IOFailure", "AlreadyExists", "PermissionDenied", "SignatureError", "KernelPolicy", "ExecutionPolicy", "Knob",
           "Policy", "PolicyError", "__version__"]
