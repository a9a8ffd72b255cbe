"""The .xrtpkg reader: full verification in the order formats/xrtpkg.md prescribes.

Every bundle is treated as hostile. The checks run in exactly the spec's order ("Verdicts") so
this reader and the C++ reader (formats/cpp/xrtpkg_reader.cc) give the same status for the same
bytes; formats/golden/golden.json pins those verdicts. A signed bundle's signature (and the caller's
trust policy) is checked right after the fixed 64-byte header, before the section table is parsed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import dataclass
from typing import Union

import zstandard

from . import _signing
from ._errors import DATA_CORRUPT, INCOMPATIBLE, PERMISSION_DENIED, RESOURCE_EXHAUSTED, FormatError
from ._format import (
    ENTRY_SIZE,
    ENTRY_STRUCT,
    FLAG_ZSTD,
    FORMAT_MAJOR,
    HEADER_FLAG_SIGNED,
    HEADER_SIZE,
    HEADER_STRUCT,
    KNOWN_FLAGS,
    KNOWN_HEADER_FLAGS,
    MAGIC,
    MANIFEST_NAME,
    MAX_COMPRESSED_SIZE,
    MAX_MANIFEST_SIZE,
    MAX_SECTIONS,
    MAX_TOTAL_DECOMPRESSED,
    MAX_ZSTD_WINDOW,
    SIG_MAGIC,
    SIG_TRAILER_SIZE,
    SIG_TRAILER_STRUCT,
    U64_MAX,
    ZSTD_MAGIC,
    align64,
    first_section_offset,
    name_problem,
)

_REMEDY = "the bundle is damaged or was not written by xrtc; re-create it with `xrtc compile`"
_ZSTD_CONTENTSIZE_UNKNOWN = U64_MAX


def _corrupt(check: str, what: str) -> FormatError:
    return FormatError(DATA_CORRUPT, f"{what} ({_REMEDY})", check)


@dataclass(frozen=True)
class Section:
    """One entry of the section table. ``sha256`` is the hex SHA-256 of the stored bytes."""

    name: str
    compressed: bool
    offset: int
    stored_size: int
    size: int
    sha256: str


class Bundle:
    """A verified bundle, as returned by :func:`read` (every section checked, or each on first use with
    ``verify="on_use"``).

    Holds the whole file's bytes; :meth:`data` slices (uncompressed) or decompresses (zstd) a
    section on each call. Immutable after construction, so safe to share between threads.
    ``file_size`` is the header's (a signed bundle's 128-byte signature trailer follows it);
    ``signer`` is the raw 32-byte Ed25519 public key whose valid signature the bundle carries, or
    None for an unsigned bundle. A signer is trusted only if :func:`read` was given trusted keys.
    """

    def __init__(
        self,
        buf: bytes,
        major: int,
        minor: int,
        manifest: dict,
        manifest_bytes: bytes,
        sections: list[Section],
        signer: bytes | None = None,
        file_size: int | None = None,
    ) -> None:
        self._buf = buf
        self.major = major
        self.minor = minor
        self.file_size = len(buf) if file_size is None else file_size
        self.signer = signer
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.sections = sections
        self._by_name = {s.name: s for s in sections}
        # Verification on use (read(..., verify="on_use")): names of the sections whose digest and zstd frame are
        # still to be checked, each before data() first returns it. Empty for a fully verified bundle.
        self._unverified: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.sections)
        signed = f", signed by {self.signer.hex()}" if self.signer else ""
        return f"<xrtpkg.Bundle {self.major}.{self.minor}, {self.file_size} bytes{signed}, sections: {names}>"

    def section(self, name: str) -> Section:
        """The table entry named ``name``; raises KeyError naming the sections that do exist."""
        try:
            return self._by_name[name]
        except KeyError:
            have = ", ".join(repr(s.name) for s in self.sections)
            raise KeyError(f"the bundle has no section {name!r}; it has: {have}") from None

    def data(self, name: str) -> bytes:
        """The payload of section ``name``, decompressed (bytes were verified by :func:`read`)."""
        s = self.section(name)
        stored = self._buf[s.offset : s.offset + s.stored_size]
        if name in self._unverified:
            with self._lock:
                if name in self._unverified:
                    _check_section(self.sections.index(s), s, memoryview(self._buf)[s.offset : s.offset + s.stored_size])
                    self._unverified.discard(name)
        if not s.compressed:
            return stored
        return _decompress(stored, s.size)


def _decompress(stored, size: int) -> bytes:
    # Only called once the frame header was checked (content size == size <= cap, window <= cap),
    # so the allocation python-zstandard makes from the frame's content size is bounded by `size`.
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    return dctx.decompress(stored, max_output_size=size, allow_extra_data=False)


def _load(source: Union[str, "os.PathLike[str]", bytes]) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return f.read()
    raise TypeError(f"xrtpkg.read() takes a path or bytes, not {type(source).__name__}")


VERIFY_MODES = ("all", "on_use")


def read(source: Union[str, "os.PathLike[str]", bytes], trusted_keys=None, require_signature: bool = False,
         verify: str = "all") -> Bundle:
    """Read and verify a bundle from a path or from its bytes.

    ``verify="all"`` (default) checks every section before returning. ``verify="on_use"`` (formats/xrtpkg.md,
    "Verification on use") checks the header, table, padding and manifest now and each other section's sha256 and
    zstd frame the first time :meth:`Bundle.data` returns it (FormatError naming the section), so a damaged section
    nobody reads does not fail the read. A signed bundle is always verified whole: its signature covers every byte.

    A signed bundle's signature is always verified (before anything past the 64-byte header is
    parsed). That proves the bytes are what the embedded key signed, not who holds that key: to
    require a known signer pass ``trusted_keys`` (raw 32-byte Ed25519 public keys, or paths of
    ``.pub`` files written by ``xrtc keygen``; a non-empty collection). With ``trusted_keys`` or
    ``require_signature``, an unsigned bundle is refused; with ``trusted_keys``, so is one signed by
    any other key (status PERMISSION_DENIED). ``require_signature`` alone accepts any valid signer.

    Raises FormatError (``.status``: DATA_CORRUPT, INCOMPATIBLE, RESOURCE_EXHAUSTED or
    PERMISSION_DENIED) for any bundle that breaks formats/xrtpkg.md or the policy; OSError if the
    path cannot be read; ValueError/TypeError for a malformed or empty ``trusted_keys``.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    trusted = _signing.trusted_key_set(trusted_keys)
    return _verify(_load(source), trusted, bool(require_signature), on_use=verify == "on_use")


