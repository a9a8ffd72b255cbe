"""Cost that grows faster than the bundle (issue 10, class 6): every count and every total a bundle declares is
capped, and what is left costs time and memory linear in the bundle.

Each test builds its hostile bundle from the golden tiny model (a real two-engine bundle) and checks both readers:
the Python reader (`xrtpkg.read`) and the C++ reader behind `xrt.load` / `xrt-run` (libxrt). Numbers are printed
(`-s`). About 10 s on a 2-core machine, most of it decompressing 2 GiB of zeros once per reader.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

import xpuruntime as xrt
import xrtpkg
from xrtpkg._format import MAX_COMPRESSED_SIZE, MAX_TOTAL_DECOMPRESSED
from bundle_craft import layout as _layout, rle_zero_frame, tiny_manifest as _tiny_manifest, \
    tiny_sections as _tiny_sections, with_manifest
from xrt_testutil import run_tool


def _rebuild(manifest: dict) -> bytes:
    return with_manifest(manifest)


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
