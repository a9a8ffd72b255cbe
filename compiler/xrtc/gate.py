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

from .errors import AccuracyGateError, UsageError, XrtcError

log = logging.getLogger("xrtc.gate")

GATE_SAMPLES = 4  # samples compared per variant; the first one is stored in the bundle as its golden data
CALIBRATION_SAMPLES_MAX = 256

_Spec = namedtuple("_Spec", "name dtype shape")


# Sizes tried for dynamic input dims (the first dim is pinned to 1) when no data or shape is given: image models
# need realistic sizes, sequence models accept any.
DYNAMIC_FILLS = (224, 256, 640, 32)


class NoSamples(AccuracyGateError):
    """The gate has no inputs the source model runs on (exit code 3): the message says why and which flag to pass
    (`--shape` with the exact value to edit, or `--calibration`)."""


@dataclass
class Samples:
    feeds: list[dict]  # each: input name -> array
    origin: str  # "calibration data (N samples)" / "generated (seed 0)"
    alternatives: list = field(default_factory=list)  # other candidate feeds (generated, other dynamic sizes)
    guessed: bool = False  # dynamic dims were pinned to guessed sizes: failures there are advisory

def load_calibration(path: str, inputs: list[dict]) -> list[dict]:
    """`--calibration data.npz`, one entry per input name, in one of these layouts (N = number of samples):

    - `name`: N samples stacked on a new axis 0 (rank = input rank + 1), or exactly one sample (rank = input rank);
    - `name`: for an input whose batch dim is static 1, N samples stacked along that batch axis ([8,3,416,416] for
      a [1,3,416,416] input): split into N samples of batch 1;
    - `name/0`, `name/1`, ...: a list of samples, one array each (samples may then differ in their dynamic dims).

    Also reads the corpus layout (`__names__`, in0, ...). Every sample must fit the input's static dims; anything
    else is refused with the shape expected. Every input needs data and all inputs the same sample count."""
    from .inputs import load_inputs

    try:
        data = load_inputs(path, None)
    except XrtcError as err:
        raise UsageError(f"--calibration: {err}") from err
    names = [i["name"] for i in inputs]
    listed: dict[str, dict[int, np.ndarray]] = {}
    for key, array in data.items():
        base, sep, index = key.rpartition("/")
        if sep and base in names and key not in names and index.isdigit():
            listed.setdefault(base, {})[int(index)] = array
    missing = [n for n in names if n not in data and n not in listed]
    if missing:
        raise UsageError(f"--calibration {path} has no data for input(s) {missing}; its keys are {sorted(data)}. "
                         "Save one array per input name (samples stacked on axis 0), or one array per sample as "
                         "NAME/0, NAME/1, ...")
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in inputs:
        name, shape = spec["name"], spec["shape"]
        expected = _shape_text(shape)
        if name in listed:
            indices = sorted(listed[name])
            if indices != list(range(len(indices))):
                raise UsageError(f"--calibration: samples of {name!r} are numbered {indices}; number them "
                                 f"{name}/0 .. {name}/{len(indices) - 1}")
            samples = [listed[name][i] for i in indices]
        else:
            array = data[name]
            rank = len(shape) if shape is not None else array.ndim
            if array.ndim == rank + 1:
                samples = list(array)
            elif array.ndim == rank and _fits(array.shape, shape):
                samples = [array]
            elif array.ndim == rank and shape and shape[0] == 1 and array.shape[0] > 1 and \
                    _fits((1, *array.shape[1:]), shape):
                samples = [array[i:i + 1] for i in range(array.shape[0])]  # stacked along the batch axis
            else:
                raise UsageError(
                    f"--calibration: input {name!r} takes {spec['dtype']}{expected} per sample, the data is "
                    f"{list(array.shape)}. Give N samples as [N, {expected[1:-1]}]"
                    + (f" or {_shape_text(['N', *shape[1:]])} (stacked along the batch axis)"
                       if shape and shape[0] == 1 else "")
                    + f", or one array per sample as {name}/0, {name}/1, ...")
        for i, sample in enumerate(samples):
            if sample.dtype.name != spec["dtype"]:
                raise UsageError(f"--calibration: input {name!r} is {spec['dtype']}, the data {sample.dtype.name}")
            if not _fits(sample.shape, shape):
                raise UsageError(f"--calibration: sample {i} of input {name!r} is {list(sample.shape)}; the input "
                                 f"takes {expected} per sample")
        per_input[name] = samples
    counts = {n: len(a) for n, a in per_input.items()}
    if len(set(counts.values())) != 1 or not next(iter(counts.values())):
        raise UsageError(f"--calibration: every input needs the same, non-zero number of samples; got {counts}")
    count = min(next(iter(counts.values())), CALIBRATION_SAMPLES_MAX)
    # np.asarray(order="C"), not np.ascontiguousarray: that one turns a 0-d sample (a scalar input) into [1].
    return [{n: np.asarray(a[i], order="C") for n, a in per_input.items()} for i in range(count)]


