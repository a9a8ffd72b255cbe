"""Generate the golden .xrtpkg files and golden.json (spec: formats/xrtpkg.md).

Run from the repository root:

    PYTHONPATH=formats/python .venv/bin/python formats/golden/make_golden.py            # rewrite formats/golden/
    PYTHONPATH=formats/python .venv/bin/python formats/golden/make_golden.py --check    # regenerate, compare bytes

Output is deterministic: the same tool versions (onnx, openvino, zstandard; pinned in pyproject.toml)
give identical bytes. Needs onnx, onnxruntime and openvino (used to build and sanity-run the model).

golden.json, read by both readers' tests (Python: tests/format/test_xrtpkg.py; C++: the reader's gtest):

    {"format": "xrtpkg golden verdicts", "version": 1,
     "files": [
       {"file": "tiny_model.xrtpkg",                 # name inside formats/golden/
        "status": "OK",                              # OK | DATA_CORRUPT | INCOMPATIBLE | RESOURCE_EXHAUSTED
        "check": "",                                 # step of the spec's check order that fails (see CHECKS)
        "why": "...",                                # the mutation, in words
        # optional: verdicts under signature policies (the verdict above is with no policy)
        "policies": [{"trusted_keys": ["<64 hex: raw Ed25519 public key>", ...],   # [] = no trusted keys
                      "require_signature": false,
                      "status": "PERMISSION_DENIED", "check": "trust"}, ...],
        # only when status is OK:
        "major": 1, "minor": 0, "file_size": 2135,
        "signer": null,                              # or the signer's public key (64 hex), signature verified
        "manifest_sha256": "<hex sha256 of the decompressed manifest bytes>",
        "sections": [{"name": "manifest", "compressed": true, "offset": 448,
                      "stored_size": 685, "size": 1299, "sha256": "<hex of stored bytes>"}, ...]},
       ...]}

A reader must give exactly ``status`` (and, under each entry of ``policies``, that entry's ``status``);
``check`` is informational (the Python reader's FormatError.check), naming the first failing step so a
mutation is known to reach the intended check.

Signed files use two fixed TEST-ONLY Ed25519 keys (TEST_KEY_SEEDS below; their private halves are public
in this file, so they prove nothing outside these tests). Ed25519 signatures are deterministic, so signed
files are reproducible too.

Invalid files are derived from a valid one by a precise mutation (see MUTATIONS below). When the
point is to reach a check after ``index_sha256``, the index digest is recomputed after mutating the
header or table; when a payload is changed, its section sha256 is recomputed too. Payload
replacements (another zstd frame, another manifest) are re-laid-out with this script's own packer,
which is independent of the xrtpkg writer (the script asserts both give the same bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np
import onnx
import zstandard
from onnx import TensorProto, helper, numpy_helper

import xrtpkg

HERE = os.path.dirname(os.path.abspath(__file__))

# The steps of the spec's check order, in order (FormatError.check values).
CHECKS = [
    "size", "magic", "major", "section_count", "header_flags", "file_size", "signature", "trust", "table",
    "index_sha256", "name", "flags", "reserved", "layout", "caps", "trailing", "padding", "sha256", "zstd",
    "manifest",
]

# TEST-ONLY signing keys: Ed25519 seeds derived from fixed labels. Never use them for real bundles.
TEST_KEY_SEEDS = {
    "A": hashlib.sha256(b"xrtpkg golden TEST-ONLY signing key A").digest(),
    "B": hashlib.sha256(b"xrtpkg golden TEST-ONLY signing key B").digest(),
}

MAGIC = b"\x89XRT\r\n\x1a\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Header field byte offsets and formats; entry field offsets relative to the entry.
HDR = {"major": (8, "<H"), "minor": (10, "<H"), "count": (12, "<I"), "file_size": (16, "<Q"), "flags": (24, "<Q")}
ENT = {"flags": (32, "<I"), "reserved": (36, "<I"), "offset": (40, "<Q"), "stored_size": (48, "<Q"), "size": (56, "<Q")}
OV_SECTIONS = ("cpu-openvino.xml", "cpu-openvino.bin")
ORT_SECTION = "cpu-onnxruntime.onnx"


# ----------------------------------------------------------------------------- the tiny model

def tiny_onnx_model() -> onnx.ModelProto:
    """y = Relu(MatMul(x, W) + b), x: float32[1,4], W: [4,3], b: [3] (fixed values)."""
    w = ((np.arange(12, dtype=np.float32) - 5.5) / 4).reshape(4, 3)
    b = np.array([0.5, -0.25, 0.125], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="xrtpkg-golden", ir_version=8
    )
    onnx.checker.check_model(model)
    return model


def openvino_ir(onnx_bytes: bytes) -> tuple[bytes, bytes, str]:
    """(xml, bin, openvino version) of the model, converted in a temp dir, fp32 weights kept."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as td:
        src = os.path.join(td, "tiny_model.onnx")
        with open(src, "wb") as f:
            f.write(onnx_bytes)
        # NOTE: the IR's rt_info records the input path as "DIR/tiny_model.onnx", so the temp dir's
        # name does not leak into the bytes.
        ov.save_model(ov.convert_model(src), os.path.join(td, "m.xml"), compress_to_fp16=False)
        with open(os.path.join(td, "m.xml"), "rb") as f:
            xml = f.read()
        with open(os.path.join(td, "m.bin"), "rb") as f:
            weights = f.read()
    return xml, weights, ov.get_version()


