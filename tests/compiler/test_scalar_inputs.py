"""A scalar (rank-0) input keeps rank 0 everywhere the compiler and the loader copy it: the gate's generated and
--calibration samples, the bundle's golden inputs (so `xrtc verify BUNDLE` runs on the bundle's own data), and a
NumPy/Python scalar fed to xrt.load. np.ascontiguousarray turns a 0-d array into [1]; silero_vad_16k_op15's `sr`
(int64[]) was stored as int64[1] and refused by its own bundle, and its --calibration compile failed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import xrtpkg

import xpuruntime as xrt
from xrt_testutil import CORPUS, run_tool


@pytest.fixture(scope="module")
def scalar_model(tmp_path_factory):
    """y = x * float(sr): x float32[1, 4], sr int64[] (a sample rate, as silero's)."""
    path = tmp_path_factory.mktemp("scalar") / "scale_by_rate.onnx"
    graph = oh.make_graph(
        [oh.make_node("Cast", ["sr"], ["sr_f"], to=onnx.TensorProto.FLOAT), oh.make_node("Mul", ["x", "sr_f"], ["y"])],
        "scale_by_rate",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4]),
         oh.make_tensor_value_info("sr", onnx.TensorProto.INT64, [])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def golden_inputs(bundle_path):
    from xrtc.gate import golden_arrays

    bundle = xrtpkg.read(bundle_path)
    return golden_arrays(bundle, bundle.manifest["golden"])[0]


@pytest.fixture(scope="module")
def generated_bundle(scalar_model):
    out = scalar_model.parent / "generated.xrtpkg"
    run_tool("xrtc", "compile", scalar_model, "-o", out, check=True)
    return out


def test_generated_golden_scalar_stays_rank_0_and_verifies(generated_bundle):
    golden = golden_inputs(generated_bundle)
    assert golden["sr"].shape == () and golden["sr"].dtype == np.int64, golden["sr"]
    proc = run_tool("xrtc", "verify", generated_bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_calibration_with_a_scalar_input_compiles_and_verifies(scalar_model, tmp_path):
    data = tmp_path / "calibration.npz"
    np.savez(data, x=np.arange(4, dtype=np.float32).reshape(1, 4), sr=np.array(16000, dtype=np.int64))
    out = tmp_path / "calibrated.xrtpkg"
    proc = run_tool("xrtc", "compile", scalar_model, "--calibration", data, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    golden = golden_inputs(out)
    assert golden["sr"].shape == () and int(golden["sr"]) == 16000
    assert run_tool("xrtc", "verify", out).returncode == 0


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("rate", [np.int64(8000), np.array(8000, dtype=np.int64)], ids=["numpy-scalar", "0-d"])
def test_loader_takes_a_scalar(generated_bundle, engine, rate):
    x = np.array([[1.0, -2.0, 0.5, 3.0]], dtype=np.float32)
    y = xrt.load(generated_bundle, engine=engine).run({"x": x, "sr": rate})["y"]
    np.testing.assert_allclose(y, x * 8000.0, rtol=1e-6)


SILERO = CORPUS / "models" / "silero_vad_16k_op15.onnx"
SILERO_INPUTS = CORPUS / "inputs" / "silero_vad_16k_op15.npz"


@pytest.mark.corpus
@pytest.mark.skipif(not (SILERO.exists() and SILERO_INPUTS.exists()), reason="corpus not fetched (tests/corpus)")
def test_silero_vad_compiles_on_its_calibration_and_verifies(tmp_path):
    out = tmp_path / "silero.xrtpkg"
    proc = run_tool("xrtc", "compile", SILERO, "--calibration", SILERO_INPUTS, "-o", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert golden_inputs(out)["sr"].shape == ()
    proc = run_tool("xrtc", "verify", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
