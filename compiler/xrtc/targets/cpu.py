"""Lowering for `--target cpu`: two variants, `cpu-openvino` (OpenVINO IR) and `cpu-onnxruntime` (the graph
optimised offline by ONNX Runtime), ordered by a static rule (no timing at compile: bundles must be deterministic).

Ordering rule (recorded in each variant's `why`): OpenVINO first when it built and the estimated compute
(analysis.RULE) is >= OPENVINO_MIN_FLOPS; otherwise ONNX Runtime first. Measured on the 2-core dev machine
(ENVIRONMENT.md): OpenVINO f32 is 1.5-2.3x faster on convolutional models, ONNX Runtime 2-3x faster on tiny models
because of OpenVINO's per-call overhead.

A variant that cannot be built is left out and recorded in `excluded` with the engine's reason; if neither builds,
NoVariantError carries both reasons.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

import onnx

from ..analysis import ComputeEstimate, estimate_compute, format_flops
from ..errors import InternalError, NoVariantError

log = logging.getLogger("xrtc.targets.cpu")

# 300 MFLOP: bench/cpu_corpus.py on the corpus (2-core dev VM) put ONNX Runtime ahead below it (ppocr_mobile_v2_cls
# 152 MFLOP: 2.0x, oww_embedding 84 MFLOP: 2.5x) and OpenVINO ahead above it (ppocrv4_det 564 MFLOP ... 8.2 GFLOP).
OPENVINO_MIN_FLOPS = 300_000_000

# INFERENCE_PRECISION_HINT per variant precision: always set, because this CPU defaults to bf16 and a variant
# promises the precision it declares.
OPENVINO_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
ORT_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}  # not ALL: its layout transforms are machine specific

# Oldest engine releases a variant may load on (recorded as `requires.engine_version`).
OPENVINO_MIN_VERSION = ">=2026.0"
ORT_MIN_VERSION = ">=1.20"

_REASON_CHARS = 600


class BuildFailed(Exception):
    """An engine could not build or load its variant; the message is the (deterministic) reason for `excluded`."""


@dataclass
class CpuLowering:
    variants: list[dict]  # manifest entries, in preference order
    payloads: list[tuple[str, bytes, bool]]  # (section, bytes, compress?), in variant order
    excluded: list[dict]
    tools: dict[str, str] = field(default_factory=dict)  # versions of the engines tried (built or not)
    estimate: ComputeEstimate | None = None


def _condense(text: str, workdir: str) -> str:
    """One deterministic line from an engine's error: temp paths removed, whitespace collapsed, length capped.
    OpenVINO puts the useful part after "Summary:"; keep it first."""
    text = text.replace(workdir + os.sep, "").replace(workdir, ".")
    summary = ""
    if "Summary:" in text:
        summary = " ".join(text.split("Summary:", 1)[1].split()).lstrip("- ")
    flat = " ".join(text.split())
    out = f"{summary}; details: {flat}" if summary else flat
    return out if len(out) <= _REASON_CHARS else out[: _REASON_CHARS - 4].rsplit(" ", 1)[0] + " ..."  # whole words


def _build_onnxruntime(model_bytes: bytes, workdir: str, tools: dict[str, str]) -> list[tuple[str, bytes, bool]]:
    """Optimises offline with ONNX Runtime and checks the result loads. Raises BuildFailed with a reason.
    Records the engine version in `tools` (also when it fails: provenance says which version refused)."""
    import onnxruntime as ort

    tools["onnxruntime"] = ort.__version__
    path = os.path.join(workdir, "cpu-onnxruntime.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = path
    # Graph rewrites do not depend on thread counts; one thread keeps the offline step light.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped pybind errors
        raise BuildFailed(f"ONNX Runtime cannot optimise the model: {_condense(str(err), workdir)}") from err
    with open(path, "rb") as f:
        data = f.read()
    check = ort.SessionOptions()
    check.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    check.intra_op_num_threads = 1
    check.log_severity_level = 3
    try:
        ort.InferenceSession(data, check, providers=["CPUExecutionProvider"])
    except Exception as err:  # as above
        raise BuildFailed(f"ONNX Runtime cannot load its own optimised model: {_condense(str(err), workdir)}") \
            from err
    return [("cpu-onnxruntime.onnx", data, False)]


def _build_openvino(model_bytes: bytes, workdir: str, tools: dict[str, str],
                    precompile: bool = True, precision: str = "fp32",
                    prefix: str = "cpu-openvino") -> list[tuple[str, bytes, bool]]:
    """Converts in a child process (see _openvino_worker: determinism) and checks OpenVINO compiles it on CPU.
    Raises BuildFailed with a reason; records the engine version in `tools` when OpenVINO could be imported.
    With `precompile`, also returns the CPU-compiled blob (`cpu-openvino.blob`) and records in `tools` the build and
    CPU capabilities it is valid for (`openvino_blob`). `precision` fp16 stores fp16 weights and compiles with the
    f16 hint; bf16 compiles with the bf16 hint; int8 is a QDQ graph (OpenVINO runs its quantised parts as int8)."""
    if importlib.util.find_spec("openvino") is None:
        raise BuildFailed("OpenVINO is not installed; install it with `pip install xpuruntime[openvino]`")
    outdir = os.path.join(workdir, prefix)
    os.makedirs(outdir)
    with open(os.path.join(workdir, f"{prefix}.onnx"), "wb") as f:
        f.write(model_bytes)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    # Relative paths, run from workdir: engine messages then never contain the (random) temp folder.
    proc = subprocess.run([sys.executable, "-m", "xrtc.targets._openvino_worker", f"{prefix}.onnx", prefix,
                           *(["--precompile"] if precompile else []),
                           *(["--compress-fp16"] if precision == "fp16" else []),
                           "--hint", OPENVINO_HINTS.get(precision, "f32")],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if proc.stdout.strip() or proc.stderr.strip():
        log.debug("OpenVINO worker output:\n%s%s", proc.stdout, proc.stderr)
    result_path = os.path.join(outdir, "result.json")
    if proc.returncode != 0 or not os.path.exists(result_path):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        # The child's output may hold addresses or paths: log it, keep it out of the (deterministic) manifest.
        log.warning("OpenVINO worker died (%s); its last output:\n%s", how, proc.stderr[-2000:])
        raise BuildFailed(f"OpenVINO crashed while lowering the model ({how})")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    if result["version"]:
        tools["openvino"] = result["version"]
    if not result["ok"]:
        verb = {"import": "OpenVINO cannot be imported", "convert": "OpenVINO cannot convert the model",
                "save": "OpenVINO cannot save the IR", "compile": "OpenVINO cannot compile the IR for CPU"}
        raise BuildFailed(f"{verb.get(result['stage'], 'OpenVINO failed')}: {_condense(result['error'], workdir)}")
    with open(os.path.join(outdir, "model.xml"), "rb") as f:
        xml = f.read()
    with open(os.path.join(outdir, "model.bin"), "rb") as f:
        weights = f.read()
    payloads = [(f"{prefix}.xml", xml, True), (f"{prefix}.bin", weights, False)]
    if precompile and result.get("export_error"):
        log.warning("cpu-openvino has no precompiled blob (loads compile the IR): %s", result["export_error"])
    elif precompile:
        with open(os.path.join(outdir, "model.blob"), "rb") as f:
            payloads.append((f"{prefix}.blob", f.read(), False))
        tools["openvino_blob_capabilities"] = result["capabilities"]
    return payloads


def _variant(engine: str, payloads: list[tuple[str, bytes, bool]], why: str, tools: dict[str, str],
             planned: dict) -> dict:
    """The manifest entry; `planned` is the plan's variant (precision, engine options from the policy)."""
    if engine == "openvino":
        artifacts = {"model": "cpu-openvino.xml", "weights": "cpu-openvino.bin"}
        options, version = dict(planned["options"]), OPENVINO_MIN_VERSION
        if any(name == "cpu-openvino.blob" for name, _, _ in payloads):
            # Used instead of compiling the IR only on this exact build and CPU capability set (the plugin checks);
            # "xrt." options are the runtime's, never passed to OpenVINO.
            artifacts["compiled"] = "cpu-openvino.blob"
            options.update({"xrt.compiled_device": "CPU", "xrt.compiled_build": tools["openvino"],
                            "xrt.compiled_capabilities": tools["openvino_blob_capabilities"]})
    else:
        artifacts = {"model": "cpu-onnxruntime.onnx"}
        options, version = {**ORT_OPTIONS, **planned["options"]}, ORT_MIN_VERSION
    names = {name for name, _, _ in payloads}
    if set(artifacts.values()) != names:
        raise InternalError(f"artifacts {artifacts} do not match sections {sorted(names)}")
    return {"id": f"cpu-{engine}", "target": "cpu", "device": "cpu", "engine": engine,
            "precision": planned["precision"],
            "artifacts": dict(artifacts), "options": dict(options),
            "requires": {"engine": engine, "engine_version": version, "devices": ["CPU"]}, "why": why}


