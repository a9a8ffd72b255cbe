"""The compile, step by step (`compile_model` reads as this list): check the request -> load the model, run the graph
passes and resolve the plan (`prepare`) -> the gate's samples and ONNX Runtime's outputs on them (`_reference`) ->
per-variant precision passes, lowering and the accuracy gate with its fallbacks (`settle.settle`) -> manifest,
golden data, plan and decision log (`package.assemble`) -> write the bundle.

`prepare()` is shared by `xrtc plan` (stops after the plan) and `xrtc compile` (goes on). Every step is
deterministic; the bundle records the policy, the plan, every pass, and the measured accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx

from .errors import InternalError, PassValidationError, PolicyViolationError, UsageError
from .progress import Clock

log = logging.getLogger("xrtc.build")


@dataclass
class Prepared:
    source: object  # model_io.SourceModel
    policy: object  # xpuruntime.policy.Policy
    plan: object  # plan.Plan
    optimised: onnx.ModelProto
    records: list  # PassRecord of the graph passes
    calibration: list[dict]
    calibration_digest: str
    from_plan: bool
    validator: object = None


def _digest_samples(samples: list[dict]) -> str:
    from .gate import storable

    h = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            a = np.asarray(storable(sample[name]), order="C")  # strings: by their characters; 0-d stays 0-d
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


class _PassValidator:
    """--validate-passes: runs the graph after each pass with ONNX Runtime on the gate's samples and compares with
    the source model's outputs; the first pass over tolerance stops the compile, named."""

    def __init__(self, samples: list[dict], references: list[dict], policy) -> None:
        self.samples, self.references, self.policy = samples, references, policy
        self.precision = "fp32"

    def __call__(self, pass_name: str, model: onnx.ModelProto) -> float:
        from .gate import _first_sentence, reference_outputs
        from .numeric import compare

        tol = self.policy.tolerance_for(self.precision)
        try:
            outputs = reference_outputs(model.SerializeToString(), self.samples)
        except Exception as err:  # noqa: BLE001 - any failure to run is a break, named below
            raise PassValidationError(f"--validate-passes: after pass {pass_name} the graph no longer runs in ONNX "
                                      f"Runtime: {_first_sentence(str(err), 300)}. Pass {pass_name} broke the "
                                      "model") from err
        worst = 0.0
        for got, ref in zip(outputs, self.references):
            for name, expected in ref.items():
                c = compare(pass_name, name, got[name], expected, tol["rtol"], tol["atol"])
                worst = max(worst, c.max_abs_err)
                if not c.passed:
                    raise PassValidationError(
                        f"--validate-passes: pass {pass_name} broke numerics: output {name!r} max abs err "
                        f"{c.max_abs_err:.3g} over the {self.precision} tolerance (rtol {tol['rtol']:g}, atol "
                        f"{tol['atol']:g}); {c.note}. Disable or fix pass {pass_name}")
        log.info("validate-passes: %s ok (max abs err %.3g)", pass_name, worst)
        return worst


