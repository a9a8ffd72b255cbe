"""Tests of the Python .xrtpkg reader/writer (formats/python/xrtpkg) against formats/xrtpkg.md.

Run: cd /work/main && PYTHONPATH=formats/python .venv/bin/python -m pytest tests/format -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import subprocess
import sys
import json
import os
import pathlib
import random
import struct
import time

import pytest
import zstandard

import xrtpkg

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "formats" / "golden"
GOLDEN_DOC = json.loads((GOLDEN / "golden.json").read_text(encoding="utf-8"))
TINY = (GOLDEN / "tiny_model.xrtpkg").read_bytes()
CORPUS = pathlib.Path.home() / ".cache" / "xrt-corpus" / "models"
STATUSES = {"DATA_CORRUPT", "INCOMPATIBLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"}


def _read_status(data) -> str:
    try:
        xrtpkg.read(data)
    except xrtpkg.FormatError as err:
        assert err.status in STATUSES
        return err.status
    return "OK"


def _fix_index(buf: bytearray) -> None:
    count = struct.unpack_from("<I", buf, 12)[0]
    buf[32:64] = hashlib.sha256(bytes(buf[0:32]) + bytes(buf[64 : 64 + 96 * count])).digest()


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- golden files

@pytest.mark.parametrize("case", GOLDEN_DOC["files"], ids=lambda c: c["file"])
def test_golden_verdict(case):
    path = GOLDEN / case["file"]
    for source in (path, str(path), path.read_bytes()):
        if case["status"] == "OK":
            bundle = xrtpkg.read(source)
            assert (bundle.major, bundle.minor, bundle.file_size) == (case["major"], case["minor"], case["file_size"])
            assert hashlib.sha256(bundle.manifest_bytes).hexdigest() == case["manifest_sha256"]
            assert [dataclasses.asdict(s) for s in bundle.sections] == case["sections"]
            assert isinstance(bundle.manifest, dict)
            assert json.loads(bundle.manifest_bytes) == bundle.manifest
            assert (bundle.signer.hex() if bundle.signer else None) == case["signer"]
        else:
            with pytest.raises(xrtpkg.FormatError) as info:
                xrtpkg.read(source)
            assert (info.value.status, info.value.check) == (case["status"], case["check"]), info.value.message
            assert info.value.message and case["status"] in str(info.value)
    # Verdicts under signature policies (trusted keys as raw bytes; [] means none).
    for policy in case.get("policies", []):
        keys = [bytes.fromhex(k) for k in policy["trusted_keys"]] or None
        try:
            xrtpkg.read(path, trusted_keys=keys, require_signature=policy["require_signature"])
            got = ("OK", "")
        except xrtpkg.FormatError as err:
            got = (err.status, err.check)
        assert got == (policy["status"], policy["check"]), policy


def test_golden_covers_every_check_and_status():
    cases = GOLDEN_DOC["files"]
    verdicts = cases + [p for c in cases for p in c.get("policies", [])]
    assert {c["check"] for c in verdicts if c["status"] != "OK"} == set(GOLDEN_DOC["checks"])
    assert {c["status"] for c in verdicts} == STATUSES | {"OK"}
    on_disk = {p.name for p in GOLDEN.glob("*.xrtpkg")}
    assert on_disk == {c["file"] for c in cases}


def test_golden_files_are_reproducible(tmp_path):
    """make_golden.py rebuilds byte-identical files (deterministic writer, OpenVINO IR, layout)."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    # A fresh process: OpenVINO names the nodes it creates from a process-wide counter, so a conversion after others
    # in the same process (this test session compiles models) writes different XML.
    subprocess.run([sys.executable, "-P", str(GOLDEN / "make_golden.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for case in GOLDEN_DOC["files"] + [{"file": "golden.json"}]:
        name = case["file"]
        assert (tmp_path / name).read_bytes() == (GOLDEN / name).read_bytes(), f"{name} differs; rerun make_golden.py"


def test_tiny_model_contents():
    bundle = xrtpkg.read(TINY)
    m = bundle.manifest
    assert m["format"] == {"name": "xrtpkg", "version": "1.0"}
    assert [v["id"] for v in m["variants"]] == ["cpu-openvino", "cpu-onnxruntime"]
    for variant in m["variants"]:
        for section in variant["artifacts"].values():
            assert bundle.section(section).size == len(bundle.data(section))
    assert bundle.section("manifest").compressed and bundle.section("cpu-openvino.xml").compressed
    assert not bundle.section("cpu-openvino.bin").compressed
    onnx_bytes = bundle.data("cpu-onnxruntime.onnx")
    assert hashlib.sha256(onnx_bytes).hexdigest() == m["provenance"]["source"]["sha256"]
    assert bundle.data("cpu-openvino.xml").startswith(b"<?xml")
    for s in bundle.sections:
        assert s.offset % 64 == 0
        raw = TINY[s.offset : s.offset + s.stored_size]
        assert hashlib.sha256(raw).hexdigest() == s.sha256
    assert bundle.manifest_bytes == xrtpkg.canonical_json(m)


# ----------------------------------------------------------------------------- writer

def _payloads():
    rng = random.Random(1234)
    noise = bytes(rng.getrandbits(8) for _ in range(5000))
    return [
        ("weights.bin", noise, False),
        ("empty.bin", b"", False),
        ("model.xml", b"<net>" + b"<layer/>" * 2000 + b"</net>", True),
        ("noise.zst", noise, True),
        ("one", b"x", False),
    ]


MANIFEST = {"format": {"name": "xrtpkg", "version": "1.0"}, "model": {"name": "t\u00e9st", "shape": [1, None, "n"]}}


def test_writer_is_deterministic_and_canonical():
    a = xrtpkg.to_bytes(MANIFEST, _payloads())
    b = xrtpkg.to_bytes(json.loads(json.dumps(MANIFEST)), _payloads())
    reordered = {"model": {"shape": [1, None, "n"], "name": "t\u00e9st"}, "format": {"version": "1.0", "name": "xrtpkg"}}
    c = xrtpkg.to_bytes(reordered, _payloads())
    assert a == b == c
    assert xrtpkg.canonical_json(reordered) == '{"format":{"name":"xrtpkg","version":"1.0"},"model":{"name":"tést","shape":[1,null,"n"]}}'.encode()


def test_round_trip(tmp_path):
    data = xrtpkg.to_bytes(MANIFEST, _payloads())
    path = tmp_path / "rt.xrtpkg"
    xrtpkg.write(path, MANIFEST, _payloads())
    assert path.read_bytes() == data
    bundle = xrtpkg.read(path)
    assert bundle.manifest == MANIFEST
    assert bundle.manifest_bytes == xrtpkg.canonical_json(MANIFEST)
    assert [s.name for s in bundle.sections] == ["manifest"] + [p[0] for p in _payloads()]
    for name, payload, compressed in _payloads():
        assert bundle.data(name) == payload
        s = bundle.section(name)
        assert (s.compressed, s.size) == (compressed, len(payload))
        if compressed:
            params = zstandard.get_frame_parameters(data[s.offset : s.offset + s.stored_size])
            assert params.content_size == len(payload) and not params.has_checksum
    assert bundle.section("model.xml").stored_size < bundle.section("model.xml").size
    assert bundle.file_size == len(data) == os.path.getsize(path)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="model corpus not fetched (~/.cache/xrt-corpus)")
def test_round_trip_real_models():
    models = sorted(CORPUS.glob("*.onnx"), key=lambda p: p.stat().st_size)[:3]
    assert models
    payloads = []
    for p in models:
        raw = p.read_bytes()
        payloads += [(p.stem[:26] + ".onnx", raw, False), (p.stem[:26] + ".zst", raw, True)]
    bundle = xrtpkg.read(xrtpkg.to_bytes({"models": [p.name for p in models]}, payloads))
    for name, raw, _ in payloads:
        assert bundle.data(name) == raw


@pytest.mark.parametrize(
    "manifest, payloads, error",
    [
        ([], [], TypeError),
        ({"x": float("nan")}, [], ValueError),
        ({"x": object()}, [], ValueError),
        ({"x": "\ud800"}, [], ValueError),
        ({}, [("a/b", b"", False)], ValueError),
        ({}, [("", b"", False)], ValueError),
        ({}, [("a" * 32, b"", False)], ValueError),
        ({}, [("caf\u00e9", b"", False)], ValueError),
        ({}, [("manifest", b"", False)], ValueError),
        ({}, [("a", b"", False), ("a", b"1", False)], ValueError),
        ({}, [("a", b"", True)], ValueError),
        ({}, [("a", "text", False)], TypeError),
        ({}, [(b"a", b"", False)], TypeError),
        ({}, [("a", b"")], TypeError),
        ({}, [(f"s{i}", b"", False) for i in range(1024)], ValueError),
    ],
)
def test_writer_refuses_invalid_input(tmp_path, manifest, payloads, error):
    with pytest.raises(error):
        xrtpkg.to_bytes(manifest, payloads)
    path = tmp_path / "bad.xrtpkg"
    with pytest.raises(error):
        xrtpkg.write(path, manifest, payloads)
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor a temporary file


def test_writer_accepts_the_section_cap():
    names = [(f"s{i}", b"", False) for i in range(1023)]  # + manifest = 1024
    assert len(xrtpkg.read(xrtpkg.to_bytes({}, names)).sections) == 1024


def test_write_refuses_existing_path_unless_forced(tmp_path):
    path = tmp_path / "m.xrtpkg"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="force"):
        xrtpkg.write(path, MANIFEST, [])
    assert path.read_bytes() == b"precious"
    xrtpkg.write(path, MANIFEST, [], force=True)
    assert xrtpkg.read(path).manifest == MANIFEST
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xrtpkg"]


def test_write_is_atomic_when_the_final_rename_fails(tmp_path):
    # The target is a non-empty directory: the temp file is fully written, then the rename fails.
    target = tmp_path / "out.xrtpkg"
    target.mkdir()
    (target / "keep").write_bytes(b"")
    with pytest.raises(OSError):
        xrtpkg.write(target, MANIFEST, _payloads(), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xrtpkg"]
    assert target.is_dir() and [p.name for p in target.iterdir()] == ["keep"]


def test_write_into_missing_directory_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        xrtpkg.write(tmp_path / "no" / "such" / "m.xrtpkg", MANIFEST, [])
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- hostile input

def _hostile_frame(content_size: int, payload: bytes = b"tiny") -> bytes:
    """A zstd frame whose header claims ``content_size``: 8-byte size, 1 MiB window, one raw block."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0xC0, (20 - 10) << 3]) + struct.pack("<Q", content_size)
    return header + ((len(payload) << 3) | 1).to_bytes(3, "little") + payload


def _bundle_with_frame(frame: bytes, declared: int) -> bytes:
    gold = _load_make_golden()
    return bytes(gold.pack([["manifest", 0, b"{}", 2], ["big.bin", 1, frame, declared]]))


@pytest.mark.parametrize(
    "declared, status",
    [(1 << 40, "RESOURCE_EXHAUSTED"), (4, "DATA_CORRUPT"), ((1 << 31) + 1, "RESOURCE_EXHAUSTED")],
)
def test_hostile_content_size_is_refused_before_allocation(declared, status):
    data = _bundle_with_frame(_hostile_frame(1 << 40), declared)
    start = time.perf_counter()
    with pytest.raises(xrtpkg.FormatError) as info:  # a MemoryError would escape this
        xrtpkg.read(data)
    assert time.perf_counter() - start < 0.5
    assert info.value.status == status


def test_frame_header_checks_accept_a_valid_hand_built_frame():
    # The same hand-built frame with an honest content size is accepted: the refusals above are
    # caused by the size claims, not by the frame's shape.
    bundle = xrtpkg.read(_bundle_with_frame(_hostile_frame(4), 4))
    assert bundle.data("big.bin") == b"tiny"


def test_every_truncation_is_rejected():
    for k in range(len(TINY)):
        with pytest.raises(xrtpkg.FormatError) as info:
            xrtpkg.read(TINY[:k])
        assert info.value.status == "DATA_CORRUPT", k


def test_every_bit_flip_in_header_and_table_is_rejected():
    count = struct.unpack_from("<I", TINY, 12)[0]
    buf = bytearray(TINY)
    seen = set()
    for pos in range(64 + 96 * count):
        for bit in range(8):
            buf[pos] ^= 1 << bit
            try:
                with pytest.raises(xrtpkg.FormatError) as info:
                    xrtpkg.read(bytes(buf))
            finally:
                buf[pos] ^= 1 << bit
            seen.add(info.value.check)
    assert {"magic", "major", "section_count", "file_size", "index_sha256"} <= seen


def test_every_bit_flip_after_the_table_is_rejected():
    count = struct.unpack_from("<I", TINY, 12)[0]
    buf = bytearray(TINY)
    for pos in range(64 + 96 * count, len(TINY)):
        for bit in range(8):
            buf[pos] ^= 1 << bit
            try:
                with pytest.raises(xrtpkg.FormatError) as info:
                    xrtpkg.read(bytes(buf))
            finally:
                buf[pos] ^= 1 << bit
            assert info.value.check in ("sha256", "padding"), (pos, bit)


def test_header_field_mutations_reach_later_checks():
    # With the index digest recomputed, a wrong file_size in the header is caught by its own check.
    buf = bytearray(TINY)
    struct.pack_into("<Q", buf, 16, len(TINY) - 1)
    _fix_index(buf)
    with pytest.raises(xrtpkg.FormatError) as info:
        xrtpkg.read(bytes(buf))
    assert info.value.check == "file_size"


# ----------------------------------------------------------------------------- API details

def test_incompatible_message_names_versions_and_action():
    with pytest.raises(xrtpkg.FormatError) as info:
        xrtpkg.read(GOLDEN / "major_2.xrtpkg")
    msg = info.value.message
    assert info.value.status == "INCOMPATIBLE"
    assert "2.0" in msg and "1.x" in msg and "rebuild" in msg and "upgrade" in msg


def test_bundle_api():
    bundle = xrtpkg.read(TINY)
    assert (xrtpkg.FORMAT_MAJOR, xrtpkg.FORMAT_MINOR) == (1, 0)
    with pytest.raises(KeyError, match="cpu-onnxruntime.onnx"):
        bundle.section("missing.bin")
    with pytest.raises(KeyError):
        bundle.data("missing.bin")
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.sections[0].size = 1
    assert "cpu-openvino.xml" in repr(bundle)
    assert xrtpkg.read(bytearray(TINY)).sections == bundle.sections
    assert xrtpkg.read(memoryview(TINY)).sections == bundle.sections


def test_read_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="path or bytes"):
        xrtpkg.read(1234)
    with pytest.raises(FileNotFoundError):
        xrtpkg.read(tmp_path / "absent.xrtpkg")


def test_format_error_rejects_unknown_status():
    with pytest.raises(ValueError):
        xrtpkg.FormatError("OOPS", "x")
    err = xrtpkg.FormatError("DATA_CORRUPT", "what", "magic")
    assert (err.status, err.message, err.check) == ("DATA_CORRUPT", "what", "magic")
