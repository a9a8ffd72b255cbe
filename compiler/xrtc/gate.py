"""The accuracy gate: every variant, run through the C++ runtime, against ONNX Runtime on the source model.

Samples come from `--calibration data.npz` (real data: the first GATE_SAMPLES samples) or are generated (seeded,
from the input specs and the bound shapes). The reference is ONNX Runtime's CPU provider on the *source* model,
single-threaded so it is bit-reproducible. Variants run from a candidate bundle with one engine thread each (the
recorded errors must not depend on thread scheduling: bundles are byte-reproducible). An output passes when
|got - ref| <= atol * max(1, max|ref|) + rtol * |ref| elementwise (xrtc verify's rule), with the policy's tolerance
for the variant's precision.
"""

from __future__ import annotations

import io
import logging
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError, XrtcError

log = logging.getLogger("xrtc.gate")

GATE_SAMPLES = 4  # samples compared per variant; the first one is stored in the bundle as its golden data
CALIBRATION_SAMPLES_MAX = 256

_Spec = namedtuple("_Spec", "name dtype shape")


# Sizes tried for dynamic input dims (the first dim is pinned to 1) when no data or shape is given: image models
# need realistic sizes, sequence models accept any.
DYNAMIC_FILLS = (224, 256, 640, 32)


@dataclass
class Samples:
    feeds: list[dict]  # each: input name -> array
    origin: str  # "calibration data (N samples)" / "generated (seed 0)"
    alternatives: list = field(default_factory=list)  # other candidate feeds (generated, other dynamic sizes)
    guessed: bool = False  # dynamic dims were pinned to guessed sizes: failures there are advisory

def load_calibration(path: str, inputs: list[dict]) -> list[dict]:
    """`--calibration data.npz`: keys are input names; each array holds samples stacked on a new axis 0 (rank =
    input rank + 1) or is one sample (rank = input rank). Also reads the corpus layout (`__names__`, in0, ...).
    Every input needs data and all inputs the same sample count."""
    from .tools._data import load_inputs

    try:
        data = load_inputs(path, None)
    except XrtcError as err:
        raise UsageError(f"--calibration: {err}") from err
    names = [i["name"] for i in inputs]
    missing = [n for n in names if n not in data]
    if missing:
        raise UsageError(f"--calibration {path} has no data for input(s) {missing}; its keys are {sorted(data)}. "
                         "Save one array per input name, samples stacked on axis 0")
    per_input = {}
    for spec in inputs:
        array = data[spec["name"]]
        rank = len(spec["shape"]) if spec["shape"] is not None else array.ndim
        if array.ndim == rank:
            per_input[spec["name"]] = array[None]
        elif array.ndim == rank + 1:
            per_input[spec["name"]] = array
        else:
            raise UsageError(f"--calibration: input {spec['name']!r} has rank {rank}, the data {list(array.shape)}: "
                             f"give [samples, ...] or one sample of rank {rank}")
        if array.dtype.name != spec["dtype"]:
            raise UsageError(f"--calibration: input {spec['name']!r} is {spec['dtype']}, the data {array.dtype.name}")
    counts = {n: len(a) for n, a in per_input.items()}
    if len(set(counts.values())) != 1 or not next(iter(counts.values())):
        raise UsageError(f"--calibration: every input needs the same, non-zero number of samples; got {counts}")
    count = min(next(iter(counts.values())), CALIBRATION_SAMPLES_MAX)
    return [{n: np.ascontiguousarray(a[i]) for n, a in per_input.items()} for i in range(count)]


def samples_for(inputs: list[dict], shapes: dict, calibration: list[dict] | None) -> Samples | str:
    """The gate's samples, or a string saying why there are none. Without calibration data, samples are generated
    for the bound shapes; dims still dynamic are pinned to candidate sizes (see candidate_shapes) and the caller
    keeps the first candidate the source model runs on (`reference_for`)."""
    from .tools._data import random_inputs

    if calibration:
        return Samples(calibration[:GATE_SAMPLES], f"calibration data ({len(calibration)} samples, "
                                                   f"{min(len(calibration), GATE_SAMPLES)} compared)")
    specs = [_Spec(i["name"], i["dtype"], tuple(i["shape"] or ())) for i in inputs]
    if any(i["shape"] is None for i in inputs):
        return "an input of unknown rank: pass --calibration data.npz"
    candidates = []
    for fill in DYNAMIC_FILLS:
        pinned = {s.name: tuple(d if isinstance(d, int) else (1 if k == 0 else fill) for k, d in enumerate(s.shape))
                  for s in specs}
        pinned.update({k: tuple(v) for k, v in shapes.items()})
        candidates.append(pinned)
        if all(all(isinstance(d, int) for d in s.shape) or s.name in shapes for s in specs):
            break  # nothing dynamic: one candidate
    feeds = [[random_inputs(specs, pinned, seed) for seed in range(2)] for pinned in candidates]
    return Samples(feeds[0], "generated (seeded normal floats, small ints; 2 samples)", feeds[1:])