def prepare(model_path: str, target: str, *, policy=None, plan_path: str | None = None,
            calibration_path: str | None = None, validate_passes: bool = False, clock: Clock | None = None,
            extra_passes: list | None = None) -> Prepared:
    """Loads the model, runs the graph passes and resolves (or loads and checks) the plan.
    `extra_passes` [(after pass name, Pass)] splices passes into the graph pipeline (tests use it to check that
    --validate-passes catches a broken pass)."""
    from xpuruntime.policy import Policy, PolicyError

    from . import model_io, passes
    from .gate import load_calibration, reference_for, samples_for
    from .plan import Plan, resolve

    clock = clock or Clock()
    with clock.stage("load-model", log):
        source = model_io.load_model(model_path)
    source_inputs, source_outputs = model_io.model_io(source.model)
    log.info("model %s: opset %s, %d nodes, inputs %s", source.name, model_io.default_opset(source.model),
             len(source.model.graph.node), ", ".join(i["name"] for i in source_inputs))

    plan = None
    if plan_path:
        plan = Plan.load(plan_path)
        if plan.source.get("sha256") != source.sha256:
            raise UsageError(f"plan {plan_path} was made for {plan.source.get('name')} (sha256 "
                             f"{str(plan.source.get('sha256'))[:12]}...), not {source.name} ({source.sha256[:12]}...); "
                             "write a new plan with `xrtc plan`")
        if plan.target != target:
            raise UsageError(f"plan {plan_path} is for --target {plan.target}, not {target}")
        try:
            policy = Policy.from_dict(plan.policy, source=f"{plan_path} (policy)")
        except PolicyError as err:
            raise UsageError(str(err)) from err
    policy = policy or Policy()

    calibration = load_calibration(calibration_path, source_inputs) if calibration_path else []

    validator = None
    if validate_passes:
        from .gate import NoSamples

        try:
            found = reference_for(samples_for(source_inputs, policy.shapes, calibration, source.model),
                                  source.model.SerializeToString(), source_inputs)
        except NoSamples as err:
            raise UsageError(f"--validate-passes needs inputs: {err}") from err
        validator = _PassValidator(found[0].feeds, found[1], policy)

    pipeline = passes.from_spec(plan.pipeline) if plan else passes.graph_pipeline(policy.shapes)
    spec = passes.to_spec(pipeline)
    for after, extra in extra_passes or []:
        index = next(i for i, p in enumerate(pipeline) if p.name == after)
        pipeline.insert(index + 1, extra)
    manager = passes.PassManager(pipeline, clock, validator)
    with clock.stage("run-passes", log):
        optimised, records = manager.run(source.model)
    inputs, outputs = model_io.model_io(optimised)
    if [i["name"] for i in inputs] != [i["name"] for i in source_inputs] or \
            [o["name"] for o in outputs] != [o["name"] for o in source_outputs]:
        raise InternalError("the pass pipeline changed the model's inputs or outputs; this is a bug in xrtc: please "
                            "report it with the model")

    source_info = {"name": source.name, "sha256": source.sha256}
    if plan is None:
        plan = resolve(optimised, policy, target, source_info, spec, len(calibration),
                       passes.dynamic_dims(optimised))
        # Through JSON, as `xrtc plan -o` + `compile --plan` would: both paths then see the same key order.
        plan = Plan.from_json(json.loads(plan.dumps()))
    else:
        graph_nodes = [n.name for n in optimised.graph.node]
        plan_nodes = [n.get("name") for n in plan.nodes]
        if graph_nodes != plan_nodes:
            missing = sorted(set(plan_nodes) - set(graph_nodes))[:5]
            extra = sorted(set(graph_nodes) - set(plan_nodes))[:5]
            raise UsageError(f"plan {plan_path} does not match the graph the passes produce (nodes only in the plan: "
                             f"{missing}; only in the graph: {extra}); tool versions may differ: write a new plan "
                             "with `xrtc plan`")
    for warning in plan.warnings:
        log.warning("%s", warning)
    return Prepared(source=source, policy=policy, plan=plan, optimised=optimised, records=records,
                    calibration=calibration, calibration_digest=_digest_samples(calibration) if calibration else "",
                    from_plan=bool(plan_path), validator=validator)


@dataclass
class CompileResult:
    path: str
    size: int
    manifest: dict
    summary: str = ""  # what was built, per variant precision (the CLI's last line)


