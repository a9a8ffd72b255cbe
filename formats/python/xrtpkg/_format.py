"""Constants and layout rules of the .xrtpkg format, version 1.2 (formats/xrtpkg.md).

Shared by the reader and the writer so both apply the same rules.
"""

from __future__ import annotations

import struct

FORMAT_MAJOR = 1
FORMAT_MINOR = 0
# A writer marks a bundle with the lowest minor whose features it uses, so older 1.x readers keep reading
# every bundle they can: unsigned bundles are 1.0 (FORMAT_MINOR, also the manifest keys' version), signed
# ones 1.1 (xrtpkg.sign). Readers accept any 1.x.
UNSIGNED_MINOR = FORMAT_MINOR
SIGNED_MINOR = 1
# 1.2: a manifest `weight_store` section shared by several variants ("Weight store"). Bundles with one are 1.2
# (signed too: 1.2 includes 1.1's flag).
STORE_MINOR = 2
STORE_KEY = "weight_store"

MAGIC = b"\x89XRT\r\n\x1a\n"
HEADER_SIZE = 64
ENTRY_SIZE = 96
# magic, major, minor, section_count, file_size, flags, index_sha256
HEADER_STRUCT = struct.Struct("<8sHHIQQ32s")
# name, flags, reserved, offset, stored_size, size, sha256
ENTRY_STRUCT = struct.Struct("<32sIIQQQ32s")
assert HEADER_STRUCT.size == HEADER_SIZE and ENTRY_STRUCT.size == ENTRY_SIZE

FLAG_ZSTD = 1
KNOWN_FLAGS = FLAG_ZSTD

# Header flags (offset 24; "reserved, must be 0" in 1.0).
HEADER_FLAG_SIGNED = 1
KNOWN_HEADER_FLAGS = HEADER_FLAG_SIGNED
# A signed bundle is followed by this trailer (after file_size bytes): magic | Ed25519 public key | Ed25519
# signature of SHA-256(bytes [0, file_size)) | zero bytes.
SIG_MAGIC = b"XRTSIG\x01\x00"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SIG_TRAILER_SIZE = 128
SIG_TRAILER_STRUCT = struct.Struct("<8s32s64s24s")
assert SIG_TRAILER_STRUCT.size == SIG_TRAILER_SIZE

MAX_SECTIONS = 1024
MAX_NAME_LEN = 31
MAX_COMPRESSED_SIZE = 1 << 31      # cap on a compressed section's decompressed size
MAX_MANIFEST_SIZE = 16 << 20       # cap on the manifest's decompressed size
# Cap on the sum of every compressed section's declared decompressed size in one bundle: what a reader may have
# to decompress to verify a bundle (uncompressed sections are bounded by the file itself).
MAX_TOTAL_DECOMPRESSED = 1 << 32
MAX_ZSTD_WINDOW = 1 << 27
U64_MAX = (1 << 64) - 1

MANIFEST_NAME = "manifest"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = 9

_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def align64(x: int) -> int:
    return (x + 63) & ~63


def first_section_offset(section_count: int) -> int:
    return align64(HEADER_SIZE + ENTRY_SIZE * section_count)


def name_problem(name: bytes) -> str | None:
    """Why ``name`` (the unpadded bytes) is not a valid section name, or None if it is."""
    if not 1 <= len(name) <= MAX_NAME_LEN:
        return f"must be 1..{MAX_NAME_LEN} bytes long, is {len(name)}"
    bad = sorted({c for c in name if c not in _NAME_CHARS})
    if bad:
        shown = ", ".join(repr(chr(c)) if 32 <= c < 127 else f"0x{c:02x}" for c in bad)
        return f"contains {shown}; only [A-Za-z0-9._-] are allowed"
    return None