def order_engines(built: set[str], estimate: ComputeEstimate) -> list[tuple[str, str]]:
    """[(engine, why)] in preference order, by the module's rule; `built` are the engines that produced a variant."""
    est = f"est. {estimate.text()}"
    limit = format_flops(OPENVINO_MIN_FLOPS)
    # One short sentence each: the rule once (in the preferred variant's why), no figures from any one machine.
    rule = f"OpenVINO first when est. >= {limit}"
    if built == {"openvino", "onnxruntime"}:
        if estimate.flops >= OPENVINO_MIN_FLOPS:
            return [("openvino", f"preferred ({rule}): {est}; OpenVINO is faster on compute-heavy graphs"),
                    ("onnxruntime", f"second choice: {est} >= {limit}")]
        return [("onnxruntime", f"preferred ({rule}): {est}; ONNX Runtime has less per-call overhead"),
                ("openvino", f"second choice: {est} < {limit}")]
    if built == {"openvino"}:
        return [("openvino", f"only variant: ONNX Runtime could not build the model (see excluded); {est}")]
    if built == {"onnxruntime"}:
        return [("onnxruntime", f"only variant: OpenVINO could not build the model (see excluded); {est}")]
    return []


def openvino_cannot_carry(model: onnx.ModelProto) -> str | None:
    """Why OpenVINO variants are not built for a model whose inputs or outputs are strings, sequences, maps or
    optionals (the runtime hands OpenVINO only numeric tensors), or None."""
    from ..model_io import model_io

    inputs, outputs = model_io(model)
    for role, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if "type" in spec or spec.get("dtype") == "string":
                kind = "a string tensor" if "type" not in spec else f"a {next(iter(spec['type']))}"
                return (f"{role} {spec['name']!r} is {kind}; OpenVINO variants carry only numeric tensors "
                        "(ONNX Runtime runs this model)")
    return None


