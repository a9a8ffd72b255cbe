"""Policy as code, end to end on real models: precision policies and the accuracy gate, fixed / prefer semantics,
the plan lockfile, --validate-passes, golden data, the decision log (explain, diff, Session.explain)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import xpuruntime as xrt
import xrtpkg
from xpuruntime.policy import Policy
from xrt_testutil import CORPUS, SAMPLE, corpus_inputs, overflow_model, run_tool
from xrtc.build import compile_model
from xrtc.errors import AccuracyGateError, PolicyViolationError, UsageError
from xrtc.passes import Pass

CLS = CORPUS / "models" / "ppocr_mobile_v2_cls.onnx"  # PP-OCR text direction classifier: conv + MatMul head


def need(path):
    if not path.exists():
        pytest.skip(f"corpus model missing: {path} (run tests/corpus/fetch.sh)")
    return path


def policy_file(tmp_path, text: str, name: str = "policy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def calibration_file(tmp_path, model: str, samples: int = 8) -> str:
    """Calibration data: the corpus sample plus seeded perturbations of it (name -> [samples, ...])."""
    feeds = corpus_inputs(model)
    rng = np.random.default_rng(7)
    data = {k: np.stack([v] + [(v + rng.normal(0, 0.1, v.shape)).astype(v.dtype) for _ in range(samples - 1)])
            for k, v in feeds.items()}
    path = tmp_path / f"{model}-calibration.npz"
    np.savez(path, **data)
    return str(path)


@pytest.fixture(scope="module")
def cls_bundles(tmp_path_factory):
    """fp32, fp16 and int8 bundles of the corpus classifier (shape bound: int8 needs it on OpenVINO, see below)."""
    need(CLS)
    tmp = tmp_path_factory.mktemp("cls")
    calibration = calibration_file(tmp, "ppocr_mobile_v2_cls")
    shape = {"x": [1, 3, 48, 192]}
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        policy = Policy(shapes=shape).with_overrides(precision=precision)
        path = tmp / f"cls-{precision}.xrtpkg"
        out[precision] = compile_model(str(CLS), "cpu", str(path), policy=policy,
                                       calibration_path=calibration if precision == "int8" else None)
    return out


def test_fp16_and_int8_give_smaller_bundles_within_the_gate(cls_bundles):
    sizes = {p: r.size for p, r in cls_bundles.items()}
    print("bundle sizes:", sizes)
    assert sizes["fp16"] < sizes["fp32"] and sizes["int8"] < sizes["fp32"], sizes
    for precision, result in cls_bundles.items():
        variants = result.manifest["variants"]
        assert {v["engine"] for v in variants} == {"openvino", "onnxruntime"}, result.manifest["excluded"]
        for v in variants:
            assert v["precision"] == precision
            acc = v["accuracy"]
            print(f"{precision} {v['id']}: max abs err {acc['max_abs_err']} (rtol {acc['rtol']}, atol {acc['atol']})")
            assert acc["passed"] and acc["samples"] >= 1
            assert (acc["rtol"], acc["atol"]) == tuple(Policy().tolerance_for(precision).values())
    # the model weights themselves shrink: the weight store both variants read (formats/xrtpkg.md, "Weight store")
    def section(result, name):
        return next(s.size for s in xrtpkg.read(result.path).sections if s.name == name)
    for name in ("shared.weights",):
        assert section(cls_bundles["fp16"], name) < 0.7 * section(cls_bundles["fp32"], name), name
        assert section(cls_bundles["int8"], name) < 0.5 * section(cls_bundles["fp32"], name), name


def test_precision_shows_in_the_graph_and_the_engine_options(cls_bundles):
    bundle = xrtpkg.read(cls_bundles["fp16"].path)
    ort_graph = onnx.load_from_string(bundle.data("cpu-onnxruntime.onnx"))
    weights = [t.data_type for t in ort_graph.graph.initializer if t.data_type in (1, 10)]
    assert weights.count(onnx.TensorProto.FLOAT16) > weights.count(onnx.TensorProto.FLOAT)
    ov = next(v for v in bundle.manifest["variants"] if v["engine"] == "openvino")
    assert ov["options"]["INFERENCE_PRECISION_HINT"] == "f16"
    int8 = xrtpkg.read(cls_bundles["int8"].path)
    q_graph = onnx.load_from_string(int8.data("cpu-onnxruntime.onnx"))
    assert any(n.op_type in ("QLinearConv", "QuantizeLinear", "DequantizeLinear") for n in q_graph.graph.node)
    # inputs and outputs keep their declared dtypes
    for result in cls_bundles.values():
        assert [i["dtype"] for i in result.manifest["model"]["inputs"]] == ["float32"]


def test_golden_data_lets_verify_run_without_the_source_model(cls_bundles):
    for precision, result in cls_bundles.items():
        proc = run_tool("xrtc", "verify", result.path, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        assert report["passed"] and {c["variant"] for c in report["comparisons"]} == {"cpu-openvino",
                                                                                       "cpu-onnxruntime"}
        print(precision, [(c["variant"], c["max_abs_err"]) for c in report["comparisons"]])
    # and the loaded session runs on the golden input to the golden output
    manifest = cls_bundles["fp32"].manifest
    bundle = xrtpkg.read(cls_bundles["fp32"].path)
    import io
    feeds = {e["name"]: np.load(io.BytesIO(bundle.data(e["section"]))) for e in manifest["golden"]["inputs"]}
    want = {e["name"]: np.load(io.BytesIO(bundle.data(e["section"]))) for e in manifest["golden"]["outputs"]}
    got = xrt.load(cls_bundles["fp32"].path).run(feeds)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-3, atol=1e-4)


def test_fixed_kernel_that_cannot_hold_names_node_and_reason(tmp_path):
    need(CLS)
    path = policy_file(tmp_path, '[kernel]\nmatmul = { choice = "cublasLt", mode = "fixed" }\n')
    proc = run_tool("xrtc", "compile", CLS, "--policy", path, "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 6, proc.stderr
    assert "matmul=cublasLt is fixed" in proc.stderr and "CUDA" in proc.stderr
    assert "MatMul@0" in proc.stderr  # the node, by the name the plan and explain use
    assert not (tmp_path / "x.xrtpkg").exists()


def test_fixed_precision_no_engine_has(tmp_path):
    with pytest.raises(PolicyViolationError, match="tf32 is fixed.*no TF32"):
        compile_model(str(SAMPLE), "cpu", str(tmp_path / "x.xrtpkg"),
                      policy=Policy.from_dict({"execution": {"precision": {"choice": "tf32", "mode": "fixed"}}}))


def test_fixed_precision_one_engine_lacks_drops_that_variant(tmp_path):
    result = compile_model(str(SAMPLE), "cpu", str(tmp_path / "x.xrtpkg"),
                           policy=Policy.from_dict({"execution": {"precision": {"choice": "bf16", "mode": "fixed"}}}))
    assert [v["id"] for v in result.manifest["variants"]] == ["cpu-openvino"]
    assert result.manifest["variants"][0]["options"]["INFERENCE_PRECISION_HINT"] == "bf16"
    reason = result.manifest["excluded"][0]["reason"]
    assert "bf16 is fixed" in reason and "ONNX Runtime" in reason


def test_prefer_records_why_not(tmp_path):
    result = compile_model(str(SAMPLE), "cpu", str(tmp_path / "x.xrtpkg"),
                           policy=Policy.from_dict({"execution": {"precision": "bf16"},
                                                    "kernel": {"conv": "cudnn"}}))
    by_engine = {v["engine"]: v for v in result.manifest["variants"]}
    assert by_engine["onnxruntime"]["precision"] == "fp32" and by_engine["openvino"]["precision"] == "bf16"
    log = json.loads(xrtpkg.read(result.path).data("decisions.json"))
    text = " | ".join(log["warnings"])
    assert "prefer precision=bf16 on cpu-onnxruntime" in text and "prefer conv=cudnn" in text
    conv = next(n for n in log["nodes"] if n["op"] == "Conv")
    assert any("cudnn" in r["alternative"] and "CUDA" in r["reason"] for r in conv["rejected"])


def test_gate_fallback_prefer_and_fixed(tmp_path):
    need(CLS)
    strict = {"fp16": {"rtol": 0.0, "atol": 1e-9}}  # no fp16 build can meet this
    shapes = {"x": "1x3x48x192"}  # the gate decides only on real shapes (guessed ones are advisory)
    prefer = Policy.from_dict({"execution": {"precision": "fp16"}, "tolerance": strict, "shapes": shapes})
    result = compile_model(str(CLS), "cpu", str(tmp_path / "p.xrtpkg"), policy=prefer)
    for v in result.manifest["variants"]:
        assert v["precision"] == "fp32" and v["accuracy"]["passed"], v
    log = json.loads(xrtpkg.read(result.path).data("decisions.json"))
    for v in (v for v in log["variants"] if v["status"] == "built"):
        assert v["precision_planned"] == "fp16" and "fp16 over tolerance" in v["fallback"], v
    fixed = Policy.from_dict({"execution": {"precision": {"choice": "fp16", "mode": "fixed"}}, "tolerance": strict,
                              "shapes": shapes})
    with pytest.raises(AccuracyGateError, match="over the tolerance.*precision is fixed"):
        compile_model(str(CLS), "cpu", str(tmp_path / "f.xrtpkg"), policy=fixed)
    assert not (tmp_path / "f.xrtpkg").exists()


def test_plan_round_trips_to_a_byte_identical_bundle(tmp_path):
    need(CLS)
    policy = policy_file(tmp_path, '[kernel]\nmatmul = "cublasLt"\n[execution]\nprecision = "fp16"\n'
                                   '[precision]\nkeep_fp32_ops = ["Conv"]\n')
    run_tool("xrtc", "plan", CLS, "--policy", policy, "-o", tmp_path / "plan.json", check=True)
    run_tool("xrtc", "compile", CLS, "--policy", policy, "-o", tmp_path / "a.xrtpkg", check=True)
    run_tool("xrtc", "compile", CLS, "--plan", tmp_path / "plan.json", "-o", tmp_path / "b.xrtpkg", check=True)
    assert (tmp_path / "a.xrtpkg").read_bytes() == (tmp_path / "b.xrtpkg").read_bytes()
    plan = json.loads((tmp_path / "plan.json").read_text())
    convs = [n for n in plan["nodes"] if n["op"] == "Conv"]
    assert convs and all(n["precision"] == "fp32" and "block list" in n["why"] for n in convs)
    # the plan is in the bundle too, and `xrtc plan BUNDLE` gives it back
    proc = run_tool("xrtc", "plan", tmp_path / "a.xrtpkg", "--json", check=True)
    assert json.loads(proc.stdout) == plan
    # diff of identical bundles: nothing, exit 0
    assert run_tool("xrtc", "diff", tmp_path / "a.xrtpkg", tmp_path / "b.xrtpkg").returncode == 0


def test_edited_plan_is_honoured_and_diff_shows_it(tmp_path):
    need(CLS)
    run_tool("xrtc", "plan", CLS, "--precision", "fp16", "-o", tmp_path / "plan.json", check=True)
    plan = json.loads((tmp_path / "plan.json").read_text())
    target = next(n for n in plan["nodes"] if n["op"] == "MatMul")
    assert target["precision"] == "fp16"
    target["precision"], target["why"] = "fp32", "kept fp32 by hand"
    (tmp_path / "edited.json").write_text(json.dumps(plan))
    run_tool("xrtc", "compile", CLS, "--plan", tmp_path / "plan.json", "-o", tmp_path / "a.xrtpkg", check=True)
    run_tool("xrtc", "compile", CLS, "--plan", tmp_path / "edited.json", "-o", tmp_path / "b.xrtpkg", check=True)
    proc = run_tool("xrtc", "diff", tmp_path / "a.xrtpkg", tmp_path / "b.xrtpkg", "--json")
    assert proc.returncode == 1
    changes = json.loads(proc.stdout)["changes"]
    node_rows = {row[0]: row[1:] for row in changes["nodes"]}
    assert node_rows[f"{target['name']}.cpu-onnxruntime"] == ["fp16", "fp32"]
    graph = onnx.load_from_string(xrtpkg.read(str(tmp_path / "b.xrtpkg")).data("cpu-onnxruntime.onnx"))
    assert graph  # built and loadable; the accuracy gate ran on it
    # a plan for another model is refused, naming both
    other = dict(plan, source={"name": "other.onnx", "sha256": "0" * 64})
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = run_tool("xrtc", "compile", CLS, "--plan", tmp_path / "other.json", "-o", tmp_path / "c.xrtpkg")
    assert proc.returncode == 2 and "other.onnx" in proc.stderr and "xrtc plan" in proc.stderr


class BreakWeights(Pass):
    """A deliberately broken pass: scales the first Conv's weights (a plausible folding bug)."""

    name = "break-weights"

    def apply(self, state):
        import onnx_graphsurgeon as gs

        graph = state.graph
        conv = next(n for n in graph.nodes if n.op == "Conv")
        w = conv.inputs[1]
        conv.inputs[1] = gs.Constant(w.name + ".broken", (w.values * 1.5).astype(w.values.dtype))
        return 1


