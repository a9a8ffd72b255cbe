"""Lowering for `--target npu-intel`: one variant, `npu-intel-openvino`: OpenVINO IR for the Intel NPU.

The NPU compiles its own blob at first load on the device (OpenVINO's NPU plugin); xrtc cannot precompile it here
(no NPU on the build machine, see ENVIRONMENT.md). What is checked at compile: OpenVINO converts the model (else
the ops it rejects are named), the IR reads back and compiles on OpenVINO's CPU plugin with the variant's own
properties, and the accuracy gate runs the IR on the CPU against ONNX Runtime (recorded as measured on CPU).
The variant declares `fallback_devices: ["cpu"]`: the same IR runs on OpenVINO CPU where there is no NPU.
"""

from __future__ import annotations

import logging

import onnx

from .cpu import BuildFailed, CpuLowering, _build_openvino, openvino_cannot_carry

log = logging.getLogger("xrtc.targets.npu_intel")

# OpenVINO releases with the NPU plugin features the variant relies on (static-shape fp16/int8 IR, CACHE_DIR), and
# below the next major (IR compatibility is promised within a year's releases).
OPENVINO_NPU_VERSION = ">=2025.0,<2027"


def lower(models: dict[str, onnx.ModelProto], plan, workdir: str, clock) -> CpuLowering:
    variant = next((v for v in plan.variants if v["target"] == "npu-intel"), None)
    if variant is None or variant.get("dropped"):
        return CpuLowering(variants=[], payloads=[], excluded=[])
    if "excluded" in variant:
        return CpuLowering(variants=[], payloads=[], excluded=[
            {"target": "npu-intel", "engine": "openvino", "reason": f"policy: {variant['excluded']}"}])
    reason = openvino_cannot_carry(models[variant["id"]])
    if reason:  # strings, sequences, maps, optionals: OpenVINO variants carry numeric tensors only
        log.warning("%s left out: %s", variant["id"], reason)
        return CpuLowering(variants=[], payloads=[], excluded=[
            {"target": "npu-intel", "engine": "openvino", "reason": reason}])
    tools: dict[str, str] = {}
    prefix = variant["id"]
    with clock.stage(f"lower-{prefix}", log):
        try:
            payloads = _build_openvino(models[variant["id"]].SerializeToString(), workdir, tools, precompile=False,
                                       precision=variant["precision"], prefix=prefix)
        except BuildFailed as err:
            log.warning("%s left out: %s", prefix, err)
            return CpuLowering(variants=[], payloads=[], tools=tools,
                               excluded=[{"target": "npu-intel", "engine": "openvino", "reason": str(err)}])
    entry = {"id": prefix, "target": "npu-intel", "device": "npu", "engine": "openvino",
             "precision": variant["precision"],
             "artifacts": {"model": f"{prefix}.xml", "weights": f"{prefix}.bin"},
             "options": dict(variant["options"]),
             "requires": {"engine": "openvino", "engine_version": OPENVINO_NPU_VERSION, "devices": ["NPU"]},
             "fallback_devices": ["cpu"],
             "why": ("target npu-intel: OpenVINO IR with static shapes, compiled for the NPU on the device at first "
                     "load (cached with cache_dir); falls back to OpenVINO CPU where no NPU is present")}
    return CpuLowering(variants=[entry], payloads=payloads, excluded=[], tools=tools)
