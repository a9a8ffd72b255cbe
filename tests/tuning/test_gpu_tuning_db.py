"""The GPU half of the tuning database (xrtc.tuning.gpu): cuBLASLt algorithms the cuda engine's in-graph tuning chose
are stored per GEMM configuration and GPU kind, and reused for another bundle with the same GEMM without measuring.

No GPU here: the plans are real (two MLPs compiled with --target cuda that share their first GEMM), the engine's side
is the describe() record the plugin reports (runtime_cpp/backends/cuda/engine.cc: gemm_algos with the tuning note
and the algorithm's 64-byte config as hex). That the plugin accepts a stored config again and that the reuse is as
fast as a fresh tuning only a GPU run proves (tests/cuda/test_cuda_runtime_load.py, `xrtc tune` there). ~15 s."""

from __future__ import annotations

import json
import os
import sys

import onnx
import pytest
import xrtpkg
from xrt_testutil import run_tool

from xrtc.tuning import gpu
from xrtc.tuning.db import TuningDB

pytest.importorskip("triton")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cuda"))
import models  # noqa: E402

TUNED_NOTE = "tuned in the CUDA graph: candidate 3 of 8 (split-K 2), graph replay 0.0123 ms (first candidate: 0.0150 ms)"
REFUSED_NOTE = ("stored tuned algorithm refused (CUBLAS_STATUS_INVALID_VALUE); fell back to tuned in the CUDA graph: "
                "candidate 1 of 4, graph replay 0.0100 ms (first candidate: 0.0100 ms)")
# The structured record the plugin writes beside each note of a GEMM its in-graph tuning decided.
TUNING_RECORDS = {TUNED_NOTE: {"candidates": 8, "chosen": 3, "heuristic_graph_ms": 0.015, "tuned_graph_ms": 0.0123,
                               "split_k": 2},
                  REFUSED_NOTE: {"candidates": 4, "chosen": 1, "heuristic_graph_ms": 0.01, "tuned_graph_ms": 0.01,
                                 "split_k": 1}}
CONFIG_A = "ab" * 64
CONFIG_B = "cd" * 64