def _fits(dims, shape) -> bool:
    """Whether array dims `dims` fit a declared input shape (static dims equal; symbolic/unknown dims any size)."""
    if shape is None:
        return True
    return len(dims) == len(shape) and all(not isinstance(d, int) or d == g for d, g in zip(shape, dims))


def _shape_text(shape) -> str:
    if shape is None:
        return "[unknown rank]"
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def graph_sizes(model, limit: int = 6) -> list[int]:
    """Sizes the graph itself suggests for dynamic dims, most frequent first: the values of small integer constants
    (Reshape/Expand/Slice shapes a legacy exporter froze, e.g. a sequence length of 16) and the dims of
    initializers (position-embedding tables). Tried after DYNAMIC_FILLS, so models that accept those keep them."""
    from collections import Counter

    import onnx
    from onnx import numpy_helper

    counts: Counter = Counter()
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) and len(t.dims) <= 1:
            count = t.dims[0] if t.dims else 1
            if count <= 8:
                counts.update(int(v) for v in numpy_helper.to_array(t).reshape(-1))
        elif len(t.dims) >= 2:
            counts.update(int(d) for d in t.dims)
    sizes = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], -kv[0])) if 2 <= v <= 4096]
    return [v for v in sizes if v not in DYNAMIC_FILLS][:limit]


# Ops an integer input may pass through on its way to a Gather's indices with its values unchanged.
_INDEX_PASSTHROUGH = {"Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose"}


def index_limits(model) -> dict[str, int]:
    """Integer graph inputs used as Gather indices into a table with fewer than 100 rows along the gathered axis
    (token_type_ids into BERT's 2-row type embedding), with that row count, so generated samples stay in range.
    Follows the input through ops that keep its values (Cast, Reshape, ...); reads constant tables only."""
    import onnx

    tables = {t.name: list(t.dims) for t in model.graph.initializer}
    tables.update({n.output[0]: list(a.t.dims) for n in model.graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))
    ints = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8,
            onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64)
    limits = {}
    for graph_input in model.graph.input:
        if graph_input.type.tensor_type.elem_type not in ints or graph_input.name in tables:
            continue
        frontier, seen, rows = [graph_input.name], set(), []
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, k in consumers.get(name, []):
                if node.op_type in _INDEX_PASSTHROUGH and k == 0:
                    frontier.extend(node.output)
                elif node.op_type == "Gather" and k == 1 and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if -len(dims) <= axis < len(dims):
                        rows.append(dims[axis])
        if rows and min(rows) < 100:
            limits[graph_input.name] = min(rows)
    return limits


