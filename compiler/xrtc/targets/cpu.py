"""`--target cpu`: two variants, `cpu-openvino` (OpenVINO IR) and `cpu-onnxruntime` (the graph optimised offline by
ONNX Runtime), ordered by a static rule (no timing at compile: bundles must be deterministic).

Ordering rule (recorded in each variant's `why`): OpenVINO first when it built and the estimated compute
(analysis.RULE) is >= OPENVINO_MIN_FLOPS; otherwise ONNX Runtime first: OpenVINO is faster on compute-heavy
(convolutional) graphs, ONNX Runtime has less per-call overhead on small ones.

A variant that cannot be built is left out (a LeftOut, stage build-failed) with the engine's reason; if neither builds,
NoVariantError carries both reasons.
"""

from __future__ import annotations

import logging


from ..analysis import ComputeEstimate, estimate_compute, format_flops
from ..errors import InternalError
from .base import BuildFailed, BuiltVariant, LeftOut, Lowering, Target, VariantRequest
from .engines import onnxruntime as ort_engine
from .engines import openvino as ov_engine
from .engines.onnxruntime import ORT_MIN_VERSION, ORT_OPTIONS
from .engines.openvino import OPENVINO_MIN_VERSION

log = logging.getLogger("xrtc.targets.cpu")

# 300 MFLOP: the rule's threshold. Below it the per-call overhead dominates (ONNX Runtime ahead, e.g. on classifiers
# of ~100 MFLOP); above it the convolution kernels do (OpenVINO ahead). Measure yours with `xrtc run --bench`.
OPENVINO_MIN_FLOPS = 300_000_000


