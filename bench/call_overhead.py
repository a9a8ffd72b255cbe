#!/usr/bin/env python3
"""Per-call overhead of the runtime against the bare engine, on the same bundle's graph with the same settings.

For each model (default: the corpus' tiny ones, where a few microseconds are a visible share of a call) the bundle
is compiled for the CPU (`xrtc compile --target cpu`, the corpus input as calibration and its shapes bound), then,
per CPU variant of the bundle:
  ONNX Runtime  xrt.load(bundle, variant=...).run(feeds)  against  InferenceSession.run(output_names, feeds) on a
                session created from the variant's own artifact bytes and options by the backend's own code
                (xpuruntime._ort_backend: same SessionOptions, same zero-copy weight store)
  OpenVINO      xrt.load(bundle, variant=...).run(feeds)  against  InferRequest.infer(feeds, share_inputs=True) of
                OpenVINO's Python API on the variant's own blob (or IR over the weight store) with the variant's
                options and the f32 hint (the bundle runs it through the C++ plugin: no Python in its call)
For ONNX Runtime variants a third runner, "xrt via core", passes the same arrays in a read-only mapping, which takes
the path through the C++ core and the backend's callback that run() took before it called ONNX Runtime directly.
All sides run with the same inputs, interleaved call by call in rotating order, in rounds (see interleaved). Reported:
the median per call of each side over all calls, their ratio (xrt / bare), the median of the per-round ratios, and
the overhead in microseconds (and the same for the core's path). The load average is printed with the table: the
machine is shared.

    python bench/call_overhead.py [--models a,b] [--rounds 9] [--block 0.2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

import xpuruntime as xrt
from xpuruntime import _ort_backend

CORPUS = Path(os.environ.get("XRT_CORPUS", Path.home() / ".cache" / "xrt-corpus"))
TINY = ("oww_hey_mycroft", "oww_embedding", "oww_melspectrogram", "silero_vad_openvino_16k", "ppocr_mobile_v2_cls")


def inputs_for(name):
    with np.load(CORPUS / "inputs" / f"{name}.npz") as data:
        return {str(n): data[f"in{i}"] for i, n in enumerate(data["__names__"])}


def compile_bundle(name: str, out: Path) -> None:
    model = CORPUS / "models" / f"{name}.onnx"
    shapes = [f"--shape={n}={'x'.join(map(str, a.shape))}" for n, a in inputs_for(name).items() if a.ndim]
    command = [str(Path(sys.executable).parent / "xrtc"), "compile", str(model), "--target", "cpu", "-o", str(out),
               "-q", "--calibration", str(CORPUS / "inputs" / f"{name}.npz"), *shapes]
    subprocess.run(command, check=True, capture_output=True, text=True)


def bare_onnxruntime(bundle, variant: dict):
    """run() of an InferenceSession made by the backend's own init from the variant's artifacts and options."""
    artifacts = {role: memoryview(bundle.data(section)) for role, section in variant["artifacts"].items()}
    handle = _ort_backend._init("cpu", artifacts, json.dumps(variant.get("options", {})))
    _ort_backend.take_created()
    session, names = handle.session, handle.output_names
    return lambda feeds: session.run(names, feeds)


def bare_openvino(bundle, variant: dict):
    """infer() of the variant's model as the backend loads it: its precompiled blob imported, else its IR (over the
    weight store) compiled, with the variant's engine options (f32 unless they say)."""
    import openvino as ov

    config = {k: str(v) for k, v in variant.get("options", {}).items() if not k.startswith("xrt.")}
    config.setdefault("INFERENCE_PRECISION_HINT", "f32")
    core = ov.Core()
    artifacts = variant["artifacts"]
    if "compiled" in artifacts:
        compiled = core.import_model(bundle.data(artifacts["compiled"]), "CPU", config)
    else:
        weights = np.frombuffer(bundle.data(artifacts["weights"]), np.uint8) if "weights" in artifacts else \
            np.zeros(0, np.uint8)
        ir = core.read_model(bundle.data(artifacts["model"]).decode(), ov.Tensor(weights))
        compiled = core.compile_model(ir, "CPU", config)
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds, share_inputs=True)