def test_validate_passes_names_the_breaking_pass(tmp_path):
    # the pass is rolled back, named with its error, and the compile goes on (tests/compiler/test_pass_transactions)
    broken = compile_model(str(SAMPLE), "cpu", str(tmp_path / "x.xrtpkg"), validate_passes=True,
                           policy=Policy(shapes={"image": [1, 3, 64, 64]}),
                           extra_passes=[("fold-batchnorm", BreakWeights())])
    records = {p["name"]: p for p in broken.manifest["provenance"]["passes"]}
    assert "pass break-weights broke numerics" in records["break-weights"]["rolled_back"]
    # without the broken pass every pass is checked and its error recorded
    result = compile_model(str(SAMPLE), "cpu", str(tmp_path / "y.xrtpkg"), validate_passes=True,
                           policy=Policy(shapes={"image": [1, 3, 64, 64]}))
    records = {p["name"]: p for p in result.manifest["provenance"]["passes"]}
    assert records["fold-batchnorm"]["max_abs_err"] < 1e-4 and records["fold-batchnorm"]["changed"] == 5
    assert len(records["fold-batchnorm"]["matched"]) == 5


def test_static_shape_binding_and_its_errors(tmp_path):
    out = str(tmp_path / "x.xrtpkg")
    fixed = {"execution": {"static_shape": {"choice": True, "mode": "fixed"}}}
    with pytest.raises(PolicyViolationError) as info:
        compile_model(str(SAMPLE), "cpu", out, policy=Policy.from_dict(fixed))
    assert "image[0] (batch)" in str(info.value) and "--shape image=" in str(info.value)
    result = compile_model(str(SAMPLE), "cpu", out, policy=Policy.from_dict(dict(fixed, shapes={"image": "2x3x64x64"})))
    assert result.manifest["model"]["inputs"][0]["shape"] == [2, 3, 64, 64]
    with pytest.raises(UsageError, match="unknown input"):
        compile_model(str(SAMPLE), "cpu", out, force=True, policy=Policy(shapes={"img": [1, 3, 64, 64]}))
    with pytest.raises(UsageError, match="fixed at 3"):
        compile_model(str(SAMPLE), "cpu", out, force=True, policy=Policy(shapes={"image": [1, 4, 64, 64]}))


