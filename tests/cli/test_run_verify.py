"""`xrtc run` and `xrtc verify` on the sample model: outputs, files, exit codes."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx

from xrt_testutil import ROOT, SAMPLE, run_tool


def write_inputs(path, batch=2):
    x = np.random.default_rng(7).standard_normal((batch, 3, 64, 64), dtype=np.float32)
    np.savez(path, image=x)
    return x


def test_run_saves_outputs_and_refuses_overwrite(sample_bundle, tmp_path):
    inputs = tmp_path / "in.npz"
    write_inputs(inputs)
    out = tmp_path / "out.npz"
    proc = run_tool("xrtc", "run", sample_bundle, "--inputs", inputs, "--save-outputs", out)
    assert proc.returncode == 0, proc.stderr
    assert "PASSED xrtc run" in proc.stderr
    with np.load(out) as data:
        assert data["probabilities"].shape == (2, 10)
    before = out.read_bytes()
    proc = run_tool("xrtc", "run", sample_bundle, "--inputs", inputs, "--save-outputs", out)
    assert proc.returncode == 11 and "--force" in proc.stderr
    assert out.read_bytes() == before
    assert run_tool("xrtc", "run", sample_bundle, "--inputs", inputs, "--save-outputs", out, "--force").returncode == 0


def test_run_errors_have_exit_codes(sample_bundle, tmp_path):
    proc = run_tool("xrtc", "run", sample_bundle)  # dynamic batch, no inputs, no --shape
    assert proc.returncode == 2 and "--shape image=" in proc.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((1, 3, 64, 64), np.float64))
    proc = run_tool("xrtc", "run", sample_bundle, "--inputs", bad)
    assert proc.returncode == 2 and "float32" in proc.stderr and "float64" in proc.stderr
    proc = run_tool("xrtc", "run", sample_bundle, "--shape", "image=1x3x64x64", "--device", "npu")
    assert proc.returncode == 1 and "npu" in proc.stderr
    proc = run_tool("xrtc", "run", sample_bundle, "--shape", "image=1x3x64x64", "--bench", "20", "--json")
    assert proc.returncode == 0 and '"p50"' in proc.stdout


def test_verify_passes_and_reports_error(sample_bundle):
    proc = run_tool("xrtc", "verify", sample_bundle, "--model", SAMPLE, "--shape", "image=2x3x64x64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu-openvino" in proc.stdout and "cpu-onnxruntime" in proc.stdout and "max abs err" in proc.stdout


def test_verify_mismatch_exits_3(sample_bundle, tmp_path):
    # The same graph with one weight changed: same inputs/outputs, different numbers.
    spec = importlib.util.spec_from_file_location("make_sample_cnn", ROOT / "samples" / "make_sample_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    for init in model.graph.initializer:
        if init.name == "head.b":
            b = onnx.numpy_helper.to_array(init).copy()
            b[0] += 1.0
            init.CopyFrom(onnx.numpy_helper.from_array(b, init.name))
    other = tmp_path / "other.onnx"
    onnx.save(model, other)
    proc = run_tool("xrtc", "verify", sample_bundle, "--model", other, "--shape", "image=2x3x64x64")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "MISMATCH" in proc.stdout and "FAILED xrtc verify" in proc.stderr


def test_compare_rule_on_infinities_and_nan():
    from xrtc.tools.verify import compare

    def check(got, ref):
        return compare("v", "y", np.array(got, np.float32), np.array(ref, np.float32), 1e-3, 1e-4)

    # masked attention scores: the same -inf on both sides matches (it measured nan and failed the gate before)
    c = check([-np.inf, 1.0, np.inf], [-np.inf, 1.0, np.inf])
    assert c.passed and c.max_abs_err == 0.0, c
    assert check([np.nan, 2.0], [np.nan, 2.0]).passed
    for got, ref in (([-np.inf, 1.0], [np.inf, 1.0]), ([5.0, 1.0], [-np.inf, 1.0]), ([np.nan, 1.0], [0.0, 1.0]),
                     ([0.0, 1.0], [np.nan, 1.0])):
        c = check(got, ref)
        assert not c.passed and c.max_abs_err == np.inf, (got, ref, c)
    # an infinity elsewhere in the reference must not widen the tolerance of the finite elements
    c = check([-np.inf, 1.5], [-np.inf, 1.0])
    assert not c.passed and abs(c.max_abs_err - 0.5) < 1e-6, c
