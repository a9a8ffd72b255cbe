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
    from .tools._data import load_inputs

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
    return [{n: np.ascontiguousarray(a[i]) for n, a in per_input.items()} for i in range(count)]


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


def samples_for(inputs: list[dict], shapes: dict, calibration: list[dict] | None, model=None) -> Samples:
    """The gate's samples. Without calibration data, samples are generated for the bound shapes; dims still dynamic
    are pinned to candidate sizes (DYNAMIC_FILLS, then the sizes the graph suggests: `graph_sizes`) and the caller
    keeps the first candidate the source model runs on (`reference_for`). Raises NoSamples."""
    from .tools._data import random_inputs

    if calibration:
        return Samples(calibration[:GATE_SAMPLES], f"calibration data ({plural(len(calibration), 'sample')}, "
                                                   f"{min(len(calibration), GATE_SAMPLES)} compared)")
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
    feeds = [[random_inputs(specs, pinned, seed) for seed in range(2)] for pinned in candidates]
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
            atol: float) -> dict:
    """Runs `variant_id` of the candidate bundle on every sample; returns the accuracy record for the manifest:
    {"passed", "rtol", "atol", "samples", "outputs": {name: max abs err (3 significant digits)}, "worst": ...}."""
    import xpuruntime as xrt

    from .tools.verify import compare

    worst: dict[str, float] = {}
    failures = []
    with xrt.load(bundle_path, variant=variant_id) as session:
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
                text = f"{name}: max abs err {c.max_abs_err:.3g}" + (f" ({c.note})" if c.note else "")
                if not c.passed and text not in failures:
                    failures.append(text)
    return {"passed": not failures, "rtol": rtol, "atol": atol, "samples": len(samples), "ran_on": ran_on,
            "max_abs_err": {k: float(f"{v:.3g}") for k, v in sorted(worst.items())},
            "failures": failures[:4]}


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
        tail = _first_sentence(" ".join(proc.stderr.strip().splitlines()[-1:]), 300)
        log.warning("gate child for %s died (%s): %s", variant_id, how, proc.stderr[-2000:])
        return {"passed": False, "crashed": True, "rtol": rtol, "atol": atol, "samples": len(samples),
                "max_abs_err": {}, "failures": [f"the engine crashed running the variant ({how})"
                                                + (f": {tail}" if tail and proc.returncode > 0 else "")]}
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
