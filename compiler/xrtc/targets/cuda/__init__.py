"""Lowering for `--target cuda`: two variants, in preference order.

`cuda-cuda`, run by xpuruntime's own CUDA engine (`libxrt_backend_cuda.so`): Triton kernels compiled ahead of time
(cubin per architecture + PTX) and cuBLASLt GEMMs, in one ordered launch list over one arena. The contract with the
plugin is runtime_cpp/backends/cuda/PLAN.md.

`cuda-onnxruntime`, run by ONNX Runtime's CUDA execution provider through its Python API (xpuruntime._ort_backend):
the graph transformer-optimised offline (targets/engines/onnxruntime_cuda.py), CUDA graphs on where shapes are static.
Preference rule: ours first when its patterns cover the graph; where the lowering refuses the graph (nodes outside
its patterns), ours is left out with that reason and the ONNX Runtime variant runs, its `why` saying so. Where
onnxruntime has no CUDAExecutionProvider at run time, the runtime skips the variant and records why.

Sections of the variant: `<id>.plan.json` (the plan), `<id>.weights` (`<id>.weights.1`, ... : parts of at most 16 MiB,
verified in parallel), `<id>.kernels` (images), `<id>.sources.json`
(the Triton source of every kernel, by sha256: what `explain` shows and what the plan interpreter runs on the CPU).

Importable with only onnx, numpy, onnxruntime and triton (plus xrtc): no torch, no CUDA libraries.
"""

from __future__ import annotations

import json
import logging

from ...errors import PolicyViolationError, UnsupportedError
from ..base import BuildFailed, BuiltVariant, LeftOut, Lowering, Target, VariantRequest
from ..engines import onnxruntime_cuda as ort_cuda
from . import aot, emit
from .graph import lower_graph

log = logging.getLogger("xrtc.targets.cuda")

ENGINE_VERSION = ">=0.1"
# Kernel knob choices the engine implements today (the policy schema names more).
MATMUL_BUILT = {"engine", "cublasLt", "cublas", "triton"}
ATTENTION_BUILT = {"engine", "flash", "flash_v2", "math"}
NOT_BUILT = {"mem_efficient": "is not built in xrtc's cuda engine (built: flash, math)"}
NOT_BUILT_OTHER = "is not built in xrtc's cuda engine (built: matmul=cublasLt|cublas|triton, attention=flash|math)"


def _knob(policy: dict, family: str) -> tuple:
    """(choice, mode) of the policy's kernel knob for `family`; (None, "prefer") when absent."""
    knob = (policy.get("kernel", {}) if isinstance(policy, dict) else {}).get(family)
    return (knob.get("choice"), knob.get("mode", "prefer")) if isinstance(knob, dict) else (knob, "prefer")


def _choice(policy: dict, family: str) -> str | None:
    """The knob's choice unless it is absent or mode auto."""
    choice, mode = _knob(policy, family)
    return None if mode == "auto" else choice


def attention_choice(policy: dict) -> str:
    """"math" when the policy asks for attention=math, else "flash"."""
    return "math" if _choice(policy, "attention") == "math" else "flash"


def matmul_choice(policy: dict) -> str:
    """"triton" or "cublas" when the policy asks for it (prefer or fixed: both are built), else "cublasLt"."""
    choice = _choice(policy, "matmul")
    return choice if choice in ("triton", "cublas") else "cublasLt"


def stand_ins_allowed(policy: dict) -> bool:
    """The GEMMs get Triton stand-ins for the runs before cuBLASLt has loaded (PLAN.md) unless the policy fixes
    matmul = cublasLt, or asks for cublas (a chosen library holds from the first run on)."""
    choice, mode = _knob(policy, "matmul")
    return not (mode == "fixed" and str(choice).lower() == "cublaslt") and matmul_choice(policy) != "cublas"
# Largest model (weights + arena bytes) the plan interpreter checks at compile when no GPU is present.
INTERPRET_MAX_BYTES = 64 << 20


