"""Static-shape specialisation under tuning: the record says whether the bundle runs specialised for static input
shapes and, when not, what the policy would need (a specialised bundle refuses other shapes: never made silently).
A compile with --shape is specialised and refuses another shape with a clear error. ~10 s."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xrtpkg
from xrt_testutil import SAMPLE, run_tool

import xpuruntime as xrt
from xrtc.tuning import cpu


def _with(manifest: dict, dims: list, policy: dict) -> dict:
    out = json.loads(json.dumps(manifest))
    out["model"]["inputs"][0]["shape"] = dims
    out["provenance"]["policy"] = policy
    return out


def test_status_names_why(sample_bundle):
    manifest = xrtpkg.read(sample_bundle).manifest
    dims = [d if isinstance(d, int) else 1 for d in manifest["model"]["inputs"][0]["shape"]]
    dynamic = ["batch"] + dims[1:]
    name = manifest["model"]["inputs"][0]["name"]

    assert cpu.static_shape_status(_with(manifest, dims, {})) == {
        "static": True, "why": "static shape: the model's inputs are static"}
    bound = cpu.static_shape_status(_with(manifest, dims, {"shapes": {name: dims}}))
    assert bound["static"] and f"{name}={'x'.join(map(str, dims))}" in bound["why"]
    refused = cpu.static_shape_status(_with(manifest, dynamic, {}))
    assert not refused["static"] and refused["why"].startswith(cpu.STATIC_NOT_ALLOWED)
    assert f"{name}[0]" in refused["why"]
    fixed_false = {"execution": {"static_shape": {"choice": False, "mode": "fixed"}}}
    assert cpu.static_shape_status(_with(manifest, dynamic, fixed_false))["why"].startswith(cpu.STATIC_NOT_ALLOWED)
    auto = {"execution": {"static_shape": {"choice": True, "mode": "auto"}}}
    allowed = cpu.static_shape_status(_with(manifest, dynamic, auto))
    assert not allowed["static"] and "allowed by policy (auto)" in allowed["why"] and "--shape" in allowed["why"]


def test_bound_shape_is_specialised_and_refuses_others(tmp_path, sample_bundle):
    manifest = xrtpkg.read(sample_bundle).manifest
    spec = manifest["model"]["inputs"][0]
    if all(isinstance(d, int) for d in spec["shape"]):
        pytest.skip("the sample model's inputs are static: nothing to bind")
    dims = [d if isinstance(d, int) else 2 for d in spec["shape"]]
    out = tmp_path / "bound.xrtpkg"
    run_tool("xrtc", "compile", SAMPLE, "--target", "cpu", "-o", out,
             f"--shape={spec['name']}={'x'.join(map(str, dims))}", check=True)
    bound = xrtpkg.read(out).manifest
    assert bound["model"]["inputs"][0]["shape"] == dims
    assert cpu.static_shape_status(bound)["static"]
    with xrt.load(out) as session:
        session.run({spec["name"]: np.zeros(dims, dtype=np.float32)})
        other = [d + 1 if i == 0 else d for i, d in enumerate(dims)]
        with pytest.raises(xrt.Error):
            session.run({spec["name"]: np.zeros(other, dtype=np.float32)})