def _verify(buf: bytes, trusted: frozenset[bytes] | None = None, require_signature: bool = False,
            on_use: bool = False) -> Bundle:
    n = len(buf)

    # 1. size >= 64
    if n < HEADER_SIZE:
        raise _corrupt("size", f"file is {n} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, major, minor, count, file_size, header_flags, index_sha = HEADER_STRUCT.unpack_from(buf, 0)

    # 2. magic
    if magic != MAGIC:
        # An ONNX file starts with field 1 (ir_version) as a varint: byte 0x08. Users pass those by mistake.
        onnx_hint = "; it looks like an ONNX model: compile it into a bundle first (xrtc compile MODEL.onnx)" \
            if buf[:1] == b"\x08" else ""
        raise _corrupt("magic", f"bad magic {magic.hex(' ')}, expected {MAGIC.hex(' ')}: not an .xrtpkg bundle"
                       f"{onnx_hint}")

    # 3. major version
    if major != FORMAT_MAJOR:
        raise FormatError(
            INCOMPATIBLE,
            f"bundle format version {major}.{minor} is not readable by this reader (format "
            f"{FORMAT_MAJOR}.x): rebuild the bundle with an xrtc that writes format {FORMAT_MAJOR}.x, "
            f"or upgrade the runtime to one that reads format {major}.x",
            "major",
        )

    # 4. section count cap (0 is malformed; above the cap is a resource limit)
    if count == 0:
        raise _corrupt("section_count", "section_count is 0; a bundle has at least the manifest section")
    if count > MAX_SECTIONS:
        raise FormatError(
            RESOURCE_EXHAUSTED,
            f"section_count {count} exceeds the format's cap of {MAX_SECTIONS} sections",
            "section_count",
        )

    # 5. header flags: only SIGNED is defined
    if header_flags & ~KNOWN_HEADER_FLAGS:
        raise _corrupt(
            "header_flags",
            f"header flags are {header_flags:#x}; only bit 0 (SIGNED) is defined (a format 1.0 bundle has 0 here)",
        )
    signed = bool(header_flags & HEADER_FLAG_SIGNED)

    # 6. file size: the header's file_size, plus the signature trailer when SIGNED
    expected_len = file_size + SIG_TRAILER_SIZE if signed else file_size
    if expected_len != n:
        how = "truncated" if n < expected_len else "has trailing data"
        what = f"file_size {file_size} + the {SIG_TRAILER_SIZE}-byte signature trailer" if signed else str(file_size)
        raise _corrupt("file_size", f"file is {n} bytes but its header says {what}: the file {how}")

    # 7. signature: a well-formed trailer whose Ed25519 signature matches bytes [0, file_size)
    signer = _check_signature(buf, file_size) if signed else None

    # 8. trust policy
    if trusted is not None or require_signature:
        policy = (f"{len(trusted)} trusted key(s) were given" if trusted is not None
                  else "a signature is required")
        if signer is None:
            raise FormatError(
                PERMISSION_DENIED,
                f"the bundle is not signed and {policy}: sign it with a trusted key (`xrtc sign BUNDLE --key KEY`)",
                "trust",
            )
        if trusted is not None and signer not in trusted:
            shown = ", ".join(sorted(k.hex()[:16] + "..." for k in trusted))
            raise FormatError(
                PERMISSION_DENIED,
                f"the bundle is signed by key {signer.hex()}, which is not trusted (trusted: {shown}): re-sign it "
                "with a trusted key, or add this public key to the trusted keys if you trust its holder",
                "trust",
            )
    n = file_size  # the bundle proper; the trailer is not part of any later check

    # 9. table fits in the file
    table_end = HEADER_SIZE + ENTRY_SIZE * count
    if table_end > n:
        raise _corrupt("table", f"section table of {count} entries ends at byte {table_end}, past the end of the {n}-byte file")

    # 10. index_sha256 over header[0:32] + table
    h = hashlib.sha256()
    h.update(buf[0:32])
    h.update(buf[HEADER_SIZE:table_end])
    if h.digest() != index_sha:
        raise _corrupt("index_sha256", "index_sha256 does not match the header and section table")

    # Header fields are trusted from here on.
    # 11. per entry, in table order: name, flags, reserved, layout, caps
    entries = []
    seen: set[bytes] = set()
    expected = first_section_offset(count)
    total_decompressed = 0  # declared decompressed bytes of the compressed sections so far
    for i in range(count):
        raw_name, flags, ent_reserved, offset, stored_size, size, sha = ENTRY_STRUCT.unpack_from(
            buf, HEADER_SIZE + ENTRY_SIZE * i
        )
        nul = raw_name.find(b"\0")
        name = raw_name if nul < 0 else raw_name[:nul]
        where = f"section {i} ({name.decode('ascii', 'backslashreplace')!r})"
        if nul < 0:
            raise _corrupt("name", f"section {i}: name field has no NUL terminator (names are 1..31 bytes)")
        if any(raw_name[nul:]):
            raise _corrupt("name", f"{where}: name field has non-zero bytes after the name's NUL terminator")
        problem = name_problem(name)
        if problem:
            raise _corrupt("name", f"{where}: bad section name: {problem}")
        if i == 0 and name != MANIFEST_NAME.encode():
            raise _corrupt("name", f"{where}: the first section must be named {MANIFEST_NAME!r}")
        if name in seen:
            raise _corrupt("name", f"{where}: duplicate section name")
        seen.add(name)

        if flags & ~KNOWN_FLAGS:
            raise _corrupt("flags", f"{where}: unknown flag bits {flags & ~KNOWN_FLAGS:#x} set (flags {flags:#x})")
        compressed = bool(flags & FLAG_ZSTD)

        if ent_reserved != 0:
            raise _corrupt("reserved", f"{where}: reserved field is {ent_reserved:#x}, must be 0")

        if offset != expected:
            rel = "overlaps the previous section or the table" if offset < expected else "leaves a gap"
            raise _corrupt("layout", f"{where}: offset {offset} should be {expected}; the section {rel}")
        end = offset + stored_size  # Python ints: no overflow; the C++ reader checks this sum
        if end > n:
            raise _corrupt("layout", f"{where}: {stored_size} stored bytes at offset {offset} run past the end of the {n}-byte file")
        if not compressed and size != stored_size:
            raise _corrupt("layout", f"{where}: uncompressed section has size {size} != stored_size {stored_size}")
        if compressed and stored_size == 0:
            raise _corrupt("layout", f"{where}: a compressed section cannot be empty (store empty sections uncompressed)")
        expected = align64(end)

        if compressed and size > MAX_COMPRESSED_SIZE:
            raise FormatError(
                RESOURCE_EXHAUSTED,
                f"{where}: compressed section declares {size} bytes decompressed, above the cap of {MAX_COMPRESSED_SIZE}",
                "caps",
            )
        if i == 0 and size > MAX_MANIFEST_SIZE:
            raise FormatError(
                RESOURCE_EXHAUSTED,
                f"{where}: manifest declares {size} bytes, above the cap of {MAX_MANIFEST_SIZE}",
                "caps",
            )
        if compressed:
            total_decompressed += size
            if total_decompressed > MAX_TOTAL_DECOMPRESSED:
                raise FormatError(
                    RESOURCE_EXHAUSTED,
                    f"{where}: the compressed sections up to this one declare {total_decompressed} bytes "
                    f"decompressed in all, above the per-bundle cap of {MAX_TOTAL_DECOMPRESSED}",
                    "caps",
                )
        entries.append(Section(name.decode("ascii"), compressed, offset, stored_size, size, sha.hex()))

    # 12. trailing bytes: file_size equals the end of the last section
    last = entries[-1]
    if last.offset + last.stored_size != n:
        raise _corrupt("trailing", f"{n - (last.offset + last.stored_size)} trailing bytes after the last section")

    # 13. padding is zero: after the table, and between sections
    gap_start = table_end
    for s in entries:
        if any(buf[gap_start : s.offset]):
            raise _corrupt("padding", f"non-zero padding bytes in [{gap_start}, {s.offset}) before section {s.name!r}")
        gap_start = s.offset + s.stored_size

    # 14. per section, in table order: sha256, then the zstd frame checks (on use: the manifest only; the others
    # when Bundle.data() first returns them)
    view = memoryview(buf)  # slices without copying (weights sections can be large)
    lazy = on_use and not signed
    manifest_bytes = b""
    for i, s in enumerate(entries[:1] if lazy else entries):
        payload = _check_section(i, s, view[s.offset : s.offset + s.stored_size])
        if i == 0:
            manifest_bytes = payload

    # 15. the manifest's JSON
    manifest = _parse_manifest(manifest_bytes)
    bundle = Bundle(buf, major, minor, manifest, manifest_bytes, entries, signer, file_size)
    if lazy:
        bundle._unverified = {s.name for s in entries[1:]}
    return bundle


def _check_section(i: int, s: Section, stored: memoryview) -> bytes:
    """Checks section ``i``'s sha256, then its zstd frame. Returns the manifest's payload (i == 0), else b""."""
    where = f"section {i} ({s.name!r})"
    if hashlib.sha256(stored).hexdigest() != s.sha256:
        raise _corrupt("sha256", f"{where}: sha256 of the stored bytes does not match the table")
    if not s.compressed:
        return bytes(stored) if i == 0 else b""
    # The manifest (<= 16 MiB) is kept; other sections are only checked, through bounded memory, and
    # decompressed again by Bundle.data() when asked for (so verifying never holds more than one section).
    return _check_frame(where, stored, s.size, keep=(i == 0))


def _check_signature(buf: bytes, file_size: int) -> bytes:
    """Checks the trailer after ``file_size`` (length already checked); returns the signer's public key."""
    magic, public_key, signature, zeros = SIG_TRAILER_STRUCT.unpack_from(buf, file_size)
    if magic != SIG_MAGIC:
        raise _corrupt("signature", f"signature trailer magic is {magic.hex(' ')}, expected {SIG_MAGIC.hex(' ')}")
    if any(zeros):
        raise _corrupt("signature", "signature trailer's last 24 bytes (reserved) are not all zero")
    if not _signing.verify_signature(public_key, signature, _signing.signed_digest(buf, file_size)):
        raise _corrupt(
            "signature",
            f"the Ed25519 signature by key {public_key.hex()} does not match the bundle's bytes: the bundle was "
            "modified after it was signed, or the signature belongs to another bundle",
        )
    return bytes(public_key)


def _check_frame(where: str, stored: memoryview, size: int, keep: bool = True) -> bytes:
    """Check a zstd frame's header against the table, then decompress it. Returns the payload when ``keep``;
    otherwise decodes it in bounded pieces, counting the bytes, and returns b"" (peak memory ~ a few MiB)."""
    if bytes(stored[:4]) != ZSTD_MAGIC:
        raise _corrupt("zstd", f"{where}: payload does not start with a zstd frame (magic {stored[:4].hex(' ')})")
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as err:
        raise _corrupt("zstd", f"{where}: invalid zstd frame header: {err}") from err
    if params.content_size == _ZSTD_CONTENTSIZE_UNKNOWN:
        raise _corrupt("zstd", f"{where}: zstd frame does not declare its content size")
    if params.content_size != size:
        raise _corrupt("zstd", f"{where}: zstd frame declares {params.content_size} bytes, the table says {size}")
    if params.window_size > MAX_ZSTD_WINDOW:
        raise _corrupt("zstd", f"{where}: zstd window of {params.window_size} bytes exceeds the cap of {MAX_ZSTD_WINDOW}")
    if params.dict_id != 0:
        raise _corrupt("zstd", f"{where}: zstd frame needs dictionary {params.dict_id}; bundles use none")
    try:
        if keep:
            out = _decompress(stored, size)
            produced = len(out)
        else:
            out, produced = b"", _decoded_size(stored, size)
    except zstandard.ZstdError as err:
        raise _corrupt("zstd", f"{where}: zstd frame does not decompress: {err}") from err
    if produced != size:
        raise _corrupt("zstd", f"{where}: zstd frame decompressed to {produced} bytes, the table says {size}")
    return out


# Input fed to the decoder per call when a frame is only checked. One zstd block (<= 128 KiB of output) takes at
# least 4 input bytes (an RLE block), so one call yields at most 32 x this many bytes: 8 MiB.
_CHECK_INPUT_STEP = 256


def _decoded_size(stored: memoryview, size: int) -> int:
    """Decodes one frame without keeping its output; returns how many bytes it decodes to (stopping as soon as that
    exceeds ``size``). Data after the frame is an error, as in ``_decompress``."""
    dobj = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW).decompressobj()
    produced = 0
    for start in range(0, len(stored), _CHECK_INPUT_STEP):
        if dobj.eof:
            raise zstandard.ZstdError(f"{len(stored) - start} bytes follow the frame")
        produced += len(dobj.decompress(stored[start : start + _CHECK_INPUT_STEP]))
        if produced > size:
            return produced
    if not dobj.eof:
        raise zstandard.ZstdError("the frame is truncated")
    if dobj.unused_data:
        raise zstandard.ZstdError(f"{len(dobj.unused_data)} bytes follow the frame")
    return produced


