"""The compile, step by step: source -> graph passes -> plan -> per-variant precision passes -> lowering -> accuracy
gate (with `prefer` fallback) -> bundle with plan, decision log and golden data.

`prepare()` is shared by `xrtc plan` (stops after the plan) and `xrtc compile` (goes on). Every step is
deterministic; the bundle records the policy, the plan, every pass, and the measured accuracy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx

from . import gate
from .errors import (AccuracyGateError, InternalError, NoVariantError, PassValidationError, PolicyViolationError,
                     UsageError)
from .progress import Clock

log = logging.getLogger("xrtc.build")

def _fallback_precision(variant: dict, precision: str | None = None) -> str | None:
    """The precision the gate rebuilds `variant` at when its own is over tolerance (its target's chain)."""
    from .targets import get_target

    return get_target(variant["target"]).fallback_for(precision or variant["precision"])


def _lower_all(models, plan, targets: list[str], workdir: str, clock, precompile: bool, archs=None):
    """Every target's lowering, merged in the order of --target."""
    from .targets import get_target
    from .targets.base import Lowering

    merged = Lowering(variants=[], payloads=[], excluded=[])
    for t in targets:
        merged.merge(get_target(t).lower(models, plan, workdir, clock, precompile=precompile, archs=archs))
    if not merged.variants:
        only = get_target(targets[0]) if len(targets) == 1 else None
        if only is not None and only.none_built is not None:
            raise NoVariantError(only.none_built(merged.excluded))
        reasons = "; ".join(f"{e['target']}-{e['engine']}: {e['reason']}" for e in merged.excluded)
        raise NoVariantError(f"no variant could be built for --target {','.join(targets)}: {reasons}")
    return merged


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
    extra_fp32: list = field(default_factory=list)  # nodes the accuracy gate moved back to fp32 (per-node fallback)


def _digest_samples(samples: list[dict]) -> str:
    h = hashlib.sha256()
    for sample in samples:
        for name in sorted(sample):
            a = np.ascontiguousarray(sample[name])
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


class _Fallback(Exception):
    """A precision pass cannot convert the model and the knob is `prefer`: rebuild at fp32 (message = reason)."""


def _variant_models(prep: Prepared, precisions: dict[str, str], clock: Clock,
                    notes: list[str]) -> tuple[dict, list]:
    """The graph each engine gets, after its precision passes; returns (models, pass records). Raises _Fallback
    when a precision pass cannot convert the model under a `prefer` knob."""
    from . import passes
    from .passes.precision import PrecisionPassFailed

    fp32_nodes = prep.plan.nodes_at("fp32")
    models: dict[str, onnx.ModelProto] = {}
    records = []
    cache: dict[str, onnx.ModelProto] = {}
    engines = {v["id"]: v["engine"] for v in prep.plan.variants}
    for vid, precision in precisions.items():
        engine = engines[vid]
        if engine == "onnxruntime" and precision == "fp16":
            key = "fp16"
            if key not in cache:
                if prep.validator is not None:
                    prep.validator.precision = "fp16"
                blocked = sorted(set(fp32_nodes) | set(prep.extra_fp32))
                manager = passes.PassManager([passes.ConvertFloat16(op_block_list=[], node_block_list=blocked)],
                                             clock, prep.validator)
                cache[key], recs = manager.run(prep.optimised)
                records += recs
            models[vid] = cache[key]
        elif precision == "int8":
            key = "int8"
            if key not in cache:
                if prep.validator is not None:
                    prep.validator.precision = "int8"
                quantize = passes.QuantizeInt8(prep.calibration, samples=len(prep.calibration),
                                               nodes_to_exclude=fp32_nodes,
                                               per_channel=prep.policy.quantization.get("per_channel", True),
                                               method=prep.policy.quantization.get("method", "minmax"))
                manager = passes.PassManager([quantize], clock, prep.validator)
                try:
                    cache[key], recs = manager.run(prep.optimised)
                except PrecisionPassFailed as err:
                    if prep.policy.execution.get("precision").mode == "fixed":
                        raise PolicyViolationError(f"precision=int8 is fixed, but {err}") from err
                    raise _Fallback(f"int8 not possible: {err}") from err
                records += recs
                notes.extend(quantize.notes)
            models[vid] = cache[key]
        else:
            models[vid] = prep.optimised  # fp32; OpenVINO's fp16/bf16 are engine settings on the fp32 graph
    return models, records


PER_NODE_ROUNDS = 4  # nodes moved back to fp32 one by one at most; more means the model is not fp16-friendly


def _fp16_nodes_to_keep_fp32(prep: Prepared, samples: list[dict], references: list[dict], tol: dict) -> list[str]:
    """Per-node fp16 fallback for ONNX Runtime (which runs mixed fp16/fp32 graphs): finds a few nodes to keep in
    fp32 so the fp16 graph meets the tolerance, or [] when PER_NODE_ROUNDS nodes do not suffice.

    Each round bisects the fp16 nodes in graph order for the first one whose conversion breaks the tolerance
    (convert nodes[:k], keep the rest fp32: k = 0 passes, all fails), keeps it in fp32, and checks the rest.
    ONNX Runtime runs in-process here (one thread, like the gate); the result then goes through the gate again."""
    from . import passes
    from .gate import reference_outputs
    from .numeric import compare

    candidates = prep.plan.nodes_at("fp16")
    base = set(prep.plan.nodes_at("fp32"))

    def passes_with(blocked: set[str]) -> bool:
        manager = passes.PassManager([passes.ConvertFloat16(op_block_list=[], node_block_list=sorted(blocked))])
        model, _ = manager.run(prep.optimised)
        try:
            outputs = reference_outputs(model.SerializeToString(), samples)
        except Exception:  # noqa: BLE001 - a graph ORT cannot run counts as failing
            return False
        return all(compare("", name, got[name], ref[name], tol["rtol"], tol["atol"]).passed
                   for got, ref in zip(outputs, references) for name in ref)

    kept: list[str] = []
    for _ in range(PER_NODE_ROUNDS):
        remaining = [n for n in candidates if n not in kept]
        low, high = 0, len(remaining)  # invariant: converting remaining[:low] passes, remaining[:high] fails
        while high - low > 1:
            mid = (low + high) // 2
            if passes_with(base | set(kept) | set(remaining[mid:])):
                low = mid
            else:
                high = mid
        if high == 0 or high > len(remaining):
            return []
        kept.append(remaining[high - 1])
        if passes_with(base | set(kept)):
            log.info("per-node fp16 fallback: keeping %s in fp32", kept)
            return kept
    return []


def _with_fp16_emulation(variant_id: str, record: dict, model: onnx.ModelProto, samples: list[dict], references: list[dict],
                         tol: dict) -> dict:
    """An NPU variant's gate record: its IR run on the CPU at f32 compute (`record`: conversion, fp16 weights) and
    fp16 arithmetic emulated on its graph; passed when both are within the tolerance; `max_abs_err` is the worse of
    the two per output, `ir_max_abs_err` the IR run's alone."""
    from . import gate

    try:
        emulated = gate.measure_fp16_emulation(model, samples, references, tol["rtol"], tol["atol"])
    except Exception as err:  # noqa: BLE001 - ONNX Runtime raises untyped errors; the record says it was not measured
        log.warning("gate %s: fp16 emulation could not run (%s); the record has the IR run only", variant_id,
                    str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
        return dict(record, method=f"IR on {record.get('ran_on', 'cpu')} at f32 compute; fp16 arithmetic not "
                                   "measured (its emulation could not run)")
    out = dict(record)
    out["passed"] = bool(record["passed"] and emulated["passed"])
    out["ir_max_abs_err"] = dict(record["max_abs_err"])
    out["max_abs_err"] = {k: max(v, emulated["max_abs_err"].get(k, 0.0)) for k, v in record["max_abs_err"].items()}
    out["method"] = f"IR on {record.get('ran_on', 'cpu')} at f32 compute; {gate.FP16_EMULATION}"
    out["failures"] = (record.get("failures", []) + emulated["failures"])[:4]
    out["fp16_atol_needed"] = max(emulated["atol_needed"], record.get("atol_needed", 0.0))
    log.info("gate %s: IR on %s at f32 compute %s, fp16 emulated %s", variant_id, record.get("ran_on", "cpu"),
             record["max_abs_err"], emulated["max_abs_err"])
    return out


@dataclass
class CompileResult:
    path: str
    size: int
    manifest: dict
    summary: str = ""  # what was built, per variant precision (the CLI's last line)


def _candidate(lowering, manifest_base: dict, path: str) -> None:
    """Writes the candidate bundle the gate runs: the built variants, one engine thread each."""
    import xrtpkg

    from .targets import get_target

    variants = []
    for v in lowering.variants:
        v = json.loads(json.dumps(v))
        key = "INFERENCE_NUM_THREADS" if v["engine"] == "openvino" else "intra_op_num_threads"
        v["options"][key] = "1"
        v["options"].update(get_target(v["target"]).gate_options)  # what the gate can run here (see Target)
        variants.append(v)
    xrtpkg.write(path, dict(manifest_base, variants=variants), lowering.payloads, force=True)


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
                  allow_unverified: bool = False) -> CompileResult:
    """Compiles `model_path` for `target` into the bundle `output` under `policy` (xpuruntime.policy.Policy) or the
    plan at `plan_path`. Raises XrtcError subclasses. `precompile` adds engine-compiled blobs (OpenVINO CPU).
    Every variant must run on samples and meet its tolerance; where the gate cannot check a variant (no samples the
    model accepts), the compile fails (gate.NoSamples / AccuracyGateError, exit 3) unless `allow_unverified`, which
    writes the bundle with `manifest["unverified"]` saying why."""
    from . import gate, package
    from .package import check_output
    from .progress import quiet_third_party
    from .targets import get_target, parse_targets

    clock = clock or Clock()
    targets = parse_targets(target)
    target = ",".join(targets)
    output = output or default_output(model_path)
    check_output(model_path, output, force)
    quiet_third_party(logging.getLogger("xrtc").getEffectiveLevel())

    prep = prepare(model_path, target, policy=policy, plan_path=plan_path, calibration_path=calibration_path,
                   validate_passes=validate_passes, clock=clock, extra_passes=extra_passes)
    plan, policy = prep.plan, prep.policy
    if any(get_target(v["target"]).runs_on_host and v["precision"] == "fp16" for v in plan.variants) and \
            _cpu_lacks_fp16():
        log.warning("this CPU has no fp16 arithmetic (no avx512_fp16/amx_fp16): the fp16 variants will run no "
                    "faster than fp32 here, ONNX Runtime's likely slower")
    from . import model_io

    inputs, outputs = model_io.model_io(prep.optimised)
    references = None
    unverified = ""  # why the gate could not check the bundle (kept only with allow_unverified)
    no_samples = None
    try:
        samples = gate.samples_for(inputs, policy.shapes, prep.calibration, prep.source.model)
        with clock.stage("reference-outputs", log):
            samples, references = gate.reference_for(samples, prep.source.model.SerializeToString(), inputs)
    except gate.NoSamples as err:  # raised after lowering: a model no engine builds says so first (exit 4)
        no_samples = err
        unverified = f"the accuracy gate could not run: {err}"
    tried = [gate._shapes_text(samples.feeds[0])] if references is not None else []  # sample shapes measured
    declared = []  # decisions: outputs whose declared shape the engines do not produce
    if references is not None:
        outputs, declared = _outputs_as_produced(prep.optimised, outputs, references)

    precisions = {v["id"]: v["precision"] for v in plan.variants if "excluded" not in v}
    fallbacks: dict[str, str] = {}
    # Passes undone by the pass manager (invalid output, or numerics under --validate-passes): in the decision log.
    gate_warnings: list[str] = [f"pass {r.name} rolled back: {r.rolled_back}" for r in prep.records if r.rolled_back]
    accuracy: dict[str, dict] = {}
    records: list = []
    dropped: list[dict] = []
    tools_seen: dict[str, str] = {}
    unmeasured: list[str] = []  # variants that refused generated samples (kept, accuracy not measured)
    # Each retry lowers a precision, drops a variant, or moves guessed sample shapes to the next candidate.
    for _attempt in range(2 * len(plan.variants) + 1 + len(gate.DYNAMIC_FILLS) + 6):
        try:
            models, records = _variant_models(prep, precisions, clock, gate_warnings)
        except _Fallback as fallback:
            by_id = {v["id"]: v for v in plan.variants}
            for vid, precision in list(precisions.items()):
                if precision == "int8":
                    precisions[vid] = _fallback_precision(by_id[vid], "int8")
                    fallbacks[vid] = f"{fallback}; rebuilt {precisions[vid]}"
            gate_warnings.append(f"{fallback}; all int8 variants rebuilt fp32")
            log.warning("%s", gate_warnings[-1])
            models, records = _variant_models(prep, precisions, clock, gate_warnings)
        unmeasured.clear()
        effective = _plan_with(plan, precisions)
        with tempfile.TemporaryDirectory(prefix="xrtc-") as workdir:
            lowering = _lower_all(models, effective, targets, workdir, clock, precompile, archs)
            tools_seen.update(lowering.tools)  # provenance names every engine tried, also one the gate dropped
            base = package.build_manifest(model_name="candidate", inputs=inputs, outputs=outputs, variants=[],
                                          excluded=[], source={}, tools={}, command="", passes=[])
            if references is None:
                break
            candidate = os.path.join(workdir, "candidate.xrtpkg")
            _candidate(lowering, base, candidate)
            while True:  # re-measured (same lowering) when guessed sample shapes move on
                retry = False
                unmeasured.clear()
                for variant in lowering.variants:
                    tol = policy.tolerance_for(variant["precision"])
                    with clock.stage(f"gate-{variant['id']}", log):
                        target_of = get_target(variant["target"])
                        if target_of.gate is not None:
                            record = target_of.gate(lowering, variant, samples.feeds, references, tol, workdir,
                                                    candidate)
                        else:
                            record = gate.measure_isolated(workdir, candidate, variant["id"], samples.feeds,
                                                           references, tol["rtol"], tol["atol"])
                            if target_of.emulate_fp16 and not (record.get("error") or record.get("crashed")):
                                record = _with_fp16_emulation(variant["id"], record, models[variant["id"]],
                                                              samples.feeds, references, tol)
                    if record.get("passed") is None:  # cuda variant, no device here and too big to interpret
                        unmeasured.append(variant["id"])
                        gate_warnings.append(f"{variant['id']}: accuracy not measured: {record['not_run']}; run "
                                             "`xrtc verify` on a machine with a CUDA device")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        continue
                    accuracy[variant["id"]] = record
                    log.info("gate %s (%s): %s, max abs err %s", variant["id"], variant["precision"],
                             "ok" if record["passed"] else "FAILED", record["max_abs_err"])
                    if record["passed"]:
                        continue
                    why = "; ".join(record["failures"])
                    drop = None
                    if record.get("crashed"):  # never ship a variant its engine cannot run
                        drop = f"{why} (on the gate's samples)"
                    elif samples.guessed or (record.get("error") and not prep.calibration):
                        # Generated data may be outside what the model accepts (an int input that sizes an output;
                        # dims pinned to sizes the model was not made for): the variant is not at fault, but it is not
                        # checked either. Fails below unless an unverified bundle was asked for.
                        unmeasured.append(variant["id"])
                        gate_warnings.append(f"{variant['id']}: accuracy not measured on generated samples "
                                             f"({samples.origin}): {why}")
                        log.info("accuracy gate: %s", gate_warnings[-1])  # the outcome (next shapes, error) says it
                        continue
                    elif record.get("error"):
                        drop = f"fails on the calibration samples ({why})"
                    elif _fallback_precision(variant):
                        if policy.execution.get("precision").mode == "fixed":
                            raise AccuracyGateError(
                                f"accuracy gate: {variant['id']} at {variant['precision']} is over the tolerance (rtol "
                                f"{tol['rtol']:g}, atol {tol['atol']:g}): {why}. precision is fixed: loosen "
                                "[tolerance], "
                                "keep more ops in fp32 ([precision] keep_fp32_ops / [nodes]), or make precision "
                                "\"prefer\"")
                        if variant["engine"] == "onnxruntime" and variant["precision"] == "fp16" and \
                                not prep.extra_fp32:
                            with clock.stage("per-node-fallback", log):
                                found = _fp16_nodes_to_keep_fp32(prep, samples.feeds, references, tol)
                            if found:
                                prep.extra_fp32 = found
                                fallbacks[variant["id"]] = (f"fp16 over tolerance ({why}); per-node fallback kept "
                                                            f"{len(found)} node(s) in fp32: {', '.join(found[:8])}"
                                                            f"{' ...' if len(found) > 8 else ''}")
                                gate_warnings.append(f"{variant['id']}: {fallbacks[variant['id']]}")
                                log.warning("accuracy gate: %s", gate_warnings[-1])
                                retry = True
                                continue
                        to = _fallback_precision(variant)
                        fallbacks[variant["id"]] = f"{variant['precision']} over tolerance ({why}); rebuilt {to}"
                        gate_warnings.append(f"{variant['id']}: {fallbacks[variant['id']]}")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        precisions[variant["id"]] = to
                        retry = True
                    else:  # at the highest precision its target has and still off the reference: never ship it
                        drop = f"{variant['precision']} output over tolerance ({why})" + \
                            ("" if variant["precision"] == "fp32" else f"; {variant['target']} has no higher precision")
                        if get_target(variant["target"]).emulate_fp16 and "fp16_atol_needed" in record:
                            drift = gate.fp16_drift(models[variant["id"]], samples.feeds[0])
                            drop += ". " + gate.fp16_advice(variant["id"], targets, drift, record["fp16_atol_needed"],
                                                            tol["rtol"])
                    if drop:
                        gate_warnings.append(f"{variant['id']} left out: {drop}")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        dropped.append({"target": variant["target"], "engine": variant["engine"],
                                        "reason": f"accuracy gate: {drop}"})
                        precisions.pop(variant["id"])
                        retry = True
                if unmeasured and not retry and samples.alternatives:
                    # Guessed shapes the source model runs on but a variant does not (a recogniser at 32x32): the
                    # variant is not at fault; try the next shapes the source model accepts.
                    try:
                        following = gate.Samples(samples.alternatives[0], samples.origin, samples.alternatives[1:],
                                                 guessed=True)
                        samples, references = gate.reference_for(following, prep.source.model.SerializeToString(),
                                                                 inputs)
                    except gate.NoSamples:
                        pass
                    else:
                        log.info("accuracy gate: %s failed on guessed shapes; trying %s", ", ".join(unmeasured),
                                 gate._shapes_text(samples.feeds[0]))
                        gate_warnings[:] = [w for w in gate_warnings if ": accuracy not measured on generated" not in w]
                        accuracy.clear()
                        tried.append(gate._shapes_text(samples.feeds[0]))
                        for stale in ("gate-feeds.npz", "gate-refs.npz"):  # measure_isolated's cached samples
                            os.remove(os.path.join(workdir, stale))
                        continue
                break
            if not retry:
                break
            if not precisions:
                raise NoVariantError("accuracy gate: no variant matches ONNX Runtime on the source model: "
                                     + "; ".join(d["reason"] for d in dropped))
    else:
        raise InternalError("accuracy gate: fallbacks did not settle; this is a bug in xrtc")
    if no_samples is not None and not allow_unverified:
        raise gate.NoSamples(f"accuracy gate cannot run: {no_samples}. (To build a bundle nobody checked, on "
                             "purpose: --allow-unverified; it is then marked unverified everywhere)") from no_samples
    if unmeasured and not unverified:
        shapes = "; ".join(tried)
        if not allow_unverified:
            raise AccuracyGateError(
                f"accuracy gate: {', '.join(unmeasured)} could not be checked: "
                + "; ".join(w for w in gate_warnings if w.split(":")[0] in unmeasured)
                + f". Pass the shapes you deploy ({gate.shape_flags(inputs) or '--shape NAME=DIMS'}, N your sizes; the "
                f"gate tried {shapes}) or real inputs with --calibration data.npz; to build a bundle nobody checked, "
                "on purpose: --allow-unverified")
        unverified = f"accuracy not measured for {', '.join(unmeasured)} on the generated samples ({shapes})"
    if unverified:
        gate_warnings.append(f"UNVERIFIED (--allow-unverified): {unverified}")
        log.warning("%s", gate_warnings[-1])
        if policy.execution.get("precision").mode == "fixed" and any(p != "fp32" for p in precisions.values()):
            raise AccuracyGateError(f"precision is fixed but the accuracy gate cannot run ({unverified}); pass "
                                    "--calibration data.npz or bind the dynamic dims with --shape")

    # Final bundle: the last built variants (the candidate's thread settings were on a copy), plus plan, decision
    # log and golden data.
    for variant in lowering.variants:
        if variant["id"] in accuracy and variant["id"] not in unmeasured:
            record = dict(accuracy[variant["id"]])
            record.pop("failures", None)
            record.pop("fp16_atol_needed", None)
            record.pop("atol_needed", None)
            variant["accuracy"] = record
    excluded = lowering.excluded + dropped
    payloads = list(lowering.payloads)
    golden = None
    if references is not None and not unmeasured:
        golden = {"reference": "onnxruntime CPU on the source model", "samples": samples.origin,
                  "inputs": [], "outputs": []}
        for i, (name, array) in enumerate(samples.feeds[0].items()):
            golden["inputs"].append({"name": name, "section": f"golden.in.{i}.npy"})
            payloads.append((f"golden.in.{i}.npy", gate.npy_bytes(array), True))
        for i, (name, array) in enumerate(references[0].items()):
            golden["outputs"].append({"name": name, "section": f"golden.out.{i}.npy"})
            payloads.append((f"golden.out.{i}.npy", gate.npy_bytes(array), True))

    from .decisions import decision_log

    shape_notes = [f"output {name!r}: the model declares {gate._shape_text(shape)}, but ONNX Runtime and every "
                   f"variant produce {gate._shape_text(next(o['shape'] for o in outputs if o['name'] == name))} on "
                   "the samples; the bundle declares the shape produced (the model's declaration is wrong: fix "
                   "it in the exporter)" for name, shape in declared]
    log_json = decision_log(plan, lowering.variants, excluded, fallbacks, plan.warnings + shape_notes + gate_warnings,
                            gate_fp32=set(prep.extra_fp32))
    payloads.append(("plan.json", plan.dumps().encode(), True))
    payloads.append(("decisions.json", json.dumps(log_json, sort_keys=True, indent=1).encode(), True))

    source = prep.source
    stem = os.path.splitext(source.name)[0]
    producer = " ".join(p for p in (source.model.producer_name, source.model.producer_version) if p)
    command = package.normalised_command(source.name, target)
    if not precompile:
        command += " --no-precompile"
    if plan.policy:
        command += " --policy/--plan (see provenance.policy and the plan section)"
    if prep.calibration:
        command += " --calibration (see provenance.calibration)"
    manifest = package.build_manifest(
        model_name=stem, inputs=inputs, outputs=outputs, variants=lowering.variants, excluded=excluded,
        source={"name": source.name, "sha256": source.sha256, "opset": model_io.default_opset(source.model),
                "producer": producer},
        tools=package.tool_versions(tools_seen), command=command,
        passes=[r.to_json() for r in prep.records + records], policy=plan.policy)
    manifest["plan"] = "plan.json"
    manifest["decisions"] = "decisions.json"
    if golden:
        manifest["golden"] = golden
    if unverified:
        manifest["unverified"] = {"reason": unverified, "requested": "--allow-unverified"}
    for name, shape in declared:
        next(o for o in manifest["model"]["outputs"] if o["name"] == name)["declared_shape"] = shape
    if prep.calibration:
        manifest["provenance"]["calibration"] = {"samples": len(prep.calibration), "sha256": prep.calibration_digest}
    with clock.stage("write-bundle", log):
        size = package.write_bundle(output, manifest, payloads, force)
    return CompileResult(path=output, size=size, manifest=manifest,
                         summary=_built_summary(manifest, policy, plan.warnings + gate_warnings))


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
        dtype = got[0].dtype.name
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


def _plan_with(plan, precisions: dict[str, str]):
    """A copy of the plan whose variants have the given precisions (engines missing from `precisions` excluded)."""
    import copy

    from xpuruntime.policy import Policy

    from .targets import get_target

    policy = Policy.from_dict(plan.policy)
    effective = copy.deepcopy(plan)
    for variant in effective.variants:
        if "excluded" in variant:
            continue
        if variant["id"] not in precisions:
            variant["dropped"] = True  # by the accuracy gate; recorded in `excluded` by compile_model
        elif precisions[variant["id"]] != variant["precision"]:
            variant["precision"] = precisions[variant["id"]]
            get_target(variant["target"]).variant_options(variant, policy, [])
    return effective
