"""The typed records that travel between the compile's stages (xrtc.variants): `settle()` returns built variants,
left-out variants with their stage and the gate's outcome per variant; packaging alone turns them into the manifest.
Real engines on a tiny model (ONNX Runtime for the variant, OpenVINO excluded by the policy); ~5 s."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from xpuruntime.policy import Policy
from xrt_testutil import overflow_model
from xrtc import build, package
from xrtc.errors import InternalError
from xrtc.progress import Clock
from xrtc.settle import settle
from xrtc.variants import BuiltVariant, GateOutcome, LeftOut


def test_settle_returns_typed_decisions_and_packaging_makes_the_manifest(tmp_path):
    model = overflow_model(tmp_path / "overflow.onnx")
    # memory=low fixed: OpenVINO cannot honour it, so the plan excludes cpu-openvino (stage policy-excluded);
    # fp16: ONNX Runtime's fp16 graph breaks on `scale_up`, the gate's per-node fallback keeps it fp32 (fell-back).
    policy = Policy.from_dict({"execution": {"precision": "fp16", "memory": {"choice": "low", "mode": "fixed"}}})
    clock = Clock()
    prep = build.prepare(str(model), "cpu", policy=policy, clock=clock)
    inputs, outputs, samples, references, no_samples = build._reference(prep, clock)
    settled = settle(prep, ["cpu"], inputs, outputs, samples, references, no_samples, clock, True, None, False)

    (left,) = settled.left_out
    assert isinstance(left, LeftOut) and (left.id, left.stage) == ("cpu-openvino", "policy-excluded"), left
    assert left.reason.startswith("policy: memory=low is fixed, but not controllable on engine openvino"), left

    (built,) = settled.built
    assert isinstance(built, BuiltVariant) and (built.id, built.engine, built.precision) == \
        ("cpu-onnxruntime", "onnxruntime", "fp16")
    assert [name for name, _, _ in built.sections] == list(built.entry["artifacts"].values())
    assert "accuracy" not in built.entry  # added at packaging, from the outcome

    outcome = settled.outcomes["cpu-onnxruntime"]
    assert isinstance(outcome, GateOutcome) and outcome.verdict == "fell-back" and outcome.fell_back_to == "fp16"
    assert "per-node fallback kept 1 node(s) in fp32: scale_up" in outcome.fallback, outcome
    assert settled.gate_fp32 == ["scale_up"] and settled.unmeasured == []
    assert outcome.record["passed"] and "failures" not in outcome.manifest_accuracy()

    # The built graph itself, run by ONNX Runtime against ONNX Runtime on the source model.
    session = ort.InferenceSession(built.sections[0][1], providers=["CPUExecutionProvider"])
    worst = max(float(np.max(np.abs(session.run(None, feeds)[0] - ref["y"])))
                for feeds, ref in zip(samples.feeds, references))
    print(f"cpu-onnxruntime fp16 (scale_up kept fp32) vs source fp32: max abs err {worst:.3g}; gate recorded "
          f"{outcome.max_abs_err}")
    assert worst <= outcome.record["atol"] + outcome.record["rtol"] * float(np.max(np.abs(references[0]["y"])))

    manifest, payloads = package.assemble(prep, "cpu", settled, inputs, outputs, [], True)
    assert manifest["excluded"] == [left.manifest_entry()]
    (entry,) = manifest["variants"]
    assert entry == dict(built.entry, accuracy=outcome.manifest_accuracy())
    # every artifact the manifest names is a payload (the weight store, formats/xrtpkg.md 1.2, may come first)
    assert set(entry["artifacts"].values()) <= {name for name, _, _ in payloads}


def test_records_refuse_what_no_stage_produces():
    with pytest.raises(InternalError, match="stage 'dropped' is not one of"):
        LeftOut(target="cpu", engine="openvino", reason="r", stage="dropped")
    with pytest.raises(InternalError, match="has no 'precision'"):
        BuiltVariant({"id": "cpu-x", "target": "cpu", "device": "cpu", "engine": "x"}, [])
    with pytest.raises(InternalError, match="verdict 'ok' is not one of"):
        GateOutcome("cpu-x", "ok", "fp32")
    unmeasured = GateOutcome("cpu-x", "unmeasured", "fp32", record={"passed": False, "failures": ["y: inf"]},
                             reason="accuracy not measured on generated samples")
    assert unmeasured.manifest_accuracy() is None  # a failed measurement on samples the model refuses is not stored
