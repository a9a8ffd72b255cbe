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
