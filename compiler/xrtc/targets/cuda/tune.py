"""Tune a cuda bundle's GEMM algorithms on the GPU it will run on, and store them in the bundle.

The plugin does the measuring (XRT_CUDA_TUNE_GEMMS: every cuBLASLt candidate of each GEMM configuration tried in the
captured CUDA graph, whole-graph replay timed; runtime_cpp/backends/cuda/PLAN.md). This module loads the bundle with
tuning on, takes the algorithm each GEMM ended with (describe()'s `gemm_algos[i].config`), checks the tuned variant
against the bundle's golden outputs within the variant's own tolerance, and writes a new bundle whose plan stores
those algorithms (`algo: {"source": "tuned" | "heuristic", "config": hex}`): later loads check them with
cublasLtMatmulAlgoCheck and skip both the heuristic queries and the tuning. Measured choices are not reproducible
bit for bit across runs (timings decide); the manifest records how, where and with what they were chosen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ...errors import UsageError, VerifyMismatchError, XrtcError

TUNE_ENV = "XRT_CUDA_TUNE_GEMMS"


@dataclass
class TuneResult:
    bundle: bytes                      # the tuned bundle (unsigned)
    variant: str
    gemms: int
    tuned: int                         # GEMMs whose algorithm the in-graph tuning changed from the heuristic's first
    notes: dict[str, int] = field(default_factory=dict)   # how each GEMM's algorithm was chosen -> count
    errors: dict[str, float] = field(default_factory=dict)  # golden output -> max abs err of the tuned variant
    dropped_signature: bool = False
    per_configuration: list[dict] = field(default_factory=list)  # gains_by_configuration()


def gains_by_configuration(plan: dict, gemm_algos: list[dict]) -> list[dict]:
    """One row per tuned GEMM configuration (the GEMMs that share shapes, epilogue and so one algorithm), in plan
    order: its GEMMs, the candidates tried, the one chosen (1 = the heuristic's first) and the whole-graph replay
    time with the heuristic's first against the chosen one (the plugin's describe(): `gemm_algos[i].tuning`, after
    its A B A B A B re-check, so `tuned_graph_ms <= heuristic_graph_ms` by construction)."""
    rows: dict[tuple, dict] = {}
    for spec, a in zip(plan.get("gemms", []), gemm_algos):
        t = a.get("tuning")
        if not isinstance(t, dict):
            continue
        key = (spec.get("m"), spec.get("n"), spec.get("k"), spec.get("epilogue"))
        row = rows.setdefault(key, {"shape": f"{spec.get('m')}x{spec.get('n')}x{spec.get('k')}",
                                    "epilogue": spec.get("epilogue"), "gemms": 0,
                                    "candidates": t.get("candidates"), "chosen": t.get("chosen"),
                                    "heuristic_graph_ms": round(float(t.get("heuristic_graph_ms", 0)), 4),
                                    "tuned_graph_ms": round(float(t.get("tuned_graph_ms", 0)), 4)})
        row["gemms"] += 1
    for row in rows.values():
        h, t = row["heuristic_graph_ms"], row["tuned_graph_ms"]
        row["gain_pct"] = round(100 * (h - t) / h, 2) if h > 0 else 0.0
    return list(rows.values())


def stored_algorithms(plan: dict, gemm_algos: list[dict]) -> dict:
    """The plan with each GEMM's algorithm as the engine chose it. `gemm_algos` is describe()'s list, one entry per
    plan GEMM in order: {"gemm": i, "algo": how it was chosen, "config": 128 hex digits}."""
    gemms = plan.get("gemms", [])
    if len(gemm_algos) != len(gemms) or [a.get("gemm") for a in gemm_algos] != list(range(len(gemms))):
        raise XrtcError(f"the cuda engine reported {len(gemm_algos)} GEMM algorithms for a plan of {len(gemms)} "
                        "GEMMs: the plugin and the bundle disagree (rebuild both from one version)")
    out = json.loads(json.dumps(plan))
    for spec, chosen in zip(out["gemms"], gemm_algos):
        config = str(chosen.get("config", ""))
        if len(config) != 128 or any(c not in "0123456789abcdef" for c in config):
            raise XrtcError(f"the cuda engine reported GEMM {chosen.get('gemm')}'s algorithm as {config[:40]!r}, "
                            "not 64 bytes of hex")
        how = str(chosen.get("algo", ""))
        if how.startswith("stored ") and "accepted" in how:  # re-tuning a tuned bundle keeps where it came from
            source = spec.get("algo", {}).get("source", "heuristic")
        else:
            source = "tuned" if how.startswith("tuned") else "heuristic"
        spec["algo"] = {"source": source, "config": config}
    return out


def tune_bundle(path: str, candidates: int = 16, variant_id: str | None = None) -> TuneResult:
    """Loads `path`'s cuda variant on this machine's GPU with GEMM tuning on and returns the tuned bundle's bytes.
    Raises UsageError (no cuda variant, no GPU), VerifyMismatchError (the tuned variant misses its tolerance on the
    golden data: nothing is written)."""
    import xpuruntime as xrt
    import xrtpkg

    from ...numeric import compare

    if not 2 <= candidates <= 64:
        raise UsageError(f"--candidates {candidates}: give 2..64 cuBLASLt candidates per GEMM configuration")
    bundle = xrtpkg.read(path)
    manifest = json.loads(json.dumps(bundle.manifest))
    cuda = [v for v in manifest["variants"] if v.get("engine") == "cuda"
            and (variant_id is None or v.get("id") == variant_id)]
    if not cuda:
        have = ", ".join(f"{v.get('id')} ({v.get('engine')})" for v in manifest["variants"])
        raise UsageError(f"{path} has no cuda variant{' ' + variant_id if variant_id else ''} to tune (variants: "
                         f"{have}); `xrtc tune` tunes the GEMM algorithms of xpuruntime's cuda engine on a GPU")
    variant = cuda[0]
    plan_section = variant["artifacts"]["plan"]
    plan = json.loads(bundle.data(plan_section))
    if plan.get("dims"):
        # tuning runs on static plans; storing one shape's algorithms would pin them for every shape
        raise UsageError(f"{variant['id']} has dynamic dims ({', '.join(sorted(plan['dims']))}): `xrtc tune` tunes "
                         "static plans (compile with --shape for the shapes you deploy)")
    old = os.environ.get(TUNE_ENV)
    os.environ[TUNE_ENV] = str(candidates)
    try:
        try:
            session = xrt.load(path, device="cuda", variant=variant["id"])
        except (xrt.Unavailable, xrt.NotFound) as err:
            raise UsageError(f"cannot load {variant['id']} on a GPU here: {err}. Run `xrtc tune` on the machine (GPU, "
                             "driver, cuBLASLt) the bundle will run on") from err
    finally:
        if old is None:
            os.environ.pop(TUNE_ENV, None)
        else:
            os.environ[TUNE_ENV] = old
    with session:
        info = session.explain().get("engine_info", {})
        gemm_algos = info.get("gemm_algos", [])
        errors: dict[str, float] = {}
        golden = manifest.get("golden")
        if golden:
            from ...gate import golden_arrays

            feeds, reference = golden_arrays(bundle, golden)
            got = session.run(feeds)
            from xpuruntime.policy import DEFAULT_TOLERANCES

            acc = variant.get("accuracy") or {}
            default = DEFAULT_TOLERANCES.get(variant.get("precision", "fp32"), DEFAULT_TOLERANCES["fp32"])
            rtol, atol = acc.get("rtol", default["rtol"]), acc.get("atol", default["atol"])
            failures = []
            for name, ref in reference.items():
                c = compare(variant["id"], name, got[name], ref, rtol, atol)
                errors[name] = float(f"{c.max_abs_err:.3g}")
                if not c.passed:
                    failures.append(f"{name}: max abs err {c.max_abs_err:.3g} (rtol {rtol:g}, atol {atol:g})")
            if failures:
                raise VerifyMismatchError(f"{variant['id']} with tuned GEMM algorithms misses its tolerance on the "
                                          f"bundle's golden data ({'; '.join(failures)}); nothing written")
    tuned_plan = stored_algorithms(plan, gemm_algos)
    notes: dict[str, int] = {}
    for a in gemm_algos:  # one line per distinct outcome (a configuration's GEMMs share one)
        how = str(a.get("algo", ""))
        notes[how] = notes.get(how, 0) + 1
    tuned = sum(1 for g in tuned_plan["gemms"] if g["algo"]["source"] == "tuned")
    variant["tuning"] = {
        "gemm_algorithms": {"method": f"{TUNE_ENV}={candidates}: each cuBLASLt candidate of a GEMM configuration "
                                      "tried in the captured CUDA graph, whole-graph replay timed (median of 15); "
                                      "configurations one after the other",
                            "gemms": len(gemm_algos), "tuned": tuned,
                            "device": info.get("device_name"), "arch": info.get("arch"),
                            "driver_version": info.get("driver_version"),
                            "cublaslt_version": (info.get("cublaslt") or {}).get("version"),
                            "golden_max_abs_err": errors or None,
                            "per_configuration": gains_by_configuration(plan, gemm_algos)},
    }
    payloads = []
    for section in bundle.sections:
        if section.name == "manifest":
            continue
        data = xrtpkg.canonical_json(tuned_plan) if section.name == plan_section else bundle.data(section.name)
        payloads.append((section.name, data, section.compressed))
    out = xrtpkg.to_bytes(manifest, payloads)
    return TuneResult(out, variant["id"], len(gemm_algos), tuned, notes, errors, bundle.signer is not None,
                      variant["tuning"]["gemm_algorithms"]["per_configuration"])
