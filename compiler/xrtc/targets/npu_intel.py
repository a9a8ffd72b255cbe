"""Lowering for `--target npu-intel`: one variant, `npu-intel-openvino`: OpenVINO IR for the Intel NPU.

The NPU compiles its own blob at first load on the device (OpenVINO's NPU plugin); xrtc cannot precompile it here
(that needs the NPU itself). What is checked at compile: OpenVINO converts the model (else
the ops it rejects are named), the IR reads back and compiles on OpenVINO's CPU plugin with the variant's own
properties, and the accuracy gate runs the IR on the CPU against ONNX Runtime (recorded as measured on CPU).
The variant declares `fallback_devices: ["cpu"]`: the same IR runs on OpenVINO CPU where there is no NPU.
"""

from __future__ import annotations

import logging


from .base import BuildFailed, BuiltVariant, LeftOut, Lowering, Target, VariantRequest
from .engines import openvino as ov_engine

log = logging.getLogger("xrtc.targets.npu_intel")

# OpenVINO releases with the NPU plugin features the variant relies on (static-shape fp16/int8 IR, CACHE_DIR), and
# below the next major (IR compatibility is promised within a year's releases).
OPENVINO_NPU_VERSION = ">=2025.0,<2027"


def lower(requests: list[VariantRequest], plan, workdir: str, clock, precompile: bool = True,
          archs=None) -> Lowering:
    """The requested npu-intel variant; `precompile` does not apply (the NPU compiles its blob on the device)."""
    request = next((r for r in requests if r.target == "npu-intel"), None)
    if request is None:
        return Lowering()
    try:  # strings, sequences, maps, optionals: OpenVINO variants carry numeric tensors only
        ov_engine.check_carries(request.model)
    except BuildFailed as err:
        log.warning("%s left out: %s", request.id, err)
        return Lowering(left_out=[_left_out(request, str(err))])
    tools: dict[str, str] = {}
    prefix = request.id
    with clock.stage(f"lower-{prefix}", log):
        try:
            payloads = ov_engine.build(request.model.SerializeToString(), workdir, tools, prefix=prefix,
                                       precompile=False, precision=request.precision)
        except BuildFailed as err:
            log.warning("%s left out: %s", prefix, err)
            return Lowering(left_out=[_left_out(request, str(err))], tools=tools)
    entry = {"id": prefix, "target": "npu-intel", "device": "npu", "engine": "openvino",
             "precision": request.precision,
             "artifacts": {"model": f"{prefix}.xml", "weights": f"{prefix}.bin"},
             "options": dict(request.options),
             "requires": {"engine": "openvino", "engine_version": OPENVINO_NPU_VERSION, "devices": ["NPU"]},
             "fallback_devices": ["cpu"],
             "why": ("target npu-intel: OpenVINO IR with static shapes, compiled for the NPU on the device at first "
                     "load (cached with cache_dir); falls back to OpenVINO CPU where no NPU is present")}
    return Lowering(built=[BuiltVariant(entry, payloads)], tools=tools)


def _left_out(request: VariantRequest, reason: str) -> LeftOut:
    return LeftOut(target="npu-intel", engine="openvino", reason=reason, stage="build-failed", device="npu",
                   precision=request.precision)


def variant_options(variant: dict, policy, warnings: list[str]) -> dict:
    """Only properties every OpenVINO device accepts: the variant may run on its fallback device (cpu)."""
    # f16 for every precision: the NPU computes fp16 (int8 variants are QDQ graphs whose float parts run fp16).
    variant["options"] = {"INFERENCE_PRECISION_HINT": "f16", "PERFORMANCE_HINT": "LATENCY"}
    return variant


_NO_TF32 = "TF32 is an NVIDIA tensor-core format; CPUs and NPUs have no TF32 math"

TARGET = Target(
    name="npu-intel", device="npu", engines=("openvino",), default_precision="fp16",  # the NPU's native float
    precisions={"openvino": {"fp16": None, "int8": None, "tf32": _NO_TF32,
                             "fp32": "the Intel NPU computes in fp16 (or int8); it has no fp32 math",
                             "bf16": "xrtc does not build bf16 for the Intel NPU (fp16 is its native float)"}},
    kernels={"openvino": {"matmul": {"engine"}, "conv": {"engine"}, "attention": {"engine"}}},
    engine_kernels={"openvino": "the NPU compiler (OpenVINO's NPU plugin) schedules its own kernels"},
    fallback={"int8": "fp16"},  # no fp32 on the NPU: int8 falls back to fp16, and no further
    lower=lower, variant_options=variant_options,
    static_shapes="the NPU compiles for one shape",
    # The gate runs the IR on the CPU at f32 compute (its f16 hint there gives fp16, bf16 or f32 arithmetic by the
    # CPU's units) and measures the NPU's fp16 arithmetic by emulation (gate.FP16_EMULATION).
    gate_options={"INFERENCE_PRECISION_HINT": "f32"}, emulate_fp16=True)
