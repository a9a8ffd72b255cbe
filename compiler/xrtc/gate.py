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
                if not c.passed:
                    failures.append(f"{name}: max abs err {c.max_abs_err:.3g} ({c.note})")
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
