"""Ed25519 signatures of .xrtpkg bundles (format 1.1; spec: formats/xrtpkg.md, "Signature").

A signed bundle sets header flag SIGNED and is followed by a 128-byte trailer:
``XRTSIG\\x01\\x00`` | public key (32) | signature (64) | 24 zero bytes. The signature is Ed25519 over the
32-byte SHA-256 of bytes ``[0, file_size)``, i.e. everything before the trailer, header (with the SIGNED flag
and its index digest) included.

Key files (written by ``xrtc keygen``):
  - private: PKCS#8 PEM, unencrypted, mode 0600 (``name.key``);
  - public: the 32-byte raw key as 64 lower-case hex characters and a newline (``name.pub``), easy to read from
    C and to compare by eye.

``cryptography`` is imported only when a signature is made or checked, so unsigned bundles read without it.
"""

from __future__ import annotations

import hashlib
import os
import string
from typing import Iterable, Union

from ._format import (
    PUBLIC_KEY_SIZE,
)

KeySource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]"]


def _ed25519():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as err:  # pragma: no cover - cryptography is a dependency of the package
        raise ImportError("signed .xrtpkg bundles need the 'cryptography' package (pip install cryptography)") from err
    return ed25519


def signed_digest(buf, file_size: int) -> bytes:
    """The 32-byte message that is signed: SHA-256 of bytes [0, file_size)."""
    return hashlib.sha256(memoryview(buf)[:file_size]).digest()


# Ed25519 (RFC 8032): the field prime and the group order.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
# y-coordinates of the 8 points of small order (1, 2, 4, 4, 8, 8, 8, 8): (0, 1), (0, -1), (+-sqrt(-1), 0) and
# (+-x8, +-y8). A key whose point is one of them verifies a forged signature for any message (for the identity,
# R = [S]B does), so such keys prove nothing. tests/security/test_signature_edge_cases.py derives these points.
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y8, _P - _Y8})


def encoding_problem(public_key: bytes, signature: bytes) -> str | None:
    """Why this key/signature pair is refused before any curve arithmetic, or None. Refused: a key that encodes a
    small-order point (whatever the sign bit) or is not canonical (y >= p), and a signature whose R is not
    canonical or whose S is not reduced (S >= L). RFC 8032 verifiers must reject S >= L; the rest closes the
    "any message verifies" and malleability gaps that libraries differ on. Same rules as the C++ reader."""
    y_key = int.from_bytes(bytes(public_key), "little") & ((1 << 255) - 1)
    if y_key >= _P:
        return "the public key is not canonically encoded (y >= 2^255 - 19)"
    if y_key in _SMALL_ORDER_Y:
        return "the public key is a point of small order (it would verify forged signatures)"
    signature = bytes(signature)
    if int.from_bytes(signature[:32], "little") & ((1 << 255) - 1) >= _P:
        return "the signature's R is not canonically encoded (y >= 2^255 - 19)"
    if int.from_bytes(signature[32:], "little") >= _L:
        return "the signature's S is not reduced (S >= the group order L)"
    return None