def sanity_run(onnx_bytes: bytes, xml: bytes, weights: bytes) -> None:
    """Both variants compute the same, correct y for a fixed x (the bundle must be runnable)."""
    import onnxruntime as ort
    import openvino as ov

    x = np.array([[1.0, -2.0, 3.0, 0.5]], dtype=np.float32)
    model = tiny_onnx_model()
    w = numpy_helper.to_array(model.graph.initializer[0])
    b = numpy_helper.to_array(model.graph.initializer[1])
    want = np.maximum(x @ w + b, 0)
    got_ort = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    core = ov.Core()
    ov_model = core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got_ov = compiled({"x": x})[compiled.output(0)]
    for name, got in (("onnxruntime", got_ort), ("openvino", got_ov)):
        if not np.allclose(got, want, rtol=1e-6, atol=1e-6):
            raise SystemExit(f"{name} output {got} differs from the reference {want}")
    if not want.any():
        raise SystemExit("reference output is all zero; pick another input")


def tiny_manifest(onnx_bytes: bytes, ov_version: str) -> dict:
    return {
        "format": {"name": "xrtpkg", "version": "1.0"},
        "model": {
            "name": "tiny_model",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 3]}],
        },
        "variants": [
            {
                "id": "cpu-openvino",
                "target": "cpu",
                "device": "cpu",
                "engine": "openvino",
                "precision": "fp32",
                "artifacts": {"model": OV_SECTIONS[0], "weights": OV_SECTIONS[1]},
                "options": {"INFERENCE_PRECISION_HINT": "f32"},
                "requires": {"engine": "openvino", "engine_version": ">=2026.0", "devices": ["CPU"]},
                "why": "preferred: golden test bundle lists OpenVINO first",
            },
            {
                "id": "cpu-onnxruntime",
                "target": "cpu",
                "device": "cpu",
                "engine": "onnxruntime",
                "precision": "fp32",
                "artifacts": {"model": ORT_SECTION},
                "options": {"graph_optimization_level": "ORT_ENABLE_EXTENDED"},
                "requires": {"engine": "onnxruntime", "engine_version": ">=1.20", "devices": ["CPU"]},
                "why": "second choice: ONNX Runtime runs any ONNX model on CPU",
            },
        ],
        "excluded": [],
        "provenance": {
            "source": {
                "name": "tiny_model.onnx",
                "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
                "opset": 17,
                "producer": "xrtpkg-golden",
            },
            "tools": {
                "make_golden": "1",
                "onnx": onnx.__version__,
                "openvino": ov_version,
                "zstandard": zstandard.__version__,
            },
            "command": "PYTHONPATH=formats/python .venv/bin/python formats/golden/make_golden.py",
            "policy": {},
            "passes": [],
        },
    }


# ----------------------------------------------------------------------------- raw bundle editing

def align64(x: int) -> int:
    return (x + 63) & ~63


def get_hdr(buf, field):
    off, fmt = HDR[field]
    return struct.unpack_from(fmt, buf, off)[0]


def set_hdr(buf: bytearray, field: str, value: int) -> None:
    off, fmt = HDR[field]
    struct.pack_into(fmt, buf, off, value)


def ent_off(i: int) -> int:
    return 64 + 96 * i


def get_ent(buf, i, field):
    off, fmt = ENT[field]
    return struct.unpack_from(fmt, buf, ent_off(i) + off)[0]


def set_ent(buf: bytearray, i: int, field: str, value: int) -> None:
    off, fmt = ENT[field]
    struct.pack_into(fmt, buf, ent_off(i) + off, value)


def set_name(buf: bytearray, i: int, raw32: bytes) -> None:
    assert len(raw32) == 32
    buf[ent_off(i) : ent_off(i) + 32] = raw32


def fix_index(buf: bytearray) -> None:
    end = 64 + 96 * get_hdr(buf, "count")
    buf[32:64] = hashlib.sha256(bytes(buf[0:32]) + bytes(buf[64:end])).digest()


def fix_section_sha(buf: bytearray, i: int) -> None:
    off, n = get_ent(buf, i, "offset"), get_ent(buf, i, "stored_size")
    buf[ent_off(i) + 64 : ent_off(i) + 96] = hashlib.sha256(bytes(buf[off : off + n])).digest()


def index_of(buf, name: str) -> int:
    for i in range(get_hdr(buf, "count")):
        if buf[ent_off(i) : ent_off(i) + 32].rstrip(b"\0") == name.encode():
            return i
    raise KeyError(name)


def unpack_sections(buf) -> list[list]:
    """[name, flags, stored, size] for every section of a valid bundle."""
    out = []
    for i in range(get_hdr(buf, "count")):
        off, n = get_ent(buf, i, "offset"), get_ent(buf, i, "stored_size")
        name = bytes(buf[ent_off(i) : ent_off(i) + 32]).rstrip(b"\0").decode()
        out.append([name, get_ent(buf, i, "flags"), bytes(buf[off : off + n]), get_ent(buf, i, "size")])
    return out


