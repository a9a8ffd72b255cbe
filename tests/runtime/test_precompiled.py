"""OpenVINO's precompiled CPU blob: used on the same build and CPU, and a correct fallback to the IR otherwise."""

from __future__ import annotations

import numpy as np
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


def test_blob_is_recorded_with_its_requirements(sample_bundle):
    v = openvino_variant(xrt.load(sample_bundle).manifest)
    assert v["artifacts"]["compiled"] == "cpu-openvino.blob"
    assert v["options"]["xrt.compiled_device"] == "CPU"
    assert v["options"]["xrt.compiled_build"] and v["options"]["xrt.compiled_capabilities"]


def test_no_precompile_gives_same_outputs(sample_bundle, tmp_path):
    plain = tmp_path / "plain.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "-o", plain, "--no-precompile", check=True)
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