def test_int8_without_calibration(tmp_path):
    fixed = Policy.from_dict({"execution": {"precision": {"choice": "int8", "mode": "fixed"}}})
    with pytest.raises(PolicyViolationError, match="--calibration"):
        compile_model(str(SAMPLE), "cpu", str(tmp_path / "x.xrtpkg"), policy=fixed)
    result = compile_model(str(SAMPLE), "cpu", str(tmp_path / "y.xrtpkg"),
                           policy=Policy.from_dict({"execution": {"precision": "int8"}}))
    assert {v["precision"] for v in result.manifest["variants"]} == {"fp32"}


def test_explain_cli_and_session_explain(cls_bundles):
    path = cls_bundles["int8"].path
    proc = run_tool("xrtc", "explain", path, check=True)
    assert "accuracy: max abs err" in proc.stdout and "QDQ" in proc.stdout
    assert "rejected int8" in proc.stdout  # ops the quantiser leaves in float say so
    log = json.loads(run_tool("xrtc", "explain", path, "--json", check=True).stdout)
    assert {v["id"] for v in log["variants"] if v["status"] == "built"} == {"cpu-openvino", "cpu-onnxruntime"}
    with xrt.load(path) as session:
        explained = session.explain()
    decisions = explained["decisions"]
    assert decisions["variant"]["id"] == explained["variant"] and decisions["variant"]["precision"] == "int8"
    conv = next(n for n in decisions["nodes"] if n["op"] == "Conv")
    assert conv["precision"] == "int8" and conv["engine"] == explained["engine"]


