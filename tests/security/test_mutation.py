"""Mutation parity: systematic corruptions of valid bundles, each judged by both readers.

For each valid bundle (formats/golden/tiny_model.xrtpkg and samples/sample_cnn.onnx compiled), the mutations are:
every single-bit flip of the header, the section table and the manifest section's stored bytes; every truncation
length; trailing bytes; every integer field of the header and of each table entry set to 0, 1, 2^31-1, 2^32-1,
2^64-1 (those that fit the field) and to its value +/- 1. Each mutated file goes to the Python reader
(``xrtpkg.read(bytes)``) and to the C++ reader through the installed libxrt.so (``xrt_bundle_open_memory`` via
ctypes). Both must reject every case with a typed verdict (FormatError.status / xrt_status_code_t), and the two
verdicts must be equal.

A second pass ("repaired") applies the integer-field mutations and then recomputes the digests, as a writer with
bad arithmetic would: it drives the checks behind the digests (layout, caps, zstd, JSON) and asserts the same
parity. Mutations that leave a repaired bundle valid are listed (e.g. minor_version +1: minors are compatible).
Run with ``-s`` to see the counts.
"""

from __future__ import annotations

import ctypes
import hashlib
import struct
from collections import Counter
from pathlib import Path

import pytest
import xpuruntime
import xrtpkg

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "formats" / "golden"

# xrt_status_code_t values -> the verdict names FormatError.status uses, from xpuruntime's table (which
# tests/runtime/test_status_codes.py checks against xrt.h).
C_STATUS = {0: "OK", **{code: cls.status for code, cls in xpuruntime._errors._BY_CODE.items()}}
TYPED = {"DATA_CORRUPT", "INCOMPATIBLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"}

HEADER_FIELDS = [("major_version", 8, 2), ("minor_version", 10, 2), ("section_count", 12, 4), ("file_size", 16, 8),
                 ("flags", 24, 8)]
ENTRY_FIELDS = [("flags", 32, 4), ("reserved", 36, 4), ("offset", 40, 8), ("stored_size", 48, 8), ("size", 56, 8)]
SPECIAL = [0, 1, 2**31 - 1, 2**32 - 1, 2**64 - 1]


@pytest.fixture(scope="module")
def libxrt():
    lib = ctypes.CDLL(str(Path(xpuruntime.__file__).parent / "libxrt.so"))
    lib.xrt_bundle_open_memory.restype = ctypes.c_void_p
    lib.xrt_bundle_open_memory.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                           ctypes.POINTER(ctypes.c_void_p)]
    lib.xrt_status_code.restype = ctypes.c_int
    lib.xrt_status_code.argtypes = [ctypes.c_void_p]
    lib.xrt_status_message.restype = ctypes.c_char_p
    lib.xrt_status_message.argtypes = [ctypes.c_void_p]
    lib.xrt_status_free.argtypes = [ctypes.c_void_p]
    lib.xrt_bundle_release.argtypes = [ctypes.c_void_p]
    return lib


def cpp_verdict(lib, buf, size: int | None = None) -> str:
    """The C++ verdict for buf[:size] (no copy: a pointer into buf with a shorter length)."""
    if size is None:
        size = len(buf)
    cbuf = (ctypes.c_char * len(buf)).from_buffer_copy(buf) if isinstance(buf, bytes) else buf
    out = ctypes.c_void_p()
    status = lib.xrt_bundle_open_memory(ctypes.addressof(cbuf), size, None, ctypes.byref(out))
    if not status:
        assert out.value, "OK status without a bundle"
        lib.xrt_bundle_release(out)
        return "OK"
    code = lib.xrt_status_code(status)
    message = lib.xrt_status_message(status).decode("utf-8", "replace")
    lib.xrt_status_free(status)
    assert out.value is None, "error status but a bundle was returned"
    assert message, f"status {code} without a message"
    return C_STATUS.get(code, f"UNTYPED({code}): {message}")


def py_verdict(data: bytes) -> str:
    try:
        xrtpkg.read(data)
    except xrtpkg.FormatError as err:
        return err.status
    except Exception as err:  # noqa: BLE001 - anything else is a finding
        return f"UNTYPED({type(err).__name__}): {err}"
    return "OK"


def repair(buf: bytearray) -> bytearray:
    """Recompute the in-bounds section digests and index_sha256 (see formats/cpp/xrtpkg_fuzz_repair.h)."""
    (count,) = struct.unpack_from("<I", buf, 12)
    table_end = 64 + 96 * count
    if count == 0 or count > 1024 or table_end > len(buf):
        return buf
    for i in range(count):
        e = 64 + 96 * i
        offset, stored = struct.unpack_from("<QQ", buf, e + 40)
        if offset <= len(buf) and stored <= len(buf) - offset:
            buf[e + 64 : e + 96] = hashlib.sha256(buf[offset : offset + stored]).digest()
    buf[32:64] = hashlib.sha256(bytes(buf[0:32]) + bytes(buf[64:table_end])).digest()
    return buf


def int_mutations(data: bytes):
    """(label, mutated bytes) for every integer field of the header and each table entry."""
    count = struct.unpack_from("<I", data, 12)[0]
    fields = [(f"header.{n}", off, w) for n, off, w in HEADER_FIELDS]
    fields += [(f"entry{i}.{n}", 64 + 96 * i + off, w) for i in range(count) for n, off, w in ENTRY_FIELDS]
    for label, off, width in fields:
        value = int.from_bytes(data[off : off + width], "little")
        top = 2 ** (8 * width) - 1
        candidates = {v for v in SPECIAL if v <= top} | {top} | {v for v in (value - 1, value + 1) if 0 <= v <= top}
        candidates.discard(value)  # an unchanged field is not a mutation
        for v in sorted(candidates):
            buf = bytearray(data)
            buf[off : off + width] = v.to_bytes(width, "little")
            yield f"{label}={v}", buf