def interleaved(runners: dict, feeds: dict, rounds: int, block: float) -> dict[str, list[list[float]]]:
    """Seconds per call of each runner, per round. Within a round the runners take turns call by call, the order
    rotating each time (A B C, B C A, ...), for `block` seconds x runners: each call follows each other runner's
    call equally often, so drift, cache and thread-pool effects hit all alike (blocks of one runner's calls measured
    the sessions' thread pools more than the call path: the same call differed by 15 % between two blocks)."""
    keys = list(runners)
    for fn in runners.values():
        for _ in range(20):
            fn(feeds)
    times = {k: [] for k in runners}
    for _ in range(rounds):
        got = {k: [] for k in keys}
        start = time.perf_counter()
        i = 0
        while i < 20 or time.perf_counter() - start < block * len(keys):
            for key in keys[i % len(keys):] + keys[:i % len(keys)]:
                t = time.perf_counter()
                runners[key](feeds)
                got[key].append(time.perf_counter() - t)
            i += 1
        for key in keys:
            times[key].append(got[key])
    return times


def measure(name: str, workdir: Path, rounds: int, block: float) -> list[dict]:
    import xrtpkg

    path = workdir / f"{name}.xrtpkg"
    compile_bundle(name, path)
    bundle = xrtpkg.read(path)
    feeds = inputs_for(name)
    rows = []
    for variant in bundle.manifest["variants"]:
        engine = variant["engine"]
        if variant.get("device") != "cpu" or engine not in ("onnxruntime", "openvino"):
            continue
        session = xrt.load(path, variant=variant["id"])
        bare = bare_onnxruntime(bundle, variant) if engine == "onnxruntime" else bare_openvino(bundle, variant)
        runners = {"xrt": session.run, "bare": bare}
        if engine == "onnxruntime":
            runners["core"] = lambda f, s=session: s.run(types.MappingProxyType(f))
        times = interleaved(runners, feeds, rounds, block)
        session.close()
        med = {k: statistics.median(s for blk in v for s in blk) for k, v in times.items()}
        per_round = [statistics.median(x) / statistics.median(b) for x, b in zip(times["xrt"], times["bare"])]
        row = {"model": name, "variant": variant["id"], "engine": engine,
               "bare_us": med["bare"] * 1e6, "xrt_us": med["xrt"] * 1e6, "ratio": med["xrt"] / med["bare"],
               "round_ratio_median": statistics.median(per_round),
               "rounds_xrt_slower": sum(r > 1.0 for r in per_round), "rounds": rounds,
               "calls": sum(len(blk) for blk in times["xrt"]), "overhead_us": (med["xrt"] - med["bare"]) * 1e6}
        if "core" in med:
            core_rounds = [statistics.median(c) / statistics.median(b) for c, b in zip(times["core"], times["bare"])]
            row.update(core_us=med["core"] * 1e6, core_ratio=med["core"] / med["bare"],
                       core_round_ratio_median=statistics.median(core_rounds))
        rows.append(row)
        print(f"done {name} {variant['id']}", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help=f"comma-separated corpus models (default: {','.join(TINY)})")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (each side one block per round)")
    ap.add_argument("--block", type=float, default=0.2, help="seconds per round and runner")
    ap.add_argument("--json", help="also write the rows as JSON")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else list(TINY)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="xrt-overhead-") as tmp:
        for name in names:
            rows.extend(measure(name, Path(tmp), args.rounds, args.block))
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in load_after)}")
    print("| model | variant | bare engine us | xrt us | xrt / bare | per-round ratio (median) | rounds xrt slower |"
          " overhead us | xrt via core us | via core / bare (per-round) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        core = f"{r['core_us']:.1f} | {r['core_ratio']:.3f} ({r['core_round_ratio_median']:.3f})" if "core_us" in r \
            else "- | -"
        print(f"| {r['model']} | {r['variant']} | {r['bare_us']:.1f} | {r['xrt_us']:.1f} | {r['ratio']:.3f} | "
              f"{r['round_ratio_median']:.3f} | {r['rounds_xrt_slower']}/{r['rounds']} | {r['overhead_us']:+.1f} | "
              f"{core} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after, "rows": rows},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
