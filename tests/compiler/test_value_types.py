"""Models whose inputs or outputs are strings, sequences, maps or optionals (issue 11, item 8): built here with
onnx.helper (a string-label classifier with a ZipMap-style probability output, a vocabulary lookup taking strings, a
model taking a sequence, one taking an optional), compiled with xrtc, loaded and run with xpuruntime on ONNX Runtime,
and compared with ONNX Runtime on the source model. The C API side is runtime_cpp/tests/c_api_types_test.cc."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto as T, helper as h

import xpuruntime as xrt
import xrtpkg
from bundle_craft import layout
from xrtc.errors import AccuracyGateError, XrtcError
from xrtc.tools.compile import compile_model
from xrtc.tools.verify import compare

RTOL, ATOL = 1e-3, 1e-4
OPSETS = [h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]


def _model(nodes, inputs, outputs, initializers=()):
    m = h.make_model(h.make_graph(nodes, "m", inputs, outputs, list(initializers)), opset_imports=OPSETS)
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def classifier():
    """x float32[N, 3] -> label string[N] (ArgMax + LabelEncoder), probabilities sequence<map<int64, float32>>
    (ZipMap): the shape of a scikit-learn classifier exported by skl2onnx."""
    w = h.make_tensor("W", T.FLOAT, [3, 3], [1.0, 0.2, -0.5, 0.1, 1.3, 0.4, -0.3, 0.2, 0.9])
    nodes = [h.make_node("MatMul", ["x", "W"], ["logits"]),
             h.make_node("Softmax", ["logits"], ["probs"], axis=1),
             h.make_node("ArgMax", ["probs"], ["index"], axis=1, keepdims=0),
             h.make_node("LabelEncoder", ["index"], ["label"], domain="ai.onnx.ml", keys_int64s=[0, 1, 2],
                         values_strings=["cat", "dog", "bird"], default_string="?"),
             h.make_node("ZipMap", ["probs"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1, 2])]
    seq_map = h.make_sequence_type_proto(h.make_map_type_proto(T.INT64, h.make_tensor_type_proto(T.FLOAT, [])))
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["N", 3])],
                  [h.make_tensor_value_info("label", T.STRING, ["N"]), h.make_value_info("probabilities", seq_map)],
                  [w])


def vocabulary():
    """text string[N] -> ids int64[N] (a tokenizer's vocabulary lookup), upper string[N] (the ids mapped back)."""
    nodes = [h.make_node("LabelEncoder", ["text"], ["ids"], domain="ai.onnx.ml",
                         keys_strings=["hello", "world", "zoë"], values_int64s=[1, 2, 3], default_int64=0),
             h.make_node("LabelEncoder", ["ids"], ["upper"], domain="ai.onnx.ml", keys_int64s=[1, 2, 3],
                         values_strings=["HELLO", "WORLD", "ZOË"], default_string="<unk>")]
    return _model(nodes, [h.make_tensor_value_info("text", T.STRING, ["N"])],
                  [h.make_tensor_value_info("ids", T.INT64, ["N"]), h.make_tensor_value_info("upper", T.STRING, ["N"])])


def sequence_input():
    """parts sequence<tensor(float32)> -> joined float32 (ConcatFromSequence), count int64 (SequenceLength)."""
    seq = h.make_sequence_type_proto(h.make_tensor_type_proto(T.FLOAT, [None, 2]))
    nodes = [h.make_node("ConcatFromSequence", ["parts"], ["joined"], axis=0),
             h.make_node("SequenceLength", ["parts"], ["count"])]
    return _model(nodes, [h.make_value_info("parts", seq)],
                  [h.make_tensor_value_info("joined", T.FLOAT, [None, 2]), h.make_tensor_value_info("count", T.INT64, [])])


def optional_input():
    """maybe optional<tensor(float32)> -> present bool (OptionalHasElement)."""
    opt = h.make_optional_type_proto(h.make_tensor_type_proto(T.FLOAT, [2]))
    nodes = [h.make_node("OptionalHasElement", ["maybe"], ["present"])]
    m = h.make_model(h.make_graph(nodes, "m", [h.make_value_info("maybe", opt)],
                                  [h.make_tensor_value_info("present", T.BOOL, [])]),
                     opset_imports=[h.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m, full_check=True)
    return m


def _compile(tmp_path, name, model, **kw):
    src = tmp_path / f"{name}.onnx"
    onnx.save(model, src)
    out = tmp_path / f"{name}.xrtpkg"
    compile_model(str(src), "cpu", str(out), **kw)
    return src, out


def _ort(src, feeds):
    session = onnxruntime.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_string_label_classifier(tmp_path):
    src, out = _compile(tmp_path, "clf", classifier(), policy=None)
    manifest = xrtpkg.read(out).manifest
    assert [o.get("dtype") for o in manifest["model"]["outputs"]] == ["string", None]
    assert manifest["model"]["outputs"][1]["type"] == {"sequence": {"map": {"key": "int64", "value": "float32"}}}
    assert [v["engine"] for v in manifest["variants"]] == ["onnxruntime"]
    assert manifest["variants"][0]["accuracy"]["passed"] is True
    (ov,) = manifest["excluded"]
    assert ov["engine"] == "openvino" and "output 'label' is a string tensor" in ov["reason"]
    assert "golden" not in manifest  # .npy cannot hold a sequence of maps: xrtc verify --model checks it
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    with xrt.load(out) as session:
        assert session.outputs[1].dtype == "sequence<map<int64, tensor(float32)>>"
        got = session.run({"x": x})
    ref = _ort(src, {"x": x})
    assert got["label"].tolist() == ref["label"].tolist()
    assert set(got["label"].tolist()) <= {"cat", "dog", "bird"}
    errs = []
    for g, r in zip(got["probabilities"], ref["probabilities"], strict=True):
        assert sorted(g) == sorted(r) == [0, 1, 2]
        errs += [abs(g[k] - r[k]) for k in r]
    c = compare("cpu-onnxruntime", "probabilities", got["probabilities"], ref["probabilities"], RTOL, ATOL)
    print(f"classifier: labels equal ({len(ref['label'])}), probabilities max abs err {max(errs):.3g} "
          f"(gate: {c.max_abs_err:.3g}, {c.note})")
    assert c.passed and max(errs) <= ATOL
    # The bytes are reproducible.
    first = out.read_bytes()
    compile_model(str(src), "cpu", str(out), force=True)
    assert out.read_bytes() == first


def test_gate_comparison_of_maps_and_strings_can_fail():
    ref = [{0: 0.5, 1: 0.25}, {0: 0.125, 1: 0.875}]
    assert compare("v", "p", [dict(d) for d in ref], ref, RTOL, ATOL).passed
    off = [{0: 0.5, 1: 0.25}, {0: 0.125, 1: 0.9}]
    c = compare("v", "p", off, ref, RTOL, ATOL)
    assert not c.passed and abs(c.max_abs_err - 0.025) < 1e-9
    c = compare("v", "p", [{0: 0.5}, {0: 0.125, 1: 0.875}], ref, RTOL, ATOL)
    assert not c.passed and "structure differs at [0]#keys" in c.note
    c = compare("v", "p", ref[:1], ref, RTOL, ATOL)
    assert not c.passed and "#len" in c.note
    labels = np.array(["cat", "dog"], dtype=object)
    assert compare("v", "l", np.array(["cat", "dog"]), labels, RTOL, ATOL).passed  # unicode vs object: by value
    c = compare("v", "l", np.array(["cat", "cow"], dtype=object), labels, RTOL, ATOL)
    assert not c.passed and c.worst_index == [1] and "1 differ" in c.note


def test_string_input_model(tmp_path):
    src, out = _compile(tmp_path, "vocab", vocabulary())
    bundle = xrtpkg.read(out)
    manifest = bundle.manifest
    assert manifest["model"]["inputs"] == [{"dtype": "string", "name": "text", "shape": ["N"]}]
    assert manifest["variants"][0]["accuracy"]["passed"] is True
    assert "input 'text' is a string tensor" in manifest["excluded"][0]["reason"]
    # Golden strings are unicode .npy arrays, loadable without pickles.
    section = next(s["section"] for s in manifest["golden"]["outputs"] if s["name"] == "upper")
    golden = np.load(io.BytesIO(bundle.data(section)), allow_pickle=False)
    assert golden.dtype.kind == "U"
    text = np.array(["hello", "zoë", "", "nope", "world"])
    with xrt.load(out) as session:
        assert session.inputs[0].dtype == "string"
        for feed in (text, text.astype(object), np.array([s.encode() for s in text], dtype=object),
                     np.array(["x", "hello", "y", "zoë", "z", "", "w", "nope", "v", "world"])[1::2]):
            got = session.run({"text": feed})
            assert got["ids"].tolist() == [1, 3, 0, 0, 2]
            assert got["upper"].tolist() == ["HELLO", "ZOË", "<unk>", "<unk>", "WORLD"]
        ref = _ort(src, {"text": text})
        assert got["ids"].tolist() == ref["ids"].tolist() and got["upper"].tolist() == ref["upper"].tolist()
        with pytest.raises(xrt.InvalidArgument, match="element 1 of a string tensor is a int"):
            session.run({"text": np.array(["a", 3], dtype=object)})
        with pytest.raises(xrt.InvalidArgument, match=r"expected string\[N\], given int64\[2\]: wrong dtype"):
            session.run({"text": np.array([1, 2])})
        with pytest.raises(xrt.InvalidArgument, match="element 0 of a string tensor is a str that cannot be encoded as UTF-8"):
            session.run({"text": np.array(["\udc80"], dtype=object)})
        with pytest.raises(xrt.InvalidArgument, match="not valid UTF-8"):
            session.run({"text": np.array([b"\xff\xfe"], dtype=object)})
    print(f"vocabulary: {len(text)} strings, ids and strings equal to ONNX Runtime")


def test_sequence_input_needs_allow_unverified_then_runs(tmp_path):
    with pytest.raises(XrtcError, match="input 'parts' is a sequence, map or optional"):
        _compile(tmp_path, "seq", sequence_input())
    src, out = _compile(tmp_path, "seq", sequence_input(), allow_unverified=True)
    manifest = xrtpkg.read(out).manifest
    assert manifest["model"]["inputs"] == [{"name": "parts", "type": {"sequence": "float32"}}]
    assert "unverified" in manifest
    parts = [np.arange(4, dtype=np.float32).reshape(2, 2), np.ones((3, 2), np.float32)]
    with xrt.load(out) as session:
        got = session.run({"parts": parts})
        with pytest.raises(xrt.InvalidArgument, match=r"input 'parts': expected sequence<tensor\(float32\)>, given "
                                                      "ndarray"):
            session.run({"parts": parts[0]})
        with pytest.raises(xrt.InvalidArgument, match="input 'parts' .* is missing"):
            session.run({})
        with pytest.raises(xrt.InvalidArgument, match="unknown input"):
            session.run({"parts": parts, "other": parts})
    ref = _ort(src, {"parts": parts})
    assert np.array_equal(got["joined"], ref["joined"]) and int(got["count"]) == 2


def test_optional_input(tmp_path):
    src, out = _compile(tmp_path, "opt", optional_input(), allow_unverified=True)
    assert xrtpkg.read(out).manifest["model"]["inputs"][0]["type"] == {"optional": "float32"}
    with xrt.load(out) as session:
        assert bool(session.run({"maybe": None})["present"]) is False
        assert bool(session.run({"maybe": np.ones(2, np.float32)})["present"]) is True
    assert bool(_ort(src, {"maybe": None})["present"]) is False


def test_value_types_need_onnxruntime_and_hostile_types_are_refused(tmp_path):
    _, out = _compile(tmp_path, "clf", classifier())
    bundle = xrtpkg.read(out)
    manifest = bundle.manifest
    # Only ONNX Runtime runs such values: another engine is refused by name, not run into garbage.
    with pytest.raises(xrt.NotFound):
        xrt.load(out, engine="openvino")
    deep = "float32"
    for _ in range(9):
        deep = {"sequence": deep}
    for bad, needle in ((deep, "nests deeper than 8 levels"), ({"tuple": "float32"}, 'unknown type "tuple"'),
                        ({"map": {"key": "float32", "value": "float32"}}, "a map key is"),
                        ({"sequence": "float128"}, '"float128", not one of')):
        hostile = json.loads(json.dumps(manifest))
        hostile["model"]["outputs"][1]["type"] = bad
        path = tmp_path / "hostile.xrtpkg"
        text = json.dumps(hostile, sort_keys=True, separators=(",", ":")).encode()
        others = [(sec.name.encode(), 0, bundle.data(sec.name), sec.size) for sec in bundle.sections[1:]]
        path.write_bytes(layout([(b"manifest", 0, text, len(text))] + others))
        with pytest.raises(xrt.DataCorrupt, match=needle):
            xrt.load(path)


def test_object_array_for_a_numeric_input_is_refused_clearly():
    from xrt_testutil import ROOT

    with xrt.load(ROOT / "formats" / "golden" / "tiny_model.xrtpkg") as session:
        with pytest.raises(xrt.InvalidArgument, match="object arrays are taken as string tensors only"):
            session.run({"x": np.ones((1, 4)).astype(object)})
        with pytest.raises(xrt.InvalidArgument, match=r"expected float32\[1, 4\], given string\[1, 4\]"):
            session.run({"x": np.full((1, 4), "1.0")})
