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

from ..analysis import RULE, ComputeEstimate, estimate_compute, format_flops
from ..errors import InternalError, NoVariantError

log = logging.getLogger("xrtc.targets.cpu")

OPENVINO_MIN_FLOPS = 20_000_000  # 20 MFLOP

OPENVINO_OPTIONS = {"INFERENCE_PRECISION_HINT": "f32"}  # this CPU defaults to bf16; variants promise fp32
ORT_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}  # not ALL: its layout transforms are machine specific

_REASON_CHARS = 600


@dataclass
class CpuLowering:
    variants: list[dict]  # manifest entries, in preference order
    payloads: list[tuple[str, bytes, bool]]  # (section, bytes, compress?), in variant order
    excluded: list[dict]
    tools: dict[str, str] = field(default_factory=dict)  # engine versions used
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
    return out if len(out) <= _REASON_CHARS else out[: _REASON_CHARS - 3] + "..."


def _build_onnxruntime(model_bytes: bytes, workdir: str) -> tuple[list[tuple[str, bytes, bool]], str]:
    """Optimises offline with ONNX Runtime and checks the result loads. Raises RuntimeError with a reason."""
    import onnxruntime as ort

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
        raise RuntimeError(f"ONNX Runtime cannot optimise the model: {_condense(str(err), workdir)}") from err
    with open(path, "rb") as f:
        data = f.read()
    check = ort.SessionOptions()
    check.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    check.intra_op_num_threads = 1
    check.log_severity_level = 3
    try:
        ort.InferenceSession(data, check, providers=["CPUExecutionProvider"])
    except Exception as err:  # as above
        raise RuntimeError(f"ONNX Runtime cannot load its own optimised model: {_condense(str(err), workdir)}") \
            from err
    return [("cpu-onnxruntime.onnx", data, False)], ort.__version__


def _build_openvino(model_bytes: bytes, workdir: str) -> tuple[list[tuple[str, bytes, bool]], str]:
    """Converts in a child process (see _openvino_worker: determinism) and checks OpenVINO compiles it on CPU."""
    if importlib.util.find_spec("openvino") is None:
        raise RuntimeError("OpenVINO is not installed; install it with `pip install xpuruntime[openvino]`")
    outdir = os.path.join(workdir, "openvino")
    os.makedirs(outdir)
    with open(os.path.join(workdir, "model.onnx"), "wb") as f:
        f.write(model_bytes)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    # Relative paths, run from workdir: engine messages then never contain the (random) temp folder.
    proc = subprocess.run([sys.executable, "-m", "xrtc.targets._openvino_worker", "model.onnx", "openvino"],
                          cwd=workdir, env=env, capture_output=True, text=True, check=False)
    if proc.stdout.strip() or proc.stderr.strip():
        log.debug("OpenVINO worker output:\n%s%s", proc.stdout, proc.stderr)
    result_path = os.path.join(outdir, "result.json")
    if proc.returncode != 0 or not os.path.exists(result_path):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise RuntimeError(f"OpenVINO crashed while lowering the model ({how})")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    if not result["ok"]:
        verb = {"import": "OpenVINO cannot be imported", "convert": "OpenVINO cannot convert the model",
                "save": "OpenVINO cannot save the IR", "compile": "OpenVINO cannot compile the IR for CPU"}
        raise RuntimeError(f"{verb.get(result['stage'], 'OpenVINO failed')}: {_condense(result['error'], workdir)}")
    with open(os.path.join(outdir, "model.xml"), "rb") as f:
        xml = f.read()
    with open(os.path.join(outdir, "model.bin"), "rb") as f:
        weights = f.read()
    return [("cpu-openvino.xml", xml, True), ("cpu-openvino.bin", weights, False)], result["version"]


def _variant(engine: str, payloads: list[tuple[str, bytes, bool]], why: str) -> dict:
    if engine == "openvino":
        artifacts = {"model": "cpu-openvino.xml", "weights": "cpu-openvino.bin"}
        options, version = OPENVINO_OPTIONS, ">=2026.0"
    else:
        artifacts = {"model": "cpu-onnxruntime.onnx"}
        options, version = ORT_OPTIONS, ">=1.20"
    names = {name for name, _, _ in payloads}
    if set(artifacts.values()) != names:
        raise InternalError(f"artifacts {artifacts} do not match sections {sorted(names)}")
    return {"id": f"cpu-{engine}", "target": "cpu", "device": "cpu", "engine": engine, "precision": "fp32",
            "artifacts": dict(artifacts), "options": dict(options),
            "requires": {"engine": engine, "engine_version": version, "devices": ["CPU"]}, "why": why}


def order_engines(built: set[str], estimate: ComputeEstimate) -> list[tuple[str, str]]:
    """[(engine, why)] in preference order, by the module's rule; `built` are the engines that produced a variant."""
    est = f"est. {estimate.text()}"
    limit = format_flops(OPENVINO_MIN_FLOPS)
    heavy = estimate.flops >= OPENVINO_MIN_FLOPS
    rule = f"rule: openvino first when it builds and {RULE} is >= {limit}, else onnxruntime first"
    if built == {"openvino", "onnxruntime"}:
        if heavy:
            return [("openvino", f"preferred: {est} >= {limit}; OpenVINO is faster on compute-heavy graphs on CPU "
                                 f"(1.5-2.3x measured on convolutional models) ({rule})"),
                    ("onnxruntime", f"second choice: {est} >= {limit}, where OpenVINO is faster; ONNX Runtime is "
                                    f"the fallback ({rule})")]
        return [("onnxruntime", f"preferred: {est} < {limit}; ONNX Runtime has less per-call overhead, 2-3x faster "
                                f"than OpenVINO on small graphs ({rule})"),
                ("openvino", f"second choice: {est} < {limit}, where OpenVINO's per-call overhead dominates ({rule})")]
    if built == {"openvino"}:
        return [("openvino", f"only variant: ONNX Runtime could not build the model (see excluded); {est}")]
    if built == {"onnxruntime"}:
        return [("onnxruntime", f"only variant: OpenVINO could not build the model (see excluded); {est}")]
    return []


def lower(model: onnx.ModelProto, workdir: str, clock) -> CpuLowering:
    """Builds both CPU variants from the optimised model into `workdir` (a private temp folder)."""
    model_bytes = model.SerializeToString()
    with clock.stage("estimate-compute", log):
        estimate = estimate_compute(model)
    log.info("estimated compute: %s (%d ops counted, %d without shapes)", estimate.text(), estimate.counted,
             estimate.unknown)
    payloads: dict[str, list[tuple[str, bytes, bool]]] = {}
    excluded: list[dict] = []
    tools: dict[str, str] = {}
    builders = (("openvino", _build_openvino), ("onnxruntime", _build_onnxruntime))
    for engine, build in builders:
        with clock.stage(f"lower-{engine}", log):
            try:
                payloads[engine], tools[engine] = build(model_bytes, workdir)
            except RuntimeError as err:
                log.warning("cpu-%s left out: %s", engine, err)
                excluded.append({"target": "cpu", "engine": engine, "reason": str(err)})
    ordered = order_engines(set(payloads), estimate)
    if not ordered:
        reasons = "; ".join(f"{e['engine']}: {e['reason']}" for e in excluded)
        raise NoVariantError(f"no CPU variant could be built: {reasons}")
    variants = [_variant(engine, payloads[engine], why) for engine, why in ordered]
    flat = [p for engine, _ in ordered for p in payloads[engine]]
    return CpuLowering(variants=variants, payloads=flat, excluded=excluded, tools=tools, estimate=estimate)
