"""Cost that grows faster than the bundle (issue 10, class 6): every count and every total a bundle declares is
capped, and what is left costs time and memory linear in the bundle.

Each test builds its hostile bundle from the golden tiny model (a real two-engine bundle) and checks both readers:
the Python reader (`xrtpkg.read`) and the C++ reader behind `xrt.load` / `xrt-run` (libxrt). Numbers are printed
(`-s`). About 10 s on a 2-core machine, most of it decompressing 2 GiB of zeros once per reader.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest

import xpuruntime as xrt
import xrtpkg
from xrtpkg._format import MAX_COMPRESSED_SIZE, MAX_TOTAL_DECOMPRESSED
from xrt_testutil import ROOT, run_tool

TINY = ROOT / "formats" / "golden" / "tiny_model.xrtpkg"


def _rebuild(manifest: dict, extra: list[tuple[str, bytes, bool]] = ()) -> bytes:
    """The tiny model's sections with another manifest (and extra sections)."""
    base = xrtpkg.read(TINY)
    payloads = [(s.name, base.data(s.name), s.compressed) for s in base.sections[1:]]
    return xrtpkg.to_bytes(manifest, payloads + list(extra))


def _tiny_manifest() -> dict:
    return xrtpkg.read(TINY).manifest


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


def _layout(sections: list[tuple[bytes, int, bytes, int]]) -> bytes:
    """Lays out (name, flags, stored bytes, size) as formats/xrtpkg.md says: header, table, aligned sections."""
    import hashlib

    count = len(sections)
    offset = xrtpkg._format.first_section_offset(count)
    table = b""
    body = bytearray()
    starts = []
    for name, flags, stored, size in sections:
        starts.append(offset)
        table += struct.pack("<32sIIQQQ32s", name, flags, 0, offset, len(stored), size, hashlib.sha256(stored).digest())
        offset = xrtpkg._format.align64(offset + len(stored))
    file_size = starts[-1] + len(sections[-1][2])
    head32 = struct.pack("<8sHHIQQ", xrtpkg._format.MAGIC, 1, 0, count, file_size, 0)
    out = bytearray(head32 + hashlib.sha256(head32 + table).digest() + table)
    for start, (_, _, stored, _) in zip(starts, sections):
        out += bytes(start - len(out)) + stored
    return bytes(out)


def _tiny_sections() -> list[tuple[bytes, int, bytes, int]]:
    base = xrtpkg.read(TINY)
    raw = TINY.read_bytes()
    return [(s.name.encode(), 1 if s.compressed else 0, raw[s.offset : s.offset + s.stored_size], s.size)
            for s in base.sections]


def _cpp_verdict(path: Path) -> str:
    """The C++ reader's verdict through the Python binding (libxrt's xrt_bundle_open): status name or OK."""
    from xpuruntime import _core

    try:
        _core.Bundle(str(path), [], False)
    except xrt.Error as err:
        return err.status
    return "OK"


def test_compressed_totals_are_capped_per_bundle(tmp_path):
    """Three sections each declaring 2 GiB (at the per-section cap): 6 GiB in all, over the 4 GiB per-bundle cap.
    Both readers refuse it from the table alone (RESOURCE_EXHAUSTED, check 'caps') before decompressing a byte."""
    frame = rle_zero_frame(MAX_COMPRESSED_SIZE)
    sections = _tiny_sections() + [(f"zeros{i}".encode(), 1, frame, MAX_COMPRESSED_SIZE) for i in range(3)]
    data = _layout(sections)
    path = tmp_path / "three_2gib.xrtpkg"
    path.write_bytes(data)
    t = time.perf_counter()
    with pytest.raises(xrtpkg.FormatError) as info:
        xrtpkg.read(data)
    py_s = time.perf_counter() - t
    assert (info.value.status, info.value.check) == ("RESOURCE_EXHAUSTED", "caps"), info.value.message
    assert str(MAX_TOTAL_DECOMPRESSED) in info.value.message
    t = time.perf_counter()
    assert _cpp_verdict(path) == "RESOURCE_EXHAUSTED"
    cpp_s = time.perf_counter() - t
    with pytest.raises(xrt.ResourceExhausted, match="per-bundle cap"):
        xrt.load(path)
    proc = run_tool("xrt-run", path, "--quiet")
    assert proc.returncode != 0 and "per-bundle cap" in proc.stderr, proc.stderr
    print(f"\n{len(data)}-byte bundle declaring 3 x 2 GiB: Python reader {py_s * 1e3:.1f} ms, "
          f"C++ reader {cpp_s * 1e3:.1f} ms, both RESOURCE_EXHAUSTED")
    assert py_s < 1 and cpp_s < 1


