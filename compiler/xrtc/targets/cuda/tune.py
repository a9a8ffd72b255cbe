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
STAND_INS_ENV = "XRT_CUDA_STAND_INS"


@dataclass
class TuneResult:
    bundle: bytes                      # the tuned bundle (unsigned)
    variant: str
    gemms: int
    tuned: int                         # GEMMs whose algorithm the in-graph tuning changed from the heuristic's first
    notes: dict[str, int] = field(default_factory=dict)   # how each GEMM's algorithm was chosen -> count
    errors: dict[str, float] = field(default_factory=dict)  # golden output -> max abs err of the tuned variant
    dropped_signature: bool = False
    reused: int = 0                    # GEMMs whose algorithm came from the tuning DB (not measured)
    stored: int = 0                    # tuning DB entries written (one per measured GEMM configuration)
    db_path: str | None = None
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
    if any(g.get("library") == "cublas" for g in gemms):
        raise UsageError("the variant's GEMMs run on cuBLAS (policy matmul = cublas): cublasGemmEx takes no stored "
                         "algorithm, so there is nothing to tune; tune a build with matmul = cublasLt")
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


def _load(path: str, variant_id: str, candidates: int | None):
    """A session of `path`'s cuda variant, with GEMM tuning at `candidates` per configuration (None: off). Without
    the GEMMs' stand-ins (PLAN.md): the engine has chosen, and described, every GEMM's algorithm when load returns."""
    import xpuruntime as xrt

    saved = {k: os.environ.pop(k, None) for k in (TUNE_ENV, STAND_INS_ENV)}
    os.environ[STAND_INS_ENV] = "0"
    if candidates is not None:
        os.environ[TUNE_ENV] = str(candidates)
    try:
        return xrt.load(path, device="cuda", variant=variant_id)
    except (xrt.Unavailable, xrt.NotFound) as err:
        raise UsageError(f"cannot load {variant_id} on a GPU here: {err}. Run `xrtc tune` on the machine (GPU, "
                         "driver, cuBLASLt) the bundle will run on") from err
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def _with_plan(bundle, manifest: dict, plan_section: str, plan: dict) -> bytes:
    import xrtpkg

    payloads = []
    for section in bundle.sections:
        if section.name == "manifest":
            continue
        data = xrtpkg.canonical_json(plan) if section.name == plan_section else bundle.data(section.name)
        payloads.append((section.name, data, section.compressed))
    return xrtpkg.to_bytes(manifest, payloads)


def tune_bundle(path: str, candidates: int = 16, variant_id: str | None = None, db_path: str | None = None,
                use_db: bool = True) -> TuneResult:
    """Loads `path`'s cuda variant on this machine's GPU with GEMM tuning on and returns the tuned bundle's bytes.
    With the tuning DB (tuning/gpu.py), GEMMs measured before on this kind of GPU with these versions take the
    stored algorithm without measuring; the others are measured and stored. Raises UsageError (no cuda variant, no
    GPU), VerifyMismatchError (the tuned variant misses its tolerance on the golden data: nothing is written)."""
    import tempfile

    import xrtpkg

    from ...tuning import db as tuning_db
    from ...tuning import gpu as tuning_gpu

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
    model = manifest.get("provenance", {}).get("source", {}).get("name", "") or os.path.basename(path)
    database = tuning_db.TuningDB(db_path) if use_db and plan.get("gemms") else None
    hits: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="xrtc-tune-cuda-") as workdir:
            load_path = path
            if database is not None:
                # The DB key needs the GPU, driver and cuBLASLt as the engine reports them: one load without tuning.
                with _load(path, variant["id"], None) as probe:
                    probe_info = probe.explain().get("engine_info", {})
                hits = tuning_gpu.lookup(database, plan, probe_info, candidates)
                if hits:
                    plan = tuning_gpu.prefill(plan, hits)
                    load_path = os.path.join(workdir, "prefilled.xrtpkg")
                    with open(load_path, "wb") as f:
                        f.write(_with_plan(bundle, manifest, plan_section, plan))
            measure = len(hits) < len(plan.get("gemms", []))  # every GEMM from the DB: nothing measured
            with _load(load_path, variant["id"], candidates if measure else None) as session:
                info, errors = _describe_and_check(session, bundle, manifest, variant)
        stored = tuning_gpu.record(database, plan, info, candidates, model) if database is not None else 0
    finally:
        if database is not None:
            database.close()
    gemm_algos = info.get("gemm_algos", [])
    tuned_plan = stored_algorithms(plan, gemm_algos)
    notes: dict[str, int] = {}
    for a in gemm_algos:  # one line per distinct outcome (a configuration's GEMMs share one)
        how = str(a.get("algo", ""))
        if a.get("gemm") in hits and how.startswith("stored ") and "accepted" in how:
            how = "from the tuning DB (measured before on this GPU kind and versions), " + how
        notes[how] = notes.get(how, 0) + 1
    tuned = sum(1 for g in tuned_plan["gemms"] if g["algo"]["source"] == "tuned")
    variant["tuning"] = {
        "gemm_algorithms": {"method": f"{TUNE_ENV}={candidates}: each cuBLASLt candidate of a GEMM configuration "
                                      "tried in the captured CUDA graph, whole-graph replay timed (median of 15); "
                                      "configurations one after the other",
                            "gemms": len(gemm_algos), "tuned": tuned,
                            "from_tuning_db": len(hits),
                            "device": info.get("device_name"), "arch": info.get("arch"),
                            "driver_version": info.get("driver_version"),
                            "cublaslt_version": (info.get("cublaslt") or {}).get("version"),
                            "golden_max_abs_err": errors or None,
                            "per_configuration": gains_by_configuration(plan, gemm_algos)},
    }
    out = _with_plan(bundle, manifest, plan_section, tuned_plan)
    return TuneResult(out, variant["id"], len(gemm_algos), tuned, notes, errors, bundle.signer is not None,
                      reused=len(hits), stored=stored, db_path=database.path if database is not None else None,
                      per_configuration=variant["tuning"]["gemm_algorithms"]["per_configuration"])


def _describe_and_check(session, bundle, manifest: dict, variant: dict) -> tuple[dict, dict[str, float]]:
    """The engine's describe() and the golden outputs' max abs errors; VerifyMismatchError when the variant misses
    its tolerance (nothing is written then)."""
    from ...numeric import compare

    info = session.explain().get("engine_info", {})
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
    return info, errors
