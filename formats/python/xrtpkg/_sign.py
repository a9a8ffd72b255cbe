"""Signing a bundle: verify it in full (the reader), then add the Ed25519 trailer (the key helpers in _signing).
Its own module so that the reader, which checks signatures, and the signer do not import each other."""

from __future__ import annotations

import hashlib

from ._format import ENTRY_SIZE, HEADER_FLAG_SIGNED, HEADER_SIZE, HEADER_STRUCT, SIG_MAGIC, SIG_TRAILER_STRUCT, SIGNED_MINOR
from ._reader import read
from ._signing import _as_private_key, public_key_of, signed_digest


def sign(data, private_key) -> bytes:
    """Returns ``data`` (a valid bundle's bytes, signed or not) signed with ``private_key``.

    The bundle is fully verified first (a signed one must carry a valid signature: a bundle that does not verify
    is never signed over). An existing signature is replaced. The result has header flag SIGNED, minor version
    1.1, a recomputed ``index_sha256`` and the 128-byte trailer. Deterministic: Ed25519 signatures are.
    ``private_key``: an ``Ed25519PrivateKey``, its 32-byte seed, PKCS#8 PEM bytes or a PEM file's path.
    Raises FormatError for an invalid bundle, ValueError/TypeError for a bad key.
    """
    key = _as_private_key(private_key)
    data = bytes(data)
    bundle = read(data)
    body = bytearray(data[: bundle.file_size])
    magic, major, minor, count, file_size, flags, _ = HEADER_STRUCT.unpack_from(body, 0)
    struct_fields = (magic, major, max(minor, SIGNED_MINOR), count, file_size, flags | HEADER_FLAG_SIGNED)
    head32 = HEADER_STRUCT.pack(*struct_fields, bytes(32))[:32]
    index = hashlib.sha256(head32 + bytes(body[HEADER_SIZE : HEADER_SIZE + ENTRY_SIZE * count])).digest()
    body[0:HEADER_SIZE] = HEADER_STRUCT.pack(*struct_fields, index)
    signature = key.sign(signed_digest(body, file_size))
    return bytes(body) + SIG_TRAILER_STRUCT.pack(SIG_MAGIC, public_key_of(key), signature, bytes(24))
