#!/usr/bin/env python3
"""Peak resident memory while loading (issue 16, goal 3): one child process per load, its peak RSS (VmHWM) measured
from a reset after the imports, so only the load counts, not the interpreter and the engines' libraries.

Per model: the bundle through xrt.load() (the variant it prefers), ONNX Runtime and OpenVINO from the .onnx, and the
engine's own overhead: the same engine loading a tiny model (a 1x3x8x8 Conv), through xrt (that variant pinned) and
directly. Two peaks each: after the load (open + verify + engine init) and after the first run (+ activations).
Also the cold load-to-first-result: the first load and run in a fresh process (whatever the runtime imports or
initialises on first use counts; bench/cpu_corpus.py --load-only times warm loads in one process).

    python bench/load_rss.py [--models a,b] [--compile-args=--no-precompile] [--json out.json]

Goal: xrt load peak <= 1.1 x (bundle size + overhead), the overhead being the tiny model loaded by the engine
directly (strict: the runtime's own libraries count against the bundle) or through xrt (the runtime's fixed cost
counted as overhead); both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPUS = Path(os.environ.get("XRT_CORPUS", Path.home() / ".cache" / "xrt-corpus"))
MB = 1e6


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> None:
    """VmHWM := the current RSS (Linux: clear_refs 5), so the next peak is the load's alone."""
    Path("/proc/self/clear_refs").write_text("5")


def child(kind: str, path: str, variant: str | None, inputs: str | None) -> dict:
    """One load in this (fresh) process: {base, load, first} in bytes (RSS after the imports, peak after the load,
    peak after the first run)."""
    import numpy as np
    import onnxruntime
    import openvino as ov

    import xpuruntime as xrt

    if inputs:
        with np.load(inputs) as data:
            feeds = {str(n): data[f"in{i}"] for i, n in enumerate(data["__names__"])}
    else:
        feeds = {"x": np.ones((1, 3, 8, 8), np.float32)}
    core = ov.Core()  # created before the reset: the OpenVINO peer's Core is not part of its load
    _reset_peak()
    base = _status_kb("VmRSS")
    start = time.perf_counter()
    if kind == "xrt":
        sess = xrt.load(path, variant=variant)
        load = _status_kb("VmHWM")
        sess.run(feeds)
    elif kind == "ort":
        sess = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        load = _status_kb("VmHWM")
        sess.run(None, feeds)
    elif kind == "ov":
        request = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        load = _status_kb("VmHWM")
        request.infer(feeds, share_inputs=True)
    else:
        raise SystemExit(f"unknown kind {kind}")
    cold_s = time.perf_counter() - start
    first = _status_kb("VmHWM")
    return {"base": base * 1024, "load": (load - base) * 1024, "first": (first - base) * 1024, "cold_s": cold_s}