def pack(sections, minor: int = 0) -> bytearray:
    """Lay out [name, flags, stored, size] sections per the spec (independent of xrtpkg's writer)."""
    count = len(sections)
    offsets, off = [], align64(64 + 96 * count)
    for _, _, stored, _ in sections:
        offsets.append(off)
        off = align64(off + len(stored))
    file_size = offsets[-1] + len(sections[-1][2])
    buf = bytearray(file_size)
    buf[0:8] = MAGIC
    set_hdr(buf, "major", 1)
    set_hdr(buf, "minor", minor)
    set_hdr(buf, "count", count)
    set_hdr(buf, "file_size", file_size)
    for i, ((name, flags, stored, size), off) in enumerate(zip(sections, offsets)):
        set_name(buf, i, name.encode().ljust(32, b"\0"))
        set_ent(buf, i, "flags", flags)
        set_ent(buf, i, "offset", off)
        set_ent(buf, i, "stored_size", len(stored))
        set_ent(buf, i, "size", size)
        buf[off : off + len(stored)] = stored
        fix_section_sha(buf, i)
    fix_index(buf)
    return buf


def replace_payload(buf, name: str, stored: bytes, size: int | None = None) -> bytearray:
    """Re-lay-out ``buf`` with section ``name`` storing ``stored`` (size kept unless given)."""
    secs = unpack_sections(buf)
    for s in secs:
        if s[0] == name:
            s[2] = stored
            if size is not None:
                s[3] = size
    return pack(secs, get_hdr(buf, "minor"))


def sign_raw(data, seed: bytes, reseal: bool = True) -> bytes:
    """Signs ``data`` per the spec without verifying it first (independent of xrtpkg.sign): SIGNED flag, minor 1,
    index digest recomputed (unless ``reseal`` is False), trailer = magic | key | Ed25519(SHA-256(body)) | zeros."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(seed)
    body = bytearray(data)
    set_hdr(body, "flags", get_hdr(body, "flags") | 1)
    set_hdr(body, "minor", max(1, get_hdr(body, "minor")))
    if reseal:
        fix_index(body)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return bytes(body) + b"XRTSIG\x01\x00" + public + key.sign(hashlib.sha256(bytes(body)).digest()) + bytes(24)


def zstd(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(level=9, write_checksum=False, **kw).compress(data)


def raw_frame(payload: bytes, content_size: int | None, window_log: int | None = None) -> bytes:
    """A hand-built zstd frame: one raw (stored) block; 8-byte content size unless None.

    window_log=None makes a single-segment frame (window = content size).
    """
    assert len(payload) <= 128 * 1024
    fcs_flag = 0 if content_size is None else 3
    single = window_log is None
    frame = ZSTD_MAGIC + bytes([(fcs_flag << 6) | (0x20 if single else 0)])
    if not single:
        frame += bytes([(window_log - 10) << 3])
    if content_size is not None:
        frame += struct.pack("<Q", content_size)
    return frame + ((len(payload) << 3) | 1).to_bytes(3, "little") + payload  # last block, raw


def set_frame_content_size(frame: bytes, value: int) -> bytes:
    """Rewrite a frame's content-size field in place (same field width)."""
    fhd = frame[4]
    fcs_flag, single, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + [0, 1, 2, 4][dict_flag]
    width = [1 if single else 0, 2, 4, 8][fcs_flag]
    stored_value = value - 256 if width == 2 else value
    assert width and 0 <= stored_value < 1 << (8 * width), "content size does not fit the field"
    return frame[:pos] + stored_value.to_bytes(width, "little") + frame[pos + width :]


# ----------------------------------------------------------------------------- the golden set

