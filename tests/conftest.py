"""Fixtures: the sample and corpus models compiled once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xrt_testutil import CORPUS, SAMPLE, gate_shape_args, run_tool  # noqa: E402


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample_cnn.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", out, check=True)
    return out


def openvino_first_model(path: Path) -> Path:
    """A two-conv model over 300 MFLOP (the CPU target's rule puts OpenVINO first, so it keeps its compiled blob):
    image [batch, 3, 64, 64] -> probabilities [batch, 64], seeded weights."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array((rng.standard_normal((64, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["probabilities"])]
    graph = helper.make_graph(nodes, "openvino_first", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["batch", 3, 64, 64])], [helper.make_tensor_value_info(
            "probabilities", TensorProto.FLOAT, ["batch", 64])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture(scope="session")
def openvino_first_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(model, bundle) of openvino_first_model: its OpenVINO variant is first and carries a compiled blob."""
    folder = tmp_path_factory.mktemp("openvino_first")
    model = openvino_first_model(folder / "openvino_first.onnx")
    out = folder / "openvino_first.xrtpkg"
    run_tool("xrtc", "compile", model, "--target", "cpu", "-o", out, check=True)
    return model, out


@pytest.fixture(scope="session")
def corpus_bundles(tmp_path_factory):
    """Compiles a corpus model once per test session: corpus_bundles(name) -> path."""
    folder = tmp_path_factory.mktemp("corpus")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            model = CORPUS / "models" / f"{name}.onnx"
            if not model.exists():
                pytest.skip(f"corpus model missing: {model} (run tests/corpus/fetch.sh)")
            out = folder / f"{name}.xrtpkg"
            run_tool("xrtc", "compile", model, "--target", "cpu", "-o", out, *gate_shape_args(name), check=True)
            cache[name] = out
        return cache[name]

    return get


@pytest.fixture(autouse=True, scope="session")
def _private_engine_cache(tmp_path_factory):
    """NPU loads cache compiled models, xrt.InferenceSession compiled bundles and xrtc --tune its measurements, in
    the user's cache folder by default: keep the tests' out of $HOME."""
    import os

    previous = {k: os.environ.get(k) for k in ("XRT_CACHE_DIR", "XRT_BUNDLE_CACHE", "XRT_TUNING_DB")}
    os.environ["XRT_CACHE_DIR"] = str(tmp_path_factory.mktemp("engine-cache"))
    os.environ["XRT_BUNDLE_CACHE"] = str(tmp_path_factory.mktemp("bundle-cache"))
    os.environ["XRT_TUNING_DB"] = str(tmp_path_factory.mktemp("tuning-db") / "tuning.sqlite")  # xrtc --tune
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
