"""OpenVINO's precompiled CPU blob: used on the same build and CPU, and a correct fallback to the IR otherwise. Kept
only on the variant the runtime picks first (formats/xrtpkg.md, "Weight store"): these tests use a model whose
OpenVINO variant is first (conftest.openvino_first_bundle); sample_cnn's OpenVINO variant is second and has none."""

from __future__ import annotations

import numpy as np
import pytest
import xrtpkg

import xpuruntime as xrt
from xrt_testutil import SAMPLE, run_tool


def image():
    return np.random.default_rng(3).standard_normal((2, 3, 64, 64), dtype=np.float32)


def rewrite(src, dst, edit_manifest=None, edit_payload=None):
    """A new bundle with an edited manifest/payload (the writer recomputes every digest)."""
    bundle = xrtpkg.read(src)
    manifest = bundle.manifest
    if edit_manifest:
        edit_manifest(manifest)
    payloads = []
    for s in bundle.sections[1:]:
        data = bundle.data(s.name)
        if edit_payload:
            data = edit_payload(s.name, data)
        payloads.append((s.name, data, s.compressed))
    xrtpkg.write(dst, manifest, payloads)
    return dst


def openvino_variant(manifest):
    return next(v for v in manifest["variants"] if v["engine"] == "openvino")


@pytest.fixture(scope="module")
def sample_bundle(openvino_first_bundle):
    return openvino_first_bundle[1]


def test_blob_is_recorded_with_its_requirements(sample_bundle):
    m = xrt.load(sample_bundle).manifest
    v = openvino_variant(m)
    assert m["variants"][0] is v or m["variants"][0] == v  # first: the runtime's default pick
    assert v["artifacts"]["compiled"] == "cpu-openvino.blob"
    assert v["options"]["xrt.compiled_device"] == "CPU"
    assert v["options"]["xrt.compiled_build"] and v["options"]["xrt.compiled_capabilities"]


def test_a_second_choice_variant_has_no_blob(tmp_path):
    bundle = tmp_path / "sample.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "-o", bundle, check=True)
    m = xrtpkg.read(bundle).manifest
    assert [v["engine"] for v in m["variants"]] == ["onnxruntime", "openvino"]
    v = openvino_variant(m)
    assert "compiled" not in v["artifacts"] and not any(k.startswith("xrt.compiled_") for k in v["options"])
    assert m["weight_store"]["dropped_blobs"] == ["cpu-openvino.blob"]
    assert "cpu-openvino.blob" not in {s.name for s in xrtpkg.read(bundle).sections}
    assert "compiled cpu-openvino.blob dropped" in run_tool("xrtc", "inspect", bundle, check=True).stdout


def test_no_precompile_gives_same_outputs(sample_bundle, openvino_first_bundle, tmp_path):
    plain = tmp_path / "plain.xrtpkg"
    run_tool("xrtc", "compile", openvino_first_bundle[0], "-o", plain, "--no-precompile", check=True)
    assert "compiled" not in openvino_variant(xrt.load(plain).manifest)["artifacts"]
    a = xrt.load(sample_bundle, engine="openvino").run({"image": image()})["probabilities"]
    b = xrt.load(plain, engine="openvino").run({"image": image()})["probabilities"]
    assert np.array_equal(a, b)


def test_other_cpu_or_broken_blob_falls_back_to_ir(sample_bundle, tmp_path):
    expected = xrt.load(sample_bundle, engine="openvino").run({"image": image()})["probabilities"]

    def other_cpu(m):
        openvino_variant(m)["options"]["xrt.compiled_capabilities"] = "SOME_OTHER_CPU"

    def garbage(name, data):
        return b"\0" * len(data) if name == "cpu-openvino.blob" else data

    for path in (rewrite(sample_bundle, tmp_path / "other.xrtpkg", edit_manifest=other_cpu),
                 rewrite(sample_bundle, tmp_path / "garbage.xrtpkg", edit_payload=garbage)):
        got = xrt.load(path, engine="openvino").run({"image": image()})["probabilities"]
        assert np.array_equal(got, expected), path


def whole_blob_bundle(src, dst):
    """The bundle as xrtc wrote it before weightless blobs: its blob holds the weights (exported by OpenVINO from
    the variant's IR over the store) and the variant has no xrt.compiled_weights option."""
    import openvino as ov

    bundle = xrtpkg.read(src)
    v = openvino_variant(bundle.manifest)
    core = ov.Core()
    model = core.read_model(bundle.data(v["artifacts"]["model"]).decode(),
                            ov.Tensor(np.frombuffer(bundle.data("shared.weights"), dtype=np.uint8)))
    whole = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).export_model().getvalue()
    assert len(whole) > len(bundle.data(v["artifacts"]["compiled"]))
    del v["options"]["xrt.compiled_weights"]
    return rewrite(src, dst, edit_manifest=lambda m: m.update(variants=bundle.manifest["variants"]),
                   edit_payload=lambda name, data: whole if name == v["artifacts"]["compiled"] else data)


