"""The ONNX backend node test suite through the bundle path (see node_suite.py).

The bundle's cpu-onnxruntime variant runs the same engine as ONNX Runtime run directly, so every case ONNX Runtime
passes directly must pass through it too: any difference is a compiler or runtime bug. Cases whose inputs/outputs
the bundle format cannot carry (float8/int4...) are left out of that check, and nothing may crash or hang.
Strings, sequences, maps and optionals are carried since xrtc 0.3: every such case (55 in onnx 1.23.2, ~25 s) runs
in the default run too.

Default run: a fixed sample (every 40th case by name: 48 of onnx 1.23.2's 1884 cases, ~10 s). The full suite (~20 min
on two cores) runs in `make test` (CI); with plain pytest it is opt in: `pytest -m onnx_node_suite tests/onnx_node -s`.
The case data is generated once into ~/.cache/xrt-onnx-node (the onnx wheel does not ship data/node; see
node_suite.data_dir).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import node_suite  # noqa: E402

SAMPLE_EVERY = 40


def _check(results: list[dict]) -> None:
    print("\n" + node_suite.report(results))
    bad = node_suite.crashes(results)
    assert not bad, "crashed or hung: " + ", ".join(r["case"] for r in bad)
    regs = [r for r in node_suite.regressions(results, node_suite.BUNDLE_ORT)
            if r["paths"][node_suite.BUNDLE_ORT]["status"] != "unsupported"]
    assert not regs, "ONNX Runtime passes these directly but not through the bundle's cpu-onnxruntime variant:\n" + \
        "\n".join(f"  {r['case']}: {r['paths'][node_suite.BUNDLE_ORT]['status']}: "
                  f"{r['paths'][node_suite.BUNDLE_ORT].get('detail', '')}" for r in regs)


@pytest.fixture(scope="module")
def data():
    return node_suite.data_dir()


def test_sample_matches_onnxruntime(data):
    cases = node_suite.sample_cases(data, SAMPLE_EVERY)
    assert len(cases) >= 30, f"only {len(cases)} node cases found under {data}"
    results = node_suite.run_suite(cases, data, jobs=2)
    # The sample must actually exercise the bundle: most of it runs through both variants.
    ran = [r for r in results if r["paths"][node_suite.BUNDLE_ORT]["status"] in ("pass", "fail")]
    assert len(ran) >= len(cases) // 2, node_suite.summary_table(results)
    _check(results)


def test_string_sequence_optional_cases_match_onnxruntime(data):
    cases = node_suite.typed_cases(data)
    assert len(cases) >= 30, f"only {len(cases)} typed node cases found under {data}"
    results = node_suite.run_suite(cases, data, jobs=2)
    ran = [r for r in results if r["paths"][node_suite.BUNDLE_ORT]["status"] == "pass"]
    print(f"\n{len(cases)} cases with string/sequence/map/optional inputs or outputs: {len(ran)} pass through the "
          "bundle's cpu-onnxruntime variant")
    assert not [r for r in results if r["paths"][node_suite.BUNDLE_ORT]["status"] == "unsupported"]
    assert len(ran) >= len(cases) * 3 // 4, node_suite.summary_table(results)
    _check(results)


@pytest.mark.onnx_node_suite
def test_full_suite_matches_onnxruntime(data):
    results = node_suite.run_suite(node_suite.list_cases(data), data, jobs=2)
    _check(results)


def test_compare_catches_differences():
    """The comparison itself: wrong values, shapes and dtypes are caught; NaN equals NaN, as in onnx's runner."""
    import numpy as np

    ref = [np.array([1.0, np.nan, 3.0], np.float32)]
    assert node_suite.compare(ref, [ref[0].copy()]) is None
    assert "output 0" in node_suite.compare(ref, [np.array([1.0, np.nan, 3.1], np.float32)])
    assert "shape" in node_suite.compare(ref, [ref[0][:2]])
    assert "dtype" in node_suite.compare(ref, [ref[0].astype(np.float64)])
    assert "outputs" in node_suite.compare(ref, [])


def test_crash_and_hang_cost_one_case(data, monkeypatch):
    """A worker that dies (SIGABRT) or hangs is reported as crash/timeout for that case only; the rest still run."""
    cases = node_suite.list_cases(data, r"^test_(abs|add|neg|relu)$")
    assert len(cases) == 4
    monkeypatch.setenv("XRT_NODE_SUITE_ABORT_ON", "test_add")
    monkeypatch.setenv("XRT_NODE_SUITE_HANG_ON", "test_neg")
    results = {r["case"]: r for r in node_suite.run_suite(cases, data, jobs=2, timeout=10)}
    assert {p["status"] for p in results["test_add"]["paths"].values()} == {"crash"}
    assert "signal 6" in results["test_add"]["paths"]["ort"]["detail"]
    assert {p["status"] for p in results["test_neg"]["paths"].values()} == {"timeout"}
    for name in ("test_abs", "test_relu"):
        assert all(p["status"] == "pass" for p in results[name]["paths"].values()), results[name]
    assert [r["case"] for r in node_suite.crashes(list(results.values()))] == ["test_add", "test_neg"]