def kernel_policy(policy: dict, prog) -> list[str]:
    """Checks the matmul / attention knobs against what the program uses; a fixed knob that cannot hold raises
    PolicyViolationError naming the nodes; a preferred one returns a warning."""
    warnings = []
    uses = {"matmul": [n for s in prog.steps if isinstance(s, emit.GemmStep) or getattr(s, "group", "") == "gemm"
                       for n in s.nodes[:1]],
            "attention": [s.nodes[-1] for s in prog.steps if isinstance(s, emit.KernelStep) and s.group == "attention"]}
    built = {"matmul": MATMUL_BUILT, "attention": ATTENTION_BUILT}
    for family in ("matmul", "attention"):
        choice, mode = _knob(policy, family)
        if not choice or choice in built[family] or mode == "auto" or not uses[family]:
            continue
        nodes = uses[family]
        text = (f"{family}={choice} {NOT_BUILT.get(choice, NOT_BUILT_OTHER)}; nodes {', '.join(nodes[:6])}"
                f"{' ...' if len(nodes) > 6 else ''}")
        if mode == "fixed":
            raise PolicyViolationError(f"--target cuda: {text}. Make the knob \"prefer\" or choose a built kernel")
        warnings.append(f"prefer {text}: {'cublasLt' if family == 'matmul' else 'flash'} used")
    return warnings


def lower(requests: list[VariantRequest], plan, workdir: str, clock, precompile: bool = True,
          archs: list[str] | None = None) -> Lowering:
    """The requested cuda variants (see the module docstring for their order); `archs` (default: the policy's
    target_options.arch) for ours; `precompile` does not apply."""
    requested = {r.engine: r for r in requests if r.target == "cuda"}
    ours, refused = Lowering(), None
    request = requested.get("cuda")
    if request is not None:
        try:
            ours = _lower_ours(request, plan, clock, archs)
        except UnsupportedError as err:  # the graph outside our patterns, or no (pinned) Triton to build kernels
            if "onnxruntime" not in requested:  # no variant to run it instead: the refusal is the answer
                raise
            refused = str(err)
            log.warning("cuda-cuda left out: %s", refused)
            ours.left_out.append(_left_out(request, refused))
    ours.merge(_lower_ort(requested.get("onnxruntime"), clock, refused, preferred=not ours.built))
    return ours


def _left_out(request: VariantRequest, reason: str) -> LeftOut:
    return LeftOut(target="cuda", engine=request.engine, reason=reason, stage="build-failed", device="cuda",
                   precision=request.precision)


def _lower_ort(request: VariantRequest | None, clock, refused: str | None, preferred: bool) -> Lowering:
    """The cuda-onnxruntime variant; `refused`: why our engine did not build (its `why` says so), `preferred`: it
    comes first."""
    if request is None:
        return Lowering()
    from ...model_io import model_io

    vid, precision, model = request.id, request.precision, request.model
    static = all(spec["shape"] is not None and all(isinstance(d, int) for d in spec["shape"])
                 for spec in model_io(model)[0])
    tools: dict[str, str] = {}
    with clock.stage(f"lower-{vid}", log):
        try:
            payloads, options, notes = ort_cuda.build(model, precision, tools, prefix=vid, static_shapes=static)
        except BuildFailed as err:
            log.warning("%s left out: %s", vid, err)
            return Lowering(left_out=[_left_out(request, str(err))], tools=tools)
    graph = "CUDA graph per run (static shapes)" if options["enable_cuda_graph"] == "1" else "no CUDA graph"
    engine = f"ONNX Runtime's CUDA execution provider on the transformer-optimised graph, {graph}"
    if refused:
        why = f"preferred: xpuruntime's CUDA engine does not cover the graph ({refused}); {engine}"
    elif preferred:
        why = f"preferred: xpuruntime's CUDA engine built no variant (see excluded); {engine}"
    else:
        why = f"second choice (xpuruntime's CUDA engine first where its patterns cover the graph): {engine}"
    entry = {"id": vid, "target": "cuda", "device": "cuda", "engine": "onnxruntime", "precision": precision,
             "artifacts": {"model": f"{vid}.onnx"}, "options": dict(sorted({**request.options, **options}.items())),
             "requires": {"engine": "onnxruntime", "engine_version": ort_cuda.ORT_CUDA_MIN_VERSION,
                          "devices": ["CUDA"]},
             "why": why, "notes": notes}
    return Lowering(built=[BuiltVariant(entry, payloads)], tools=tools)