def _reject_constant(token: str) -> None:
    raise ValueError(f"{token} is not JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of the range of a double")
    return value


def _parse_manifest(data: bytes) -> dict:
    """Strict RFC 8259 JSON: UTF-8 without BOM, no NaN/Infinity, no lone surrogates."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise _corrupt("manifest", "manifest starts with a UTF-8 byte order mark; it must be plain UTF-8 JSON")
    try:
        text = data.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
        # Lone surrogates (e.g. "\ud800") parse in Python but are not Unicode text.
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as err:  # UnicodeError and JSONDecodeError are ValueErrors
        raise _corrupt("manifest", f"manifest is not valid JSON: {err}") from err
    if not isinstance(obj, dict):
        raise _corrupt("manifest", f"manifest JSON is a {type(obj).__name__}, must be an object")
    depth = _json_depth(obj)
    if depth > MAX_MANIFEST_DEPTH:
        raise _corrupt("manifest", f"manifest JSON nests {depth} levels, over the cap of {MAX_MANIFEST_DEPTH}")
    where = _first_nul_string(obj)
    if where is not None:
        raise _corrupt("manifest", f"manifest string {where} contains a NUL character (\\u0000); names and values "
                                   "must not (C callers would see them cut at the NUL)")
    return obj


def _first_nul_string(obj) -> str | None:
    """A description of the first string (key or value, depth-first) that contains U+0000, or None."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\0" in value:
                return repr(value[:40])
        elif isinstance(value, dict):
            for key, child in value.items():
                if "\0" in key:
                    return repr(key[:40])
                stack.append(child)
        elif isinstance(value, list):
            stack.extend(value)
    return None


# Objects and arrays nest at most this deep (the top-level object is level 1); deeper is DATA_CORRUPT in both
# readers (formats/xrtpkg.md). Deeper text may also fail json.loads with RecursionError: DATA_CORRUPT as well.
MAX_MANIFEST_DEPTH = 64


def _json_depth(obj) -> int:
    """Nesting depth of parsed JSON without recursion (a scalar is 0, {} and [] are 1)."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest
