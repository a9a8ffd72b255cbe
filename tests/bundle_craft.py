"""Builds bundles the writer refuses to write (hostile manifests, oversized declarations), laid out exactly as
formats/xrtpkg.md says, independently of xrtpkg's writer. Starts from the golden tiny model: a real bundle with an
OpenVINO and an ONNX Runtime variant."""

from __future__ import annotations

import hashlib
import json
import struct

import zstandard

import xrtpkg
from xrtpkg import _format
from xrt_testutil import ROOT

TINY = ROOT / "formats" / "golden" / "tiny_model.xrtpkg"


def tiny_sections() -> list[tuple[bytes, int, bytes, int]]:
    """(name, flags, stored bytes, size) of every section of the tiny model, manifest first."""
    base = xrtpkg.read(TINY)
    raw = TINY.read_bytes()
    return [(s.name.encode(), 1 if s.compressed else 0, raw[s.offset : s.offset + s.stored_size], s.size)
            for s in base.sections]


def tiny_manifest() -> dict:
    return xrtpkg.read(TINY).manifest


def layout(sections: list[tuple[bytes, int, bytes, int]]) -> bytes:
    """Header, table and 64-byte aligned sections for (name, flags, stored bytes, size), digests computed."""
    count = len(sections)
    offset = _format.first_section_offset(count)
    table, starts = b"", []
    for name, flags, stored, size in sections:
        starts.append(offset)
        table += _format.ENTRY_STRUCT.pack(name, flags, 0, offset, len(stored), size, hashlib.sha256(stored).digest())
        offset = _format.align64(offset + len(stored))
    file_size = starts[-1] + len(sections[-1][2])
    head32 = struct.pack("<8sHHIQQ", _format.MAGIC, 1, 0, count, file_size, 0)
    out = bytearray(head32 + hashlib.sha256(head32 + table).digest() + table)
    for start, (_, _, stored, _) in zip(starts, sections):
        out += bytes(start - len(out)) + stored
    return bytes(out)


def with_manifest(manifest: dict, extra: list[tuple[str, bytes, bool]] = ()) -> bytes:
    """The tiny model's sections under any manifest (NUL characters, caps broken...), plus extra sections."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    cctx = zstandard.ZstdCompressor(level=3, write_content_size=True)
    sections = [(b"manifest", 1, cctx.compress(text), len(text))] + tiny_sections()[1:]
    for name, data, compress in extra:
        sections.append((name.encode(), 1, cctx.compress(data), len(data)) if compress else
                        (name.encode(), 0, data, len(data)))
    return layout(sections)


def rle_zero_frame(size: int) -> bytes:
    """A valid zstd frame of `size` zero bytes made of RLE blocks (4 bytes per 128 KiB): a few KiB that declare
    and really decode to `size` bytes. Window 128 KiB, content size in the header, no checksum."""
    block = 1 << 17
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0xC0, 0x38]) + struct.pack("<Q", size))
    left = size
    while left:
        n = min(block, left)
        left -= n
        out += ((n << 3) | (1 << 1) | (1 if left == 0 else 0)).to_bytes(3, "little") + b"\0"
    return bytes(out)
