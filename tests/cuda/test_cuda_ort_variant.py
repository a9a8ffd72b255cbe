"""--target cuda's ONNX Runtime CUDA variant (cuda-onnxruntime), compile and load side, on a machine without a GPU:
both variants are written, the ORT one transformer-optimised (fusions and ops listed), preferred with the reason
where our lowering refuses the graph, shown by explain, skipped at load with the reason where onnxruntime cannot run
on CUDA here; bundles are byte-identical across compiles. The accuracy gate checks the ORT variant's graph on ONNX
Runtime's CPU provider and says so."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

pytest.importorskip("triton")
pytest.importorskip("sympy")
xrt = pytest.importorskip("xpuruntime")

BERT = os.path.join(os.path.dirname(__file__), "data", "tiny_bert_sdpa_dynamo.onnx")
SHAPES = {n: "2x16" for n in ("input_ids", "attention_mask", "token_type_ids")}


def _compile(src: str, out, shapes: dict | None = None):
    from xpuruntime.policy import Policy
    from xrtc.tools.compile import compile_model

    policy = Policy.from_dict({"shapes": shapes}) if shapes else None
    return compile_model(src, "cuda", str(out), policy=policy)


@pytest.fixture(scope="module")
def bert_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("ortcuda")
    result = _compile(BERT, d / "a.xrtpkg", SHAPES)
    return d, result


def _topk_model() -> onnx.ModelProto:
    """MatMul -> TopK: TopK is outside the cuda lowering's patterns."""
    w = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
                           helper.make_node("TopK", ["y", "k"], ["v", "i"], name="my_topk")], "t",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 3]),
                           helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])],
                          [onnx.numpy_helper.from_array(w, "w"),
                           onnx.numpy_helper.from_array(np.array([3], np.int64), "k")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_compile_writes_both_variants_with_the_ort_graph_fused(bert_bundle):
    from xrtc.tools.inspect import read_bundle

    d, result = bert_bundle
    variants = result.manifest["variants"]
    assert [v["id"] for v in variants] == ["cuda-cuda", "cuda-onnxruntime"]
    ours_first, theirs = variants
    assert theirs["device"] == "cuda" and theirs["engine"] == "onnxruntime" and theirs["precision"] == "fp16"
    assert theirs["options"] == {"enable_cuda_graph": "1", "use_tf32": "0"}
    assert theirs["why"].startswith("second choice")
    bundle = read_bundle(str(d / "a.xrtpkg"))
    model = onnx.load_from_string(bundle.data("cuda-onnxruntime.onnx"))
    ops = {n.op_type for n in model.graph.node}
    print("cuda-onnxruntime ops:", sorted(ops))
    print("notes:", theirs["notes"])
    # The optimizer's fusions for this export: add + LayerNorm -> SkipLayerNormalization, bias + GELU -> BiasGelu.
    assert {"SkipLayerNormalization", "BiasGelu"} <= ops and "Erf" not in ops
    assert any("fused SkipLayerNormalization x4" in n for n in theirs["notes"])
    assert any(n.startswith("graph ops: ") and "MatMul x16" in n for n in theirs["notes"])
    # fp16 by the optimizer's conversion, inputs and outputs kept in their types
    assert {i.name: i.type.tensor_type.elem_type for i in model.graph.output} == \
        {"last_hidden_state": TensorProto.FLOAT, "pooler_output": TensorProto.FLOAT}
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    acc = theirs["accuracy"]
    print("cuda-onnxruntime accuracy:", acc)
    assert acc["passed"] and acc["ran_on"].startswith("cpu (ONNX Runtime CPU provider") and acc["not_run_on_device"]
    assert "cuda-onnxruntime fp16 (checked on cpu (ONNX Runtime CPU provider" in result.summary


def test_ort_variant_graph_matches_ort_cpu_on_the_source(bert_bundle):
    """The variant's fp16 graph on ORT CPU against ORT CPU fp32 on the source model, the error printed."""
    from xrtc.tools.inspect import read_bundle

    d, _ = bert_bundle
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, 100, (2, 16)).astype(np.int64), "attention_mask": np.ones((2, 16), np.int64),
             "token_type_ids": np.zeros((2, 16), np.int64)}
    feeds["attention_mask"][1, 12:] = 0
    ref = ort.InferenceSession(BERT, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(read_bundle(str(d / "a.xrtpkg")).data("cuda-onnxruntime.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, feeds)
    for r, g in zip(ref, got):
        rel = float(np.abs(g - r).max() / np.abs(r).max())
        print(f"cuda-onnxruntime fp16 graph on ORT CPU vs source fp32: rel err {rel:.3g}")
        assert rel < 5e-3


def test_bundles_are_byte_identical(bert_bundle, tmp_path):
    d, _ = bert_bundle
    _compile(BERT, tmp_path / "b.xrtpkg", SHAPES)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (d / "a.xrtpkg", tmp_path / "b.xrtpkg")]
    assert digest[0] == digest[1]


def test_graph_outside_our_patterns_prefers_ort_with_the_reason(tmp_path):
    src = tmp_path / "topk.onnx"
    onnx.save(_topk_model(), str(src))
    result = _compile(str(src), tmp_path / "t.xrtpkg")
    variants = result.manifest["variants"]
    assert [v["id"] for v in variants] == ["cuda-onnxruntime"]
    why = variants[0]["why"]
    print("why:", why)
    assert why.startswith("preferred: xpuruntime's CUDA engine does not cover the graph") and "my_topk (TopK" in why
    excluded = result.manifest["excluded"]
    assert any(e["engine"] == "cuda" and "my_topk (TopK" in e["reason"] for e in excluded)
    proc = subprocess.run([sys.executable, "-m", "xrtc", "explain", str(tmp_path / "t.xrtpkg")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    print(proc.stdout[:1200])
    assert "cuda-onnxruntime" in proc.stdout and "does not cover the graph" in proc.stdout
    assert "my_topk (TopK" in proc.stdout  # the excluded variant's reason


def test_load_without_cuda_skips_the_ort_variant_with_the_reason(bert_bundle):
    from xpuruntime import _ort_backend

    d, _ = bert_bundle
    if _ort_backend.cuda_unavailable() is None:
        pytest.skip("onnxruntime has a CUDAExecutionProvider here: the variant would run")
    with pytest.raises(xrt.Unavailable) as err:
        xrt.load(str(d / "a.xrtpkg"), device="cuda")
    text = str(err.value)
    print(text)
    assert "cuda-onnxruntime (onnxruntime on cuda):" in text
    line = next(line for line in text.splitlines() if "cuda-onnxruntime" in line)
    assert "cuda" in line.split(":", 1)[1]
    # on the default device the variant is skipped as built for cuda
    with pytest.raises(xrt.Error, match=r"cuda-onnxruntime .*built for device cuda"):
        xrt.load(str(d / "a.xrtpkg"))


def test_cuda_provider_options_are_allow_listed_and_cuda_only():
    from xpuruntime import _ort_backend

    _ort_backend.session_options('{"enable_cuda_graph": "1", "use_tf32": "0"}')
    with pytest.raises(xrt.InvalidArgument, match="enable_cuda_graph"):
        _ort_backend.session_options('{"enable_cuda_graph": "yes"}')
    with pytest.raises(xrt.InvalidArgument, match="CUDA provider only"):
        _ort_backend.cuda_provider_options('{"use_tf32": "1"}', "cpu")
    assert _ort_backend.cuda_provider_options('{"use_tf32": "1", "intra_op_num_threads": "1"}', "cuda") == \
        {"use_tf32": "1"}


def test_bound_buffers_run_the_variant_like_a_plain_run(bert_bundle):
    """The CUDA-graph path's IO binding (inputs copied into buffers bound once, outputs read back), exercised on
    ONNX Runtime's CPU provider with the variant's own graph: same outputs as a plain run; a shape other than the
    bound one is refused, named."""
    from xpuruntime import _ort_backend
    from xrtc.tools.inspect import read_bundle

    d, _ = bert_bundle
    session = ort.InferenceSession(read_bundle(str(d / "a.xrtpkg")).data("cuda-onnxruntime.onnx"),
                                   providers=["CPUExecutionProvider"])
    bound = _ort_backend._Bound(session, device="cpu")
    rng = np.random.default_rng(5)
    for _ in range(2):  # twice: the buffers are reused
        feeds = [rng.integers(0, 100, (2, 16)).astype(np.int64), np.ones((2, 16), np.int64),
                 np.zeros((2, 16), np.int64)]
        got = bound.run(session, feeds)
        want = session.run(None, dict(zip([i.name for i in session.get_inputs()], feeds)))
        for g, w in zip(got, want):
            assert g.shape == w.shape and np.array_equal(g, w)
    with pytest.raises(xrt.InvalidArgument, match=r"input 'input_ids' is int64 \[1, 16\].*captured for int64 \[2, 16\]"):
        bound.run(session, [np.zeros((1, 16), np.int64)] * 3)


def _nonzero_model() -> bytes:
    """x [2, 8] -> NonZero -> y int64 [2, n]: an output with a symbolic dim, which no buffer can be bound to."""
    g = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "n"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_graph_variant_with_a_symbolic_output_runs_without_the_graph(monkeypatch):
    """_init with enable_cuda_graph on a model whose output has a symbolic dim: binding fails, so the session is
    recreated without the CUDA graph, with a RuntimeWarning, and runs. On ONNX Runtime's CPU provider standing in
    for CUDA's (the providers' names and _Bound's device swapped; the options ONNX Runtime was given recorded)."""
    from xpuruntime import _ort_backend

    real_session, real_bound, given = ort.InferenceSession, _ort_backend._Bound, []

    def session(model, so, providers):
        given.append(providers)
        return real_session(model, so, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(_ort_backend, "_PROVIDERS", {"cpu": "CPUExecutionProvider", "cuda": "CPUExecutionProvider"})
    monkeypatch.setattr(_ort_backend, "cuda_unavailable", lambda: None)
    monkeypatch.setattr(_ort_backend, "_Bound", lambda s, device="cuda", device_id=0: real_bound(s, "cpu"))
    with pytest.warns(RuntimeWarning, match=r"cannot replay a CUDA graph .*output 'y' is tensor\(int64\) \[2, 'n'\]"):
        handle = _ort_backend._init("cuda", {"model": _nonzero_model()}, '{"enable_cuda_graph": "1"}')
    assert handle.bound is None
    assert [p[0][1]["enable_cuda_graph"] for p in given] == ["1", "0"]
    x = np.zeros((2, 8), np.float32)
    x[0, 3] = x[1, 5] = 1
    (y,) = _ort_backend._execute(handle, [x])
    assert y.tolist() == [[0, 1], [3, 5]]


def test_without_the_pinned_triton_the_ort_variant_is_built_with_the_reason(tmp_path, monkeypatch):
    # The installed Triton is not the version the compiler pins (as on a machine without the [cuda-compile] extra's
    # version): our engine cannot build its kernels, the ONNX Runtime CUDA variant still can.
    from xrtc.targets.cuda import aot

    monkeypatch.setattr(aot, "TRITON_VERSION", "0.0.0")
    src = tmp_path / "mlp.onnx"
    sys.path.insert(0, os.path.dirname(__file__))
    import models

    onnx.save(models.mlp(batch=4), str(src))
    result = _compile(str(src), tmp_path / "m.xrtpkg")
    assert [v["id"] for v in result.manifest["variants"]] == ["cuda-onnxruntime"]
    (left,) = [e for e in result.manifest["excluded"] if e["engine"] == "cuda"]
    print("excluded:", left["reason"])
    assert "pinned to Triton 0.0.0" in left["reason"]


def test_device_names_with_an_ordinal():
    from xpuruntime import _ort_backend

    assert _ort_backend._split_device("cuda:1") == ("cuda", 1)
    assert _ort_backend._split_device("cuda") == ("cuda", 0)
    assert _ort_backend._split_device("cpu") == ("cpu", 0)
    assert _ort_backend._split_device("cuda:x") is None and _ort_backend._split_device("npu") is None
    assert not _ort_backend._has_device("tpu:0")
