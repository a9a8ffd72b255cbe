#!/usr/bin/env python3
"""The OpenVINO variant's three ways to load, side by side on the same bundle (issue 16): the weightless blob xrtc
writes (constants read from the verified store at import), a whole blob (the weights inside, as xrtc wrote before:
exported here by OpenVINO from the same IR over the same store) and no blob (the IR compiled at load).

Per model: blob MB, then load-to-first-result through xrt.load() (warm: fresh sessions in this process, the three
kinds interleaved A B C A B C, median; engine init = load_profile()'s), and cold load+1st / peak RSS of the load in
fresh child processes (bench/load_rss.py's measure, median of --repeats).

    python bench/blob_kinds.py [--models nudenet_320n,magika_v3_3] [--rounds 7] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

import xpuruntime as xrt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_rss  # noqa: E402  (the fresh-process peak RSS measurement)
import xrtpkg  # noqa: E402  (formats/python: the format's reader/writer, installed with xpuruntime[dev])

from cpu_corpus import CORPUS, inputs_for  # noqa: E402

DEFAULT_MODELS = "ppocrv4_det,nudenet_320n,magika_v3_3,light_inception_v2,light_resnet50"


def variants_of(bundle: Path, folder: Path) -> dict[str, Path]:
    """{"weightless": bundle, "whole": with a whole blob, "no blob": without one} (the OpenVINO variant first)."""
    b = xrtpkg.read(str(bundle))
    v = next(v for v in b.manifest["variants"] if v["engine"] == "openvino")
    if v["options"].get("xrt.compiled_weights") != "store":
        raise SystemExit(f"{bundle}: its OpenVINO variant has no weightless blob")
    core = ov.Core()
    model = core.read_model(b.data(v["artifacts"]["model"]).decode(),
                            ov.Tensor(np.frombuffer(b.data(v["artifacts"]["weights"]), dtype=np.uint8)))
    whole = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).export_model().getvalue()
    out = {"weightless": bundle}
    for kind in ("whole", "no blob"):
        manifest = b.manifest
        ov_variant = next(x for x in manifest["variants"] if x["engine"] == "openvino")
        blob_name = v["artifacts"]["compiled"]
        payloads = []
        if kind == "whole":
            ov_variant["options"].pop("xrt.compiled_weights")
        else:
            ov_variant["artifacts"].pop("compiled")
            for key in [k for k in ov_variant["options"] if k.startswith("xrt.compiled_")]:
                del ov_variant["options"][key]
        for s in b.sections[1:]:
            if s.name == blob_name and kind == "no blob":
                continue
            payloads.append((s.name, whole if s.name == blob_name else b.data(s.name), s.compressed))
        path = folder / f"{kind.replace(' ', '_')}.xrtpkg"
        xrtpkg.write(str(path), manifest, payloads)
        b = xrtpkg.read(str(bundle))  # a fresh manifest for the next kind
        out[kind] = path
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--rounds", type=int, default=7, help="warm loads per kind (interleaved)")
    ap.add_argument("--repeats", type=int, default=3, help="child processes per cold measurement")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="xrt-blob-kinds-") as tmp:
            folder = Path(tmp)
            bundle = folder / f"{name}.xrtpkg"
            subprocess.run([sys.executable, "-m", "xrtc", "compile", str(CORPUS / "models" / f"{name}.onnx"),
                            "--target", "cpu", "-o", str(bundle), "-q"], check=True, capture_output=True)
            kinds = variants_of(bundle, folder)
            feeds = inputs_for(name)
            inputs_npz = CORPUS / "inputs" / f"{name}.npz"
            warm: dict[str, list] = {k: [] for k in kinds}
            init: dict[str, list] = {k: [] for k in kinds}
            for _ in range(args.rounds):
                for kind, path in kinds.items():
                    t = time.perf_counter()
                    with xrt.load(path, engine="openvino") as s:
                        s.run(feeds)
                        warm[kind].append(time.perf_counter() - t)
                        init[kind].append(s.load_profile().get("engine_init_s", float("nan")))
                        expected = "IR" if kind == "no blob" else "precompiled blob"
                        assert s.explain()["engine_info"]["compiled_from"] == expected, (kind, s.explain())
            for kind, path in kinds.items():
                blob = xrtpkg.read(str(path))
                ov_variant = next(x for x in blob.manifest["variants"] if x["engine"] == "openvino")
                blob_mb = len(blob.data(ov_variant["artifacts"]["compiled"])) / 1e6 if "compiled" in \
                    ov_variant["artifacts"] else 0.0
                cold = load_rss.measure("xrt", path, "cpu-openvino", str(inputs_npz), args.repeats)
                rows.append((name, kind, path.stat().st_size / 1e6, blob_mb, statistics.median(init[kind]) * 1e3,
                             statistics.median(warm[kind]) * 1e3, cold["cold_s"] * 1e3 if cold else float("nan"),
                             cold["load"] / 2**20 if cold else float("nan")))
    print("| model | blob kind | bundle MB | blob MB | engine init ms (warm) | load+1st ms (warm) | cold load+1st ms "
          "| load peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.1f} | {r[7]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
