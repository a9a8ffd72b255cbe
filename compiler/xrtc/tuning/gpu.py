"""The GPU half of the tuning database: cuBLASLt algorithms the cuda engine chose by measuring, one entry per GEMM
configuration, reused by `xrtc tune` of any bundle with the same GEMM on the same kind of GPU.

The plugin measures (targets/cuda/tune.py loads the bundle with XRT_CUDA_TUNE_GEMMS; the engine times each
candidate inside the captured CUDA graph) and reports each GEMM in describe()["gemm_algos"]: {"gemm": i,
"onnx_nodes": [...], "epilogue": ..., "algo": how it was chosen, "config": 128 hex digits}. A GEMM the tuning
decided has the note "tuned in the CUDA graph: candidate B of N[ (split-K S)], graph replay X ms (first candidate:
Y ms)"; only those are stored (a heuristic's first candidate or a stored algorithm was not measured here).

Key (db.Key, tuner "cuda-gemm-algo"):
  graph     the GEMM's signature from the plan: m, n, k, trans_a, trans_b, dtype, compute, epilogue, bias, alpha
            (the engine's own per-configuration key plus what cuBLASLt's descriptor also takes). Two bundles with
            that GEMM share the entry; the model it was measured in is display only.
  hardware  GPU name, compute capability (the plugin's arch), driver version, the cuBLASLt workspace the engine
            gives every GEMM (it bounds the candidates).
  versions  cuBLASLt's version and this tuner's method version.
A stored algorithm is still checked by the engine at load (cublasLtMatmulAlgoCheck); one it refuses falls back to
the heuristic and says so in describe(), so a wrong entry costs speed, never a wrong result. Caveat, stated in the
entry: the engine times a GEMM inside the whole graph (its weights come from HBM, its neighbours are the model's),
so an entry measured in one model is the best candidate there; another model with the same GEMM reuses it
unmeasured (`xrtc tune --no-db` measures again).
"""

from __future__ import annotations

import hashlib
import json

from . import db as tuning_db

TUNER = "cuda-gemm-algo"
TUNER_VERSION = "cuda-2"  # bump when the plugin's tuning method changes: old entries are then not reused
# (cuda-2: a pick is re-timed against the heuristic's first, A B A B A B, and kept only if it still wins)



def gemm_signature(spec: dict) -> dict:
    """What decides a GEMM's algorithm, from its plan entry (a static plan: m is an int)."""
    m = spec.get("m")
    if not isinstance(m, int):
        raise ValueError(f"GEMM m {m!r} is not static: tuned algorithms are stored for static plans only")
    return {"m": m, "n": int(spec["n"]), "k": int(spec["k"]), "trans_a": bool(spec.get("trans_a", False)),
            "trans_b": bool(spec.get("trans_b", False)), "dtype": str(spec.get("dtype", "float32")),
            "compute": str(spec.get("compute", "32F")), "epilogue": str(spec.get("epilogue", "none")),
            "bias": spec.get("bias") is not None, "alpha": float(spec.get("alpha", 1.0))}


def signature_text(sig: dict) -> str:
    """One line for `xrtc tune-db show`: 'm128 n768 k3072 NT float16/32F gelu_bias'."""
    layout = ("T" if sig["trans_a"] else "N") + ("T" if sig["trans_b"] else "N")
    alpha = "" if sig["alpha"] == 1.0 else f" alpha={sig['alpha']:g}"
    return (f"m{sig['m']} n{sig['n']} k{sig['k']} {layout} {sig['dtype']}/{sig['compute']} {sig['epilogue']}"
            f"{' +bias' if sig['bias'] and 'bias' not in sig['epilogue'] else ''}{alpha}")


def gpu_fingerprint(info: dict) -> tuple[str, str]:
    """(digest, description) of the GPU from the engine's describe(): name, arch, driver, cuBLASLt workspace."""
    name = str(info.get("device_name", ""))
    arch = str(info.get("arch", ""))
    driver = str(info.get("driver_version", ""))
    workspace = str((info.get("device_bytes") or {}).get("cublaslt_workspace", ""))
    if not name or not arch or not driver:
        raise ValueError("the cuda engine's describe() lacks device_name, arch or driver_version")
    digest = hashlib.sha256("\0".join(("gpu", name, arch, driver, workspace)).encode()).hexdigest()
    return digest, f"{name} ({arch}), driver {driver}, cuBLASLt workspace {workspace or '?'} bytes"


