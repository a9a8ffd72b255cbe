"""`xrt-run --profile` (the C++ runner, no Python in the run): a real corpus model compiled by xrtc, run through
libxrt and the OpenVINO plugin with its per-layer counters (PERF_COUNT, turned on only for profiling sessions),
mapped to the ONNX nodes of the bundle's plan in the schema of `xrtc profile`.

Stated tolerance for "the node times sum to the run": the entries, with the "(engine overhead)" entry for the run
time no layer counter accounts for (binding inputs, copying outputs, waking the engine's threads), sum to the mean
run time measured around xrt_session_run exactly (1e-6); the layer entries alone are at most 105% of it (nothing
counted twice) and at least 2% (a unit slip). How much of the run they explain depends on the machine's load (about
75-85% on a quiet machine for this model; less on a loaded 2-core runner), not on the mapping.

The cuda engine's side (launch records, input upload, output download and sync as their own records) is tested
against the fake driver in runtime_cpp/backends/cuda/tests/cuda_engine_test.cc; a plugin built before the profile
hook ("this engine does not profile") in runtime_cpp/tests/c_api_test.cc (Profile.*): no old plugin binary exists here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent))

import make_bundle  # noqa: E402
from test_xrt_run import EXIT_EXISTS, EXIT_USAGE, assert_failed, corpus_model, run, xrt_run  # noqa: E402,F401
from xrt_testutil import run_tool  # noqa: E402

MODEL = "ppocr_mobile_v2_cls"  # 203 ONNX nodes, ~2 ms a run: Conv+HardSwish chains OpenVINO fuses
SHAPE = ("--shape", "x=1x3x48x192")


@pytest.fixture(scope="module")
def compiled(corpus_bundles) -> Path:
    return corpus_bundles(MODEL)


def plan_nodes(bundle: Path) -> list[str]:
    proc = run_tool("xrtc", "explain", bundle, "--json", check=True)
    return [n["name"] for n in json.loads(proc.stdout)["nodes"]]


def test_profile_maps_every_plan_node_and_sums_to_the_run(xrt_run, compiled, tmp_path):  # noqa: F811
    trace = tmp_path / "trace.json"
    proc = run(xrt_run, compiled, "--engine", "openvino", *SHAPE, "--profile", trace, "--profile-runs", "10",
               "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    profile = json.loads(proc.stdout)["profile"]
    assert profile["profile_format"] == 1 and profile["tool"] == "xrt-run"
    assert profile["engine"] == "openvino" and profile["variant"] == "cpu-openvino" and profile["runs"] == 10
    nodes = {n["name"]: n for n in profile["nodes"]}
    assert sorted(nodes) == sorted(plan_nodes(compiled))
    assert all(n["status"].startswith("timed") and n["entries"] for n in nodes.values()), \
        [n for n in nodes.values() if not n["status"].startswith("timed")]
    # A fused layer names all of its nodes: OpenVINO runs the first Conv with its bias Add and HardSwish.
    conv = next(e for e in profile["entries"] if "Conv@0" in e["onnx_nodes"])
    assert len(conv["onnx_nodes"]) >= 3, conv
    run_ms = profile["run_ms"]
    engine_ms = sum(e["ms"] for e in profile["entries"] if e["kind"] != "overhead")
    assert 0.02 * run_ms <= engine_ms <= 1.05 * run_ms, (engine_ms, run_ms)
    assert sum(e["ms"] for e in profile["entries"]) == pytest.approx(run_ms, rel=1e-6)
    named_ms = sum(e["ms"] for e in profile["entries"] if e["onnx_nodes"])
    assert sum(n["ms"] for n in nodes.values()) == pytest.approx(named_ms, rel=1e-6)
    assert all(e["ms"] >= 0 for e in profile["entries"]), profile["entries"]
    # The Chrome trace: a host track with each run, the engine's stream, its layout reorders on their own track.
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"host: runs", "openvino stream 0", "openvino stream 0: copies and syncs"} <= tracks, tracks
    assert len([e for e in events if e.get("cat") == "run"]) == 10
    layers = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("compute", "copy")]
    assert layers and all(e["dur"] >= 0 and "onnx_nodes" in e["args"] for e in layers)


def test_profile_table_and_schema_match_xrtc_profile(xrt_run, compiled, tmp_path):  # noqa: F811
    proc = run(xrt_run, compiled, "--engine", "openvino", *SHAPE, "--profile", tmp_path / "t.json",
               "--profile-runs", "5", "--top", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("variant cpu-openvino (openvino on cpu): "))
    assert "ms per run (measured around xrt_session_run, mean of 5); median " in lines[start], lines[start]
    assert lines[start + 1].split() == ["ms", "%", "kind", "entry", "type", "onnx", "nodes"]
    assert len(lines[start + 2:start + 8]) == 6
    assert lines[start + 8] == "203 of 203 ONNX nodes timed", lines[start + 8]
    by_op = lines[start + 9]
    assert by_op.startswith("time by ONNX op type (a fused entry under its first node's op): ") and " Conv " in by_op
    assert f"trace written to {tmp_path / 't.json'}" in proc.stdout
    # The same keys and the same node view as the Python profiler's, on the same bundle and engine.
    out = tmp_path / "py.json"
    py = run_tool("xrtc", "profile", compiled, *SHAPE, "--engine", "openvino", "--runs", "5", "-o", out, "-q")
    assert py.returncode == 0, py.stdout + py.stderr
    python_profile = json.loads(out.read_text())
    cpp = json.loads(run(xrt_run, compiled, "--engine", "openvino", *SHAPE, "--profile", tmp_path / "t2.json",
                         "--profile-runs", "5", "--json").stdout)["profile"]
    assert set(python_profile) - {"trace"} <= set(cpp), set(python_profile) - set(cpp)
    assert set(python_profile["entries"][0]) == set(cpp["entries"][0])
    assert [n["name"] for n in cpp["nodes"]] == [n["name"] for n in python_profile["nodes"]]
    # Both time every node of the plan (their layer lists may differ in layout reorders: the plugin binds inputs of
    # the run's shape to a dynamic-shape model, the Python profiler compiles it on its own).
    assert all(n["status"].startswith("timed") for n in cpp["nodes"] + python_profile["nodes"])


def test_profile_without_a_decision_log_names_the_engines_nodes(xrt_run, tmp_path):  # noqa: F811
    bundle = tmp_path / "plain.xrtpkg"
    make_bundle.build(corpus_model(MODEL), bundle)  # OpenVINO IR only: no plan to map to
    proc = run(xrt_run, bundle, *SHAPE, "--profile", tmp_path / "t.json", "--profile-runs", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the bundle has no decision log: entries name the engine's source nodes as it knows them" in proc.stdout
    assert "0 of 0 ONNX nodes timed" in proc.stdout


def test_profile_usage_errors(xrt_run, compiled, tmp_path):  # noqa: F811
    existing = tmp_path / "exists.json"
    existing.write_text("keep")
    assert_failed(run(xrt_run, compiled, *SHAPE, "--profile", existing), EXIT_EXISTS, "ALREADY_EXISTS",
                  "exists; pass --force")
    assert existing.read_text() == "keep"
    assert_failed(run(xrt_run, compiled, *SHAPE, "--profile", tmp_path / "t.json", "--profile-runs", "0"),
                  EXIT_USAGE, "INVALID_ARGUMENT", "--profile-runs must be at least 1")
    assert_failed(run(xrt_run, compiled, *SHAPE, "--profile"), EXIT_USAGE, "INVALID_ARGUMENT", "--profile")
    assert not (tmp_path / "t.json").exists()
    proc = subprocess.run([str(xrt_run), "--help"], capture_output=True, text=True)
    assert "--profile TRACE.json" in proc.stdout and "--profile-runs N" in proc.stdout
