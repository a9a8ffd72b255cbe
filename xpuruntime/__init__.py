"""xpuruntime: run `.xrtpkg` bundles made by `xrtc compile`.

    import xpuruntime as xrt
    sess = xrt.load("model.xrtpkg")          # device="cpu"
    out = sess.run({"x": x})                 # dict of numpy arrays -> dict of numpy arrays
"""

from ._errors import (AlreadyExists, DataCorrupt, Error, FailedPrecondition, Incompatible, Internal, InvalidArgument,
                      IOFailure, NotFound, ResourceExhausted, Unavailable, Unimplemented)
from ._session import IOInfo, Session, load

__version__ = "0.1.0"

__all__ = ["load", "Session", "IOInfo", "Error", "InvalidArgument", "NotFound", "FailedPrecondition",
           "ResourceExhausted", "Unavailable", "Incompatible", "DataCorrupt", "Unimplemented", "Internal",
           "IOFailure", "AlreadyExists", "__version__"]