def _lower_ours(variant: VariantRequest, plan, clock, archs: list[str] | None) -> Lowering:
    """The cuda-cuda variant; raises UnsupportedModelError where the graph is outside its patterns, UnsupportedError
    without the pinned Triton."""
    triton = aot.require_triton()
    archs = archs or aot.parse_archs((plan.policy.get("target_options") or {}).get("arch"))
    vid = variant.id
    precision = variant.precision
    with clock.stage(f"lower-{vid}", log):
        # stand-ins: each cuBLASLt GEMM's Triton twin, run until cuBLASLt has loaded (PLAN.md)
        prog = lower_graph(variant.model, precision, attention=attention_choice(plan.policy),
                           matmul=matmul_choice(plan.policy), stand_ins=stand_ins_allowed(plan.policy))
        warnings = kernel_policy(plan.policy, prog)
        plan_json, weights, kernels, records = emit.emit(prog, archs)
    sources = emit.kernel_sources(prog)
    stats = records[0]
    n_gemm = sum(isinstance(s, emit.GemmStep) for s in prog.steps)
    n_kern = len(prog.steps) - n_gemm
    library = "cuBLAS" if any(getattr(s, "library", "") == "cublas" for s in prog.steps) else "cuBLASLt"
    log.info("%s: %d launches (%d " + library + " GEMMs, %d Triton kernels, %d distinct), arena %d bytes (sum of buffers "
             "%d), weights %d bytes, archs %s", vid, len(prog.steps), n_gemm, n_kern, len(sources), stats["peak_bytes"],
             stats["sum_bytes"], len(weights), ",".join(archs))
    parts = emit.split_weights(weights)
    plan_json["weights_parts"] = [len(p) for p in parts]
    weight_names = {role: f"{vid}.{role}" for role in emit.weight_roles(len(parts))}
    names = {"plan": f"{vid}.plan.json", **weight_names, "kernels": f"{vid}.kernels",
             "sources": f"{vid}.sources.json"}
    # weights stored uncompressed: fp16/fp32 weights barely compress and zstd-decoding them dominated the plugin's
    # cold start; an empty kernels section (a plan of GEMMs only) must be stored uncompressed
    payloads = [(names["plan"], emit.plan_bytes(plan_json), True),
                *[(section, part, False) for section, part in zip(weight_names.values(), parts)],
                (names["kernels"], kernels, bool(kernels)),
                (names["sources"], json.dumps(sources, sort_keys=True).encode(), True)]
    why = (f"target cuda: xpuruntime's CUDA engine, {len(prog.steps)} launches ({n_gemm} {library} GEMMs, {n_kern} "
           f"Triton kernels) in one CUDA graph, arena {stats['peak_bytes']} bytes (static plan), cubins for "
           f"{','.join(archs)} + PTX ({aot.PTX_ARCH}) from Triton {triton.__version__}")
    notes = list(dict.fromkeys(prog.notes)) + warnings
    entry = {"id": vid, "target": "cuda", "device": "cuda", "engine": "cuda", "precision": precision,
             "artifacts": dict(names), "options": dict(variant.options),
             "requires": {"engine": "cuda", "engine_version": ENGINE_VERSION, "devices": ["CUDA"],
                          "archs": list(archs) + ["ptx"]},
             "why": why}
    if notes:
        entry["notes"] = notes
    return Lowering(built=[BuiltVariant(entry, payloads)], tools={"triton": triton.__version__})


def gate_record(bundle_sections: dict, variant: dict, samples: list[dict], references: list[dict], rtol: float,
                atol: float, compare) -> dict:
    """The accuracy gate for a cuda variant where no CUDA device is here: the plan interpreter on the CPU (small
    models), recorded as `ran_on: "cpu (plan interpreter)"` with `not_run_on_device`; larger models are recorded
    as not measured. Never a silent pass."""
    from . import interp

    plan = json.loads(bundle_sections["plan"])
    weights = emit.join_weights(bundle_sections)
    size = plan["arena_bytes"] + len(weights)
    base = {"rtol": rtol, "atol": atol, "samples": len(samples), "not_run_on_device": "no CUDA device here"}
    if size > INTERPRET_MAX_BYTES:
        return dict(base, passed=None, not_run=f"no CUDA device here, and the model ({size >> 20} MiB of weights "
                    f"and arena) is over the plan interpreter's limit ({INTERPRET_MAX_BYTES >> 20} MiB)",
                    max_abs_err={}, failures=[])
    worst: dict[str, float] = {}
    failures = []
    # the GEMMs' stand-in kernels (the plugin's first runs, PLAN.md) are checked too, on the first sample
    with_stand_ins = bool(plan["gemms"]) and all("stand_in" in g for g in plan["gemms"])
    runs = [(feeds, ref, False) for feeds, ref in zip(samples, references)]
    runs += [(samples[0], references[0], True)] if with_stand_ins and samples else []
    for feeds, ref, stand_ins in runs:
        got = interp.run(plan, weights, bundle_sections["sources"], feeds, stand_ins=stand_ins)
        for name, expected in ref.items():
            c = compare(variant["id"], name, got[name], expected, rtol, atol)
            worst[name] = max(worst.get(name, 0.0), c.max_abs_err)
            if not c.passed:
                failures.append(f"{name}{' (GEMM stand-ins)' if stand_ins else ''}: max abs err "
                                f"{c.max_abs_err:.3g} ({c.note})")
    ran_on = "cpu (plan interpreter: Triton kernels under TRITON_INTERPRET, numpy GEMMs" + \
        ("; the GEMMs' Triton stand-ins on the first sample)" if with_stand_ins else ")")
    return dict(base, passed=not failures, ran_on=ran_on,
                max_abs_err={k: float(f"{v:.3g}") for k, v in sorted(worst.items())}, failures=failures[:4])