def _plan(path) -> dict:
    bundle = xrtpkg.read(str(path))
    variant = next(v for v in bundle.manifest["variants"] if v["engine"] == "cuda")
    return json.loads(bundle.data(variant["artifacts"]["plan"]))


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Two real cuda plans: MLP 32-64-48-16 and MLP 32-64-24 (another model: other weights), sharing GEMM 0
    (m4 n64 k32, bias + relu); their other GEMMs differ."""
    from xrtc.tools.compile import compile_model

    d = tmp_path_factory.mktemp("gpu_db")
    out = []
    for name, dims, seed in (("a", (32, 64, 48, 16), 0), ("b", (32, 64, 24), 1)):
        onnx.save(models.mlp(batch=4, dims=dims, seed=seed), str(d / f"{name}.onnx"))
        compile_model(str(d / f"{name}.onnx"), "cuda", str(d / f"{name}.xrtpkg"))
        out.append(_plan(d / f"{name}.xrtpkg"))
    return out


def _describe(plan: dict, notes: list[str], configs: list[str], **gpu_fields) -> dict:
    """describe() as the cuda engine reports it after init (the fields tuning/gpu.py reads)."""
    info = {"device_name": "NVIDIA H200", "arch": "sm_90", "driver_version": 12080,
            "device_bytes": {"cublaslt_workspace": 33554432}, "cublaslt": {"path": "libcublasLt.so.12", "version": 120900},
            "gemm_algos": [{"gemm": i, "onnx_nodes": g.get("onnx_nodes", []), "epilogue": g.get("epilogue"),
                            "algo": note, "config": config}
                           for i, (g, note, config) in enumerate(zip(plan["gemms"], notes, configs))]}
    for entry in info["gemm_algos"]:
        if entry["algo"] in TUNING_RECORDS:
            entry["tuning"] = TUNING_RECORDS[entry["algo"]]
    for key, value in gpu_fields.items():
        if key == "cublaslt_version":
            info["cublaslt"] = dict(info["cublaslt"], version=value)
        else:
            info[key] = value
    return info


def test_measured_gemms_are_reused_by_another_bundle_on_the_same_gpu_kind_only(tmp_path, plans):
    plan_a, plan_b = plans
    assert gpu.gemm_signature(plan_a["gemms"][0]) == gpu.gemm_signature(plan_b["gemms"][0])
    assert gpu.gemm_signature(plan_a["gemms"][1]) != gpu.gemm_signature(plan_b["gemms"][1])
    n_a = len(plan_a["gemms"])
    # Bundle A tuned: GEMM 0 decided by measuring, the others kept the heuristic's only candidate.
    info_a = _describe(plan_a, [TUNED_NOTE] + ["cuBLASLt heuristic (first candidate)"] * (n_a - 1),
                       [CONFIG_A] + [CONFIG_B] * (n_a - 1))
    with TuningDB(str(tmp_path / "t.sqlite")) as db:
        assert gpu.record(db, plan_a, info_a, candidates=8, model="a.onnx") == 1  # only what was measured
        assert gpu.record(db, plan_a, info_a, candidates=8, model="a.onnx") == 1  # idempotent: one entry per key
        assert len(db.entries()) == 1
        entry = db.entries()[0]
        assert entry.result["config"] == CONFIG_A and entry.result["timing"]["gain_ms"] == pytest.approx(0.0027)
        assert entry.result["timing"]["split_k"] == 2 and entry.result["requested_candidates"] == 8

        # Bundle B on the same kind of GPU: its GEMM 0 comes from the DB, nothing else does.
        probe_b = _describe(plan_b, ["cuBLASLt heuristic (first candidate)"] * 2, [CONFIG_B] * 2)
        hits = gpu.lookup(db, plan_b, probe_b, candidates=8)
        assert list(hits) == [0]
        assert gpu.lookup(db, plan_b, probe_b, candidates=4).keys() == {0}  # measured with more: reused
        assert gpu.lookup(db, plan_b, probe_b, candidates=16) == {}  # measured with fewer candidates: not reused
        prefilled = gpu.prefill(plan_b, hits)
        assert prefilled["gemms"][0]["algo"] == {"source": "tuned", "config": CONFIG_A}
        assert "config" not in plan_b["gemms"][0].get("algo", {}) or plan_b["gemms"][0]["algo"]["config"] != CONFIG_A

        # The stored algorithm goes into B's tuned plan as "tuned" once the engine accepted it.
        from xrtc.targets.cuda.tune import stored_algorithms

        accepted = _describe(prefilled, ["stored tuned algorithm accepted by cublasLtMatmulAlgoCheck",
                                         "cuBLASLt heuristic (first candidate)"], [CONFIG_A, CONFIG_B])
        out = stored_algorithms(prefilled, accepted["gemm_algos"])
        assert out["gemms"][0]["algo"] == {"source": "tuned", "config": CONFIG_A}
        assert out["gemms"][1]["algo"]["source"] == "heuristic"
        assert gpu.record(db, prefilled, accepted, 8, "b.onnx") == 0  # a stored algorithm is not a new measurement

        # Another GPU, driver, cuBLASLt or workspace: never reused.
        for changed in ({"device_name": "NVIDIA A100-SXM4-80GB", "arch": "sm_80"}, {"driver_version": 12090},
                        {"cublaslt_version": 121000}, {"device_bytes": {"cublaslt_workspace": 4194304}}):
            assert gpu.lookup(db, plan_b, _describe(plan_b, ["x"] * 2, [CONFIG_B] * 2, **changed), 8) == {}, changed


def test_a_refused_stored_algorithm_measured_again_replaces_the_entry(tmp_path, plans):
    plan_a, _ = plans
    n_a = len(plan_a["gemms"])
    refused = _describe(plan_a, [REFUSED_NOTE], [CONFIG_B])["gemm_algos"][0]
    assert gpu.tuned_timing(refused) == {"candidate": 1, "candidates": 4, "split_k": 1, "graph_replay_ms": 0.01,
                                         "first_candidate_ms": 0.01, "gain_ms": 0.0}
    assert gpu.tuned_timing({"gemm": 0, "algo": "cuBLASLt heuristic (first candidate)"}) is None
    with TuningDB(str(tmp_path / "t.sqlite")) as db:
        gpu.record(db, plan_a, _describe(plan_a, [TUNED_NOTE] * n_a, [CONFIG_A] * n_a), 8, "a.onnx")
        gpu.record(db, plan_a, _describe(plan_a, [REFUSED_NOTE] * n_a, [CONFIG_B] * n_a), 8, "a.onnx")
        assert {e.result["config"] for e in db.entries()} == {CONFIG_B}
        assert len(db.entries()) == len({json.dumps(gpu.gemm_signature(g), sort_keys=True)
                                         for g in plan_a["gemms"]})


def test_dynamic_gemm_is_refused_and_describe_without_gpu_fields_is_an_error(plans):
    spec = dict(plans[0]["gemms"][0], m="batch")
    with pytest.raises(ValueError, match="not static"):
        gpu.gemm_signature(spec)
    with pytest.raises(ValueError, match="driver_version"):
        gpu.gpu_fingerprint({"device_name": "NVIDIA H200", "arch": "sm_90"})


def test_tune_db_show_lists_gpu_entries_and_merge_prune_keep_them(tmp_path, plans):
    plan_a, _ = plans
    n_a = len(plan_a["gemms"])
    a, b, c = (str(tmp_path / f"{n}.sqlite") for n in "abc")
    with TuningDB(a) as db:
        gpu.record(db, plan_a, _describe(plan_a, [TUNED_NOTE] * n_a, [CONFIG_A] * n_a), 8, "a.onnx")
    TuningDB(b).close()
    shown = run_tool("xrtc", "tune-db", "show", "--tuning-db", a, check=True).stdout
    assert f"{n_a} entries" in shown, shown
    assert "cuda-gemm-algo/c8" in shown and "GPU entry" in shown and "NVIDIA H200 (sm_90), driver 12080" in shown
    assert "m4 n64 k32 NN float" in shown and "gain 0.0027 ms" in shown and "cublaslt 120900" in shown, shown
    run_tool("xrtc", "tune-db", "merge", a, b, "-o", c, check=True)
    assert len(TuningDB(c).entries()) == n_a
    pruned = run_tool("xrtc", "tune-db", "prune", "--stale", "--tuning-db", c, check=True).stdout
    assert "pruned 0 entries" in pruned, pruned  # the CPU install's versions do not make GPU entries stale
