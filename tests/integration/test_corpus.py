"""Every public corpus model: compile, run from Python (each CPU variant) and through xrt-run, compare with ONNX
Runtime on the source model. light_* models have constant outputs (constant weights): they only have to run."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import xpuruntime as xrt
from xrt_testutil import CORPUS, CORPUS_NAMES, corpus_inputs, run_tool
from xrtc.tools.verify import compare, default_tolerance

pytestmark = [pytest.mark.corpus,
              pytest.mark.skipif(not CORPUS_NAMES, reason=f"corpus not fetched into {CORPUS} (tests/corpus/fetch.sh)")]

RTOL, ATOL = default_tolerance("fp32")


def reference(name, feeds):
    sess = onnxruntime.InferenceSession(str(CORPUS / "models" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def check_outputs(name, variant, got, ref):
    assert set(got) == set(ref)
    for out_name, expected in ref.items():
        if name.startswith("light_"):
            assert got[out_name].shape == expected.shape and got[out_name].dtype == expected.dtype
            continue
        c = compare(variant, out_name, got[out_name], expected, RTOL, ATOL)
        print(f"{name} {variant} {out_name}: max abs err {c.max_abs_err:.3e}, max rel err {c.max_rel_err:.3e}")
        assert c.passed, c


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_python_every_variant(name, corpus_bundles):
    bundle = corpus_bundles(name)
    feeds = corpus_inputs(name)
    ref = reference(name, feeds)
    manifest = xrt.load(bundle).manifest
    variants = [v["id"] for v in manifest["variants"]]
    assert variants, manifest.get("excluded")
    for variant in variants:
        sess = xrt.load(bundle, variant=variant)
        check_outputs(name, variant, sess.run(feeds), ref)
    if name == "silero_vad_16k_op15":
        assert variants == ["cpu-onnxruntime"]
        assert any(e["engine"] == "openvino" and e["reason"] for e in manifest["excluded"])


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_xrt_run_cpp_runner(name, corpus_bundles, tmp_path):
    bundle = corpus_bundles(name)
    inputs = CORPUS / "inputs" / f"{name}.npz"
    out = tmp_path / "out.npz"
    proc = run_tool("xrt-run", bundle, "--inputs", inputs, "--save-outputs", out)
    manifest = xrt.load(bundle).manifest
    if not any(v["engine"] == "openvino" for v in manifest["variants"]):
        # Plain C++ has no ONNX Runtime (no headers on any registry): the runner says so and exits 5.
        assert proc.returncode == 5, proc.stderr
        assert "onnxruntime" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        got = {k: data[k] for k in data.files}
    check_outputs(name, "xrt-run", got, reference(name, corpus_inputs(name)))