def describe(plan: dict) -> list[dict]:
    """One row per launch of a cuda plan, in execution order: what `xrtc explain` lists (kind, group, ONNX nodes,
    and per kernel its entry, arch images, warps, shared memory and source hash; per GEMM its shape, dtype,
    compute type, epilogue and where its algorithm comes from)."""
    rows = []
    for i, launch in enumerate(plan["launches"]):
        if "gemm" in launch:
            g = plan["gemms"][launch["gemm"]]
            rows.append({"launch": i, "kind": "gemm", "group": g.get("library", "cublasLt"),
                         "onnx_nodes": g["onnx_nodes"],
                         "config": f"m={g['m']} n={g['n']} k={g['k']} {g['dtype']} compute {g['compute']} "
                                   f"epilogue {g['epilogue']}",
                         "algorithm": "cublasGemmEx default" if g.get("library") == "cublas" else
                         g["algo"].get("source", "heuristic")})
            if "stand_in" in g:  # the Triton twin the plugin runs until cuBLASLt has loaded
                k = plan["kernels"][g["stand_in"]["kernel"]]
                rows[-1]["stand_in"] = (f"triton grid {'x'.join(map(str, g['stand_in']['grid']))} warps "
                                        f"{k['num_warps']} " + " ".join(f"{n}={v}" for n, v in
                                                                       sorted(k.get("config", {}).items())))
        else:
            k = plan["kernels"][launch["kernel"]]
            rows.append({"launch": i, "kind": "triton", "group": k["group"], "onnx_nodes": k["onnx_nodes"],
                         "config": f"grid {'x'.join(map(str, launch['grid']))} warps {k['num_warps']} smem "
                                   f"{k['shared_mem']} " + " ".join(f"{n}={v}" for n, v in
                                                                    sorted(k.get("config", {}).items()))
                                   + f" src {k['source_sha256'][:12]}",
                         "archs": sorted(k["images"]), "algorithm": "triton " + plan["triton_version"]})
    return rows


def _ort_cuda_here() -> str | None:
    """None where onnxruntime can run on a CUDA device here, else why not."""
    import os

    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider"
    return None if os.path.exists("/dev/nvidiactl") else "no CUDA device here"


def ort_gate_record(model_bytes: bytes, variant: dict, samples: list[dict], references: list[dict], rtol: float,
                    atol: float, compare, not_here: str) -> dict:
    """The cuda-onnxruntime variant's graph run on ONNX Runtime's CPU provider (one thread; fp16 ops without a CPU
    fp16 kernel run as ONNX Runtime places them), recorded with `not_run_on_device`: the CUDA provider's kernels are
    not what ran. A graph the CPU provider cannot run (a fused op with no CPU kernel at this precision) is recorded as
    not measured, with the reason."""
    from ...gate import _first_sentence, _run_reference, _reference_session

    base = {"rtol": rtol, "atol": atol, "samples": len(samples), "not_run_on_device": not_here}
    try:
        outputs = _run_reference(_reference_session(model_bytes), samples)
    except Exception as err:  # noqa: BLE001 - XrtcError from the reference helpers: not measurable here
        text = _first_sentence(str(err), 300).replace("the source model", "the variant's graph")
        return dict(base, passed=None, not_run=f"{not_here}, and ONNX Runtime's CPU provider cannot run the "
                    f"{variant['precision']} graph ({text})", max_abs_err={}, failures=[])
    worst: dict[str, float] = {}
    failures = []
    for got, ref in zip(outputs, references):
        for name, expected in ref.items():
            c = compare(variant["id"], name, got[name], expected, rtol, atol)
            worst[name] = max(worst.get(name, 0.0), c.max_abs_err)
            text = f"{name}: max abs err {c.max_abs_err:.3g}" + (f" ({c.note})" if c.note else "")
            if not c.passed and text not in failures:
                failures.append(text)
    return dict(base, passed=not failures, ran_on="cpu (ONNX Runtime CPU provider on the variant's graph)",
                max_abs_err={k: float(f"{v:.3g}") for k, v in sorted(worst.items())}, failures=failures[:4])


