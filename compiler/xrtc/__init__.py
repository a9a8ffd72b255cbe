"""xrtc: the ahead-of-time compiler that turns an ONNX model into a self-contained `.xrtpkg` bundle.

Command line: `xrtc compile|inspect|run|verify` (see `xrtc --help`). Importing this package is cheap: the heavy
SDKs (onnx, onnxruntime, openvino) are imported by the subcommands that need them.
"""

# The package version (pyproject.toml's, via xpuruntime._version); recorded in every bundle's provenance.
from xpuruntime._version import VERSION as __version__  # noqa: E402,F401