def measure(kind, path, variant=None, inputs=None, repeats=3) -> dict | None:
    """Median (by load peak) of `repeats` fresh child processes; None if the load fails (the engine cannot load it)."""
    samples = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), variant or "", inputs or ""],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    samples.sort(key=lambda s: s["load"])
    return samples[len(samples) // 2]


def tiny_model(path: Path) -> None:
    """A 1x3x8x8 -> 1x4x8x8 Conv (432 bytes of weights): what an engine costs to load with next to no model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.linspace(-1, 1, 4 * 3 * 3 * 3, dtype=np.float32).reshape(4, 3, 3, 3), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def compile_bundle(model: Path, bundle: Path, compile_args: list, inputs: Path | None) -> str | None:
    """xrtc compile --target cpu; the error's last line on failure."""
    extra = ["--calibration", str(inputs)] if inputs else []
    proc = subprocess.run([str(Path(sys.executable).parent / "xrtc"), "compile", str(model), "--target", "cpu",
                           "-o", str(bundle), "-q", *extra, *compile_args], capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1][:300]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, path, variant, inputs = sys.argv[2:6]
        print(json.dumps(child(kind, path, variant or None, inputs or None)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated subset of the corpus")
    ap.add_argument("--compile-args", default="", help="extra xrtc compile arguments, space-separated")
    ap.add_argument("--repeats", type=int, default=3, help="child processes per measurement (median)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args()
    import xpuruntime as xrt

    lines = (CORPUS / "MANIFEST.tsv").read_text().splitlines()
    names = args.models.split(",") if args.models else [ln.split("\t")[0] for ln in lines[1:] if ln.strip()]
    work = Path(tempfile.mkdtemp(prefix="xrt-rss-"))
    tiny = work / "tiny.onnx"
    tiny_model(tiny)
    tiny_bundle = work / "tiny.xrtpkg"
    error = compile_bundle(tiny, tiny_bundle, args.compile_args.split(), None)
    if error:
        raise SystemExit(f"cannot compile the tiny model: {error}")
    with xrt.load(tiny_bundle) as probe:
        tiny_variants = {v["engine"]: v["id"] for v in probe.manifest["variants"]}
    overhead = {engine: measure("xrt", tiny_bundle, vid, repeats=args.repeats) for engine, vid in tiny_variants.items()}
    overhead["ort-direct"] = measure("ort", tiny, repeats=args.repeats)
    overhead["ov-direct"] = measure("ov", tiny, repeats=args.repeats)
    rows, not_compiled = [], []
    for name in names:
        model = CORPUS / "models" / f"{name}.onnx"
        inputs = CORPUS / "inputs" / f"{name}.npz"
        bundle = work / f"{name}.xrtpkg"
        error = compile_bundle(model, bundle, args.compile_args.split(), inputs)
        if error:
            not_compiled.append((name, error))
            continue
        with xrt.load(bundle) as probe:
            variant, engine = probe.variant, probe.engine
        rows.append({"model": name, "variant": variant, "engine": engine, "onnx": model.stat().st_size,
                     "bundle": bundle.stat().st_size, "xrt": measure("xrt", bundle, None, str(inputs), args.repeats),
                     "ort": measure("ort", model, None, str(inputs), args.repeats),
                     "ov": measure("ov", model, None, str(inputs), args.repeats)})
        bundle.unlink()
        print(f"done {name}", file=sys.stderr, flush=True)

    def cold_ratio(a, b):
        return "-" if not (a and b and "cold_s" in a and "cold_s" in b) else f"{a['cold_s'] / b['cold_s']:.2f}"

    def ms(v):
        return "-" if v is None or "cold_s" not in v else f"{v['cold_s'] * 1e3:.1f}"

    def mb(v, key):
        return "-" if v is None else f"{v[key] / MB:.1f}"

    print("engine overhead (tiny Conv model), peak MB load / +first run: " + ", ".join(
        f"{k} {mb(v, 'load')} / {mb(v, 'first')}" for k, v in overhead.items()))
    print("\n| model | variant used | onnx MB | bundle MB | xrt load peak MB | xrt +1st run MB | engine tiny MB | "
          "xrt tiny MB | xrt / (bundle + engine tiny) | xrt / (bundle + xrt tiny) | ORT load peak MB | ORT +1st MB | "
          "OV load peak MB | OV +1st MB | xrt load / its engine's from .onnx | xrt cold load+1st ms | "
          "ORT cold load+1st ms | xrt / ORT cold |")
    print("|" + "---|" * 18)
    met_engine = met_xrt = 0
    for r in rows:
        x = r["xrt"]
        direct = overhead.get("ov-direct" if r["engine"] == "openvino" else "ort-direct")
        tiny_xrt = overhead.get(r["engine"])
        ratios = [x["load"] / (r["bundle"] + t["load"]) if x and t else None for t in (direct, tiny_xrt)]
        met_engine += ratios[0] is not None and ratios[0] <= 1.1
        met_xrt += ratios[1] is not None and ratios[1] <= 1.1
        own = r["ov" if r["engine"] == "openvino" else "ort"]
        vs_own = x["load"] / own["load"] if x and own else None
        print(f"| {r['model']} | {r['variant']} | {r['onnx'] / MB:.1f} | {r['bundle'] / MB:.1f} | {mb(x, 'load')} | "
              f"{mb(x, 'first')} | {mb(direct, 'load')} | {mb(tiny_xrt, 'load')} | "
              + " | ".join("-" if v is None else f"{v:.2f}" for v in ratios) + " | "
              f"{mb(r['ort'], 'load')} | {mb(r['ort'], 'first')} | {mb(r['ov'], 'load')} | {mb(r['ov'], 'first')} | "
              f"{'-' if vs_own is None else f'{vs_own:.2f}'} | {ms(x)} | {ms(r['ort'])} | {cold_ratio(x, r['ort'])} |")
    print(f"\npeak RSS goal (xrt load peak <= 1.1x bundle + overhead): met on {met_engine}/{len(rows)} models with the "
          f"engine's own overhead (tiny model loaded directly), {met_xrt}/{len(rows)} with the tiny model through xrt")
    for name, error in not_compiled:
        print(f"not compiled: {name}: {error}")
    if args.json:
        Path(args.json).write_text(json.dumps({"overhead": overhead, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