def samples_for(inputs: list[dict], shapes: dict, calibration: list[dict] | None, model=None) -> Samples:
    """The gate's samples. Without calibration data, samples are generated for the bound shapes; dims still dynamic
    are pinned to candidate sizes (DYNAMIC_FILLS, then the sizes the graph suggests: `graph_sizes`) and the caller
    keeps the first candidate the source model runs on (`reference_for`). Raises NoSamples."""
    from .inputs import random_inputs

    if calibration:
        return Samples(calibration[:GATE_SAMPLES], f"calibration data ({plural(len(calibration), 'sample')}, "
                                                   f"{min(len(calibration), GATE_SAMPLES)} compared)")
    values = [i["name"] for i in inputs if "type" in i]
    if values:
        raise NoSamples(f"input {values[0]!r} is a sequence, map or optional, which the gate cannot generate or read "
                        "from .npz: compile with --allow-unverified")
    specs = [_Spec(i["name"], i["dtype"], tuple(i["shape"] or ())) for i in inputs]
    unknown = [i["name"] for i in inputs if i["shape"] is None]
    if unknown:
        raise NoSamples(f"input {unknown[0]!r} has unknown rank, so the gate cannot make samples for it: pass real "
                        "inputs with --calibration data.npz")
    fills = list(DYNAMIC_FILLS) + (graph_sizes(model) if model is not None else [])
    # A named dim is one size everywhere: "batch" first in one input and second in another (a recurrent state
    # [2, batch, 128]) is pinned to 1 in both.
    leading = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}
    candidates = []
    for fill in fills:
        pinned = {s.name: tuple(d if isinstance(d, int) else (1 if k == 0 or d in leading else fill)
                                for k, d in enumerate(s.shape))
                  for s in specs}
        pinned.update({k: tuple(v) for k, v in shapes.items()})
        candidates.append(pinned)
        if all(all(isinstance(d, int) for d in s.shape) or s.name in shapes for s in specs):
            break  # nothing dynamic: one candidate
    limits = index_limits(model) if model is not None else {}
    feeds = [[random_inputs(specs, pinned, seed, limits) for seed in range(2)] for pinned in candidates]
    return Samples(feeds[0], "generated (seeded normal floats, small ints; 2 samples)", feeds[1:])


def reference_for(samples: Samples, model_bytes: bytes, inputs: list[dict] | None = None) -> tuple[Samples, list[dict]]:
    """The samples the source model runs on, with its outputs; tries the candidate shapes in order. Raises
    NoSamples naming the shapes tried and the `--shape` flags to pass."""
    errors = []
    try:
        session = _reference_session(model_bytes)
    except XrtcError as err:
        raise NoSamples(f"{err}, so there is no reference to compare with") from err
    candidates = [samples.feeds, *samples.alternatives]
    guessed = samples.guessed or bool(samples.alternatives)
    origin = samples.origin.split("; dynamic dims pinned to ")[0]
    for k, feeds in enumerate(candidates):
        try:
            references = _run_reference(session, feeds)
        except XrtcError as err:
            errors.append((_shapes_text(feeds[0]), str(err).split("gate's samples: ", 1)[-1]))
            continue
        # The untried candidates stay as alternatives: a variant that fails on guessed shapes gets the next ones.
        return Samples(feeds, origin + (f"; dynamic dims pinned to {_shapes_text(feeds[0])}" if guessed else ""),
                       candidates[k + 1:] if guessed else [], guessed=guessed), references
    if not errors:
        raise NoSamples("no other sample shape to try")
    tried = "; ".join(shape for shape, _ in errors)
    flags = shape_flags(inputs or [])
    raise NoSamples(f"the source model runs on none of the sample shapes tried ({tried}); ONNX Runtime said, for "
                    f"the last: {errors[-1][1]}. Give the shapes the model accepts"
                    + (f" ({flags}, N being a size it accepts)" if flags else "")
                    + " or real inputs with --calibration data.npz")


def shape_flags(inputs: list[dict]) -> str:
    """`--shape` flags to edit for the inputs with dynamic dims: `--shape x=1x3xNxN` (leading/batch dims as 1)."""
    leading = {s["shape"][0] for s in inputs if s["shape"] and isinstance(s["shape"][0], str)}
    return " ".join("--shape {}={}".format(s["name"], "x".join(
        str(d) if isinstance(d, int) else ("1" if k == 0 or d in leading else "N") for k, d in enumerate(s["shape"])))
        for s in inputs if s["shape"] and any(not isinstance(d, int) for d in s["shape"]))


