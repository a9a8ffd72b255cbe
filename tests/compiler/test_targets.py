"""The target registry (compiler/xrtc/targets): every registered Target is self-consistent; a new target is one
module plus one registration (a toy target, registered here without touching the plan or the build, gets planned
variants with its own device, default precision, refusals and engine options); and no module outside
xrtc.targets names a target. Plans only (no engine runs): ~3 s."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from xrtc import targets
from xrtc.targets.base import Target

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sample_cnn.onnx"
PRECISIONS = {"fp32", "fp16", "bf16", "int8", "tf32"}


@pytest.mark.parametrize("name", targets.registered())
def test_registered_targets_are_consistent(name):
    t = targets.get_target(name)
    assert isinstance(t, Target) and t.name == name
    for table in (t.precisions, t.kernels, t.engine_kernels):
        assert set(table) == set(t.engines), (name, table)
    for engine in t.engines:
        assert set(t.precisions[engine]) == PRECISIONS, (name, engine)
        refused = {p: why for p, why in t.precisions[engine].items() if why is not None}
        assert all(isinstance(why, str) and len(why) > 20 for why in refused.values())  # a reason, not a flag
        assert t.precision_problem(engine, t.default_precision) is None
        for start, to in t.fallback.items():  # every step of the chain lands on a precision the engine builds
            assert t.precision_problem(engine, to) is None, (name, engine, start, to)


TOY = '''
from xrtc.targets.base import Lowering, Target


def lower(requests, plan, workdir, clock, precompile=True, archs=None):
    return Lowering()


def variant_options(variant, policy, warnings):
    variant["options"] = {"toy.lanes": "4"}
    return variant


TARGET = Target(
    name="toy-dsp", device="dsp", engines=("toyrt",), default_precision="int8",
    precisions={"toyrt": {"int8": None, "fp16": None, "fp32": "the toy DSP has no fp32 unit",
                          "bf16": "the toy DSP has no bf16 unit", "tf32": "TF32 is an NVIDIA format"}},
    kernels={"toyrt": {"matmul": {"engine"}, "conv": {"engine"}, "attention": {"engine"}}},
    engine_kernels={"toyrt": "the toy runtime schedules its own kernels"},
    fallback={"int8": "fp16"}, lower=lower, variant_options=variant_options)
'''


def test_a_new_target_is_one_module_and_one_registration(tmp_path, monkeypatch):
    from xpuruntime.policy import Policy

    from xrtc.build import prepare

    (tmp_path / "toy_target.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(targets._MODULES, "toy-dsp", "toy_target")  # the one registration
    # get_target imports "<package>.<module>": register the toy module under the package's name.
    import importlib

    sys.modules["xrtc.targets.toy_target"] = importlib.import_module("toy_target")
    try:
        assert targets.parse_targets("toy-dsp,cpu") == ["toy-dsp", "cpu"]
        prep = prepare(str(SAMPLE), "toy-dsp,cpu", policy=Policy.from_dict({"execution": {"precision": "fp32"}}))
    finally:
        del sys.modules["xrtc.targets.toy_target"]
    toy = [v for v in prep.plan.variants if v["target"] == "toy-dsp"]
    assert [v["id"] for v in toy] == ["toy-dsp-toyrt"]
    assert toy[0]["device"] == "dsp" and toy[0]["options"] == {"toy.lanes": "4"}
    # fp32 asked (prefer): the toy's refusal is the reason recorded, and its default (int8) is not buildable without
    # calibration, so the plan falls back as the rules say; the cpu variants are untouched.
    assert any("the toy DSP has no fp32 unit" in w for w in prep.plan.warnings), prep.plan.warnings
    assert {v["precision"] for v in prep.plan.variants if v["target"] == "cpu"} == {"fp32"}


def test_no_module_outside_targets_names_a_target():
    names = "|".join(re.escape(n) for n in targets.registered())
    pattern = re.compile(rf"""["']({names})["']|startswith\(["']npu-""")
    offenders = []
    for path in sorted((ROOT / "compiler" / "xrtc").rglob("*.py")):
        rel = path.relative_to(ROOT / "compiler" / "xrtc")
        if rel.parts[0] == "targets" or rel.parts[0] == "tools" or rel.name == "cli.py":
            continue  # the targets themselves; the CLI's defaults (--target cpu) and help text
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for m in pattern.finditer(code):
                # device and engine names are not target names: `"cuda"` compared with a device or engine is fine
                if re.search(r"(device|engine|ran_on)", code[max(0, m.start() - 60):m.start()]):
                    continue
                offenders.append(f"{rel}:{no}: {line.strip()}")
    assert not offenders, "target names outside xrtc.targets:\n" + "\n".join(offenders)
