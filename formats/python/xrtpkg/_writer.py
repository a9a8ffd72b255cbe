"""The .xrtpkg writer: deterministic bytes (same input, same bytes) and atomic files.

The writer refuses input that would produce a bundle the reader rejects (bad names, caps, a
manifest that is not a JSON object), raising ValueError/TypeError that says what to change.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterable

import zstandard

from ._format import (
    ENTRY_STRUCT,
    FLAG_ZSTD,
    FORMAT_MAJOR,
    STORE_KEY,
    STORE_MINOR,
    UNSIGNED_MINOR,
    HEADER_STRUCT,
    MAGIC,
    MANIFEST_NAME,
    MAX_COMPRESSED_SIZE,
    MAX_MANIFEST_SIZE,
    MAX_SECTIONS,
    MAX_TOTAL_DECOMPRESSED,
    MAX_ZSTD_WINDOW,
    ZSTD_LEVEL,
    ZSTD_MAGIC,
    align64,
    first_section_offset,
    name_problem,
)


def canonical_json(obj) -> bytes:
    """The manifest's canonical encoding: sorted keys, no spaces, UTF-8, no NaN/Infinity."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError) as err:  # UnicodeEncodeError (lone surrogate) is a ValueError
        raise ValueError(f"manifest is not representable as strict JSON: {err}") from err


def _compress(data: bytes) -> bytes:
    # Level 9, content size written (readers require it), no checksum (sha256 covers the bytes).
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, write_checksum=False, threads=0)
    frame = cctx.compress(data)
    # Validate what we write: readers reject frames without content size or with a large window.
    params = zstandard.get_frame_parameters(frame)
    if frame[:4] != ZSTD_MAGIC or params.content_size != len(data) or params.window_size > MAX_ZSTD_WINDOW:
        raise RuntimeError(
            f"zstandard {zstandard.__version__} wrote a frame readers reject "
            f"(content size {params.content_size}, window {params.window_size}); this is a bug"
        )
    return frame


def _check_name(name: object, seen: set[str]) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"section name must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    problem = name_problem(raw)
    if problem:
        raise ValueError(f"bad section name {name!r}: {problem}")
    if name == MANIFEST_NAME:
        raise ValueError(f"section name {MANIFEST_NAME!r} is reserved for the manifest, which the writer adds itself")
    if name in seen:
        raise ValueError(f"duplicate section name {name!r}")
    seen.add(name)
    return raw


def to_bytes(manifest: dict, payloads: Iterable[tuple[str, bytes, bool]]) -> bytes:
    """Serialize a bundle: section ``manifest`` (canonical JSON, zstd) then ``payloads`` in order.

    ``payloads`` holds ``(name, data, compress)``; empty payloads must be stored uncompressed.
    Raises TypeError/ValueError for input that would not make a valid bundle.
    """
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict (a JSON object), not {type(manifest).__name__}")
    manifest_json = canonical_json(manifest)
    from ._reader import _first_nul_string

    nul = _first_nul_string(manifest)
    if nul is not None:
        raise ValueError(f"manifest string {nul} contains a NUL character (\\u0000), which readers refuse")
    if len(manifest_json) > MAX_MANIFEST_SIZE:
        raise ValueError(f"manifest is {len(manifest_json)} bytes of JSON, above the cap of {MAX_MANIFEST_SIZE}")

    # (name bytes, flags, stored bytes, decompressed size)
    sections: list[tuple[bytes, int, bytes, int]] = [
        (MANIFEST_NAME.encode(), FLAG_ZSTD, _compress(manifest_json), len(manifest_json))
    ]
    seen: set[str] = set()
    for item in payloads:
        if not (isinstance(item, tuple) and len(item) == 3):
            raise TypeError(f"each payload must be a (name, bytes, compress) tuple, got {item!r:.80}")
        name, data, compress = item
        raw_name = _check_name(name, seen)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"section {name!r}: data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if compress:
            if not data:
                raise ValueError(f"section {name!r} is empty: store empty sections uncompressed (compress=False)")
            if len(data) > MAX_COMPRESSED_SIZE:
                raise ValueError(
                    f"section {name!r} is {len(data)} bytes, above the {MAX_COMPRESSED_SIZE}-byte cap for "
                    "compressed sections: store it uncompressed"
                )
            sections.append((raw_name, FLAG_ZSTD, _compress(data), len(data)))
        else:
            sections.append((raw_name, 0, data, len(data)))
    if len(sections) > MAX_SECTIONS:
        raise ValueError(f"{len(sections)} sections (manifest included) exceed the format's cap of {MAX_SECTIONS}")
    compressed_total = sum(size for _, flags, _, size in sections if flags & FLAG_ZSTD)
    if compressed_total > MAX_TOTAL_DECOMPRESSED:
        raise ValueError(f"compressed sections total {compressed_total} bytes, above the format's per-bundle cap of "
                         f"{MAX_TOTAL_DECOMPRESSED}: store large sections uncompressed")

    count = len(sections)
    offsets = []
    offset = first_section_offset(count)
    for _, _, stored, _ in sections:
        offsets.append(offset)
        offset = align64(offset + len(stored))
    file_size = offsets[-1] + len(sections[-1][2])  # no padding after the last section

    table = b"".join(
        ENTRY_STRUCT.pack(raw_name, flags, 0, off, len(stored), size, hashlib.sha256(stored).digest())
        for (raw_name, flags, stored, size), off in zip(sections, offsets)
    )
    # The lowest minor whose features the bundle uses: 1.2 with a weight store, else 1.0 (xrtpkg.sign() makes a
    # 1.0 bundle 1.1).
    minor = STORE_MINOR if STORE_KEY in manifest else UNSIGNED_MINOR
    head32 = HEADER_STRUCT.pack(MAGIC, FORMAT_MAJOR, minor, count, file_size, 0, bytes(32))[:32]
    index_sha = hashlib.sha256(head32 + table).digest()
    out = bytearray(HEADER_STRUCT.pack(MAGIC, FORMAT_MAJOR, minor, count, file_size, 0, index_sha))
    out += table
    for (_, _, stored, _), off in zip(sections, offsets):
        out += bytes(off - len(out))  # zero padding up to the 64-byte aligned offset
        out += stored
    assert len(out) == file_size
    return bytes(out)


def write(path, manifest: dict, payloads, *, force: bool = False) -> None:
    """Write a bundle to ``path`` atomically.

    The bytes go to ``<dir>/.<name>.<pid>.tmp`` and are then renamed over ``path``, so ``path`` is
    never left half-written; the temporary file is removed if anything fails. Refuses an existing
    ``path`` (FileExistsError) unless ``force``.
    """
    path = os.fspath(path)
    if not force and os.path.lexists(path):
        raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
    data = to_bytes(manifest, payloads)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            # link() fails if path appeared meanwhile, so a concurrent writer is never clobbered.
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it") from None
            except OSError:
                # The filesystem has no hard links: fall back to check-then-rename.
                if os.path.lexists(path):
                    raise FileExistsError(f"{path} already exists; pass --force (force=True) to overwrite it") from None
                os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