def _cpu_lacks_fp16() -> bool:
    """True where /proc/cpuinfo shows an x86 CPU without AVX512-FP16/AMX-FP16 (False where it cannot tell)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return bool(flags) and "avx2" in flags and not {"avx512_fp16", "amx_fp16"} & set(flags)


def default_output(model_path: str) -> str:
    """The bundle path when -o is not given: next to the model, `.onnx` replaced by `.xrtpkg` (never overwritten
    without --force)."""
    stem = model_path[:-5] if model_path.lower().endswith(".onnx") else model_path
    return stem + ".xrtpkg"


def compile_model(model_path: str, target: str, output: str | None = None, force: bool = False,
                  clock: Clock | None = None,
                  precompile: bool = True, policy=None, plan_path: str | None = None,
                  calibration_path: str | None = None, validate_passes: bool = False,
                  extra_passes: list | None = None, archs: list[str] | None = None,
                  allow_unverified: bool = False, tune: str = "off", tuning_db: str | None = None,
                  cpu_arch: str | None = None) -> CompileResult:
    """Compiles `model_path` for `target` into the bundle `output` under `policy` (xpuruntime.policy.Policy) or the
    plan at `plan_path`. Raises XrtcError subclasses. `precompile` adds engine-compiled blobs (OpenVINO CPU).
    Every variant must run on samples and meet its tolerance; where the gate cannot check a variant (no samples the
    model accepts), the compile fails (gate.NoSamples / AccuracyGateError, exit 3) unless `allow_unverified`, which
    writes the bundle with `manifest["unverified"]` saying why. `tune` fast|full then tunes the CPU variants on this
    machine (xrtc.tuning.cpu; results kept in the tuning DB at `tuning_db`); "off" leaves the bundle as built.
    `cpu_arch` (x86_64, aarch64) restricts every variant to CPUs of that architecture (`requires.cpu_arch`); by
    default none is recorded: the artifacts are portable."""
    from . import package
    from .settle import settle

    clock = clock or Clock()
    targets, output = _check_request(model_path, target, output, force)
    cpu_arch = package.check_cpu_arch(cpu_arch) if cpu_arch else None
    target = ",".join(targets)
    prep = prepare(model_path, target, policy=policy, plan_path=plan_path, calibration_path=calibration_path,
                   validate_passes=validate_passes, clock=clock, extra_passes=extra_passes)
    _warn_host_fp16(prep.plan)
    inputs, outputs, samples, references, no_samples = _reference(prep, clock)
    declared = []  # decisions: outputs whose declared shape the engines do not produce
    if references is not None:
        outputs, declared = _outputs_as_produced(prep.optimised, outputs, references)
    settled = settle(prep, targets, inputs, outputs, samples, references, no_samples, clock, precompile, archs,
                     allow_unverified)
    manifest, payloads = package.assemble(prep, target, settled, inputs, outputs, declared, precompile)
    if cpu_arch:
        package.require_cpu_arch(manifest, cpu_arch)
    with clock.stage("write-bundle", log):
        size = package.write_bundle(output, manifest, payloads, force)
    if tune != "off":
        manifest, size = _tune_written(output, manifest, tune, tuning_db, clock)
    return CompileResult(path=output, size=size, manifest=manifest,
                         summary=_built_summary(manifest, prep.policy, prep.plan.warnings + settled.warnings))


def _tune_written(output: str, manifest: dict, tune: str, tuning_db: str | None, clock: Clock) -> tuple[dict, int]:
    """--tune fast|full: the CPU tuner on the bundle just written, which it replaces (atomically)."""
    import os

    from . import package
    from .tuning.cpu import tune_cpu_bundle

    if not any(v.get("device") == "cpu" for v in manifest["variants"]):
        log.warning("--tune %s: the bundle has no CPU variant; nothing tuned (cuda GEMMs: `xrtc tune BUNDLE` on the "
                    "GPU)", tune)
        return manifest, os.path.getsize(output)
    with clock.stage("tune", log):
        result = tune_cpu_bundle(output, tune, tuning_db)
    size = package.write_bundle(output, result.manifest, result.payloads, force=True)
    log.info("tuned: %s first, options %s", result.record["winner"]["variant"], result.record["winner"]["options"])
    return result.manifest, size


def _check_request(model_path: str, target: str, output: str | None, force: bool) -> tuple[list[str], str]:
    """The targets asked for and the bundle path, checked before any work."""
    from .package import check_output
    from .progress import quiet_third_party
    from .targets import parse_targets

    targets = parse_targets(target)
    output = output or default_output(model_path)
    check_output(model_path, output, force)
    quiet_third_party(logging.getLogger("xrtc").getEffectiveLevel())
    return targets, output


def _warn_host_fp16(plan) -> None:
    from .targets import get_target

    if any(get_target(v["target"]).runs_on_host and v["precision"] == "fp16" for v in plan.variants) and \
            _cpu_lacks_fp16():
        log.warning("this CPU has no fp16 arithmetic (no avx512_fp16/amx_fp16): the fp16 variants will run no "
                    "faster than fp32 here, ONNX Runtime's likely slower")


def _reference(prep, clock: Clock):
    """The gate's samples and ONNX Runtime's outputs on the source model: (inputs, outputs, samples, references,
    no_samples); references None and no_samples the gate.NoSamples when no samples could be made (raised later, after
    lowering: a model no engine builds says so first, exit 4)."""
    from . import gate, model_io

    inputs, outputs = model_io.model_io(prep.optimised)
    samples = references = no_samples = None
    try:
        samples = gate.samples_for(inputs, prep.policy.shapes, prep.calibration, prep.source.model)
        with clock.stage("reference-outputs", log):
            samples, references = gate.reference_for(samples, prep.source.model.SerializeToString(), inputs)
    except gate.NoSamples as err:
        no_samples = err
    return inputs, outputs, samples, references, no_samples


def _built_summary(manifest: dict, policy, warnings: list[str]) -> str:
    """What was built, per variant precision, and why a precision asked for was not delivered: the compile's last
    line. A `fixed` precision not delivered raises (the plan and the gate already refuse it; this is the net)."""
    knob = policy.execution.get("precision")
    asked = knob.choice if "precision" in policy.execution.knobs and knob.mode != "auto" else None
    def checked_where(v: dict) -> str:  # a variant not checked on its own device says where it was checked
        acc = v.get("accuracy") or {}
        return f" (checked on {acc['ran_on']}, not on its device)" if acc.get("not_run_on_device") else ""

    parts = [f"{v['id']} {v['precision']}{checked_where(v)}" for v in manifest["variants"]]
    missed = [v["id"] for v in manifest["variants"] if asked and v["precision"] != asked]
    text = "built " + ", ".join(parts)
    if missed:
        why = next((w for w in warnings if asked in w), "see the warnings (-v)")
        why = re.sub(r"^prefer precision=\S+ on \S+: ", "", why)
        if knob.mode == "fixed":
            raise PolicyViolationError(f"precision={asked} is fixed, but {', '.join(missed)} would be built at "
                                       f"another precision: {why}")
        text += f" (asked {asked}, not delivered: {why})"
    if manifest.get("unverified"):
        text += "; UNVERIFIED (--allow-unverified)"
    return text


def _outputs_as_produced(model: onnx.ModelProto, outputs: list[dict], references: list[dict]):
    """The output specs as the source model produces them on the samples. A model may declare an output shape its
    graph does not produce (seen: `[1, seqlen]` for a `[28, 1, 8210]` output; ONNX Runtime only warns); a bundle
    declaring it could never run, since the runtime checks every output against the manifest. Where the declaration
    disagrees with what ONNX Runtime produced, the shape is taken from ONNX shape inference without the declaration
    (symbolic dims stay symbolic) and checked against the samples, else from the samples with dims that differ
    across samples (or depend on a dynamic input) left unknown. A dtype mismatch is the model's error, raised.
    Returns (outputs, [(name, declared shape)])."""
    from .errors import ModelCheckError
    from .model_io import model_io

    inferred = _inferred_output_shapes(model)
    dynamic_inputs = any(not isinstance(d, int) for i in model_io(model)[0] for d in (i["shape"] or [None]))
    fixed, declared = [], []
    for spec in outputs:
        got = [ref[spec["name"]] for ref in references]
        if "type" in spec:  # a sequence, map or optional: no shape to check (the gate compares its contents)
            fixed.append(spec)
            continue
        dtype = "string" if got[0].dtype.kind in "OUS" else got[0].dtype.name
        if dtype != spec["dtype"]:
            raise ModelCheckError(f"output {spec['name']!r} is declared {spec['dtype']} but the model produces "
                                  f"{dtype} (ONNX Runtime, on the gate's samples): the model's declaration is wrong; "
                                  "fix it in the exporter")
        shapes = {a.shape for a in got}
        shape = spec["shape"]
        if shape is not None and all(len(s) == len(shape) and all(not isinstance(d, int) or d == g
                                                                  for d, g in zip(shape, s)) for s in shapes):
            fixed.append(spec)
            continue
        guess = inferred.get(spec["name"])
        if guess is None or any(len(s) != len(guess) or any(isinstance(d, int) and d != g for d, g in zip(guess, s))
                                for s in shapes):
            first = next(iter(shapes))
            guess = [first[k] if len({s[k] for s in shapes}) == 1 and not dynamic_inputs else None
                     for k in range(len(first))]
        fixed.append(dict(spec, shape=guess))
        if shape is None:  # declared nothing: filled in, nothing to blame
            continue
        declared.append((spec["name"], shape))
        log.warning("output %r: the model declares %s but produces %s; the bundle declares %s (fix the model's "
                    "declaration in the exporter)", spec["name"], shape, [list(s) for s in sorted(shapes)], guess)
    return fixed, declared


def _inferred_output_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Output shapes from ONNX shape inference with the outputs' own declarations removed ({} where it fails)."""
    from .model_io import _shape_of

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for out in copy.graph.output:
        out.type.tensor_type.ClearField("shape")
    del copy.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a hint here; the samples decide
        return {}
    return {o.name: _shape_of(o.type.tensor_type) for o in inferred.graph.output
            if o.type.tensor_type.HasField("shape")}