def versions(info: dict) -> dict[str, str]:
    lt = (info.get("cublaslt") or {}).get("version")
    if lt is None:
        raise ValueError("the cuda engine's describe() lacks cublaslt.version")
    return {"cublaslt": str(lt), "cuda-tuner": TUNER_VERSION}


def key_for(spec: dict, info: dict, model: str = "") -> tuning_db.Key:
    sig = gemm_signature(spec)
    hardware, desc = gpu_fingerprint(info)
    graph = hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()
    return tuning_db.Key(TUNER, graph, hardware, versions(info), desc, model)


def tuned_timing(chosen: dict) -> dict | None:
    """The timings of one describe() gemm_algos entry the in-graph tuning decided, from the plugin's structured
    `tuning` record (engine.cc BuildDescribe); None for a GEMM the tuning did not decide (the heuristic's choice, or
    a stored algorithm accepted without measuring)."""
    t = chosen.get("tuning")
    if not isinstance(t, dict):
        return None
    first, best = float(t["heuristic_graph_ms"]), float(t["tuned_graph_ms"])
    return {"candidate": int(t["chosen"]), "candidates": int(t["candidates"]), "split_k": int(t.get("split_k", 1)),
            "graph_replay_ms": best, "first_candidate_ms": first, "gain_ms": round(first - best, 4)}


def lookup(database: tuning_db.TuningDB, plan: dict, info: dict, candidates: int) -> dict[int, tuning_db.Entry]:
    """Plan GEMM index -> the DB entry for its signature on this GPU and versions, where one was measured with at
    least `candidates` candidates per configuration (fewer explored less: not reused)."""
    hits: dict[int, tuning_db.Entry] = {}
    for i, spec in enumerate(plan.get("gemms", [])):
        entry = database.get(key_for(spec, info))
        if entry is not None and int(entry.result.get("requested_candidates", 0)) >= candidates:
            hits[i] = entry
    return hits


def prefill(plan: dict, hits: dict[int, tuning_db.Entry]) -> dict:
    """The plan with each hit's algorithm stored (source "tuned"): the engine checks it at load and skips both the
    heuristic query and the tuning for it."""
    out = json.loads(json.dumps(plan))
    for i, entry in hits.items():
        out["gemms"][i]["algo"] = {"source": "tuned", "config": entry.result["config"]}
    return out


def record(database: tuning_db.TuningDB, plan: dict, info: dict, candidates: int, model: str) -> int:
    """Stores every GEMM of describe()'s gemm_algos that the in-graph tuning decided. Returns how many entries were
    written (GEMMs of one configuration share one)."""
    written: set[str] = set()
    gemms = plan.get("gemms", [])
    for chosen in info.get("gemm_algos", []):
        timing = tuned_timing(chosen)
        i = chosen.get("gemm")
        if timing is None or not isinstance(i, int) or not 0 <= i < len(gemms):
            continue
        spec = gemms[i]
        key = key_for(spec, info, model)
        if key.digest in written:
            continue
        sig = gemm_signature(spec)
        database.put(key, f"c{candidates}", {
            "signature": sig, "config": str(chosen["config"]), "requested_candidates": candidates,
            "timing": timing, "measured_in": {"model": model, "gemm": i, "onnx_nodes": chosen.get("onnx_nodes", [])},
            "method": "whole CUDA graph replay timed per candidate (median of 15), configurations in plan order"})
        written.add(key.digest)
    return len(written)


def show_line(entry: tuning_db.Entry) -> str:
    """The entry's winner for `xrtc tune-db show`."""
    r = entry.result
    t = r.get("timing", {})
    return (f"{signature_text(r['signature'])}: candidate {t.get('candidate')}/{t.get('candidates')} "
            f"config {str(r.get('config', ''))[:12]}..., graph replay {t.get('graph_replay_ms')} ms vs heuristic "
            f"{t.get('first_candidate_ms')} ms (gain {t.get('gain_ms')} ms)")