def reference_for(samples: Samples, model_bytes: bytes) -> tuple[Samples, list[dict]] | str:
    """The samples the source model runs on, with its outputs; tries the candidate shapes in order."""
    errors = []
    for feeds in [samples.feeds, *samples.alternatives]:
        try:
            return Samples(feeds, samples.origin + (f"; dynamic dims pinned to {_shapes_text(feeds[0])}"
                                                     if samples.alternatives else ""),
                           guessed=bool(samples.alternatives)), reference_outputs(model_bytes, feeds)
        except XrtcError as err:
            errors.append(str(err).splitlines()[0][:200])
    return f"the source model runs on none of the generated shapes ({errors[-1]}); pass --calibration or --shape"


def _shapes_text(feeds: dict) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())


def reference_outputs(model_bytes: bytes, samples: list[dict]) -> list[dict]:
    """ONNX Runtime CPU, one thread, on the source model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return [dict(zip(names, session.run(None, feeds))) for feeds in samples]
    except Exception as err:  # onnxruntime raises untyped errors
        raise XrtcError(f"ONNX Runtime cannot run the source model on the gate's samples: {err}") from err


def measure(bundle_path: str, variant_id: str, samples: list[dict], references: list[dict], rtol: float,
            atol: float) -> dict:
    """Runs `variant_id` of the candidate bundle on every sample; returns the accuracy record for the manifest:
    {"passed", "rtol", "atol", "samples", "outputs": {name: max abs err (3 significant digits)}, "worst": ...}."""
    import xpuruntime as xrt

    from .tools.verify import compare

    worst: dict[str, float] = {}
    failures = []
    needed = 0.0  # the atol the outputs would need (the failure's advice; not stored in the bundle)
    with xrt.load(bundle_path, variant=variant_id) as session:
        ran_on = session.explain()["device"]  # an NPU variant is measured on its fallback device here (no NPU)
        for feeds, ref in zip(samples, references):
            try:
                got = session.run(feeds)
            except xrt.Error as err:  # the variant refuses these inputs: reported, the caller decides
                return {"passed": False, "error": True, "rtol": rtol, "atol": atol, "samples": len(samples),
                        "max_abs_err": {}, "failures": [str(err)[:400]]}
            for name, expected in ref.items():
                c = compare(variant_id, name, got[name], expected, rtol, atol)
                worst[name] = max(worst.get(name, 0.0), c.max_abs_err)
                needed = max(needed, atol_needed(got[name], expected, rtol)) \
                    if got[name].shape == expected.shape and expected.dtype.kind == "f" else needed
                if not c.passed:
                    failures.append(f"{name}: max abs err {c.max_abs_err:.3g} ({c.note})")
    return {"passed": not failures, "rtol": rtol, "atol": atol, "samples": len(samples), "ran_on": ran_on,
            "max_abs_err": {k: float(f"{v:.3g}") for k, v in sorted(worst.items())},
            "failures": failures[:4], "atol_needed": needed}


# --- fp16 arithmetic, emulated (NPU variants) -------------------------------------------------------------------
#
# An NPU variant cannot run here; the gate used to run its IR on OpenVINO's CPU plugin with the variant's f16 hint.
# What that measures depends on the build machine: OpenVINO computes in f16 only where the CPU has fp16 units
# (AVX512-FP16 / AMX-FP16); on a CPU with bf16 but no fp16 (AVX512-BF16 only) it silently computes in bf16 (8 bits of
# mantissa, not 11), and the gate rejected models an NPU runs well. So the gate now measures two things, both
# machine-independent: the IR itself on the CPU at f32 compute (conversion and fp16 weights), and fp16 arithmetic
# emulated on the variant's ONNX graph: weights rounded to fp16, the inputs and every float tensor an operator
# produces rounded to fp16 (round to nearest even), computed in fp32 inside each operator (an NPU's MAC arrays
# accumulate wider than fp16). Not modelled: fp16 arithmetic inside one operator (an LSTM's gates), and fp16's range
# (values past 65504 become inf when rounded, as on the device; a saturating device would differ).

FP16_EMULATION = ("fp16 emulated: weights, inputs and every operator output rounded to fp16, fp32 inside "
                  "operators (ONNX Runtime CPU)")


def fp16_emulation_model(model, expose: bool = False):
    """A copy of `model` that computes as fp16 storage would: float initializers rounded to fp16 values, and
    Cast(fp16) -> Cast(fp32) after every graph input and every node output of type float (names kept, so outputs
    and `expose`d intermediates compare by name with the source graph). Subgraphs are left as they are. `expose`
    also makes every rounded node output a graph output (for `fp16_drift`)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    initializers = {i.name for i in graph.initializer}
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            with np.errstate(over="ignore"):
                rounded = numpy_helper.to_array(init).astype(np.float16).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(rounded, init.name))

    def rounding(src: str, dst: str, tag: str) -> list:
        return [helper.make_node("Cast", [src], [f"{dst}/fp16"], to=TensorProto.FLOAT16, name=f"{tag}/to_fp16"),
                helper.make_node("Cast", [f"{dst}/fp16"], [dst], to=TensorProto.FLOAT, name=f"{tag}/to_fp32")]

    nodes, renamed, produced = [], {}, []
    for value in graph.input:
        if value.name not in initializers and types.get(value.name) == TensorProto.FLOAT:
            renamed[value.name] = f"{value.name}/fp16_input"
            nodes += rounding(value.name, renamed[value.name], f"{value.name}/input")
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
        nodes.append(node)
        for i, name in enumerate(node.output):
            if name and types.get(name) == TensorProto.FLOAT:
                node.output[i] = f"{name}/fp32"
                nodes += rounding(f"{name}/fp32", name, f"{node.name or name}/{i}")
                produced.append((node, name))
    del graph.node[:]
    graph.node.extend(nodes)
    if expose:
        declared = {o.name for o in graph.output}
        graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                            for _node, name in produced if name not in declared)
    return model


