"""Precision as a tuning candidate: where the policy leaves precision to tuning (execution.precision = {mode =
"auto"}) and this CPU has bf16 units (OpenVINO's OPTIMIZATION_CAPABILITIES), the tuner also tries each OpenVINO
variant in bf16, gated at the bf16 tolerance; elsewhere the record says why not. A bf16 winner's variant says
precision bf16, carries its measured accuracy, drops the f32 precompiled blob and runs through the runtime within
the bf16 tolerance. Real model (two convs, OpenVINO first with its blob), real engines. ~25 s."""

from __future__ import annotations

import copy
import json

import openvino
import pytest
import xrtpkg
from conftest import openvino_first_model
from xrt_testutil import run_tool

import xpuruntime as xrt
from xrtc.tuning import cpu

HAS_BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def auto_tuned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16")
    policy = folder / "auto.toml"
    policy.write_text('[execution]\nprecision = {mode = "auto"}\n')
    out = folder / "tuned.xrtpkg"
    model = openvino_first_model(folder / "two_conv.onnx")
    proc = run_tool("xrtc", "compile", model, "--target", "cpu", "--policy", policy, "-o", out, "--tune", "fast",
                    "--tuning-db", folder / "db.sqlite")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_status_follows_policy_and_cpu(auto_tuned):
    manifest = xrtpkg.read(auto_tuned[0]).manifest
    assert manifest["provenance"]["policy"]["execution"]["precision"]["mode"] == "auto"
    status = cpu.bf16_status(manifest)
    assert status["allowed"] == HAS_BF16, status
    prefer = copy.deepcopy(manifest)
    prefer["provenance"]["policy"]["execution"]["precision"] = {"choice": "fp32", "mode": "prefer"}
    assert not cpu.bf16_status(prefer)["allowed"] and "mode = \"auto\"" in cpu.bf16_status(prefer)["why"]
    assert manifest["tuning"]["precision"]["why"] in auto_tuned[1].stdout  # the table says it


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (OpenVINO capabilities): no bf16 candidate")
def test_bf16_candidate_is_gated_at_bf16_tolerance_and_can_win(auto_tuned, tmp_path):
    out, _ = auto_tuned
    bundle = xrtpkg.read(out)
    record = bundle.manifest["tuning"]
    rows = {r["id"]: r for r in record["candidates"]}
    bf16 = rows["cpu-openvino/bf16"]
    assert bf16["precision"] == "bf16" and bf16["options"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert bf16["accuracy"]["rtol"] == 5e-2 and bf16["accuracy"]["passed"], bf16
    assert not any(k.startswith("xrt.compiled_") for k in bf16["options"])
    assert rows["cpu-openvino/as-built"]["precision"] == "fp32"
    # Whatever won here, the bundle as a bf16 winner: apply() on this measured record with bf16 first.
    source = xrtpkg.read(str(out))
    won = dict(record, winner={**record["winner"], "candidate": bf16["id"], "variant": bf16["variant"],
                               "options": bf16["options"]})
    tuned_variant = next(v for v in source.manifest["variants"] if v["id"] == "cpu-openvino")
    built = dict(tuned_variant, precision="fp32")
    won["winner"].update(cpu._variant_changes(dict(tuned_variant, precision="bf16",
                                                   artifacts={k: s for k, s in tuned_variant["artifacts"].items()
                                                              if k != "compiled"}),
                                              built, bf16["accuracy"]))
    manifest, payloads = cpu.apply(source, won)
    first = manifest["variants"][0]
    assert first["id"] == "cpu-openvino" and first["precision"] == "bf16" and "compiled" not in first["artifacts"]
    assert first["accuracy"]["rtol"] == 5e-2 and first["accuracy"]["max_abs_err"] == bf16["accuracy"]["max_abs_err"]
    names = {name for name, _, _ in payloads}
    used = {s for v in manifest["variants"] for s in v["artifacts"].values()}
    assert used <= names, names
    blob = tuned_variant["artifacts"].get("compiled")
    assert blob is None or blob not in names, "the f32 blob no variant uses is dropped"
    path = tmp_path / "bf16.xrtpkg"
    xrtpkg.write(str(path), manifest, payloads)
    from xrtc.gate import golden_arrays

    feeds, references = golden_arrays(xrtpkg.read(str(path)), manifest["golden"])
    with xrt.load(str(path)) as session:
        assert session.variant == "cpu-openvino"
        got = session.run(feeds)
    for name, ref in references.items():
        err = float(abs(got[name] - ref).max())
        assert err <= 1e-2 * max(1.0, float(abs(ref).max())) + 5e-2 * float(abs(ref).max()), err
    log = json.loads(dict((n, d) for n, d, _ in payloads)[manifest["decisions"]])
    assert log["tuning"]["winner"]["changes"]["precision"] == "bf16"
    assert next(v for v in log["variants"] if v["id"] == "cpu-openvino")["precision"] == "bf16"
