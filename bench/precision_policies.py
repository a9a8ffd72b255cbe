#!/usr/bin/env python3
"""Precision policies on the CPU: fp32, fp16 and int8 bundles of the same corpus models, side by side with the peers.

For each model (its input shape bound from the corpus inputs, since int8 OpenVINO needs static shapes here):
  size      bundle bytes, and relative to the fp32 bundle
  err       max abs error of the bundle's preferred variant vs ONNX Runtime on the source model, on the corpus
            input (not one of the calibration samples' perturbations: see calibration below), and the accuracy
            gate's verdict recorded in the bundle
  ms        median latency per call of the preferred variant (xrt.load, default threads)
  vs fp32   latency relative to the fp32 bundle (< 1: faster)
  vs peer   latency relative to the best peer: ONNX Runtime default session on the source model, or OpenVINO
            f32 on it (< 1: the bundle is faster)
All timings of one model are interleaved in one process (bench/cpu_corpus.py's method): compare ratios, not ms.
Calibration for int8: the corpus input plus 15 seeded perturbations of it (normal noise, 0.1 x its std).

    python bench/precision_policies.py [--models a,b] [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_corpus import CORPUS, inputs_for, ov_runner, timed_interleaved  # noqa: E402

import xpuruntime as xrt  # noqa: E402

DEFAULT_MODELS = ["ppocr_mobile_v2_cls", "ppocrv4_rec", "nudenet_320n", "magika_v3_3"]
PRECISIONS = ("fp32", "fp16", "int8")


def calibration(feeds: dict, path: Path, samples: int = 16) -> None:
    rng = np.random.default_rng(11)
    data = {}
    for name, v in feeds.items():
        if v.dtype.kind == "f":
            scale = 0.1 * (float(v.std()) or 1.0)
            data[name] = np.stack([v] + [(v + rng.normal(0, scale, v.shape)).astype(v.dtype)
                                         for _ in range(samples - 1)])
        else:
            data[name] = np.stack([v] * samples)
    np.savez(path, **data)


def compile_bundle(model: Path, out: Path, precision: str, feeds: dict, cal: Path) -> dict:
    cmd = [sys.executable, "-P", "-m", "xrtc", "compile", str(model), "-o", str(out), "--force", "-q",
           "--precision", precision]
    for name, v in feeds.items():
        if v.ndim:
            cmd += ["--shape", f"{name}=" + "x".join(map(str, v.shape))]
    if precision == "int8":
        cmd += ["--calibration", str(cal)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-2][:200] if proc.stderr.strip() else "failed"}
    return {"size": out.stat().st_size}


def bench_model(name: str, seconds: float, tmp: Path) -> list[dict]:
    model = CORPUS / "models" / f"{name}.onnx"
    feeds = inputs_for(name)
    cal = tmp / f"{name}-cal.npz"
    calibration(feeds, cal)
    reference_session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    reference = reference_session.run(None, feeds)

    import openvino as ov
    runners = {"ort": lambda: reference_session.run(None, feeds),
               "ov": ov_runner(ov.Core(), model, feeds)}
    rows = []
    sessions = {}
    for precision in PRECISIONS:
        out = tmp / f"{name}-{precision}.xrtpkg"
        info = compile_bundle(model, out, precision, feeds, cal)
        row = {"model": name, "precision": precision, **info}
        if "error" not in info:
            session = xrt.load(str(out))
            sessions[precision] = session
            got = session.run(feeds)
            err = max(float(np.max(np.abs(got[o.name].astype(np.float64) - r.astype(np.float64))))
                      for o, r in zip(session.outputs, reference))
            variant = next(v for v in session.manifest["variants"] if v["id"] == session.variant)
            acc = variant.get("accuracy") or {}
            row.update(variant=session.variant, built=variant["precision"], err=err,
                       gate="pass" if acc.get("passed") else ("n/a" if not acc else "FAIL"))
            runners[f"xrt-{precision}"] = (lambda s: lambda: s.run(feeds))(session)
        rows.append(row)
    times = timed_interleaved(runners, seconds)
    peer = min(times["ort"], times["ov"])
    for row in rows:
        key = f"xrt-{row['precision']}"
        if key in times:
            row.update(ms=times[key] * 1e3, vs_fp32=times[key] / times["xrt-fp32"] if "xrt-fp32" in times else None,
                       vs_peer=times[key] / peer, peer="ort" if times["ort"] <= times["ov"] else "ov",
                       peer_ms=peer * 1e3)
    fp32_size = next((r["size"] for r in rows if r["precision"] == "fp32" and "size" in r), None)
    for row in rows:
        if "size" in row and fp32_size:
            row["size_ratio"] = row["size"] / fp32_size
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per runner per model")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="xrt-prec-") as tmp:
        for name in args.models.split(","):
            rows += bench_model(name, args.seconds, Path(tmp))
    print(f"{'model':<20} {'policy':<6} {'built (variant)':<26} {'size MB':>8} {'x fp32':>7} {'max abs err':>12} "
          f"{'gate':>5} {'ms':>8} {'vs fp32':>8} {'vs peer':>8} {'peer':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<20} {r['precision']:<6} compile failed: {r['error']}")
            continue
        print(f"{r['model']:<20} {r['precision']:<6} {r['built'] + ' (' + r['variant'] + ')':<26} "
              f"{r['size'] / 1e6:>8.2f} {r['size_ratio']:>7.2f} {r['err']:>12.3g} {r['gate']:>5} {r['ms']:>8.3f} "
              f"{r['vs_fp32']:>8.2f} {r['vs_peer']:>8.2f} {r['peer'] + ' ' + format(r['peer_ms'], '.3f'):>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