def _shapes_text(feeds: dict) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in feeds.items())


def _first_sentence(text: str, limit: int = 240) -> str:
    """ONNX Runtime's message, without its `[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :` prefix and cut at a word
    boundary (never mid-word)."""
    import re

    text = " ".join(text.split())
    text = re.sub(r"^.*?\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # "Non-zero status code returned while running Add node. Name:'' Status Message: /onnxruntime_src/...h:583
    # void f(...) axis == 1 || axis == largest was false. Attempting to ..." -> "Add node: Attempting to ..."
    text = re.sub(r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message: "
                  r"(?:\S+\.(?:h|cc|cpp):\d+ .*? was false\. )?",
                  lambda m: f"{m[1]} node {m[2]!r}: " if m[2] else f"{m[1]} node: ", text)
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


def _reference_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4  # its errors come back as exceptions, reworded; nothing printed (not even with -q)
    try:
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises untyped errors
        raise XrtcError(f"ONNX Runtime cannot load the source model: {_first_sentence(str(err))}") from err


def _run_reference(session, samples: list[dict]) -> list[dict]:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    names = [o.name for o in session.get_outputs()]
    try:
        return [dict(zip(names, session.run(None, feeds, options))) for feeds in samples]
    except Exception as err:  # onnxruntime raises untyped errors
        raise XrtcError(f"ONNX Runtime cannot run the source model on the gate's samples: "
                        f"{_first_sentence(str(err))}") from err


def reference_outputs(model_bytes: bytes, samples: list[dict]) -> list[dict]:
    """ONNX Runtime CPU, one thread, on the source model (nothing logged: failures are XrtcError)."""
    return _run_reference(_reference_session(model_bytes), samples)


def measure(bundle_path: str, variant_id: str, samples: list[dict], references: list[dict], rtol: float,
            atol: float, device: str = "cpu") -> dict:
    """Runs `variant_id` of the candidate bundle on `device` on every sample; returns the accuracy record for the manifest:
    {"passed", "rtol", "atol", "samples", "outputs": {name: max abs err (3 significant digits)}, "worst": ...}."""
    import xpuruntime as xrt

    from .numeric import compare

    worst: dict[str, float] = {}
    failures = []
    needed = 0.0  # the atol the outputs would need (the failure's advice; not stored in the bundle)
    with xrt.load(bundle_path, device, variant=variant_id) as session:
        ran_on = session.explain()["device"]  # an NPU variant is measured on its fallback device here (no NPU)
        for feeds, ref in zip(samples, references):
            try:
                got = session.run(feeds)
            except xrt.Error as err:  # the variant refuses these inputs: reported, the caller decides
                return {"passed": False, "error": True, "rtol": rtol, "atol": atol, "samples": len(samples),
                        "max_abs_err": {}, "failures": [_first_sentence(str(err), 400)]}
            for name, expected in ref.items():
                c = compare(variant_id, name, got[name], expected, rtol, atol)
                worst[name] = max(worst.get(name, 0.0), c.max_abs_err)
                needed = max(needed, atol_needed(got[name], expected, rtol)) \
                    if isinstance(expected, np.ndarray) and isinstance(got[name], np.ndarray) \
                    and got[name].shape == expected.shape and expected.dtype.kind == "f" else needed
                text = f"{name}: max abs err {c.max_abs_err:.3g}" + (f" ({c.note})" if c.note else "")
                if not c.passed and text not in failures:
                    failures.append(text)
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
    """The smallest atol with which `got` would pass against `ref` at `rtol` (the gate's rule); 0 for empty outputs."""
    if ref.size == 0:
        return 0.0
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
    from .numeric import compare

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
    from .targets import host_target

    host = host_target()
    if host not in targets:
        steps.append("compile --target " + ",".join([*targets, host]) + " to ship CPU variants with it (the NPU "
                     "variant stays out until it meets the tolerance)")
    steps.append("or re-train/export the model for fp16 (the layers above lose the most)")
    return (f"{variant_id} computes in fp16 on the NPU (measured by emulating fp16 arithmetic, not on an NPU); "
            f"layers that lose the most accuracy (relative error added): {layers}. To go on: " + "; ".join(steps))


def storable(array: np.ndarray) -> np.ndarray:
    """A string tensor (ONNX Runtime returns object arrays of str) as a NumPy unicode array, which .npy stores
    without pickles; other arrays as they are."""
    if array.dtype.kind == "O":
        return np.array(array.tolist(), dtype=np.str_).reshape(array.shape)
    return array


def npy_bytes(array: np.ndarray) -> bytes:
    """The .npy encoding (deterministic: header from dtype and shape only). String tensors as unicode arrays."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(storable(array), order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
    return buf.getvalue()


def golden_arrays(bundle, golden: dict) -> tuple[dict, dict]:
    """The golden inputs and reference outputs a bundle carries (`golden`: its manifest's "golden" entry, the
    .npy sections packaging wrote with npy_bytes), read back without unpickling."""

    def arrays(entries):
        return {e["name"]: np.load(io.BytesIO(bundle.data(e["section"])), allow_pickle=False) for e in entries}

    return arrays(golden["inputs"]), arrays(golden["outputs"])


def _encode_value(value):
    """Sequences (list), maps (dict) and optionals (None) as tagged JSON for the gate's child process (no pickles)."""
    if isinstance(value, list):
        return {"seq": [_encode_value(v) for v in value]}
    if isinstance(value, dict):
        return {"map": [[k if isinstance(k, str) else int(k), _encode_value(v)] for k, v in value.items()]}
    if value is None:
        return {"none": True}
    a = storable(np.asarray(value))
    return {"tensor": a.tolist(), "dtype": a.dtype.str, "shape": list(a.shape)}


def _decode_value(obj):
    if "seq" in obj:
        return [_decode_value(v) for v in obj["seq"]]
    if "map" in obj:
        return {k: _decode_value(v) for k, v in obj["map"]}
    if "none" in obj:
        return None
    a = np.array(obj["tensor"], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    return a if a.shape else a[()]


def _save_samples(path: str, samples: list[dict]) -> None:
    import json

    values = {f"{i}/{name}": _encode_value(v) for i, sample in enumerate(samples) for name, v in sample.items()
              if not isinstance(v, np.ndarray)}
    np.savez(path, **{f"{i}/{name}": storable(array) for i, sample in enumerate(samples)
                      for name, array in sample.items() if isinstance(array, np.ndarray)})
    with open(path + ".values.json", "w", encoding="utf-8") as f:
        json.dump(values, f)


def _load_samples(path: str) -> list[dict]:
    import json

    out: dict[int, dict] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, name = key.split("/", 1)
            out.setdefault(int(index), {})[name] = data[key]
    with open(path + ".values.json", encoding="utf-8") as f:
        for key, obj in json.load(f).items():
            index, name = key.split("/", 1)
            out.setdefault(int(index), {})[name] = _decode_value(obj)
    return [out[i] for i in sorted(out)]


def measure_isolated(workdir: str, bundle_path: str, variant_id: str, samples: list[dict], references: list[dict],
                     rtol: float, atol: float, device: str = "cpu") -> dict:
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
                           repr(rtol), repr(atol), out_path, device], cwd=workdir, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 or not os.path.exists(out_path):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        tail = _first_sentence(" ".join(proc.stderr.strip().splitlines()[-1:]), 300)
        log.warning("gate child for %s died (%s): %s", variant_id, how, proc.stderr[-2000:])
        return {"passed": False, "crashed": True, "rtol": rtol, "atol": atol, "samples": len(samples),
                "max_abs_err": {}, "failures": [f"the engine crashed running the variant ({how})"
                                                + (f": {tail}" if tail and proc.returncode > 0 else "")]}
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def _main(argv: list[str]) -> int:
    import json

    bundle_path, variant_id, feeds_path, refs_path, rtol, atol, out_path, device = argv
    record = measure(bundle_path, variant_id, _load_samples(feeds_path), _load_samples(refs_path), float(rtol),
                     float(atol), device)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
