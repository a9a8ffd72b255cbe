"""The accuracy gate's decisions: `settle()` lowers every variant, runs each through the runtime against ONNX Runtime
on the source model, and retries until the outcome holds: a `prefer` precision over tolerance falls back along its
target's chain (ONNX Runtime fp16: first a per-node fallback found by bisection), a variant that crashes or stays
over tolerance at its target's highest precision is dropped, guessed sample shapes a variant refuses move on to the
next candidate. It returns what it decided as typed values (`Settled`: the built variants, the variants left out
and at which stage, the outcome per variant; xrtc.variants); package.assemble turns them into the manifest.

(Kept beside gate.py, which measures, rather than in it: gate.py holds the sample making and comparison.)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

import onnx

from . import gate
from .errors import AccuracyGateError, InternalError, NoVariantError, PolicyViolationError
from .progress import Clock
from .variants import BuiltVariant, GateOutcome, LeftOut, Lowering, VariantRequest

log = logging.getLogger("xrtc.build")


@dataclass
class Settled:
    """What the gate decided. `built`: the bundle's variants, in preference order (the last lowering); `left_out`:
    the variants not in it, the lowering's (policy-excluded, build-failed) then the gate's (gate-dropped), in that
    order; `outcomes`: variant id -> the gate's outcome, for every variant built or dropped; `gate_fp32`: nodes the
    per-node fp16 fallback kept in fp32; `records`: the precision passes' PassRecords; `tools`: engine versions seen;
    `samples`/`references`: the samples measured on and ONNX Runtime's outputs (None without samples); `tried`:
    sample shapes tried; `warnings`: for the decision log; `unverified`: why the bundle is unverified ("" when it is
    not)."""

    built: list[BuiltVariant]
    left_out: list[LeftOut]
    outcomes: dict[str, GateOutcome]
    gate_fp32: list[str]
    records: list
    tools: dict[str, str]
    samples: object
    references: list[dict] | None
    tried: list[str]
    warnings: list[str] = field(default_factory=list)
    unverified: str = ""

    @property
    def unmeasured(self) -> list[str]:
        """Built variants kept without a measurement."""
        return [b.id for b in self.built if self.outcomes[b.id].verdict == "unmeasured"]

    @property
    def fallbacks(self) -> dict[str, str]:
        """Variant id -> why the gate rebuilt it (the last rebuild), for the variants it rebuilt."""
        return {vid: o.fallback for vid, o in self.outcomes.items() if o.fallback}


def _fallback_precision(target: str, precision: str) -> str | None:
    """The precision the gate rebuilds a variant of `target` at when `precision` is over tolerance (its chain)."""
    from .targets import get_target

    return get_target(target).fallback_for(precision)


def _requests(plan, precisions: dict[str, str], models: dict) -> list[VariantRequest]:
    """The variants to build, in the plan's order: those the plan did not exclude and the gate has not dropped (the
    keys of `precisions`), at the precision the gate settled on; where that differs from the plan's, the target sets
    the engine options anew for it (on a copy: the plan is what the bundle records)."""
    import copy

    from xpuruntime.policy import Policy

    from .targets import get_target

    policy = None
    requests = []
    for planned in plan.variants:
        if "excluded" in planned or planned["id"] not in precisions:
            continue
        precision = precisions[planned["id"]]
        if precision != planned["precision"]:
            policy = policy or Policy.from_dict(plan.policy)
            planned = dict(copy.deepcopy(planned), precision=precision)
            get_target(planned["target"]).variant_options(planned, policy, [])
        requests.append(VariantRequest.from_plan(planned, models[planned["id"]]))
    return requests


def _lower_all(requests: list[VariantRequest], plan, targets: list[str], workdir: str, clock, precompile: bool,
               archs=None) -> Lowering:
    """Every target's lowering of its requested variants, merged in the order of --target; the plan's excluded
    variants are recorded here (stage policy-excluded), among the target's own left-outs in its engine order."""
    from .targets import get_target

    merged = Lowering()
    for t in targets:
        target = get_target(t)
        mine = [r for r in requests if r.target == t]
        lowering = target.lower(mine, plan, workdir, clock, precompile=precompile, archs=archs) if mine else Lowering()
        excluded = [LeftOut(target=t, engine=v["engine"], reason=f"policy: {v['excluded']}", stage="policy-excluded",
                            device=v["device"], precision=v["precision"])
                    for v in plan.variants if v["target"] == t and "excluded" in v]
        rank = {engine: i for i, engine in enumerate(target.engines)}
        lowering.left_out = sorted(excluded + lowering.left_out, key=lambda e: rank.get(e.engine, len(rank)))
        merged.merge(lowering)
    if not merged.built:
        only = get_target(targets[0]) if len(targets) == 1 else None
        if only is not None and only.none_built is not None:
            raise NoVariantError(only.none_built(merged.left_out))
        reasons = "; ".join(f"{e.id}: {e.reason}" for e in merged.left_out)
        raise NoVariantError(f"no variant could be built for --target {','.join(targets)}: {reasons}")
    return merged


