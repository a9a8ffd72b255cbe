"""The resolved plan: a policy applied to one model and target, node by node. It is the compile's lockfile.

`resolve()` takes the graph after the target-independent passes and decides, without running any engine:
- per variant (engine): built or left out, at which precision, with which engine options, and why;
- per node: precision (fp32 | fp16 | int8, or "-" for nodes without float compute) and the rule that chose it; for
  matmul / conv / attention nodes, the kernel knob and what each engine can do with it;
- warnings for every `prefer` knob that could not be honoured, and a PolicyViolationError for a `fixed` one that no
  engine of the target can honour (naming the nodes and the reason).

The plan is JSON (`to_json` is canonical). `xrtc plan` prints or writes it; `xrtc compile --plan` rebuilds from it,
so a plan written, reviewed, edited (per-node precision) and committed gives the same bundle every time. The accuracy
gate runs after the plan: its outcome (measured errors, fallbacks) goes to the decision log, never into the plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import onnx

from .errors import PolicyViolationError, UsageError, XrtcError

PLAN_FORMAT = 1

KERNEL_FAMILIES = {
    "matmul": ("MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul"),
    "conv": ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"),
    "attention": ("Attention", "MultiHeadAttention", "GroupQueryAttention"),
}
FAMILY_OF = {op: family for family, ops in KERNEL_FAMILIES.items() for op in ops}

_CUDA_ONLY = {"cublas", "cublasLt", "cudnn", "flash", "flash_v2", "mem_efficient", "triton"}

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


@dataclass
class Plan:
    """The resolved plan (see the module docstring). `nodes` are in graph order."""

    source: dict
    target: str
    policy: dict
    pipeline: list[dict]
    variants: list[dict]
    nodes: list[dict]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"plan_format": PLAN_FORMAT, "source": self.source, "target": self.target, "policy": self.policy,
                "pipeline": self.pipeline, "variants": self.variants, "nodes": self.nodes,
                "warnings": self.warnings}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str = "plan") -> "Plan":
        if not isinstance(data, dict) or data.get("plan_format") != PLAN_FORMAT:
            raise UsageError(f"{where} is not an xrtc plan of format {PLAN_FORMAT} (write one with `xrtc plan`)")
        try:
            plan = cls(source=dict(data["source"]), target=str(data["target"]), policy=dict(data["policy"]),
                       pipeline=list(data["pipeline"]), variants=list(data["variants"]), nodes=list(data["nodes"]),
                       warnings=list(data.get("warnings", [])))
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{where}: malformed plan ({type(err).__name__}: {err}); write it again with "
                             "`xrtc plan`") from err
        for node in plan.nodes:
            if not isinstance(node, dict) or node.get("precision") not in ("fp32", "fp16", "int8", "-"):
                raise UsageError(f"{where}: node entry {str(node)[:120]} needs precision fp32, fp16, int8 or -")
        return plan

    @classmethod
    def load(cls, path: str) -> "Plan":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"plan file {path} does not exist") from None
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read plan {path}: {err}") from err
        return cls.from_json(data, where=path)

    def nodes_at(self, precision: str) -> list[str]:
        return [n["name"] for n in self.nodes if n["precision"] == precision]


def _float_nodes(model: onnx.ModelProto) -> set[str]:
    """Nodes with a float input or output (from inferred types; initializers and graph I/O included)."""
    types: dict[str, int] = {}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.HasField("tensor_type"):
            types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    out = set()
    for node in model.graph.node:
        if any(types.get(name) in _FLOAT for name in [*node.input, *node.output] if name):
            out.add(node.name)
    return out


def _shape_flags(model: onnx.ModelProto, dynamic: list[str]) -> str:
    """'--shape x=Nx3xHxW'-style flags for the inputs with dynamic dims: static sizes as they are, dynamic ones by
    their symbolic name (or d<i>), for the user to replace."""
    from .model_io import model_io

    wanted = {d.split("[")[0] for d in dynamic}
    flags = []
    for spec in model_io(model)[0]:
        if spec["name"] in wanted and spec["shape"] is not None:
            dims = [str(d) if isinstance(d, int) else (d if isinstance(d, str) and d.isidentifier() else f"d{i}")
                    for i, d in enumerate(spec["shape"])]
            flags.append(f"--shape {spec['name']}={'x'.join(dims)}")
    return " ".join(flags)


def _first(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def resolve(model: onnx.ModelProto, policy, target: str, source: dict, pipeline: list[dict],
            calibration_samples: int = 0, dynamic: list[str] | None = None) -> Plan:
    """Resolves `policy` (xpuruntime.policy.Policy) for `model` (after the graph passes) on `target` (one target or
    several, comma-separated). `calibration_samples` is how many --calibration samples there are (int8 needs some);
    `dynamic` lists the input dims still dynamic after shape binding. Raises PolicyViolationError for a fixed knob
    no variant can honour, UsageError for an NPU-only compile with dynamic shapes."""
    from .passes.precision import fp16_op_block_list

    from .targets import get_target, registered

    targets = target.split(",")
    unknown = [t for t in targets if t not in registered()]
    if unknown:
        raise XrtcError(f"no plan rules for target(s) {unknown}")
    spec = {t: get_target(t) for t in targets}
    warnings: list[str] = []
    excluded: dict[str, str] = {}  # variant id -> reason (a fixed knob or a target requirement it cannot meet)
    ids = [(t, e, f"{t}-{e}") for t in targets for e in spec[t].engines]

    # Static shapes: asked by the policy, required by targets that compile for one shape.
    static = policy.execution.get("static_shape")
    flags = _shape_flags(model, dynamic or [])
    for t in [t for t in targets if dynamic and spec[t].static_shapes]:
        text = (f"target {t} needs static shapes ({spec[t].static_shapes}), but these input dims are "
                f"dynamic: {', '.join(dynamic)}. Bind each with {flags} or [shapes] in the policy, "
                "with the sizes you deploy")
        if targets == [t]:
            raise UsageError(text)
        warnings.append(text)
        for t2, e, vid in ids:
            if t2 == t:
                excluded[vid] = text
    if static.choice and dynamic:
        text = (f"static_shape is requested but input dims are still dynamic: {', '.join(dynamic)}. Bind them with "
                f"[shapes] in the policy or {flags}")
        if static.mode == "fixed":
            raise PolicyViolationError(text)
        warnings.append(f"prefer static_shape: {text}")

    # Precision, per variant.
    knob = policy.execution.get("precision")
    explicit = "precision" in policy.execution.knobs
    variants: list[dict] = []
    for t, engine, vid in ids:
        default = spec[t].default_precision
        wanted = knob.choice if explicit and knob.choice else default
        if explicit and knob.mode == "auto":
            warnings.append(f"auto precision on {vid}: no tuning database on this target yet; "
                            f"{default} chosen (the target's default). Ask for a precision explicitly")
            wanted = default
        notes: list[str] = [] if explicit else [f"precision {wanted}: the default for target {t}"]
        if wanted == "int8" and calibration_samples == 0:
            text = "int8 needs calibration data: pass --calibration data.npz (input name -> samples stacked on axis 0)"
            if knob.mode == "fixed":
                raise PolicyViolationError(text)
            warnings.append(f"prefer precision=int8 on {vid}: {text}; built {default}")
            wanted = default
        why = spec[t].precision_problem(engine, wanted)
        precision = wanted
        if why is not None:
            if knob.mode == "fixed":
                excluded.setdefault(vid, f"precision={wanted} is fixed, but {why}")
            else:
                fallback = default if spec[t].precision_problem(engine, default) is None else "fp32"
                warnings.append(f"prefer precision={wanted} on {vid}: {why}; built {fallback}")
                notes.append(f"precision {wanted} not possible ({why}); {fallback} instead")
                precision = fallback
        variants.append({"id": vid, "target": t, "device": spec[t].device, "engine": engine,
                         "precision": precision, "notes": notes})

    # What a target says of a precision where it is chosen (a rule, not a measurement).
    for t in targets:
        for precision, note in sorted(spec[t].precision_notes.items()):
            chosen = [v["id"] for v in variants if v["target"] == t and v["precision"] == precision]
            if chosen:
                warnings.append(f"{precision} on {t} ({', '.join(chosen)}): {note}")

    # Kernel knobs, per family present in the model.
    by_family: dict[str, list[str]] = {}
    for node in model.graph.node:
        family = FAMILY_OF.get(node.op_type)
        if family and node.domain in ("", "ai.onnx", "com.microsoft"):
            by_family.setdefault(family, []).append(node.name)
    kernel_notes: dict[str, dict[str, str]] = {}  # family -> variant id -> what happens
    for family in sorted(KERNEL_FAMILIES):
        k = policy.kernel.get(family)
        nodes = by_family.get(family, [])
        if family not in policy.kernel.knobs or not nodes:
            continue
        notes = {}
        for t, engine, vid in ids:
            choice = k.choice
            engine_kernels = spec[t].engine_kernels[engine]
            if k.mode == "auto" or choice is None:
                notes[vid] = (f"auto: not controllable on engine {engine} ({engine_kernels}); nothing to tune, "
                              "engine default recorded")
            elif choice in spec[t].kernels[engine][family]:
                notes[vid] = f"{choice}: honoured ({engine_kernels})" if choice != "engine" else \
                    "engine default, as the policy asks"
            else:
                reason = (f"{choice} is a CUDA kernel and target {t} runs no CUDA" if choice in _CUDA_ONLY and
                          spec[t].device != "cuda"
                          else f"not controllable on engine {engine}: {engine_kernels}")
                if k.mode == "fixed":
                    excluded.setdefault(vid, f"{family}={choice} is fixed, but {reason} (nodes {_first(nodes)})")
                else:
                    warnings.append(f"prefer {family}={choice} on {vid}: {reason}; engine default used for "
                                    f"{len(nodes)} node(s) ({_first(nodes, 3)})")
                notes[vid] = f"{choice} not possible: {reason}"
        kernel_notes[family] = notes

    if len(excluded) == len(ids):
        details = "; ".join(f"{vid}: {why}" for vid, why in excluded.items())
        raise PolicyViolationError(f"the policy cannot hold on target {target}: {details}. Change the knob's mode "
                                   "to \"prefer\" to build anyway and record why, or choose another target")
    for variant in variants:
        if variant["id"] in excluded:
            variant.update(excluded=excluded[variant["id"]])
    variants = [spec[v["target"]].variant_options(v, policy, warnings) for v in variants]

    # Per node: precision and kernel.
    float_nodes = _float_nodes(model)
    # The precision the graph passes apply (ONNX Runtime converts the graph; OpenVINO's fp16 is an engine setting).
    graph_precision = next((v["precision"] for v in variants if v["engine"] == "onnxruntime" and
                            "excluded" not in v), None) or \
        next((v["precision"] for v in variants if "excluded" not in v), variants[0]["precision"])
    blocked_ops = set(fp16_op_block_list(policy.keep_fp32_ops)) if graph_precision == "fp16" else \
        set(policy.keep_fp32_ops)
    quantisable = _quantisable_ops() if graph_precision == "int8" else set()
    unknown_nodes = sorted(set(policy.nodes) - {n.name for n in model.graph.node})
    if unknown_nodes:
        warnings.append(f"[nodes] names not in the graph after the passes (ignored): {_first(unknown_nodes)}; "
                        "`xrtc plan` lists the node names")
    entries = []
    for node in model.graph.node:
        entry: dict[str, Any] = {"name": node.name, "op": node.op_type}
        if node.name not in float_nodes:
            entry.update(precision="-", why="no float compute")
        elif node.name in policy.nodes and policy.nodes[node.name] in ("fp32", "tf32", "bf16"):
            entry.update(precision="fp32", why=f"policy [nodes] override: {policy.nodes[node.name]} (fp32 here)")
        elif graph_precision == "fp16":
            if node.op_type in blocked_ops:
                entry.update(precision="fp32", why=f"{node.op_type} is on the fp16 block list (numerically sensitive "
                                                   "or no fp16 kernel)")
            else:
                entry.update(precision="fp16", why="policy precision=fp16")
        elif graph_precision == "int8":
            if node.op_type in blocked_ops:
                entry.update(precision="fp32", why=f"{node.op_type} kept in float by [precision] keep_fp32_ops")
            elif node.op_type in quantisable:
                entry.update(precision="int8", why="policy precision=int8 (QDQ, calibrated)")
            else:
                entry.update(precision="fp32", why=f"{node.op_type} has no int8 form in the quantiser; stays float")
        else:
            entry.update(precision="fp32", why=f"policy precision={graph_precision}" if graph_precision == "fp32"
                         else f"graph stays fp32; {graph_precision} is an engine-wide setting")
        family = FAMILY_OF.get(node.op_type)
        if family in kernel_notes:
            k = policy.kernel.get(family)
            entry["kernel"] = {"family": family, "choice": k.choice, "mode": k.mode, "engines": kernel_notes[family]}
        entries.append(entry)
    return Plan(source=source, target=target, policy=policy.to_json(), pipeline=pipeline, variants=variants,
                nodes=entries, warnings=warnings)


def _quantisable_ops() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry

    return set(QDQRegistry)