def _variant(engine: str, payloads: list[tuple[str, bytes, bool]], why: str, tools: dict[str, str],
             request: VariantRequest) -> dict:
    """The manifest entry; `request` carries the precision and the engine options from the policy."""
    if engine == "openvino":
        artifacts = {"model": "cpu-openvino.xml", "weights": "cpu-openvino.bin"}
        options, version = dict(request.options), OPENVINO_MIN_VERSION
        if any(name == "cpu-openvino.blob" for name, _, _ in payloads):
            # Used instead of compiling the IR only on this exact build and CPU capability set (the plugin checks);
            # "xrt." options are the runtime's, never passed to OpenVINO.
            artifacts["compiled"] = "cpu-openvino.blob"
            options.update({"xrt.compiled_device": "CPU", "xrt.compiled_build": tools["openvino"],
                            "xrt.compiled_capabilities": tools["openvino_blob_capabilities"]})
    else:
        artifacts = {"model": "cpu-onnxruntime.onnx"}
        options, version = {**ORT_OPTIONS, **request.options}, ORT_MIN_VERSION
    names = {name for name, _, _ in payloads}
    if set(artifacts.values()) != names:
        raise InternalError(f"artifacts {artifacts} do not match sections {sorted(names)}")
    return {"id": f"cpu-{engine}", "target": "cpu", "device": "cpu", "engine": engine,
            "precision": request.precision,
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


def lower(requests: list[VariantRequest], plan, workdir: str, clock, precompile: bool = True,
          archs=None) -> Lowering:
    """Builds the requested CPU variants, each from its own graph (`request.model`: precision passes differ per
    variant), into `workdir` (a private temp folder). `precompile` adds OpenVINO's CPU-compiled blob (fast loads on
    the same build and CPU)."""
    requested = {r.engine: r for r in requests}
    if not requested:
        return Lowering()
    reference = requested["openvino"].model if "openvino" in requested else requests[0].model
    with clock.stage("estimate-compute", log):
        estimate = estimate_compute(reference)
    log.info("estimated compute: %s (%d ops counted, %d without shapes)", estimate.text(), estimate.counted,
             estimate.unknown)
    payloads: dict[str, list[tuple[str, bytes, bool]]] = {}
    left_out: list[LeftOut] = []
    tools: dict[str, str] = {}
    for engine in ("openvino", "onnxruntime"):
        request = requested.get(engine)
        if request is None:
            continue
        if engine == "openvino":
            try:
                ov_engine.check_carries(request.model)
            except BuildFailed as err:
                log.warning("cpu-openvino left out: %s", err)
                left_out.append(_left_out(request, str(err)))
                continue
        model_bytes = request.model.SerializeToString()
        with clock.stage(f"lower-{engine}", log):
            try:
                if engine == "openvino":
                    payloads[engine] = ov_engine.build(model_bytes, workdir, tools, prefix=request.id,
                                                       precompile=precompile, precision=request.precision)
                else:
                    payloads[engine] = ort_engine.build(model_bytes, workdir, tools, prefix=request.id)
            except BuildFailed as err:
                log.warning("cpu-%s left out: %s", engine, err)
                left_out.append(_left_out(request, str(err)))
    ordered = order_engines(set(payloads), estimate)
    blob_capabilities = tools.pop("openvino_blob_capabilities", None)
    blob_tools = dict(tools, openvino_blob_capabilities=blob_capabilities or "")
    built = [BuiltVariant(_variant(engine, payloads[engine], why, blob_tools, requested[engine]), payloads[engine])
             for engine, why in ordered]
    return Lowering(built=built, left_out=left_out, tools=tools, estimate=estimate)


def _left_out(request: VariantRequest, reason: str) -> LeftOut:
    return LeftOut(target="cpu", engine=request.engine, reason=reason, stage="build-failed", device="cpu",
                   precision=request.precision)


_NO_TF32 = "TF32 is an NVIDIA tensor-core format; CPUs and NPUs have no TF32 math"


def variant_options(variant: dict, policy, warnings: list[str]) -> dict:
    """Engine options from the execution knobs (threads, memory) and the precision."""
    engine = variant["engine"]
    options: dict[str, str] = {}
    threads = policy.execution.get("threads")
    if threads.choice:
        options["INFERENCE_NUM_THREADS" if engine == "openvino" else "intra_op_num_threads"] = str(threads.choice)
    memory = policy.execution.get("memory")
    if memory.choice == "low":
        if engine == "onnxruntime":
            options["enable_cpu_mem_arena"] = "0"
        else:
            text = "not controllable on engine openvino: its CPU plugin manages its own memory"
            if memory.mode == "fixed":
                variant.setdefault("excluded", f"memory=low is fixed, but {text}")
            else:
                warnings.append(f"prefer memory=low on openvino: {text}")
                variant["notes"].append(f"memory=low: {text}")
    if engine == "openvino":
        options["INFERENCE_PRECISION_HINT"] = {"fp16": "f16", "bf16": "bf16"}.get(variant["precision"], "f32")
    variant["options"] = dict(sorted(options.items()))
    return variant


def _none_built(left_out: list[LeftOut]) -> str:
    reasons = "; ".join(f"{e.engine}: {e.reason}" for e in left_out)
    return (f"no CPU variant could be built: {reasons}. Neither engine runs the model as it is: replace the operators "
            "named above, or re-export the model with standard ONNX ops")


TARGET = Target(
    name="cpu", device="cpu", engines=("openvino", "onnxruntime"), default_precision="fp32",  # the reference
    precisions={"openvino": {"fp32": None, "fp16": None, "bf16": None, "int8": None, "tf32": _NO_TF32},
                "onnxruntime": {"fp32": None, "fp16": None, "int8": None, "tf32": _NO_TF32,
                                "bf16": "ONNX Runtime's CPU provider has bfloat16 kernels for only a few ops"}},
    kernels={"openvino": {"matmul": {"engine", "onednn"}, "conv": {"engine", "onednn"}, "attention": {"engine"}},
             "onnxruntime": {"matmul": {"engine", "mlas"}, "conv": {"engine", "mlas"}, "attention": {"engine"}}},
    engine_kernels={"openvino": "OpenVINO's CPU plugin picks its own oneDNN/JIT kernel per layer",
                    "onnxruntime": "ONNX Runtime's CPU provider runs its MLAS kernels and picks among them itself"},
    fallback={"fp16": "fp32", "bf16": "fp32", "int8": "fp32", "tf32": "fp32"},
    lower=lower, variant_options=variant_options,
    # fp16 on a CPU is a size choice more than a speed one: said where it is chosen (a rule, not a measurement).
    precision_notes={"fp16": "halves the weights, but expect no speed-up: a CPU has fp16 arithmetic only with "
                             "AVX512-FP16/AMX-FP16 (OpenVINO computes fp32 or bf16 elsewhere), and ONNX Runtime's CPU "
                             "provider has few fp16 kernels (it casts around the others, often slower than fp32); "
                             "compare with `xrtc run --bench`"},
    runs_on_host=True, none_built=_none_built)