def test_the_blob_holds_no_weights_and_reads_the_verified_store(sample_bundle, openvino_first_bundle, tmp_path):
    """xrtc exports the blob without weights (xrt.compiled_weights = store, a fraction of the store's size); the
    plugin imports it over the verified store, with the outputs of the IR compiled without a blob, and a store
    damaged after writing is caught before the engine reads it."""
    bundle = xrtpkg.read(sample_bundle)
    v = openvino_variant(bundle.manifest)
    assert v["options"]["xrt.compiled_weights"] == "store"
    assert len(bundle.data("cpu-openvino.blob")) < len(bundle.data("shared.weights")) / 2
    assert "cpu-openvino.blob kept" in (out := run_tool("xrtc", "inspect", sample_bundle, check=True).stdout)
    assert "no weights: read from shared.weights at import" in out
    plain = tmp_path / "plain.xrtpkg"
    run_tool("xrtc", "compile", openvino_first_bundle[0], "-o", plain, "--no-precompile", check=True)
    expected = xrt.load(plain, engine="openvino").run({"image": image()})["probabilities"]
    with xrt.load(sample_bundle, engine="openvino") as s:
        info = s.explain()["engine_info"]
        assert info["compiled_from"] == "precompiled blob" and info["blob_weights"] == "from the weights artifact"
        assert np.array_equal(s.run({"image": image()})["probabilities"], expected)
    data = bytearray(open(sample_bundle, "rb").read())
    store = bundle.section("shared.weights")
    data[store.offset + store.stored_size // 2] ^= 0x04  # the table (and so its digest) unchanged
    (tmp_path / "damaged-store.xrtpkg").write_bytes(bytes(data))
    with pytest.raises(xrt.DataCorrupt, match="shared.weights"):
        xrt.load(tmp_path / "damaged-store.xrtpkg", engine="openvino")


def test_an_imported_whole_blob_never_reads_the_weight_store(sample_bundle, tmp_path):
    """Bundles whose blob holds its weights (xrtc before weightless blobs) still load from the blob. The core offers
    the blob first, without the store (xrt.h, init): a store damaged after writing goes unnoticed while the blob
    imports (nothing reads it), and is caught before use when the blob cannot be used."""
    sample_bundle = whole_blob_bundle(sample_bundle, tmp_path / "whole-blob.xrtpkg")
    data = bytearray(open(sample_bundle, "rb").read())
    store = xrtpkg.read(bytes(data)).section("shared.weights")
    data[store.offset + store.stored_size // 2] ^= 0x04  # the table (and so its digest) unchanged
    damaged = tmp_path / "damaged-store.xrtpkg"
    damaged.write_bytes(bytes(data))
    expected = xrt.load(sample_bundle, engine="openvino").run({"image": image()})["probabilities"]
    with xrt.load(damaged, engine="openvino") as s:
        assert s.explain()["engine_info"]["compiled_from"] == "precompiled blob"
        assert np.array_equal(s.run({"image": image()})["probabilities"], expected)

    def other_cpu(m):
        openvino_variant(m)["options"]["xrt.compiled_capabilities"] = "SOME_OTHER_CPU"

    no_blob_here = bytearray(rewrite(sample_bundle, tmp_path / "other.xrtpkg", edit_manifest=other_cpu).read_bytes())
    store = xrtpkg.read(bytes(no_blob_here)).section("shared.weights")
    no_blob_here[store.offset + store.stored_size // 2] ^= 0x04
    (tmp_path / "other-damaged.xrtpkg").write_bytes(bytes(no_blob_here))
    with pytest.raises(xrt.DataCorrupt, match="shared.weights"):
        xrt.load(tmp_path / "other-damaged.xrtpkg", engine="openvino")


def test_an_unknown_compiled_weights_value_is_refused(sample_bundle, tmp_path):
    """xrt.compiled_weights takes "store" only (checks.h): any other value is the bundle's error, named."""
    def elsewhere(m):
        openvino_variant(m)["options"]["xrt.compiled_weights"] = "/etc/weights.bin"

    path = rewrite(sample_bundle, tmp_path / "elsewhere.xrtpkg", edit_manifest=elsewhere)
    with pytest.raises(xrt.InvalidArgument, match="xrt.compiled_weights"):
        xrt.load(path, engine="openvino")