def test_a_2gib_section_is_verified_in_bounded_memory(tmp_path):
    """One section declaring (and decoding to) 2 GiB, plus the manifest: under both caps, so valid. The Python reader
    verifies it without holding it (peak traced memory printed; it was 2-4 GiB before), and materialises it only
    when asked; the C++ reader verifies it through its scratch buffer."""
    frame = rle_zero_frame(MAX_COMPRESSED_SIZE)
    data = _layout(_tiny_sections() + [(b"zeros", 1, frame, MAX_COMPRESSED_SIZE)])
    path = tmp_path / "one_2gib.xrtpkg"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        t = time.perf_counter()
        bundle = xrtpkg.read(data)
        py_s = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bundle.section("zeros").size == MAX_COMPRESSED_SIZE
    t = time.perf_counter()
    assert _cpp_verdict(path) == "OK"
    cpp_s = time.perf_counter() - t
    print(f"\n{len(data)}-byte bundle with a 2 GiB section: Python reader {py_s:.2f} s, peak traced memory "
          f"{peak / 2**20:.1f} MiB; C++ reader {cpp_s:.2f} s")
    assert peak < 64 << 20  # the bound SECURITY.md states for verifying: a few MiB of scratch, never the section


def test_manifest_counts_are_capped_and_fallback_selection_is_linear(tmp_path):
    """160,000 distinct fallback devices (the reported 46 s session creation) are refused at load; at the caps (256
    variants x 16 fallback devices, every one distinct) creating a session stays fast."""
    manifest = _tiny_manifest()
    hostile = dict(manifest)
    hostile["variants"] = [dict(manifest["variants"][0], fallback_devices=[f"d{i}" for i in range(160_000)])]
    path = tmp_path / "fallback_160k.xrtpkg"
    path.write_bytes(_rebuild(hostile))
    print(f"\n160k fallback devices: {path.stat().st_size} bytes")
    t = time.perf_counter()
    with pytest.raises(xrt.ResourceExhausted, match="fallback_devices has 160000 entries"):
        xrt.load(path, device="npu")
    assert time.perf_counter() - t < 5
    proc = run_tool("xrt-run", path, "--device", "npu", "--quiet")
    assert proc.returncode != 0 and "over the runtime's cap of 16" in proc.stderr, proc.stderr

    for key, count in (("variants", 257), ("inputs", 4097), ("outputs", 4097)):
        bad = dict(manifest, model=dict(manifest["model"]))
        if key == "variants":
            bad["variants"] = [dict(manifest["variants"][0], id=f"v{i}") for i in range(count)]
        else:
            bad["model"][key] = [dict(manifest["model"][key][0], name=f"t{i}") for i in range(count)]
        p = tmp_path / f"{key}.xrtpkg"
        p.write_bytes(_rebuild(bad))
        with pytest.raises(xrt.ResourceExhausted, match=f"has {count} entries, over the runtime's cap"):
            xrt.load(p)
    bad = dict(manifest, model=dict(manifest["model"]))
    bad["model"]["inputs"] = [dict(manifest["model"]["inputs"][0], shape=[1] * 17)]
    p = tmp_path / "rank17.xrtpkg"
    p.write_bytes(_rebuild(bad))
    with pytest.raises(xrt.DataCorrupt, match="rank 17"):
        xrt.load(p)

    # At the caps: 256 variants for a device nobody has, each with 16 distinct fallbacks (4096 devices to try).
    at_caps = dict(manifest)
    at_caps["variants"] = [dict(manifest["variants"][0], id=f"v{i}", device="npu",
                                fallback_devices=[f"d{i}-{k}" for k in range(16)]) for i in range(256)]
    p = tmp_path / "at_caps.xrtpkg"
    p.write_bytes(_rebuild(at_caps))
    t = time.perf_counter()
    with pytest.raises((xrt.Unavailable, xrt.NotFound)):
        xrt.load(p, device="npu")
    took = time.perf_counter() - t
    print(f"256 variants x 16 distinct fallback devices ({p.stat().st_size} bytes): refused after trying all in "
          f"{took * 1e3:.0f} ms")
    assert took < 10