def test_bad_inputs_to_the_new_flags(tmp_path):
    bad = policy_file(tmp_path, '[execution]\nprecision = "fp8"\n')
    proc = run_tool("xrtc", "compile", SAMPLE, "--policy", bad, "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2 and "fp8" in proc.stderr and "fp32, tf32, fp16, bf16, int8" in proc.stderr
    proc = run_tool("xrtc", "compile", SAMPLE, "--plan", tmp_path / "none.json", "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_tool("xrtc", "compile", SAMPLE, "--plan", bad, "--precision", "fp16", "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2 and "--plan fixes every decision" in proc.stderr
    (tmp_path / "cal.npz").write_bytes(b"not an npz")
    proc = run_tool("xrtc", "compile", SAMPLE, "--precision", "int8", "--calibration", tmp_path / "cal.npz",
                    "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2 and "--calibration" in proc.stderr
    np.savez(tmp_path / "cal2.npz", other=np.zeros((2, 3), np.float32))
    proc = run_tool("xrtc", "compile", SAMPLE, "--precision", "int8", "--calibration", tmp_path / "cal2.npz",
                    "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2 and "no data for input(s) ['image']" in proc.stderr
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_gate_per_node_fallback_keeps_only_the_breaking_node_in_fp32(tmp_path):
    model = overflow_model(tmp_path / "overflow.onnx")
    result = compile_model(str(model), "cpu", str(tmp_path / "o.xrtpkg"),
                           policy=Policy.from_dict({"execution": {"precision": "fp16"}}))
    ort_variant = next(v for v in result.manifest["variants"] if v["engine"] == "onnxruntime")
    assert ort_variant["precision"] == "fp16" and ort_variant["accuracy"]["passed"], ort_variant
    log = json.loads(xrtpkg.read(result.path).data("decisions.json"))
    entry = next(v for v in log["variants"] if v["id"] == "cpu-onnxruntime")
    assert "per-node fallback kept 1 node(s) in fp32: scale_up" in entry["fallback"], entry
    nodes = {n["name"]: n for n in log["nodes"]}
    assert nodes["scale_up"]["choices"]["cpu-onnxruntime"]["precision"] == "fp32"
    assert nodes["mm"]["choices"]["cpu-onnxruntime"]["precision"] == "fp16"
    assert any("per-node fallback" in r["reason"] for r in nodes["scale_up"]["rejected"])
    graph = onnx.load_from_string(xrtpkg.read(result.path).data("cpu-onnxruntime.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