def _run_ort(model, samples: list[dict], optimise: bool) -> list[dict]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimise:  # ORT's optimiser removes Cast pairs: the rounding must stay
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, feeds))) for feeds in samples]


def atol_needed(got: np.ndarray, ref: np.ndarray, rtol: float) -> float:
    """The smallest atol with which `got` would pass against `ref` at `rtol` (the gate's rule)."""
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.abs(np.where(np.isfinite(r), r, 0.0))
    with np.errstate(invalid="ignore"):
        err = np.where(g == r, 0.0, np.abs(g - r))
    err = np.where(np.isnan(err), np.inf, err)
    return float(max(0.0, float((err - rtol * finite).max())) / max(1.0, float(finite.max())))


def measure_fp16_emulation(model, samples: list[dict], references: list[dict], rtol: float,
                           atol: float) -> dict:
    """fp16 arithmetic emulated on `model` (see fp16_emulation_model) against the references; the record has the
    shape of `measure`'s, plus `atol_needed` (what the tolerance would have to be)."""
    from .tools.verify import compare

    outputs = _run_ort(fp16_emulation_model(model), samples, optimise=False)
    worst: dict[str, float] = {}
    failures, needed = [], 0.0
    for got, ref in zip(outputs, references):
        for name, expected in ref.items():
            c = compare("fp16-emulated", name, got[name], expected, rtol, atol)
            worst[name] = max(worst.get(name, 0.0), c.max_abs_err)
            needed = max(needed, atol_needed(got[name], expected, rtol)) \
                if got[name].shape == expected.shape and expected.dtype.kind == "f" else needed
            if not c.passed:
                failures.append(f"{name}: max abs err {c.max_abs_err:.3g} with fp16 arithmetic ({c.note})")
    return {"passed": not failures, "max_abs_err": {k: float(f"{v:.3g}") for k, v in sorted(worst.items())},
            "failures": failures[:4], "atol_needed": needed}


