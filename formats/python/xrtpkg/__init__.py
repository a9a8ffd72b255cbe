"""Reader and writer of the .xrtpkg bundle format (spec: formats/xrtpkg.md).

    bundle = xrtpkg.read("model.xrtpkg")           # full verification; raises FormatError
    xrtpkg.write("model.xrtpkg", manifest, [("cpu-onnxruntime.onnx", onnx_bytes, False)])
"""

from ._errors import FormatError
from ._format import FORMAT_MAJOR, FORMAT_MINOR
from ._reader import Bundle, Section, read
from ._writer import canonical_json, to_bytes, write

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "Bundle",
    "FormatError",
    "Section",
    "canonical_json",
    "read",
    "to_bytes",
    "write",
]
