"""Untyped errors and edge cases (issue 10, class 8): hostile input gets the API's own error with a message saying
what is wrong, never a KeyError / RecursionError / JSONDecodeError / AttributeError / traceback, and sizes are
checked before anything is read. Each test builds its hostile input. ~10 s (xrtc compile runs three times).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import xpuruntime as xrt
import xrtpkg
from bundle_craft import TINY, tiny_manifest, with_manifest
from xrt_testutil import run_tool



def _rebuild(manifest: dict, extra=()) -> bytes:
    return with_manifest(manifest, list(extra))


def _with_decisions(tmp_path, raw: bytes, name: str):
    manifest = dict(tiny_manifest(), decisions="decisions.json")
    path = tmp_path / f"{name}.xrtpkg"
    path.write_bytes(_rebuild(manifest, [("decisions.json", raw, True)]))
    return path


HOSTILE_DECISIONS = {
    "not_json": b"{\"variants\": [",
    "not_utf8": b"\xff\xfe{}",
    "deep": b"[" * 200_000 + b"]" * 200_000,  # RecursionError in json.loads
    "deep_object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "array": b"[]",
    "no_nodes": b'{"variants": []}',
    "variants_not_list": b'{"variants": 3, "nodes": []}',
    "variant_without_id": b'{"variants": [{}], "nodes": []}',
    "node_missing_keys": b'{"variants": [], "nodes": [{"name": "n"}]}',
    "node_not_object": b'{"variants": [], "nodes": [7]}',
    "choices_not_object": b'{"variants": [], "nodes": [{"name": "n", "op": "Relu", "choices": [], "why": "", '
                          b'"rejected": []}]}',
    "choice_not_object": b'{"variants": [], "nodes": [{"name": "n", "op": "Relu", "choices": {"%s": 1}, '
                         b'"why": "", "rejected": []}]}',
    "warnings_not_list": b'{"variants": [], "nodes": [], "warnings": {}}',
}


def test_hostile_decision_logs_are_data_corrupt(tmp_path):
    with xrt.load(TINY) as session:
        vid = session.variant
    for name, raw in HOSTILE_DECISIONS.items():
        raw = raw.replace(b"%s", vid.encode())
        session = xrt.load(_with_decisions(tmp_path, raw, name))
        with pytest.raises(xrt.DataCorrupt, match="decision log") as info:
            session.explain()
        print(f"\n{name}: {info.value}"[:200], end="")
        session.close()
    # A well-formed log still explains, and the non-JSON manifest key case is typed too.
    good = {"decisions_format": 1, "warnings": [], "variants": [{"id": vid, "status": "built"}],
            "nodes": [{"name": "n", "op": "Relu", "choices": {vid: {"engine": "x", "precision": "fp32"}},
                       "why": "w", "rejected": []}]}
    session = xrt.load(_with_decisions(tmp_path, json.dumps(good).encode(), "good"))
    out = session.explain()["decisions"]
    assert out["variant"]["id"] == vid and out["nodes"][0]["precision"] == "fp32"
    manifest = dict(tiny_manifest(), decisions=["decisions.json"])
    path = tmp_path / "decisions_key_list.xrtpkg"
    path.write_bytes(_rebuild(manifest))
    with pytest.raises(xrt.DataCorrupt, match="not a section name"):
        xrt.load(path).explain()


def test_closed_session_is_failed_precondition():
    session = xrt.load(TINY)
    session.close()
    for call in (session.explain, lambda: session.manifest, lambda: session.run({})):
        with pytest.raises(xrt.FailedPrecondition, match="closed session"):
            call()


def test_nul_in_a_manifest_name_is_refused_by_both_readers(tmp_path):
    manifest = tiny_manifest()
    for where in ("input", "output", "variant_id", "key"):
        bad = json.loads(json.dumps(manifest))
        if where == "input":
            bad["model"]["inputs"][0]["name"] += "\u0000hidden"
        elif where == "output":
            bad["model"]["outputs"][0]["name"] = "\u0000"
        elif where == "variant_id":
            bad["variants"][0]["id"] = "cpu\u0000x"
        else:
            bad["provenance"]["k\u0000"] = 1
        data = _rebuild(bad)
        with pytest.raises(xrtpkg.FormatError) as info:
            xrtpkg.read(data)
        assert (info.value.status, info.value.check) == ("DATA_CORRUPT", "manifest"), info.value.message
        path = tmp_path / f"nul_{where}.xrtpkg"
        path.write_bytes(data)
        with pytest.raises(xrt.DataCorrupt, match="NUL"):
            xrt.load(path)
    proc = run_tool("xrt-run", path, "--quiet")
    assert proc.returncode != 0 and "NUL" in proc.stderr, proc.stderr
    with pytest.raises(ValueError, match="NUL"):  # the writer never makes a bundle the readers refuse
        xrtpkg.to_bytes(bad, [])


def _external_model(folder, location: str, length: int) -> str:
    """A real model y = x + W whose W (float32[length / 4]) lives in external data at `location`."""
    n = length // 4
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_xrtc_refuses_a_nul_external_data_location(tmp_path):
    model = _external_model(tmp_path, "w\0.bin", 16)
    (tmp_path / "w").write_bytes(bytes(16))
    proc = run_tool("xrtc", "compile", model, "-o", tmp_path / "out.xrtpkg")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "NUL byte" in proc.stderr, proc.stderr
    assert not (tmp_path / "out.xrtpkg").exists()


def test_xrtc_refuses_3gib_of_external_data_before_reading_it(tmp_path):
    """3 GiB of external data (a sparse file: no disk used) is refused from its size, not after reading it."""
    length = 3 << 30
    model = _external_model(tmp_path, "w.bin", length)
    with open(tmp_path / "w.bin", "wb") as f:
        f.truncate(length)
    # Peak RSS as VmHWM after resetting it (clear_refs 5): ru_maxrss would start at the forking parent's peak (Linux
    # copies the high-water mark on fork), i.e. pytest's own after the suites before this one.
    code = (f"import re, time, sys\nfrom xrtc.model_io import load_model\n"
            f"open('/proc/self/clear_refs', 'w').write('5')\nt = time.perf_counter()\n"
            f"try:\n    load_model({model!r})\nexcept Exception as err:\n    print(type(err).__name__, err)\n"
            f"hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            f"print('took', time.perf_counter() - t, 'peak_kib', hwm)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # not the repository root, whose xpuruntime/ (no _core) would shadow .venv's
    out = proc.stdout
    assert "UnsupportedModelError" in out and "over 2 GiB" in out, out + proc.stderr
    took = float(out.split("took ")[1].split()[0])
    peak_mib = int(out.split("peak_kib ")[1]) / 1024
    print(f"\n3 GiB external data: refused in {took * 1e3:.0f} ms, process peak RSS {peak_mib:.0f} MiB "
          "(was: read whole, 6.4 GB peak, then an EncodeError)")
    assert peak_mib < 1024 and took < 10
    proc = run_tool("xrtc", "compile", model, "-o", tmp_path / "out.xrtpkg")
    assert proc.returncode != 0 and "over 2 GiB" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_xrt_run_bounds_what_an_npz_inflates_to(tmp_path):
    # 64 MiB of zeros deflates ~1000x: 64 KiB on disk.
    archive = tmp_path / "inflates.npz"
    np.savez_compressed(archive, x=np.zeros((16, 1 << 20), np.float32))
    ratio = (64 << 20) / archive.stat().st_size
    proc = run_tool("xrt-run", TINY, "--inputs", archive, "--max-input-bytes", str(16 << 20), "--quiet")
    assert proc.returncode != 0 and "decompress to more than 16777216 bytes" in proc.stderr, proc.stderr
    assert "--max-input-bytes" in proc.stderr
    # A member that claims less than it inflates to is stopped at its claim, never read whole: patch the sizes.
    import io

    npy = io.BytesIO()
    np.lib.format.write_array(npy, np.zeros((16, 1 << 20), np.float32))
    real = len(npy.getvalue())
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w", zipfile.ZIP_DEFLATED) as z:  # numpy forces ZIP64; this one is plain zip
        z.writestr("x.npy", npy.getvalue())
    lying = tmp_path / "lying.npz"
    data = bytearray(plain.getvalue())
    small = (1 << 20).to_bytes(4, "little")
    # Local header: uncompressed size at +22; central directory entry: at +24 (no ZIP64 below 4 GiB).
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    assert int.from_bytes(data[local + 22 : local + 26], "little") == real
    data[local + 22 : local + 26] = small
    data[central + 24 : central + 28] = small
    lying.write_bytes(bytes(data))
    t = time.perf_counter()
    proc = run_tool("xrt-run", TINY, "--inputs", lying, "--quiet")
    took = time.perf_counter() - t
    assert proc.returncode != 0 and ("size mismatch" in proc.stderr or "CRC" in proc.stderr.upper()), proc.stderr
    print(f"\n{archive.stat().st_size}-byte npz inflating {ratio:.0f}x: refused over --max-input-bytes; a member "
          f"understating its size: refused in {took * 1e3:.0f} ms")
