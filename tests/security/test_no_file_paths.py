"""No file paths inside a bundle: an ONNX artifact whose initializer points at external data (the ONNX CVE class:
plain names, `../`, absolute paths) must never make the runtime read a file. ONNX Runtime 1.32, given model bytes,
reads such a tensor from the current directory when no graph optimizer touches it first (seen with optimizations
disabled), so the onnxruntime backend refuses any external-data tensor before creating the session."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xpuruntime as xrt
import xrtpkg
from onnx import TensorProto, helper, numpy_helper


def model_with_external_data(location: str) -> bytes:
    w = numpy_helper.from_array(np.zeros((1, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in [("location", location), ("offset", "0"), ("length", "16")]:
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def bundle(model: bytes) -> bytes:
    manifest = {
        "format": {"name": "xrtpkg", "version": "1.0"},
        "model": {"name": "ext", "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 4]}],
                  "outputs": [{"name": "y", "dtype": "float32", "shape": [1, 4]}]},
        "variants": [{"id": "cpu-onnxruntime", "target": "cpu", "device": "cpu", "engine": "onnxruntime",
                      "precision": "fp32", "artifacts": {"model": "cpu-onnxruntime.onnx"}, "options": {},
                      "requires": {"engine": "onnxruntime", "engine_version": ">=1.20", "devices": ["CPU"]},
                      "why": "test"}],
    }
    return xrtpkg.to_bytes(manifest, [("cpu-onnxruntime.onnx", model, False)])


@pytest.mark.parametrize("location", ["secret.bin", "../secret.bin", "sub/../../secret.bin", "/SECRET_ABS"])
def test_external_data_never_reads_a_file(location, tmp_path, monkeypatch):
    secret = np.array([100, 200, 300, 400], np.float32).tobytes()
    work = tmp_path / "a" / "b"
    (work / "sub").mkdir(parents=True)
    for where in (work / "secret.bin", tmp_path / "a" / "secret.bin"):
        where.write_bytes(secret)
    monkeypatch.chdir(work)
    if location.startswith("/"):
        location = str(tmp_path / "a" / "secret.bin")  # an absolute path to a readable file
    path = tmp_path / "ext.xrtpkg"
    path.write_bytes(bundle(model_with_external_data(location)))
    with pytest.raises(xrt.Error) as caught:
        s = xrt.load(path, engine="onnxruntime")
        s.run({"x": np.zeros((1, 4), np.float32)})  # reached only if loading did not refuse
    assert "external data" in str(caught.value)
    print(f"\n{location!r}: {type(caught.value).__name__}: {str(caught.value)[:120]}")
    assert os.getcwd() == str(work)