class _Fallback(Exception):
    """A precision pass cannot convert the model and the knob is `prefer`: rebuild at fp32 (message = reason)."""


def _variant_models(prep, precisions: dict[str, str], gate_fp32: list[str], clock: Clock,
                    notes: list[str]) -> tuple[dict, list]:
    """The graph each engine gets, after its precision passes (`gate_fp32`: nodes the per-node fallback keeps in fp32
    on top of the plan's); returns (variant id -> model, pass records). Raises _Fallback when a precision pass cannot
    convert the model under a `prefer` knob."""
    from . import passes
    from .passes.precision import PrecisionPassFailed

    fp32_nodes = prep.plan.nodes_at("fp32")
    models: dict[str, onnx.ModelProto] = {}
    records = []
    cache: dict[str, onnx.ModelProto] = {}
    from .targets import get_target

    engines = {v["id"]: v["engine"] for v in prep.plan.variants}
    own = {v["id"] for v in prep.plan.variants if v["engine"] in get_target(v["target"]).converts_precision}
    for vid, precision in precisions.items():
        engine = engines[vid]
        if vid in own:
            models[vid] = prep.optimised  # its lowering converts the fp32 graph itself
        elif engine == "onnxruntime" and precision == "fp16":
            key = "fp16"
            if key not in cache:
                if prep.validator is not None:
                    prep.validator.precision = "fp16"
                blocked = sorted(set(fp32_nodes) | set(gate_fp32))
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


def _fp16_nodes_to_keep_fp32(prep, samples: list[dict], references: list[dict], tol: dict) -> list[str]:
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


def _candidate(lowering: Lowering, manifest_base: dict, path: str) -> None:
    """Writes the candidate bundle the gate runs: the built variants, one engine thread each."""
    import xrtpkg

    from .targets import get_target

    variants = []
    for v in lowering.entries:
        v = json.loads(json.dumps(v))
        key = "INFERENCE_NUM_THREADS" if v["engine"] == "openvino" else "intra_op_num_threads"
        v["options"][key] = "1"
        v["options"].update(get_target(v["target"]).gate_options)  # what the gate can run here (see Target)
        variants.append(v)
    xrtpkg.write(path, dict(manifest_base, variants=variants), lowering.payloads, force=True)


def _measure(built: BuiltVariant, lowering: Lowering, model, samples: list[dict], references: list[dict], tol: dict,
             workdir: str, candidate: str) -> dict:
    """One measurement of a built variant (the gate record): by its target's own gate where it has one, else through
    the runtime on the candidate bundle (plus fp16 arithmetic emulated on its graph where the target asks)."""
    from .targets import get_target

    target = get_target(built.target)
    if target.gate is not None:
        return target.gate(lowering, built.entry, samples, references, tol, workdir, candidate)
    record = gate.measure_isolated(workdir, candidate, built.id, samples, references, tol["rtol"], tol["atol"])
    if target.emulate_fp16 and not (record.get("error") or record.get("crashed")):
        record = _with_fp16_emulation(built.id, record, model, samples, references, tol)
    return record


