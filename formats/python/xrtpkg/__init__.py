"""Reader and writer of the .xrtpkg bundle format (spec: formats/xrtpkg.md).

    bundle = xrtpkg.read("model.xrtpkg")           # full verification; raises FormatError
    xrtpkg.write("model.xrtpkg", manifest, [("cpu-onnxruntime.onnx", onnx_bytes, False)])
    signed = xrtpkg.sign(data, private_key)          # Ed25519, format 1.1 (formats/xrtpkg.md, "Signature")
    bundle = xrtpkg.read(signed, trusted_keys=[public_key])   # PERMISSION_DENIED unless signed by a trusted key
"""

from ._errors import FormatError
from ._format import FORMAT_MAJOR, FORMAT_MINOR
from ._reader import Bundle, Section, read
from ._sign import sign
from ._signing import generate_key_pair, load_private_key, load_public_key, public_key_of
from ._writer import canonical_json, to_bytes, write

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "Bundle",
    "FormatError",
    "Section",
    "canonical_json",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "public_key_of",
    "read",
    "sign",
    "to_bytes",
    "write",
]
