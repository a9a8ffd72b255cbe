"""Test helpers shared by the test modules (imported by name: conftest.py puts tests/ on sys.path).

Tests import the *installed* packages (xpuruntime, xrtc, xrtpkg): `make test` builds them into .venv, and pytest
runs with --import-mode=importlib so the source folders never shadow them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sample_cnn.onnx"
CORPUS = Path(os.environ.get("XRT_CORPUS", Path.home() / ".cache" / "xrt-corpus"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A console script of the environment running the tests (xrtc, xrt-run)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: run `make test` (it builds and installs the package)")
    return found


def run_tool(name: str, *args, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([tool(name), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def corpus_rows() -> list[dict]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    lines = manifest.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:] if line.strip()]


CORPUS_NAMES = [row["name"] for row in corpus_rows()]


def corpus_inputs(name: str) -> dict:
    import numpy as np

    path = CORPUS / "inputs" / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"corpus inputs missing: {path} (run tests/corpus/make_inputs.py)")
    with np.load(path) as data:
        names = [str(n) for n in data["__names__"]]
        return {n: data[f"in{i}"] for i, n in enumerate(names)}


# Corpus models whose dynamic dims the accuracy gate cannot size by itself: the shape they are deployed at (their
# corpus input). ppocrv4_rec takes [1, 3, 48, W]: the gate's guesses pin H = W (224, 32, ...) and the graph holds no
# 48; at 32x32 ONNX Runtime runs but OpenVINO returns an empty sequence, so without the shape the compile fails
# (exit 3, asking for --shape), as it would for a user.
GATE_SHAPES: dict[str, list[str]] = {"ppocrv4_rec": ["x=1x3x48x320"]}


def gate_shape_args(name: str) -> list[str]:
    """`--shape` flags a corpus model needs for the accuracy gate to run (see GATE_SHAPES)."""
    return [arg for shape in GATE_SHAPES.get(name, []) for arg in ("--shape", shape)]


def overflow_model(path):
    """x * 1e5 * 1e-5 @ W: fp16 cannot hold the 1e5 constant (ONNX Runtime's converter clamps it to 65504), so
    converting `scale_up` alone breaks the outputs while every other node is fine in fp16."""
    import numpy as np
    import onnx
    import onnx.helper as oh
    import onnx.numpy_helper as nh

    rng = np.random.default_rng(0)
    inits = [nh.from_array(np.array(1e5, np.float32), "big"), nh.from_array(np.array(1e-5, np.float32), "small"),
             nh.from_array((rng.standard_normal((64, 64)) * 0.1).astype(np.float32), "w")]
    nodes = [oh.make_node("Mul", ["x", "big"], ["a"], name="scale_up"),
             oh.make_node("Mul", ["a", "small"], ["b"], name="scale_down"),
             oh.make_node("MatMul", ["b", "w"], ["c"], name="mm"), oh.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = oh.make_graph(nodes, "overflow", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], inits)
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path
