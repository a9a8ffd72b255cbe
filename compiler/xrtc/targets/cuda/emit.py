"""Program -> the cuda variant's three sections (runtime_cpp/backends/cuda/PLAN.md): the plan JSON, the weights
blob (each tensor 256-byte aligned, in its run dtype) and the kernels blob (each image 64-byte aligned, identical
images stored once), with the static memory plan. Deterministic: same program -> same bytes."""

from __future__ import annotations

import json

import numpy as np

from . import aot
from .ir import GemmStep, KernelStep

WEIGHT_ALIGN = 256
ARENA_ALIGN = 256
IMAGE_ALIGN = 64


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def memory_plan(prog) -> tuple[dict[int, int], int, dict]:
    """Arena offsets for the arena buffers: lifetimes from the step that first writes a buffer to the last step
    that reads it; greedy by size (largest first, lowest offset that overlaps no live buffer). Returns (offsets,
    peak bytes, stats)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, step in enumerate(prog.steps):
        touched = _step_buffers(step)
        for b in touched:
            first.setdefault(b, i)
            last[b] = i
    arena = [b for b, buf in enumerate(prog.buffers) if buf.kind == "arena" and b in first]
    order = sorted(arena, key=lambda b: (-prog.buffers[b].nbytes, b))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets: dict[int, int] = {}
    for b in order:
        size = _align(max(prog.buffers[b].nbytes, 1), ARENA_ALIGN)
        lo, hi = first[b], last[b]
        clashes = sorted((o, e) for o, e, f, l in placed if not (l < lo or f > hi))
        offset = 0
        for o, e in clashes:
            if offset + size <= o:
                break
            offset = max(offset, e)
        offsets[b] = offset
        placed.append((offset, offset + size, lo, hi))
    peak = max((e for _, e, _, _ in placed), default=0)
    total = sum(_align(prog.buffers[b].nbytes, ARENA_ALIGN) for b in arena)
    return offsets, peak, {"arena_buffers": len(arena), "sum_bytes": total, "peak_bytes": peak}


def _step_buffers(step) -> list[int]:
    if isinstance(step, GemmStep):
        return [step.a, step.b, step.c] + ([step.bias] if step.bias is not None else [])
    return list(step.params)


def emit(prog, archs: list[str]) -> tuple[dict, bytes, bytes, list[dict]]:
    """(plan dict, weights bytes, kernels bytes, kernel records for explain)."""
    offsets, peak, stats = memory_plan(prog)
    weights = bytearray()
    tensors = []
    for b, buf in enumerate(prog.buffers):
        entry = {"name": buf.name, "dtype": buf.dtype, "shape": list(buf.shape), "storage": buf.kind,
                 "offset": 0, "bytes_max": buf.nbytes}
        if buf.kind == "weight":
            weights += b"\0" * (_align(len(weights), WEIGHT_ALIGN) - len(weights))
            entry["offset"] = len(weights)
            weights += np.ascontiguousarray(buf.data).tobytes()
        elif buf.kind == "arena":
            entry["offset"] = offsets.get(b, 0)
        tensors.append(entry)

    images = bytearray()
    image_at: dict[bytes, list[int]] = {}

    def put(data: bytes) -> list[int]:
        if data not in image_at:
            images.extend(b"\0" * (_align(len(images), IMAGE_ALIGN) - len(images)))
            image_at[data] = [len(images), len(data)]
            images.extend(data)
        return list(image_at[data])

    kernels, gemms, launches, records = [], [], [], []
    dtypes = prog.dtypes()
    compute = {"fp16": "32F", "fp32": "32F", "tf32": "32F_FAST_TF32"}[prog.precision]

    def add_kernel(step) -> int:
        pdt = [dtypes[p] for p in step.params]
        imgs, meta = {}, None
        for arch in sorted(set(archs) | {aot.PTX_ARCH}):
            c = aot.compile_kernel(step.source, pdt, arch, step.num_warps, step.num_stages)
            if arch in archs:
                imgs[arch] = put(c["cubin"])
            if arch == aot.PTX_ARCH:
                imgs["ptx"] = put(c["ptx"].encode())
            if meta is None or arch == archs[0]:
                meta = c
        if meta["params"] != len(step.params) + 2:
            from ...errors import InternalError

            raise InternalError(f"Triton {aot.TRITON_VERSION} gave kernel {meta['name']} {meta['params']} "
                                f"parameters, expected {len(step.params)} + 2 scratch pointers")
        sha = aot.sha256(step.source)
        kernels.append({"entry": meta["name"], "num_warps": meta["num_warps"], "shared_mem": meta["shared"],
                        "params": [{"tensor": p} for p in step.params] + [{"scratch": "global"},
                                                                          {"scratch": "profile"}],
                        "images": imgs, "source_sha256": sha, "onnx_nodes": list(step.nodes),
                        "pdl_archs": sorted(a for a in imgs if a != "ptx" and aot.waits_for_prior_grid(a)),
                        "group": step.group, "config": dict(step.config)})
        records.append({"group": step.group, "sha": sha[:12], "config": step.config, "warps": meta["num_warps"],
                        "shared": meta["shared"]})
        return len(kernels) - 1

    for step in prog.steps:
        if isinstance(step, GemmStep):
            gemms.append({"m": step.m, "n": step.n, "k": step.k, "a": step.a, "b": step.b, "c": step.c,
                          "bias": step.bias, "trans_a": False, "trans_b": False, "dtype": prog.run_dtype,
                          "compute": compute, "alpha": 1.0, "epilogue": step.epilogue,
                          "algo": {"source": "heuristic"}, "onnx_nodes": list(step.nodes)})
            if step.library != "cublasLt":  # absent: cuBLASLt (plans of other policies stay as they were)
                gemms[-1]["library"] = step.library
            launches.append({"gemm": len(gemms) - 1})
            continue
        launches.append({"kernel": add_kernel(step), "grid": list(step.grid)})
    # stand-in kernels after the plan's own (their indices never shift a launch's): one per GEMM, or none
    gemm_steps = [s for s in prog.steps if isinstance(s, GemmStep)]
    if gemm_steps and all(s.stand_in is not None for s in gemm_steps):
        for spec, step in zip(gemms, gemm_steps):
            spec["stand_in"] = {"kernel": add_kernel(step.stand_in), "grid": list(step.stand_in.grid)}
    plan = {"format": "xrt-cuda-plan", "version": 1, "triton_version": aot.TRITON_VERSION, "archs": list(archs),
            "dims": {}, "tensors": tensors, "inputs": list(prog.inputs), "outputs": list(prog.outputs),
            "arena_bytes": peak, "kernels": kernels, "gemms": gemms, "launches": launches}
    return plan, bytes(weights), bytes(images), [stats] + records


# The core verifies a variant's sections on several threads before the engine sees them, and one section's SHA-256
# cannot be split: weights larger than WEIGHT_PART_MIN_BYTES are stored as up to WEIGHT_PARTS_MAX parts ("weights",
# "weights.1", ...) of equal size, so a BERT-base (218 MB) hashes on 8 threads instead of one (~240 ms -> ~40 ms).
# At most 8: the runtime's verifier uses up to 8 threads, and a variant has at most 16 artifact roles (formats/
# xrtpkg.md). Parts are cut at WEIGHT_ALIGN, so each tensor keeps its alignment and the plugin concatenates them.
WEIGHT_PART_MIN_BYTES = 16 << 20
WEIGHT_PARTS_MAX = 8


def weight_roles(count: int) -> list[str]:
    """The artifact roles of `count` weight parts, in order: "weights", "weights.1", ... (PLAN.md)."""
    return ["weights"] + [f"weights.{i}" for i in range(1, count)]


def split_weights(weights: bytes) -> list[bytes]:
    """`weights` as 1..WEIGHT_PARTS_MAX consecutive parts of equal size (a multiple of WEIGHT_ALIGN; the last one
    shorter), parts of WEIGHT_PART_MIN_BYTES or more; one (possibly empty) part at least, so every variant has a
    "weights" artifact."""
    count = max(1, min(WEIGHT_PARTS_MAX, -(-len(weights) // WEIGHT_PART_MIN_BYTES)))
    size = max(WEIGHT_ALIGN, _align(-(-len(weights) // count), WEIGHT_ALIGN))
    return [weights[i:i + size] for i in range(0, len(weights), size)] or [b""]


def join_weights(by_role: dict) -> bytes:
    """The weights of a variant's artifacts by role (bytes values), parts concatenated in order."""
    count = sum(1 for role in by_role if role == "weights" or role.startswith("weights."))
    return b"".join(by_role[role] for role in weight_roles(count)) if count else b""


def plan_bytes(plan: dict) -> bytes:
    return json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()


def kernel_sources(prog) -> dict:
    """sha256 -> Triton source of every kernel the plan holds (the launches' and the GEMMs' stand-ins)."""
    steps = [s for s in prog.steps if isinstance(s, KernelStep)]
    steps += [s.stand_in for s in prog.steps if isinstance(s, GemmStep) and s.stand_in is not None]
    return {aot.sha256(s.source): s.source for s in steps}
