"""xrtc: the ahead-of-time compiler that turns an ONNX model into a self-contained `.xrtpkg` bundle.

Command line: `xrtc compile|inspect|run|verify` (see `xrtc --help`). Importing this package is cheap: the heavy
SDKs (onnx, onnxruntime, openvino) are imported by the subcommands that need them.
"""

# Keep equal to [project].version in pyproject.toml; it is recorded in every bundle's provenance.
__version__ = "0.1.0"