def fp16_drift(model, sample: dict, top: int = 3) -> list[tuple[str, str, float]]:
    """The operators that lose the most accuracy in fp16: [(node name, op type, relative error added)], largest
    first. A node's relative error is max|emulated - fp32| / max|fp32| over its float outputs; what it adds is that
    minus the largest relative error among its inputs (so the error it inherits is not counted again)."""
    import onnx

    full = onnx.ModelProto()
    full.CopyFrom(model)
    full = onnx.shape_inference.infer_shapes(full)
    float_outputs = {v.name for v in full.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    declared = {o.name for o in full.graph.output}
    full.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                             for node in full.graph.node for n in node.output if n in float_outputs
                             and n not in declared)
    (ref,) = _run_ort(full, [sample], optimise=False)
    (emu,) = _run_ort(fp16_emulation_model(model, expose=True), [sample], optimise=False)
    rel: dict[str, float] = {}
    for name, expected in ref.items():
        if name in emu and expected.dtype.kind == "f" and expected.size and emu[name].shape == expected.shape:
            scale = float(np.abs(expected).max()) or 1.0
            rel[name] = float(np.abs(emu[name].astype(np.float64) - expected).max()) / scale
    added = []
    for node in model.graph.node:
        outs = [rel[n] for n in node.output if n in rel]
        if outs:
            inherited = max([rel.get(n, 0.0) for n in node.input if n] or [0.0])
            added.append((node.name or node.output[0], node.op_type, max(outs) - inherited))
    added.sort(key=lambda item: -item[2])
    return [a for a in added[:top] if a[2] > 0]


def fp16_advice(variant_id: str, targets: list[str], drift: list[tuple[str, str, float]], needed: float,
                rtol: float) -> str:
    """What the user can do when an NPU variant's fp16 arithmetic is over the tolerance (appended to the error)."""
    layers = ", ".join(f"{name} ({op}) +{100 * err:.2g}%" for name, op, err in drift) or "none stands out"
    suggest = float(f"{needed * 1.2:.2g}") if np.isfinite(needed) else None
    steps = []
    if suggest is not None:
        steps.append(f"accept fp16's error: a policy with [tolerance] fp16 = {{ rtol = {rtol:g}, atol = {suggest:g} "
                     "} (--policy p.toml; the gate would then pass)")
    if "cpu" not in targets:
        steps.append("compile --target " + ",".join([*targets, "cpu"]) + " to ship CPU variants with it (the NPU "
                     "variant stays out until it meets the tolerance)")
    steps.append("or re-train/export the model for fp16 (the layers above lose the most)")
    return (f"{variant_id} computes in fp16 on the NPU (measured by emulating fp16 arithmetic, not on an NPU); "
            f"layers that lose the most accuracy (relative error added): {layers}. To go on: " + "; ".join(steps))


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy encoding (deterministic: header from dtype and shape only)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _save_samples(path: str, samples: list[dict]) -> None:
    np.savez(path, **{f"{i}/{name}": array for i, sample in enumerate(samples) for name, array in sample.items()})


def _load_samples(path: str) -> list[dict]:
    out: dict[int, dict] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, name = key.split("/", 1)
            out.setdefault(int(index), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def measure_isolated(workdir: str, bundle_path: str, variant_id: str, samples: list[dict], references: list[dict],
                     rtol: float, atol: float) -> dict:
    """`measure` in a child process: an engine that crashes on the variant (seen: OpenVINO 2026.4 segfaults running
    some int8 QDQ graphs with dynamic shapes) fails the variant, not the compiler. The record then says so."""
    import json
    import os
    import subprocess
    import sys

    feeds_path = os.path.join(workdir, "gate-feeds.npz")
    refs_path = os.path.join(workdir, "gate-refs.npz")
    out_path = os.path.join(workdir, f"gate-{variant_id}.json")
    if not os.path.exists(feeds_path):
        _save_samples(feeds_path, samples)
        _save_samples(refs_path, references)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "xrtc.gate", bundle_path, variant_id, feeds_path, refs_path,
                           repr(rtol), repr(atol), out_path], cwd=workdir, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 or not os.path.exists(out_path):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:300]
        log.warning("gate child for %s died (%s): %s", variant_id, how, proc.stderr[-2000:])
        return {"passed": False, "crashed": True, "rtol": rtol, "atol": atol, "samples": len(samples),
                "max_abs_err": {}, "failures": [f"the engine crashed running the variant ({how}){': ' + tail if tail and proc.returncode > 0 else ''}"]}
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def _main(argv: list[str]) -> int:
    import json

    bundle_path, variant_id, feeds_path, refs_path, rtol, atol, out_path = argv
    record = measure(bundle_path, variant_id, _load_samples(feeds_path), _load_samples(refs_path), float(rtol),
                     float(atol))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