def verify_signature(public_key: bytes, signature: bytes, digest: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``digest`` by ``public_key`` (32 raw bytes). Keys of
    small order and non-canonical encodings are refused (:func:`encoding_problem`)."""
    if len(public_key) != 32 or len(signature) != 64 or encoding_problem(public_key, signature) is not None:
        return False
    ed25519 = _ed25519()
    from cryptography.exceptions import InvalidSignature

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(bytes(public_key)).verify(bytes(signature), digest)
    except (InvalidSignature, ValueError):  # ValueError: bytes that are not a public key
        return False
    return True


# ----------------------------------------------------------------------------- keys

def public_key_hex(public_key: bytes) -> str:
    return bytes(public_key).hex()


def parse_public_key_text(text: str, where: str = "public key") -> bytes:
    """64 hex characters (surrounding whitespace ignored) -> 32 raw bytes; ValueError naming ``where``."""
    t = text.strip()
    if len(t) != 2 * PUBLIC_KEY_SIZE or any(c not in string.hexdigits for c in t):
        raise ValueError(f"{where} is not an Ed25519 public key: expected {2 * PUBLIC_KEY_SIZE} hex characters "
                         f"(as written by `xrtc keygen` into NAME.pub), got {t[:80]!r}")
    return bytes.fromhex(t)


def load_public_key(source: KeySource) -> bytes:
    """A trusted key as 32 raw bytes, from raw bytes (32) or the path of a ``.pub`` file (64 hex chars).

    Raises ValueError for anything else (TypeError for an unsupported type, OSError for an unreadable file).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if len(raw) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a trusted key given as bytes must be the {PUBLIC_KEY_SIZE}-byte raw Ed25519 public key, "
                             f"got {len(raw)} bytes (pass the path of a .pub file written by `xrtc keygen` instead)")
        return _check_trusted_key(raw, "a trusted key")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as f:
            data = f.read(4096)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            text = "\ufffd"
        return _check_trusted_key(parse_public_key_text(text, f"{path}"), path)
    raise TypeError(f"a trusted key is 32 raw bytes or the path of a .pub file, not {type(source).__name__}")


def _check_trusted_key(raw: bytes, where: str) -> bytes:
    problem = encoding_problem(raw, bytes(64))
    if problem is not None:
        raise ValueError(f"{where} is not usable as a trusted Ed25519 key: {problem}; use a key from `xrtc keygen`")
    return raw


def trusted_key_set(trusted_keys: Iterable[KeySource] | None) -> frozenset[bytes] | None:
    """Normalises a ``trusted_keys`` argument: None stays None (no policy); otherwise a non-empty set of raw keys.

    An empty collection is refused (ValueError): it almost always means a key list failed to load, and "trust
    nobody" would refuse every bundle while "no policy" would accept unsigned ones.
    """
    if trusted_keys is None:
        return None
    if isinstance(trusted_keys, (bytes, bytearray, memoryview, str, os.PathLike)):
        trusted_keys = [trusted_keys]  # one key given on its own
    keys = frozenset(load_public_key(k) for k in trusted_keys)
    if not keys:
        raise ValueError("trusted_keys is empty: pass at least one public key (or None for no signature policy)")
    return keys


def _as_private_key(private_key):
    ed25519 = _ed25519()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key
    if isinstance(private_key, (bytes, bytearray, memoryview)) and len(private_key) == 32:
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(private_key))
    if isinstance(private_key, (bytes, bytearray, memoryview, str, os.PathLike)):
        return load_private_key(private_key)
    raise TypeError("private_key must be an Ed25519PrivateKey, its 32-byte seed, PEM bytes or the path of a "
                    f"PEM file, not {type(private_key).__name__}")


def load_private_key(source: KeySource):
    """An Ed25519 private key from PKCS#8 PEM bytes or the path of a PEM file (``xrtc keygen``'s ``.key``)."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _ed25519()
    if isinstance(source, (str, os.PathLike)):
        where = os.fspath(source)
        with open(where, "rb") as f:
            pem = f.read(1 << 16)
    else:
        where, pem = "the private key", bytes(source)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as err:  # encrypted
        raise ValueError(f"{where} is encrypted; xrtc reads unencrypted PKCS#8 PEM keys (`xrtc keygen`)") from err
    except ValueError as err:
        raise ValueError(f"{where} is not a PEM private key ({err}); create one with `xrtc keygen -o NAME`") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{where} is a {type(key).__name__}, not an Ed25519 key; create one with `xrtc keygen`")
    return key


def generate_key_pair() -> tuple[bytes, bytes]:
    """A new key: (private key as unencrypted PKCS#8 PEM, raw 32-byte public key)."""
    from cryptography.hazmat.primitives import serialization

    key = _ed25519().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return pem, public_key_of(key)


def public_key_of(private_key) -> bytes:
    """The raw 32-byte public key of a private key (any form :func:`sign` accepts)."""
    from cryptography.hazmat.primitives import serialization

    return _as_private_key(private_key).public_key().public_bytes(serialization.Encoding.Raw,
                                                                   serialization.PublicFormat.Raw)