def settle(prep, targets: list[str], inputs: list[dict], outputs: list[dict], samples, references,
           no_samples: Exception | None, clock: Clock, precompile: bool, archs, allow_unverified: bool) -> Settled:
    """Lowers, measures and retries until the gate's outcome holds (see the module docstring). `samples` and
    `references` are None when no samples could be made (`no_samples` says why): the variants are then lowered
    once and the bundle is unverified if `allow_unverified`, else gate.NoSamples is raised. Raises
    AccuracyGateError / NoVariantError / PolicyViolationError as the policy's modes require."""
    from . import package
    from .targets import get_target

    plan, policy = prep.plan, prep.policy
    unverified = f"the accuracy gate could not run: {no_samples}" if no_samples is not None else ""
    tried = [gate._shapes_text(samples.feeds[0])] if references is not None else []  # sample shapes measured
    precisions = {v["id"]: v["precision"] for v in plan.variants if "excluded" not in v}
    fallbacks: dict[str, str] = {}
    # Passes undone by the pass manager (invalid output, or numerics under --validate-passes): in the decision log.
    gate_warnings: list[str] = [f"pass {r.name} rolled back: {r.rolled_back}" for r in prep.records if r.rolled_back]
    accuracy: dict[str, dict] = {}  # variant id -> its last measurement (the gate record)
    records: list = []
    dropped: list[LeftOut] = []
    outcomes: dict[str, GateOutcome] = {}  # the dropped variants' (the built ones' are made at the end)
    gate_fp32: list[str] = []  # nodes the per-node fp16 fallback keeps in fp32
    tools_seen: dict[str, str] = {}
    unmeasured: dict[str, str] = {}  # variant id -> why it is kept without a measurement
    # Each retry lowers a precision, drops a variant, or moves guessed sample shapes to the next candidate.
    for _attempt in range(2 * len(plan.variants) + 1 + len(gate.DYNAMIC_FILLS) + 6):
        try:
            models, records = _variant_models(prep, precisions, gate_fp32, clock, gate_warnings)
        except _Fallback as fallback:
            target_of_id = {v["id"]: v["target"] for v in plan.variants}
            for vid, precision in list(precisions.items()):
                if precision == "int8":
                    precisions[vid] = _fallback_precision(target_of_id[vid], "int8")
                    fallbacks[vid] = f"{fallback}; rebuilt {precisions[vid]}"
            gate_warnings.append(f"{fallback}; all int8 variants rebuilt fp32")
            log.warning("%s", gate_warnings[-1])
            models, records = _variant_models(prep, precisions, gate_fp32, clock, gate_warnings)
        unmeasured.clear()
        with tempfile.TemporaryDirectory(prefix="xrtc-") as workdir:
            lowering = _lower_all(_requests(plan, precisions, models), plan, targets, workdir, clock, precompile,
                                  archs)
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
                for built in lowering.built:
                    vid, precision = built.id, built.precision
                    tol = policy.tolerance_for(precision)
                    target_of = get_target(built.target)
                    with clock.stage(f"gate-{vid}", log):
                        record = _measure(built, lowering, models[vid], samples.feeds, references, tol, workdir,
                                          candidate)
                    if record.get("passed") is None:  # cuda variant, no device here and too big to interpret
                        unmeasured[vid] = f"accuracy not measured: {record['not_run']}"
                        gate_warnings.append(f"{vid}: {unmeasured[vid]}; run `xrtc verify` on a machine with a CUDA "
                                             "device")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        continue
                    accuracy[vid] = record
                    log.info("gate %s (%s): %s, max abs err %s", vid, precision,
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
                        unmeasured[vid] = f"accuracy not measured on generated samples ({samples.origin}): {why}"
                        gate_warnings.append(f"{vid}: {unmeasured[vid]}")
                        log.info("accuracy gate: %s", gate_warnings[-1])  # the outcome (next shapes, error) says it
                        continue
                    elif record.get("error"):
                        drop = f"fails on the calibration samples ({why})"
                    elif _fallback_precision(built.target, precision):
                        if policy.execution.get("precision").mode == "fixed":
                            raise AccuracyGateError(
                                f"accuracy gate: {vid} at {precision} is over the tolerance (rtol "
                                f"{tol['rtol']:g}, atol {tol['atol']:g}): {why}. precision is fixed: loosen "
                                "[tolerance], "
                                "keep more ops in fp32 ([precision] keep_fp32_ops / [nodes]), or make precision "
                                "\"prefer\"")
                        if built.engine == "onnxruntime" and precision == "fp16" and not gate_fp32 and \
                                built.engine not in target_of.converts_precision:
                            with clock.stage("per-node-fallback", log):
                                found = _fp16_nodes_to_keep_fp32(prep, samples.feeds, references, tol)
                            if found:
                                gate_fp32 = found
                                fallbacks[vid] = (f"fp16 over tolerance ({why}); per-node fallback kept "
                                                  f"{len(found)} node(s) in fp32: {', '.join(found[:8])}"
                                                  f"{' ...' if len(found) > 8 else ''}")
                                gate_warnings.append(f"{vid}: {fallbacks[vid]}")
                                log.warning("accuracy gate: %s", gate_warnings[-1])
                                retry = True
                                continue
                        to = _fallback_precision(built.target, precision)
                        fallbacks[vid] = f"{precision} over tolerance ({why}); rebuilt {to}"
                        gate_warnings.append(f"{vid}: {fallbacks[vid]}")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        precisions[vid] = to
                        retry = True
                    else:  # at the highest precision its target has and still off the reference: never ship it
                        drop = f"{precision} output over tolerance ({why})" + \
                            ("" if precision == "fp32" else f"; {built.target} has no higher precision")
                        if target_of.emulate_fp16 and "fp16_atol_needed" in record:
                            drift = gate.fp16_drift(models[vid], samples.feeds[0])
                            drop += ". " + gate.fp16_advice(vid, targets, drift, record["fp16_atol_needed"],
                                                            tol["rtol"])
                    if drop:
                        gate_warnings.append(f"{vid} left out: {drop}")
                        log.warning("accuracy gate: %s", gate_warnings[-1])
                        dropped.append(LeftOut(target=built.target, engine=built.engine,
                                               reason=f"accuracy gate: {drop}", stage="gate-dropped",
                                               device=built.entry["device"], precision=precision))
                        outcomes[vid] = GateOutcome(vid, "dropped", precision, record=record,
                                                    fallback=fallbacks.get(vid), reason=drop)
                        precisions.pop(vid)
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
                                     + "; ".join(d.reason for d in dropped))
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

    for built in lowering.built:
        vid = built.id
        if vid in unmeasured or references is None:
            outcomes[vid] = GateOutcome(vid, "unmeasured", built.precision, record=accuracy.get(vid),
                                        fallback=fallbacks.get(vid), reason=unmeasured.get(vid, unverified))
        else:
            outcomes[vid] = GateOutcome(vid, "fell-back" if vid in fallbacks else "passed", built.precision,
                                        record=accuracy[vid], fallback=fallbacks.get(vid))
    return Settled(built=lowering.built, left_out=lowering.left_out + dropped, outcomes=outcomes,
                   gate_fp32=gate_fp32, records=records, tools=tools_seen, samples=samples, references=references,
                   tried=tried, warnings=gate_warnings, unverified=unverified)