def gate(lowering, variant: dict, samples: list[dict], references: list[dict], tol: dict, workdir: str,
         candidate: str) -> dict:
    """The accuracy gate for the cuda target. Where a CUDA device (and, for cuda-onnxruntime, onnxruntime's CUDA
    provider) is present, the variant runs through the runtime like every other. Otherwise it never reports a plain
    pass: ours runs through the plan interpreter on the CPU, the ONNX Runtime variant's graph on ONNX Runtime's CPU
    provider (both recorded as such, with `not_run_on_device`), or the variant is recorded as not measured."""
    import os

    from ... import gate as accuracy_gate
    from ...numeric import compare

    if variant["engine"] == "onnxruntime":
        not_here = _ort_cuda_here()
        if not_here is None:
            record = accuracy_gate.measure_isolated(workdir, candidate, variant["id"], samples, references,
                                                    tol["rtol"], tol["atol"])
            if not record.get("crashed") and not record.get("error"):
                return record
            not_here = "the runtime could not run it on this machine's GPU (" + \
                "; ".join(record.get("failures", []))[:300] + ")"
        model = next(data for name, data, _ in lowering.payloads if name == variant["artifacts"]["model"])
        record = ort_gate_record(model, variant, samples, references, tol["rtol"], tol["atol"], compare, not_here)
        if record.get("ran_on"):
            log.warning("accuracy gate %s: not run on a GPU (%s); checked with the %s", variant["id"], not_here,
                        record["ran_on"])
        return record

    if os.path.exists("/dev/nvidiactl"):
        record = accuracy_gate.measure_isolated(workdir, candidate, variant["id"], samples, references, tol["rtol"],
                                                tol["atol"], device="cuda")
        if not record.get("crashed") and not record.get("error"):
            return record
        log.warning("accuracy gate %s: the runtime could not run it on this machine's GPU (%s); checking the plan "
                    "on the CPU instead", variant["id"], "; ".join(record.get("failures", []))[:300])

    sections = {role: next(data for name, data, _ in lowering.payloads if name == section)
                for role, section in variant["artifacts"].items()}
    record = gate_record(sections, variant, samples, references, tol["rtol"], tol["atol"], compare)
    if record.get("ran_on"):
        log.warning("accuracy gate %s: not run on a GPU (no CUDA device here); checked with the %s", variant["id"],
                    record["ran_on"])
    return record


def variant_options(variant: dict, policy, warnings: list[str]) -> dict:
    """None from the policy: our engine's arena is planned at compile and threads do not apply; the ONNX Runtime
    variant's provider options are set by its lowering (CUDA graph, tf32)."""
    variant["options"] = {}
    return variant


_ORT_NOT = "ONNX Runtime's CUDA provider variant is built at fp16, fp32 and tf32 only"

TARGET = Target(
    name="cuda", device="cuda", engines=("cuda", "onnxruntime"), default_precision="fp16",
    precisions={"cuda": {"fp32": None, "fp16": None, "tf32": None,
                         "bf16": "bf16 is not built yet in xrtc's cuda engine (fp16, fp32 and tf32 are)",
                         "int8": "int8 is not built yet in xrtc's cuda engine (fp16, fp32 and tf32 are)"},
                "onnxruntime": {"fp32": None, "fp16": None, "tf32": None, "bf16": _ORT_NOT, "int8": _ORT_NOT}},
    # the choices built so far; the rest are refused naming the nodes
    kernels={"cuda": {"matmul": {"engine", "cublasLt", "cublas", "triton"}, "conv": {"engine"},
                      "attention": {"engine", "flash", "flash_v2", "math"}},
             "onnxruntime": {"matmul": {"engine"}, "conv": {"engine"}, "attention": {"engine"}}},
    engine_kernels={"cuda": "xrtc's cuda engine has built matmul=cublasLt | cublas | triton and attention=flash (flash_v2) | "
                            "math; other kernel choices are not built yet",
                    "onnxruntime": "ONNX Runtime's CUDA provider picks its own cuBLAS/fused kernels"},
    fallback={"fp16": "fp32", "bf16": "fp32", "int8": "fp32", "tf32": "fp32"},
    lower=lower, variant_options=variant_options, gate=gate, converts_precision=("onnxruntime",))