def build(out_dir: str) -> None:
    model = tiny_onnx_model()
    onnx_bytes = model.SerializeToString()
    xml, weights, ov_version = openvino_ir(onnx_bytes)
    sanity_run(onnx_bytes, xml, weights)
    manifest = tiny_manifest(onnx_bytes, ov_version)
    tiny = xrtpkg.to_bytes(
        manifest, [(OV_SECTIONS[0], xml, True), (OV_SECTIONS[1], weights, False), (ORT_SECTION, onnx_bytes, False)]
    )
    if tiny != xrtpkg.to_bytes(
        manifest, [(OV_SECTIONS[0], xml, True), (OV_SECTIONS[1], weights, False), (ORT_SECTION, onnx_bytes, False)]
    ):
        raise SystemExit("xrtpkg.to_bytes is not deterministic")
    if bytes(pack(unpack_sections(tiny))) != tiny:
        raise SystemExit("this script's packer and xrtpkg's writer disagree on the layout")
    T = bytearray(tiny)
    i_xml, i_bin, i_onnx = (index_of(T, n) for n in (*OV_SECTIONS, ORT_SECTION))
    xml_frame = unpack_sections(T)[i_xml][2]

    empty = bytearray(xrtpkg.to_bytes(
        {"format": {"name": "xrtpkg", "version": "1.0"}, "note": "golden: a 0-byte uncompressed section"},
        [("empty.bin", b"", False), ("after.bin", b"section after the empty one", False)],
    ))

    files: list[dict] = []

    def add(name: str, data, status: str, check: str, why: str, policies=()) -> None:
        assert check in CHECKS or (status == "OK" and check == ""), check
        entry = {"file": name, "data": bytes(data), "status": status, "check": check, "why": why}
        if policies:
            entry["policies"] = [
                {"trusted_keys": [key_hex[k] for k in keys], "require_signature": require, "status": st, "check": ck}
                for keys, require, st, ck in policies
            ]
        files.append(entry)

    def mut(fn, base=T, index=True) -> bytearray:
        buf = bytearray(base)
        fn(buf)
        if index:
            fix_index(buf)
        return buf

    DC, INC, RE, PD = "DATA_CORRUPT", "INCOMPATIBLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"
    key_hex = {k: xrtpkg.public_key_of(seed).hex() for k, seed in TEST_KEY_SEEDS.items()}
    # Policies as (trusted key names, require_signature, status, check); these refuse any unsigned bundle.
    unsigned_policies = [((), True, PD, "trust"), (("A",), False, PD, "trust")]

    # --- valid
    add("tiny_model.xrtpkg", T, "OK", "",
        "tiny ONNX model y=Relu(MatMul(x,W)+b) with an OpenVINO IR variant and an ONNX Runtime variant",
        unsigned_policies)
    add("empty_section.xrtpkg", empty, "OK", "", "a 0-byte uncompressed section, then another section at the same offset (format test only: "
        "the manifest has no model or variants)")
    future_manifest = dict(manifest, future_key={"added_in": "1.7"})
    future = pack(unpack_sections(xrtpkg.to_bytes(future_manifest, [
        (OV_SECTIONS[0], xml, True), (OV_SECTIONS[1], weights, False), (ORT_SECTION, onnx_bytes, False),
        ("future.dat", b"a section only minor 7 knows", False),
    ])), minor=7)
    add("minor_future.xrtpkg", future, "OK", "", "minor version 7 with an unknown manifest key and section; readers of 1.x accept it")
    secs = unpack_sections(T)
    manifest_plain = [["manifest", 0, xrtpkg.canonical_json(manifest), len(xrtpkg.canonical_json(manifest))]] + secs[1:]
    add("manifest_uncompressed.xrtpkg", pack(manifest_plain), "OK", "",
        "tiny_model with the manifest stored uncompressed (flags 0): allowed, nothing requires it be compressed")

    # --- header
    add("empty_file.xrtpkg", b"", DC, "size", "0-byte file")
    add("truncated_header.xrtpkg", T[:63], DC, "size", "first 63 bytes of tiny_model")
    add("bad_magic.xrtpkg", mut(lambda b: b.__setitem__(1, ord("Y")), index=False), DC, "magic", "magic 'XRT' changed to 'YRT'")
    add("major_2.xrtpkg", mut(lambda b: set_hdr(b, "major", 2)), INC, "major", "major_version 2 (index digest recomputed)")
    add("major_0.xrtpkg", mut(lambda b: set_hdr(b, "major", 0)), INC, "major", "major_version 0 (index digest recomputed)")
    add("section_count_0.xrtpkg", mut(lambda b: set_hdr(b, "count", 0)), DC, "section_count",
        "section_count 0 (index digest recomputed over the empty table): malformed, not a cap")
    add("section_count_1025.xrtpkg", mut(lambda b: set_hdr(b, "count", 1025), index=False), RE, "section_count",
        "section_count 1025, one above the cap of 1024")
    add("section_count_100000.xrtpkg", mut(lambda b: set_hdr(b, "count", 100000), index=False), RE, "section_count",
        "section_count 100000, above the cap of 1024")
    add("truncated.xrtpkg", T[:-1], DC, "file_size", "tiny_model without its last byte (shorter than file_size)")
    add("trailing_byte.xrtpkg", T + b"\0", DC, "file_size", "tiny_model with one 0 byte appended (longer than file_size)")
    add("file_size_wrong.xrtpkg", mut(lambda b: set_hdr(b, "file_size", len(T) + 64)), DC, "file_size",
        "header file_size = real size + 64 (index digest recomputed)")
    add("table_past_eof.xrtpkg", mut(lambda b: set_hdr(b, "count", 1024), index=False), DC, "table",
        "section_count 1024: the 98368-byte table does not fit the file")
    add("index_digest_mismatch.xrtpkg", mut(lambda b: b.__setitem__(32, b[32] ^ 1), index=False), DC, "index_sha256",
        "lowest bit of index_sha256's first byte flipped")
    add("table_tampered.xrtpkg", mut(lambda b: set_ent(b, i_bin, "size", get_ent(b, i_bin, "size") + 1), index=False),
        DC, "index_sha256", "a table entry's size changed without recomputing the index digest")
    add("header_flags_bit1.xrtpkg", mut(lambda b: set_hdr(b, "flags", 2)), DC, "header_flags",
        "header flags = 0x2 (bit 1 is undefined; index digest recomputed)")

    # --- entries
    def rename(i, raw):
        return lambda b: set_name(b, i, raw.ljust(32, b"\0"))

    add("name_slash.xrtpkg", mut(rename(i_onnx, b"cpu/onnxruntime.onnx")), DC, "name",
        "section name 'cpu/onnxruntime.onnx' (contains '/')")
    add("name_empty.xrtpkg", mut(rename(i_onnx, b"")), DC, "name", "section name empty (32 NUL bytes)")
    add("name_no_nul.xrtpkg", mut(rename(i_onnx, b"a" * 32)), DC, "name", "section name of 32 'a' bytes, no NUL terminator")
    add("name_garbage_after_nul.xrtpkg", mut(rename(i_onnx, b"cpu-onnxruntime.onnx\0x")), DC, "name",
        "byte 'x' after the name's NUL terminator")
    add("name_non_ascii.xrtpkg", mut(rename(i_onnx, "cpu-onnxruntime.onnx\u00e9".encode())), DC, "name",
        "section name with a UTF-8 'e-acute'")
    add("duplicate_name.xrtpkg", mut(rename(i_onnx, OV_SECTIONS[1].encode())), DC, "name",
        f"section {i_onnx} renamed to {OV_SECTIONS[1]!r}, the name of section {i_bin}")
    add("first_not_manifest.xrtpkg", mut(rename(0, b"manifesx")), DC, "name", "section 0 renamed 'manifesx'")
    add("flags_bit1.xrtpkg", mut(lambda b: set_ent(b, i_bin, "flags", 2)), DC, "flags",
        f"section {i_bin} flags = 0x2 (bit 1 set)")
    add("reserved_nonzero.xrtpkg", mut(lambda b: set_ent(b, i_bin, "reserved", 1)), DC, "reserved",
        f"section {i_bin} reserved field = 1")

    def grow(i, by):
        def f(b):
            set_ent(b, i, "stored_size", get_ent(b, i, "stored_size") + by)
            set_ent(b, i, "size", get_ent(b, i, "size") + by)
        return f

    add("section_overlap.xrtpkg", mut(grow(i_bin, 64)), DC, "layout",
        f"section {i_bin} (uncompressed) stored_size and size += 64, so it overlaps section {i_onnx}")
    add("section_gap.xrtpkg", mut(lambda b: set_ent(b, i_onnx, "offset", get_ent(b, i_onnx, "offset") + 64)), DC, "layout",
        f"section {i_onnx} offset += 64 (a gap after the previous section)")
    add("section_past_eof.xrtpkg", mut(lambda b: (set_ent(b, i_onnx, "stored_size", 2**64 - 1), set_ent(b, i_onnx, "size", 2**64 - 1))),
        DC, "layout", f"last section stored_size = size = 2^64-1 (offset + stored_size overflows 64 bits)")
    add("uncompressed_size_mismatch.xrtpkg", mut(lambda b: set_ent(b, i_onnx, "size", get_ent(b, i_onnx, "size") + 1)),
        DC, "layout", "uncompressed section with size = stored_size + 1")
    i_empty = index_of(empty, "empty.bin")
    add("empty_compressed.xrtpkg", mut(lambda b: set_ent(b, i_empty, "flags", 1), base=empty), DC, "layout",
        "empty_section.xrtpkg with its 0-byte section flagged ZSTD")
    add("compressed_size_1tib.xrtpkg", mut(lambda b: set_ent(b, i_xml, "size", 2**40)), RE, "caps",
        f"compressed section {i_xml} declares size 2^40 (1 TiB)")
    add("compressed_size_cap_plus_1.xrtpkg", mut(lambda b: set_ent(b, i_xml, "size", 2**31 + 1)), RE, "caps",
        f"compressed section {i_xml} declares size 2^31 + 1, one above the cap")
    add("compressed_size_at_cap.xrtpkg", mut(lambda b: set_ent(b, i_xml, "size", 2**31)), DC, "zstd",
        f"compressed section {i_xml} declares size 2^31 (at the cap, allowed), but its frame says {len(xml)}")
    over_total = unpack_sections(T) + [["extra.zst", 1, xml_frame, 2**31]]
    over_total[i_xml][3] = 2**31
    add("compressed_total_over_cap.xrtpkg", pack(over_total), RE, "caps",
        f"compressed sections {i_xml} and {len(over_total) - 1} each declare 2^31 (at the per-section cap): with the "
        "manifest, over the per-bundle cap of 2^32 declared decompressed bytes (refused before any frame is decoded)")
    add("manifest_too_large.xrtpkg", mut(lambda b: set_ent(b, 0, "size", (16 << 20) + 1)), RE, "caps",
        "manifest declares 16 MiB + 1 bytes")
    add("trailing_byte_declared.xrtpkg", mut(lambda b: (b.append(0), set_hdr(b, "file_size", len(b)))), DC, "trailing",
        "one 0 byte appended and file_size updated to match (index digest recomputed)")

    def first_pad(b):
        for i in range(get_hdr(b, "count") - 1):
            end = get_ent(b, i, "offset") + get_ent(b, i, "stored_size")
            if end < get_ent(b, i + 1, "offset"):
                return end
        raise SystemExit("tiny_model has no padding bytes; cannot make nonzero_padding")

    add("nonzero_padding.xrtpkg", mut(lambda b: b.__setitem__(first_pad(b), 1), index=False), DC, "padding",
        "first padding byte between two sections set to 1")

    # --- payloads
    def flip_payload(i):
        return lambda b: b.__setitem__(get_ent(b, i, "offset") + 5, b[get_ent(b, i, "offset") + 5] ^ 1)

    add("section_sha_mismatch.xrtpkg", mut(flip_payload(i_onnx), index=False), DC, "sha256",
        f"one bit of section {i_onnx}'s payload flipped")
    add("compressed_sha_mismatch.xrtpkg", mut(flip_payload(i_xml), index=False), DC, "sha256",
        f"one bit of compressed section {i_xml}'s frame flipped")

    def new_frame(frame):
        def f(b):
            off = get_ent(b, i_xml, "offset")
            assert len(frame) == get_ent(b, i_xml, "stored_size")
            b[off : off + len(frame)] = frame
            fix_section_sha(b, i_xml)
        return f

    add("zstd_content_size_larger.xrtpkg", mut(new_frame(set_frame_content_size(xml_frame, len(xml) + 1))), DC, "zstd",
        "the xml section's frame content-size field rewritten to size + 1 (sha256 and index recomputed)")
    add("zstd_content_size_smaller.xrtpkg", mut(new_frame(set_frame_content_size(xml_frame, len(xml) - 1))), DC, "zstd",
        "the xml section's frame content-size field rewritten to size - 1 (sha256 and index recomputed)")
    add("zstd_content_size_1tib.xrtpkg", replace_payload(T, OV_SECTIONS[0], raw_frame(xml, 2**40)), DC, "zstd",
        "the xml section replaced by a hand-built frame claiming a 1 TiB content size (table size unchanged)")
    add("zstd_content_size_1tib_declared.xrtpkg", replace_payload(T, OV_SECTIONS[0], raw_frame(xml, 2**40), size=2**40),
        RE, "caps", "as zstd_content_size_1tib, with the table's size also 1 TiB")
    add("zstd_no_content_size.xrtpkg", replace_payload(T, OV_SECTIONS[0], zstd(xml, write_content_size=False)), DC, "zstd",
        "the xml section recompressed without a content size")
    add("zstd_window_too_large.xrtpkg", replace_payload(T, OV_SECTIONS[0], raw_frame(xml, len(xml), window_log=28)), DC, "zstd",
        "the xml section as a valid frame with a 2^28-byte window (cap 2^27)")
    add("zstd_two_frames.xrtpkg", replace_payload(T, OV_SECTIONS[0], xml_frame + zstd(b"")), DC, "zstd",
        "the xml section's frame followed by a second, empty frame (total content still equals size)")
    add("zstd_trailing_garbage.xrtpkg", replace_payload(T, OV_SECTIONS[0], xml_frame + b"\0"), DC, "zstd",
        "the xml section's frame followed by one 0 byte")
    skippable = b"\x50\x2a\x4d\x18" + struct.pack("<I", len(xml)) + xml
    add("zstd_skippable_frame.xrtpkg", replace_payload(T, OV_SECTIONS[0], skippable), DC, "zstd",
        "the xml section stored as a zstd skippable frame (not a data frame)")
    add("zstd_not_zstd.xrtpkg", replace_payload(T, OV_SECTIONS[0], xml), DC, "zstd",
        "the xml section stored raw but still flagged ZSTD")
    hsz = zstandard.frame_header_size(xml_frame)
    bad_block = bytearray(xml_frame)
    bad_block[hsz] |= 0b110  # first block's type := 3 (reserved)
    add("zstd_reserved_block_type.xrtpkg", mut(new_frame(bytes(bad_block))), DC, "zstd",
        "the xml frame's first block header set to the reserved block type 3 (sha256 and index recomputed)")

    # --- manifest JSON
    def with_manifest(text: bytes) -> bytearray:
        return replace_payload(T, "manifest", zstd(text), size=len(text))

    add("manifest_not_json.xrtpkg", with_manifest(b"{not json"), DC, "manifest", "manifest bytes '{not json'")
    add("manifest_array.xrtpkg", with_manifest(b"[1,2]"), DC, "manifest", "manifest is the JSON array [1,2]")
    add("manifest_bad_utf8.xrtpkg", with_manifest(b'{"a":"\xff"}'), DC, "manifest", "manifest string holds byte 0xff (not UTF-8)")
    add("manifest_bom.xrtpkg", with_manifest(b'\xef\xbb\xbf{"a":1}'), DC, "manifest", "manifest starts with a UTF-8 BOM")
    add("manifest_nan.xrtpkg", with_manifest(b'{"a":NaN}'), DC, "manifest", "manifest uses NaN (not JSON)")
    add("manifest_lone_surrogate.xrtpkg", with_manifest(b'{"a":"\\ud800"}'), DC, "manifest",
        "manifest string escapes a lone surrogate \\ud800")
    add("manifest_number_overflow.xrtpkg", with_manifest(b'{"a":1e400}'), DC, "manifest",
        "manifest number 1e400 overflows a double")
    add("manifest_nul_then_junk.xrtpkg", with_manifest(b'{}\0junk'), DC, "manifest",
        "manifest '{}' followed by a NUL byte and 'junk' (a NUL is not the end of JSON text)")
    add("manifest_nul_in_string.xrtpkg", with_manifest(b'{"model":{"inputs":[{"name":"x\\u0000y"}]}}'), DC, "manifest",
        "a manifest string holds an escaped NUL (\\u0000): C callers would see the name cut")
    add("manifest_empty.xrtpkg", pack([["manifest", 0, b"", 0]] + secs[1:]), DC, "manifest",
        "manifest is an empty uncompressed section")

    # --- signatures (format 1.1): TEST-ONLY keys A and B
    signed_a = bytearray(xrtpkg.sign(T, TEST_KEY_SEEDS["A"]))
    if bytes(signed_a) != sign_raw(T, TEST_KEY_SEEDS["A"]):
        raise SystemExit("xrtpkg.sign and this script's signer disagree")
    body_len = len(T)
    add("signed.xrtpkg", signed_a, "OK", "", "tiny_model signed with TEST-ONLY key A (format 1.1)", [
        ((), True, "OK", ""), (("A",), False, "OK", ""), (("B", "A"), True, "OK", ""),
        (("B",), False, PD, "trust")])
    add("signed_by_b.xrtpkg", xrtpkg.sign(T, TEST_KEY_SEEDS["B"]), "OK", "",
        "tiny_model signed with TEST-ONLY key B: valid, but refused where only key A is trusted", [
            (("A",), False, PD, "trust"), (("B",), False, "OK", "")])
    add("signed_payload_bit_flip.xrtpkg", mut(flip_payload(i_onnx), base=signed_a, index=False), DC, "signature",
        f"signed.xrtpkg with one bit of section {i_onnx}'s payload flipped: the signature no longer matches "
        "(checked before any section digest)", [(("A",), False, DC, "signature")])
    add("signed_header_bit_flip.xrtpkg", mut(lambda b: b.__setitem__(16, b[16] ^ 0x40), base=signed_a, index=False),
        DC, "file_size", "signed.xrtpkg with bit 6 of file_size flipped: the length check fails",
        [(("A",), False, DC, "file_size")])
    add("signed_signature_bit_flip.xrtpkg",
        mut(lambda b: b.__setitem__(body_len + 40, b[body_len + 40] ^ 1), base=signed_a, index=False), DC, "signature",
        "signed.xrtpkg with one bit of the signature flipped", [(("A",), False, DC, "signature")])
    add("signed_key_swapped.xrtpkg",
        mut(lambda b: b.__setitem__(slice(body_len + 8, body_len + 40), bytes.fromhex(key_hex["B"])), base=signed_a,
            index=False), DC, "signature",
        "signed.xrtpkg (signed by A) with key B's public key put in the trailer: the signature does not verify",
        [(("B",), False, DC, "signature"), (("A",), False, DC, "signature")])
    signed_empty = xrtpkg.sign(empty, TEST_KEY_SEEDS["A"])
    add("signed_other_bundles_signature.xrtpkg",
        mut(lambda b: b.__setitem__(slice(body_len, None), signed_empty[-128:]), base=signed_a, index=False),
        DC, "signature", "signed.xrtpkg whose trailer is replaced by that of another bundle signed by the same key",
        [(("A",), False, DC, "signature")])
    add("signed_stripped.xrtpkg", signed_a[:body_len], DC, "file_size",
        "signed.xrtpkg without its trailer (SIGNED flag still set): shorter than file_size + 128",
        [(("A",), False, DC, "file_size")])
    stripped = bytearray(signed_a[:body_len])
    set_hdr(stripped, "flags", 0)
    fix_index(stripped)
    add("signed_stripped_resealed.xrtpkg", stripped, "OK", "",
        "signed.xrtpkg without its trailer, SIGNED flag cleared and index digest recomputed: a valid unsigned 1.1 "
        "bundle, refused by any signature policy", unsigned_policies)
    add("signed_trailer_bad_magic.xrtpkg", mut(lambda b: b.__setitem__(body_len + 6, 2), base=signed_a, index=False),
        DC, "signature", "signed.xrtpkg with trailer magic byte 6 set to 2 (XRTSIG\\x02\\x00)",
        [(("A",), False, DC, "signature")])
    add("signed_trailer_reserved_nonzero.xrtpkg",
        mut(lambda b: b.__setitem__(len(b) - 1, 1), base=signed_a, index=False), DC, "signature",
        "signed.xrtpkg with the trailer's last (reserved) byte set to 1", [(("A",), False, DC, "signature")])
    add("signed_trailing_byte.xrtpkg", signed_a + b"\0", DC, "file_size",
        "signed.xrtpkg with one 0 byte appended after the trailer", [(("A",), False, DC, "file_size")])
    add("signed_flags_bit1.xrtpkg", mut(lambda b: set_hdr(b, "flags", 3), base=signed_a), DC, "header_flags",
        "signed.xrtpkg with header flags 0x3 (bit 1 undefined; index digest recomputed)",
        [(("A",), False, DC, "header_flags")])
    # Ed25519 edge cases the library alone accepts or may accept: refused by the readers' own encoding checks.
    identity = (1).to_bytes(32, "little")
    add("signed_small_order_key.xrtpkg",
        mut(lambda b: b.__setitem__(slice(body_len + 8, body_len + 104), identity + identity + bytes(32)),
            base=signed_a, index=False), DC, "signature",
        "signed.xrtpkg with key = the identity point (small order) and signature (R = identity, S = 0), which "
        "verifies any message under that key", [((), True, DC, "signature")])
    order_l = 2**252 + 27742317777372353535851937790883648493
    s_plus_l = lambda b: b.__setitem__(  # noqa: E731
        slice(body_len + 72, body_len + 104),
        (int.from_bytes(b[body_len + 72 : body_len + 104], "little") + order_l).to_bytes(32, "little"))
    add("signed_s_not_reduced.xrtpkg", mut(s_plus_l, base=signed_a, index=False), DC, "signature",
        "signed.xrtpkg with S replaced by S + L (same scalar, not reduced: S >= L)", [(("A",), False, DC, "signature")])
    # Verification comes before the table is parsed: a table that breaks every rule, signed by B.
    garbage = bytearray(T)
    table_end = 64 + 96 * get_hdr(garbage, "count")
    garbage[64:table_end] = bytes((i * 37 + 11) % 256 for i in range(table_end - 64))
    add("signed_garbage_table.xrtpkg", sign_raw(garbage, TEST_KEY_SEEDS["B"], reseal=False), DC, "index_sha256",
        "tiny_model with a garbage section table (index digest not recomputed), validly signed by TEST-ONLY key B: "
        "without a policy the table checks reject it; trusting only A, the signature policy refuses it first",
        [(("A",), False, PD, "trust"), (("B",), False, DC, "index_sha256")])

    # --- check order: several faults, the earliest check decides the status
    add("order_major_before_count.xrtpkg", mut(lambda b: (set_hdr(b, "major", 2), set_hdr(b, "count", 100000))), INC, "major",
        "major 2 and section_count 100000: the major version is checked first")
    add("order_count_before_file_size.xrtpkg", mut(lambda b: set_hdr(b, "count", 100000), base=T[:-1], index=False), RE,
        "section_count", "truncated by one byte and section_count 100000: the count cap is checked first")
    add("order_entry_caps_before_next_entry.xrtpkg",
        mut(lambda b: (set_ent(b, i_xml, "size", 2**40), set_ent(b, i_bin, "flags", 2))), RE, "caps",
        f"section {i_xml} declares 1 TiB, section {i_bin} has flag bit 1: entries are checked one after another")
    add("order_entry_flags_before_next_caps.xrtpkg",
        mut(lambda b: (set_ent(b, i_xml, "flags", 3), set_ent(b, i_bin, "flags", 1), set_ent(b, i_bin, "size", 2**40))),
        DC, "flags", f"section {i_xml} has flag bit 1, section {i_bin} is a compressed 1 TiB claim")
    add("order_caps_before_padding.xrtpkg",
        mut(lambda b: (set_ent(b, i_xml, "size", 2**40), b.__setitem__(first_pad(b), 1))), RE, "caps",
        "compressed 1 TiB claim and non-zero padding: caps come before padding")
    add("order_layout_before_caps.xrtpkg",
        mut(lambda b: (set_ent(b, i_xml, "size", 2**40), set_ent(b, i_xml, "offset", get_ent(b, i_xml, "offset") + 64))),
        DC, "layout", f"section {i_xml} both misplaced (offset + 64) and a 1 TiB claim: layout comes before caps")

    # Every expectation must be what this package's reader says; then write everything.
    names = [f["file"] for f in files]
    assert len(names) == len(set(names))
    for f in files:
        try:
            bundle = xrtpkg.read(f["data"])
            got, check = "OK", ""
        except xrtpkg.FormatError as err:
            got, check, bundle = err.status, err.check, None
        if (got, check) != (f["status"], f["check"]):
            raise SystemExit(f"{f['file']}: expected {f['status']}/{f['check']}, the reader says {got}/{check}")
        for policy in f.get("policies", []):
            try:
                xrtpkg.read(f["data"], trusted_keys=[bytes.fromhex(k) for k in policy["trusted_keys"]] or None,
                            require_signature=policy["require_signature"])
                got, check = "OK", ""
            except xrtpkg.FormatError as err:
                got, check = err.status, err.check
            if (got, check) != (policy["status"], policy["check"]):
                raise SystemExit(f"{f['file']} under {policy}: the reader says {got}/{check}")
        if bundle is not None:
            f.update(
                major=bundle.major, minor=bundle.minor, file_size=bundle.file_size,
                signer=bundle.signer.hex() if bundle.signer else None,
                manifest_sha256=hashlib.sha256(bundle.manifest_bytes).hexdigest(),
                sections=[
                    {"name": s.name, "compressed": s.compressed, "offset": s.offset,
                     "stored_size": s.stored_size, "size": s.size, "sha256": s.sha256}
                    for s in bundle.sections
                ],
            )

    os.makedirs(out_dir, exist_ok=True)
    for f in files:
        with open(os.path.join(out_dir, f["file"]), "wb") as fh:
            fh.write(f.pop("data"))
    doc = {"format": "xrtpkg golden verdicts", "version": 1, "checks": CHECKS, "files": files}
    with open(os.path.join(out_dir, "golden.json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def _golden_names(directory: str) -> set[str]:
    return {n for n in os.listdir(directory) if n.endswith(".xrtpkg") or n == "golden.json"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp folder and compare byte for byte with --out; exit 1 on a difference")
    args = ap.parse_args(argv)
    if not args.check:
        build(args.out)
        return 0
    with tempfile.TemporaryDirectory() as td:
        build(td)
        new, old = _golden_names(td), _golden_names(args.out)
        diff = sorted(new ^ old)
        for n in sorted(new & old):
            with open(os.path.join(td, n), "rb") as a, open(os.path.join(args.out, n), "rb") as b:
                if a.read() != b.read():
                    diff.append(n)
    if diff:
        print("golden files differ from a fresh build: " + ", ".join(diff), file=sys.stderr)
        return 1
    print(f"{len(new)} golden files match a fresh build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