def lower(models: dict[str, onnx.ModelProto], plan, workdir: str, clock, precompile: bool = True) -> CpuLowering:
    """Builds the plan's CPU variants, each from its own graph (`models[variant id]`: precision passes differ per
    variant), into `workdir` (a private temp folder). Variants the plan excludes are recorded with the plan's
    reason. `precompile` adds OpenVINO's CPU-compiled blob (fast loads on the same build and CPU)."""
    planned = {v["engine"]: v for v in plan.variants if v["target"] == "cpu"}
    if not planned:
        return CpuLowering(variants=[], payloads=[], excluded=[])
    built_from = [models[v["id"]] for v in planned.values() if v["id"] in models]
    reference = models.get("cpu-openvino") or (built_from[0] if built_from else next(iter(models.values())))
    with clock.stage("estimate-compute", log):
        estimate = estimate_compute(reference)
    log.info("estimated compute: %s (%d ops counted, %d without shapes)", estimate.text(), estimate.counted,
             estimate.unknown)
    payloads: dict[str, list[tuple[str, bytes, bool]]] = {}
    excluded: list[dict] = []
    tools: dict[str, str] = {}
    for engine in ("openvino", "onnxruntime"):
        variant = planned[engine]
        if variant.get("dropped"):
            continue
        if "excluded" in variant:
            excluded.append({"target": "cpu", "engine": engine, "reason": f"policy: {variant['excluded']}"})
            continue
        if engine == "openvino":
            reason = openvino_cannot_carry(models[variant["id"]])
            if reason:
                log.warning("cpu-openvino left out: %s", reason)
                excluded.append({"target": "cpu", "engine": engine, "reason": reason})
                continue
        model_bytes = models[variant["id"]].SerializeToString()
        with clock.stage(f"lower-{engine}", log):
            try:
                if engine == "openvino":
                    payloads[engine] = _build_openvino(model_bytes, workdir, tools, precompile, variant["precision"])
                else:
                    payloads[engine] = _build_onnxruntime(model_bytes, workdir, tools)
            except BuildFailed as err:
                log.warning("cpu-%s left out: %s", engine, err)
                excluded.append({"target": "cpu", "engine": engine, "reason": str(err)})
    ordered = order_engines(set(payloads), estimate)
    blob_capabilities = tools.pop("openvino_blob_capabilities", None)
    blob_tools = dict(tools, openvino_blob_capabilities=blob_capabilities or "")
    variants = [_variant(engine, payloads[engine], why, blob_tools, planned[engine]) for engine, why in ordered]
    flat = [p for engine, _ in ordered for p in payloads[engine]]
    return CpuLowering(variants=variants, payloads=flat, excluded=excluded, tools=tools, estimate=estimate)