def mutations(data: bytes):
    """(kind, label, bytes, size) for every non-repaired mutation; size < len(bytes) means a truncation."""
    count = struct.unpack_from("<I", data, 12)[0]
    table_end = 64 + 96 * count
    m_off, m_stored = struct.unpack_from("<QQ", data, 64 + 40)
    regions = [("header", 0, 64), ("table", 64, table_end), ("manifest", m_off, m_off + m_stored)]
    for kind, start, end in regions:
        for byte in range(start, end):
            for bit in range(8):
                buf = bytearray(data)
                buf[byte] ^= 1 << bit
                yield f"bitflip.{kind}", f"byte {byte} bit {bit}", buf, len(buf)
    whole = bytearray(data)
    for n in range(len(data)):
        yield "truncate", f"length {n}", whole, n
    for tail in (b"\0", b"\0" * 63, b"\0" * 64, b"\xff", bytes(range(256)) * 16):
        yield "trailing", f"+{len(tail)} bytes", bytearray(data + tail), len(data) + len(tail)
    for label, buf in int_mutations(data):
        yield "int_field", label, buf, len(buf)


def judge(lib, kind, label, buf, size, tally, failures, accepted):
    py = py_verdict(bytes(buf[:size]))
    cpp = cpp_verdict(lib, (ctypes.c_char * len(buf)).from_buffer(buf), size)
    t = tally[kind]
    t["cases"] += 1
    t["rejected_py"] += py in TYPED
    t["rejected_cpp"] += cpp in TYPED
    t["agree"] += py == cpp
    if py == "OK" and cpp == "OK":
        accepted.append(f"{kind} {label}")
    elif py != cpp or py not in TYPED:
        failures.append(f"{kind} {label}: python {py} / c++ {cpp}")


def run_bundle(lib, data: bytes, name: str):
    assert py_verdict(data) == "OK" and cpp_verdict(lib, data) == "OK", f"{name} must be valid to start with"
    tally = {}
    failures: list[str] = []
    accepted: list[str] = []
    for kind, label, buf, size in mutations(data):
        tally.setdefault(kind, Counter())
        judge(lib, kind, label, buf, size, tally, failures, accepted)
    # Repaired pass: judged for parity only; a valid result is listed, not a failure.
    rep_tally = {"int_field+repair": Counter()}
    rep_fail: list[str] = []
    rep_ok: list[str] = []
    for label, buf in int_mutations(data):
        judge(lib, "int_field+repair", label, repair(buf), len(buf), rep_tally, rep_fail, rep_ok)
    rep_fail = [f for f in rep_fail if "python OK / c++ OK" not in f]

    print(f"\n{name} ({len(data)} bytes)")
    print(f"{'mutation':<18}{'cases':>9}{'rejected py':>13}{'rejected c++':>14}{'same verdict':>14}")
    for kind, t in {**tally, **rep_tally}.items():
        print(f"{kind:<18}{t['cases']:>9}{t['rejected_py']:>13}{t['rejected_cpp']:>14}{t['agree']:>14}")
    total = sum(tally.values(), Counter())
    print(f"{'total (plain)':<18}{total['cases']:>9}{total['rejected_py']:>13}{total['rejected_cpp']:>14}"
          f"{total['agree']:>14}")
    if rep_ok:
        print(f"still valid after digest repair ({len(rep_ok)}): {', '.join(rep_ok)}")
    return failures, accepted, rep_fail


@pytest.mark.parametrize("which", ["tiny_model", "sample_cnn"])
def test_every_mutation_is_rejected_with_the_same_verdict(which, libxrt, request):
    if which == "tiny_model":
        data = (GOLDEN / "tiny_model.xrtpkg").read_bytes()
    else:
        data = Path(request.getfixturevalue("sample_bundle")).read_bytes()
    failures, accepted, rep_fail = run_bundle(libxrt, data, which)
    assert not accepted, f"{len(accepted)} mutations were accepted: {accepted[:20]}"
    assert not failures, f"{len(failures)} untyped or disagreeing verdicts: {failures[:20]}"
    assert not rep_fail, f"{len(rep_fail)} disagreeing verdicts after digest repair: {rep_fail[:20]}"


def raw_bundle(manifest_text: bytes) -> bytes:
    """A one-section bundle whose manifest is stored uncompressed, byte for byte (no JSON re-encoding)."""
    first = 64 + 96
    offset = (first + 63) & ~63
    entry = struct.pack("<32sIIQQQ32s", b"manifest", 0, 0, offset, len(manifest_text), len(manifest_text),
                        hashlib.sha256(manifest_text).digest())
    file_size = offset + len(manifest_text)
    head32 = struct.pack("<8sHHIQQ", b"\x89XRT\r\n\x1a\n", 1, 0, 1, file_size, 0)
    index = hashlib.sha256(head32 + entry).digest()
    out = head32 + index + entry
    return out + bytes(offset - len(out)) + manifest_text


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 1000, 100_000])
def test_manifest_depth_cap_is_the_same_in_both_readers(depth, libxrt):
    """The manifest nests at most 64 levels (formats/xrtpkg.md); deeper is DATA_CORRUPT in both readers."""
    text = b"{\"a\":" + b"[" * (depth - 1) + b"0" + b"]" * (depth - 1) + b"}"
    data = raw_bundle(text)
    py, cpp = py_verdict(data), cpp_verdict(libxrt, data)
    assert py == cpp, f"depth {depth}: python {py}, c++ {cpp}"
    assert py == ("OK" if depth <= 64 else "DATA_CORRUPT")
