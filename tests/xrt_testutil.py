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
