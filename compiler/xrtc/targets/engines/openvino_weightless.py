"""OpenVINO blobs without weights (issue 16): a CPU-compiled blob that holds the weights a second time is replaced
by one that holds only the compiled graph and reads its constants from the bundle's weight store at import.

Measured before choosing it (OpenVINO 2026.4 CPU plugin, report 16): the weightless blob is 3-6% of the whole one
(nudenet 0.39 vs 12.43 MB) and imports as fast (nudenet 300 vs 382 ms, magika 96 vs 106, ppocrv4_det 354 vs 373;
compiling the IR: 1492, 766, 1250 ms), so it replaces the whole blob wherever OpenVINO exports one; where it cannot
(an export or check failure) the whole blob stays.

The blob records each constant's offset into the weights file it was compiled with, so it is exported after the
store is laid out (weight_store.share), from the variant's final XML over the store's bytes. The manifest says so
with the variant option `xrt.compiled_weights` = "store" (formats/xrtpkg.md): the runtime then hands the plugin the
verified store with the blob, and the plugin imports with `ENABLE_WEIGHTLESS` + `WEIGHTS_PATH` on a sealed copy of
those verified bytes (runtime_cpp/backends/openvino)."""

from __future__ import annotations

import json
import logging
import os
import tempfile

from ...weight_store import STORE_SECTION
from .openvino import OPENVINO_HINTS, run_worker

log = logging.getLogger("xrtc.targets.openvino")

WEIGHTS_OPTION = "xrt.compiled_weights"  # "store": the blob holds no weights; import it over the `weights` artifact


def weightless_blob(xml: bytes, store: bytes, hint: str, fills: list[int]) -> bytes | None:
    """The weightless blob of `xml` over `store`, checked by the worker to compute exactly what the compiled IR
    computes; None (logged) when OpenVINO cannot export or the check fails. Runs in a child process: OpenVINO names
    the nodes it creates from a process-wide counter, a fresh process makes the blob byte-identical run to run."""
    with tempfile.TemporaryDirectory(prefix="xrtc-weightless-") as workdir:
        with open(os.path.join(workdir, "model.xml"), "wb") as f:
            f.write(xml)
        with open(os.path.join(workdir, "store.bin"), "wb") as f:
            f.write(store)
        proc = run_worker(["--weightless", "model.xml", "store.bin", ".", "--hint", hint,
                           "--fills", ",".join(str(f) for f in fills)], workdir)
        result_path = os.path.join(workdir, "result.json")
        if proc.returncode != 0 or not os.path.exists(result_path):
            log.warning("OpenVINO weightless export died (exit status %s): the whole blob stays; its last output:"
                        "\n%s", proc.returncode, proc.stderr[-2000:])
            return None
        with open(result_path, encoding="utf-8") as f:
            result = json.load(f)
        if not result["ok"]:
            log.warning("no weightless OpenVINO blob (the whole blob stays): %s", result["error"])
            return None
        with open(os.path.join(workdir, "weightless.blob"), "rb") as f:
            return f.read()


def make_blobs_weightless(manifest: dict, payloads: list[tuple[str, bytes, bool]],
                          fills: list[int]) -> list[tuple[str, bytes, bool]]:
    """Replaces the compiled blob of each OpenVINO variant that reads its weights from the store by its weightless
    form and marks the variant (WEIGHTS_OPTION); other variants and payloads are unchanged. `fills`: the sizes the
    check tries for dynamic dimensions (the gate's)."""
    sections = {name: data for name, data, _ in payloads}
    replaced: dict[str, bytes] = {}
    for variant in manifest["variants"]:
        arts = variant.get("artifacts", {})
        if variant.get("engine") != "openvino" or "compiled" not in arts or arts.get("weights") != STORE_SECTION:
            continue
        hint = variant.get("options", {}).get("INFERENCE_PRECISION_HINT") or OPENVINO_HINTS.get(
            variant.get("precision", "fp32"), "f32")
        blob = weightless_blob(sections[arts["model"]], sections[STORE_SECTION], hint, fills)
        if blob is not None:
            replaced[arts["compiled"]] = blob
            variant.setdefault("options", {})[WEIGHTS_OPTION] = "store"
    return [(name, replaced.get(name, data), compress) for name, data, compress in payloads]
