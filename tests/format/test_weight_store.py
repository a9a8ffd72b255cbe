"""The weight store (formats/xrtpkg.md, "Weight store", format 1.2): a cpu bundle holds each distinct weight once,
in one 64-byte aligned section that its OpenVINO IR and ONNX Runtime variants both read; both variants still give
ONNX Runtime's results on the source model; the bundle is reproducible; and the ONNX Runtime backend refuses any
store reference that does not point exactly into the verified store (DataCorrupt before ONNX Runtime sees it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import xpuruntime as xrt
import xrtpkg
from xpuruntime.onnx_tensors import STORE_LOCATION, ExternalDataError, check_inline
from xrtc import weight_store

from xrt_testutil import SAMPLE, run_tool

FEEDS = {"image": np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)}
STORE = weight_store.STORE_SECTION


@pytest.fixture(scope="module")
def bundle(sample_bundle):
    return xrtpkg.read(sample_bundle)


def store_refs(model: onnx.ModelProto) -> list[tuple[str, int, int]]:
    refs = []
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in t.external_data}
            assert entries["location"] == STORE_LOCATION
            refs.append((t.name, int(entries["offset"]), int(entries["length"])))
    return refs


def test_one_store_shared_by_both_variants(bundle):
    m = bundle.manifest
    assert bundle.minor == 2 and m["format"]["version"] == "1.2"
    assert m["weight_store"]["section"] == STORE and m["weight_store"]["alignment"] == 64
    for v in m["variants"]:
        assert v["artifacts"]["weights"] == STORE, v["id"]
    names = [s.name for s in bundle.sections]
    assert "cpu-openvino.bin" not in names  # the IR's weights are the store
    section = bundle.section(STORE)
    assert not section.compressed and section.offset % 64 == 0
    # Shared: the store is smaller than what the variants hold in all (the same conv weights in both graphs).
    assert section.size < 0.75 * m["weight_store"]["referenced_bytes"]
    store = bundle.data(STORE)

    model = onnx.load_from_string(bundle.data("cpu-onnxruntime.onnx"))
    refs = store_refs(model)
    assert refs and all(off % 64 == 0 and off + n <= len(store) for _, off, n in refs)
    xml = bundle.data("cpu-openvino.xml").decode()
    consts = [(int(o), int(n)) for o, n in re.findall(r'type="Const"[^>]*>\s*<data [^>]*offset="(\d+)" size="(\d+)"',
                                                      xml)]
    assert consts and all(off % 64 == 0 and off + n <= len(store) for off, n in consts)
    # Every ONNX Runtime entry that OpenVINO also holds is the same store entry (not a copy).
    assert {off for _, off, _ in refs} & {off for off, _ in consts}


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_both_variants_match_onnx_runtime_on_the_source(sample_bundle, engine):
    reference = onnxruntime.InferenceSession(str(SAMPLE), providers=["CPUExecutionProvider"])
    expected = reference.run(None, FEEDS)
    with xrt.load(sample_bundle, engine=engine) as session:
        got = session.run(FEEDS)
        assert session.load_profile()["sections_verified_on_use"] is True
    for name, want in zip([o.name for o in reference.get_outputs()], expected):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)


def test_store_layout_is_content_addressed_and_aligned():
    store = weight_store.Store()
    a = store.add(b"\x01" * 100)
    b = store.add(b"\x02" * 10)
    assert (a, b, store.add(b"\x01" * 100)) == (0, 128, 0)
    data = store.to_bytes()
    assert len(data) == 138 and data[100:128] == bytes(28) and store.entries() == 2
    assert store.referenced_bytes == 210


def test_inspect_states_the_store_and_the_blobs(sample_bundle, openvino_first_bundle):
    out = run_tool("xrtc", "inspect", sample_bundle, check=True).stdout
    assert re.search(rf"weights  store {STORE}: \d+ entries, \d+ bytes, shared by cpu-onnxruntime, cpu-openvino", out)
    assert "compiled cpu-openvino.blob dropped: its variant is not the runtime's first choice" in out
    out = run_tool("xrtc", "inspect", openvino_first_bundle[1], check=True).stdout
    assert "compiled cpu-openvino: cpu-openvino.blob kept" in out


def test_compile_is_reproducible_with_the_store(sample_bundle, tmp_path):
    again = tmp_path / "again.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", again, check=True)
    assert again.read_bytes() == Path(sample_bundle).read_bytes()


# ---- hostile store references: refused before ONNX Runtime sees the graph -----------------------------------------


def rewrite_onnx(bundle, folder: Path, tag: str, change) -> Path:
    """A copy of the bundle whose ONNX Runtime graph is `change`d (resealed: the format is valid, the graph is not)."""
    model = onnx.load_from_string(bundle.data("cpu-onnxruntime.onnx"))
    change(model)
    payloads = [(s.name, model.SerializeToString() if s.name == "cpu-onnxruntime.onnx" else bundle.data(s.name),
                 s.compressed) for s in bundle.sections if s.name != "manifest"]
    path = folder / f"{tag}.xrtpkg"
    path.write_bytes(xrtpkg.to_bytes(bundle.manifest, payloads))
    return path


def first_ref(model):
    return next(t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)


def set_entry(key, value):
    def change(model):
        tensor = first_ref(model)
        next(e for e in tensor.external_data if e.key == key).value = value
    return change


def nested_external(model):
    """A Constant node whose tensor names external data: never a store reference (only top-level initializers)."""
    t = onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT, [1], [0.0])
    t.ClearField("float_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", STORE_LOCATION), ("offset", "0"), ("length", "4")):
        e = t.external_data.add()
        e.key, e.value = k, v
    model.graph.node.append(onnx.helper.make_node("Constant", [], ["unused_c"], value=t))


def inline_too(model):
    first_ref(model).raw_data = b"\0" * 4


@pytest.mark.parametrize("tag, change, message", [
    ("past-end", set_entry("offset", str(1 << 40)), "past the"),
    ("file-path", set_entry("location", "../../etc/passwd"), "external data other than"),
    ("bad-length", set_entry("length", "4"), "do not hold dims"),
    ("not-integer", set_entry("offset", "-64"), "not integers"),
    ("nested", nested_external, "as external data"),
    ("inline-too", inline_too, "both inline data"),
])
def test_hostile_store_reference_is_data_corrupt(bundle, tmp_path, tag, change, message):
    path = rewrite_onnx(bundle, tmp_path, tag, change)
    with pytest.raises(xrt.DataCorrupt, match=message):
        xrt.load(path, engine="onnxruntime")


def test_store_references_need_a_store(bundle):
    # The compiler's check (no store given) still refuses them as external data.
    with pytest.raises(ExternalDataError, match="external data"):
        check_inline(bundle.data("cpu-onnxruntime.onnx"))
    assert check_inline(bundle.data("cpu-onnxruntime.onnx"), len(bundle.data(STORE))) is not None


def test_an_external_data_key_that_is_not_utf8_is_refused_cleanly():
    """Found by the engine-boundary fuzzer (tests/security/fuzz_engine_boundary.py): an external-data key with a
    byte that is not UTF-8 reaches Python as bytes, and the refusal's message sorted str and bytes keys together
    (TypeError) instead of refusing with ExternalDataError."""
    import base64

    from xpuruntime.onnx_tensors import ExternalDataError, check_inline

    data = base64.b64decode("CAg6cwoOCgF4CgF3EgF5IgNBZGQSAWcqPAgEEAFCAXdqFgoIbG9jYXRpb/USCnNlY3JldC5iaW5qCwoGb2Zmc2V0EgEw"
                            "agwKBmxlbmd0aBICMTZwAVoPCgF4EgoKCAgBEgQKAggEYg8KAXkSCgoICAESBAoCCARCBAoAEBE=")
    with pytest.raises(ExternalDataError, match="external data other than the bundle's weight store"):
        check_inline(data, 4096)
