"""`PASSED xrtc compile` means the bundle runs and was checked (issue 11, items 1, 2, 3 and 7).

Each test builds its model (or input) with onnx.helper and runs the real tools: xrtc (ONNX Runtime, OpenVINO through
the C++ runtime), xrt-run. Outputs are compared with ONNX Runtime on the source model.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import xpuruntime as xrt
import xrtpkg
from xrt_testutil import run_tool

ANSI = re.compile(r"\x1b\[")


def save(path, nodes, inputs, outputs, inits=()):
    model = h.make_model(h.make_graph(nodes, "g", inputs, outputs, list(inits)),
                         opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def compile_(*args):
    return run_tool("xrtc", "compile", *map(str, args))


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


def ort(path, feeds) -> dict:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


# ---- item 1: an output declared with a shape the model does not produce --------------------------------------------

@pytest.mark.parametrize("width", [6, "w"])
def test_output_shape_as_produced_not_as_declared(tmp_path, width):
    """Declares [1, seqlen], returns [4, 1, width] (an OCR model did this): the bundle declares what the model
    produces, keeps the declaration on record, says the model is at fault, and every variant runs."""
    model = save(tmp_path / "m.onnx", [h.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2])],
                 [h.make_tensor_value_info("x", T.FLOAT, [1, 4, width])],
                 [h.make_tensor_value_info("y", T.FLOAT, [1, "seqlen"])])
    out = tmp_path / "m.xrtpkg"
    proc = compile_(model, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "declares [1, 'seqlen'] but produces" in proc.stderr and "fix the model's declaration" in proc.stderr
    manifest = xrtpkg.read(out).manifest
    (spec,) = manifest["model"]["outputs"]
    assert spec["shape"] == [4, 1, width] and spec["declared_shape"] == [1, "seqlen"], spec
    assert all(v["accuracy"]["passed"] for v in manifest["variants"])
    assert "which it does not produce" in run_tool("xrtc", "inspect", out).stdout
    x = np.random.default_rng(1).standard_normal((1, 4, 5 if width == "w" else 6)).astype(np.float32)
    for variant in manifest["variants"]:
        got = xrt.load(out, variant=variant["id"]).run({"x": x})["y"]
        np.testing.assert_array_equal(got, ort(model, {"x": x})["y"])
        print(variant["id"], "max abs err 0 (a transpose)")


# ---- item 2: sample shapes from the graph; no gate, no PASSED -------------------------------------------------------

def bert16(path):
    """input_ids [batch, seq] with the sequence length fixed at 16 inside the graph (as legacy torch.onnx.export
    leaves it): a position table [1, 16, 8] and Reshape constants [1, 16, 2, 4]."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal((100, 8)).astype(np.float32), "emb"),
             nh.from_array(rng.standard_normal((1, 16, 8)).astype(np.float32), "pos"),
             nh.from_array(np.array([1, 16, 2, 4], np.int64), "split"),
             nh.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
             nh.from_array(np.array([1, 16, 8], np.int64), "merge")]
    nodes = [h.make_node("Gather", ["emb", "input_ids"], ["e"]), h.make_node("Add", ["e", "pos"], ["a"]),
             h.make_node("Reshape", ["a", "split"], ["r"]), h.make_node("MatMul", ["r", "w"], ["m"]),
             h.make_node("Reshape", ["m", "merge"], ["out"])]
    return save(path, nodes, [h.make_tensor_value_info("input_ids", T.INT64, ["batch", "seq"])],
                [h.make_tensor_value_info("out", T.FLOAT, ["batch", "seq", 8])], inits)


def test_sequence_length_found_in_the_graph(tmp_path):
    model = bert16(tmp_path / "bert.onnx")
    out = tmp_path / "bert.xrtpkg"
    proc = compile_(model, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert not ANSI.search(proc.stderr) and "[E:onnxruntime" not in proc.stderr, proc.stderr
    assert "no precompiled blob" not in proc.stderr, proc.stderr  # the blob check found the shape too
    manifest = xrtpkg.read(out).manifest
    assert "input_ids=1x16" in manifest["golden"]["samples"], manifest["golden"]
    for variant in manifest["variants"]:
        assert variant["accuracy"]["passed"], variant
        print(variant["id"], "max abs err", variant["accuracy"]["max_abs_err"])
    assert run_tool("xrtc", "verify", out).returncode == 0


def test_gate_that_cannot_run_fails_unless_unverified_is_asked(tmp_path):
    """Only n = 111 fits Reshape [3, 37], and nothing in the graph says 111: exit 3 naming the flag to pass;
    --allow-unverified builds it, marked everywhere; --shape makes it checked."""
    model = save(tmp_path / "m.onnx", [h.make_node("Reshape", ["x", "s"], ["y"])],
                 [h.make_tensor_value_info("x", T.FLOAT, [1, "n"])], [h.make_tensor_value_info("y", T.FLOAT, [3, 37])],
                 [nh.from_array(np.array([3, 37], np.int64), "s")])
    out = tmp_path / "m.xrtpkg"
    proc = compile_(model, "-o", out, "-q")
    assert proc.returncode == 3 and not out.exists(), proc.stderr
    assert "--shape x=1xN" in proc.stderr and "--allow-unverified" in proc.stderr, proc.stderr
    assert "Reshape node: The input tensor cannot be reshaped" in proc.stderr, proc.stderr
    assert not ANSI.search(proc.stderr) and "onnxruntime_src" not in proc.stderr and "Statu)" not in proc.stderr
    assert last_line(proc) == "FAILED xrtc compile"

    proc = compile_(model, "-o", out, "-q", "--allow-unverified")
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc).startswith("PASSED xrtc compile: built ") and "UNVERIFIED" in last_line(proc)
    manifest = xrtpkg.read(out).manifest
    assert manifest["unverified"]["requested"] == "--allow-unverified" and "golden" not in manifest
    assert not any("accuracy" in v for v in manifest["variants"])
    assert "could not run" in xrt.load(out).explain()["unverified"]
    assert "UNVERIFIED bundle" in run_tool("xrtc", "run", out, "--shape", "x=1x111").stdout
    proc = run_tool("xrt-run", out, "--shape", "x=1x111", "--variant", "cpu-openvino")
    assert proc.returncode == 0 and "UNVERIFIED bundle" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    text = run_tool("xrtc", "inspect", out).stdout
    assert "verified NO: compiled with --allow-unverified" in text and "accuracy: NOT VERIFIED" in text, text
    proc = run_tool("xrtc", "verify", out)
    assert proc.returncode == 2 and "is UNVERIFIED" in proc.stderr and "--model" in proc.stderr, proc.stderr

    checked = tmp_path / "checked.xrtpkg"
    proc = compile_(model, "-o", checked, "--shape", "x=1x111")
    assert proc.returncode == 0, proc.stderr
    assert "unverified" not in xrtpkg.read(checked).manifest and "golden" in xrtpkg.read(checked).manifest


# ---- item 3: precision asked, precision delivered -------------------------------------------------------------------

@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    """Conv + Relu on a batch-1 input [1, 3, 8, 8]."""
    folder = tmp_path_factory.mktemp("conv")
    w = nh.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    return save(folder / "conv.onnx", [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                                       h.make_node("Relu", ["c"], ["y"])],
                [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 8, 8])], [w])


@pytest.mark.parametrize("layout", ["batch-axis", "new-axis", "list"])
def test_calibration_layouts_give_the_same_samples(tmp_path, layout):
    from xrtc.gate import load_calibration

    x = np.random.default_rng(2).standard_normal((8, 1, 3, 8, 8)).astype(np.float32)
    data = {"batch-axis": {"x": x[:, 0]}, "new-axis": {"x": x}, "list": {f"x/{i}": x[i] for i in range(8)}}[layout]
    np.savez(tmp_path / "cal.npz", **data)
    samples = load_calibration(str(tmp_path / "cal.npz"), [{"name": "x", "dtype": "float32", "shape": [1, 3, 8, 8]}])
    assert len(samples) == 8 and all(np.array_equal(s["x"], x[i]) for i, s in enumerate(samples))


def test_calibration_along_the_batch_axis_builds_int8(conv, tmp_path):
    """[8, 3, 8, 8] for a batch-1 model (what the help text used to invite): 8 samples, int8 delivered."""
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(2).standard_normal((8, 3, 8, 8)).astype(np.float32))
    out = tmp_path / "m.xrtpkg"
    proc = compile_(conv, "-o", out, "--precision", "int8", "--calibration", tmp_path / "cal.npz")
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc) == "PASSED xrtc compile: built cpu-onnxruntime int8, cpu-openvino int8", last_line(proc)
    manifest = xrtpkg.read(out).manifest
    assert manifest["provenance"]["calibration"]["samples"] == 8
    for variant in manifest["variants"]:
        assert variant["precision"] == "int8" and variant["accuracy"]["passed"], variant
        print(variant["id"], "int8 max abs err", variant["accuracy"]["max_abs_err"])


def test_calibration_of_another_shape_is_refused_with_the_shape_expected(conv, tmp_path):
    np.savez(tmp_path / "cal.npz", x=np.zeros((8, 3, 8), np.float32))
    proc = compile_(conv, "-o", tmp_path / "m.xrtpkg", "--precision", "int8", "--calibration", tmp_path / "cal.npz")
    assert proc.returncode == 2, proc.stderr
    assert "takes float32[1, 3, 8, 8] per sample, the data is [8, 3, 8]" in proc.stderr
    assert "[N, 1, 3, 8, 8]" in proc.stderr and "[N, 3, 8, 8]" in proc.stderr and "x/0" in proc.stderr


def test_precision_not_delivered_is_on_the_last_line_and_fixed_fails(conv, tmp_path):
    proc = compile_(conv, "-o", tmp_path / "a.xrtpkg", "--precision", "int8", "-q")
    assert proc.returncode == 0, proc.stderr
    line = last_line(proc)
    assert line.startswith("PASSED xrtc compile: built cpu-onnxruntime fp32, cpu-openvino fp32 (asked int8, not "
                           "delivered: int8 needs calibration data"), line
    policy = tmp_path / "p.toml"
    policy.write_text('[execution]\nprecision = { choice = "int8", mode = "fixed" }\n')
    proc = compile_(conv, "-o", tmp_path / "b.xrtpkg", "--policy", policy)
    assert proc.returncode == 6 and "--calibration" in proc.stderr and not (tmp_path / "b.xrtpkg").exists()


# ---- item 7: noise ---------------------------------------------------------------------------------------------------

def test_output_defaults_next_to_the_model_and_is_never_overwritten(conv, tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(conv.read_bytes())
    proc = compile_(model, "-q")
    bundle = tmp_path / "net.xrtpkg"
    assert proc.returncode == 0 and bundle.exists(), proc.stderr
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    proc = compile_(model, "-q")
    assert proc.returncode == 11 and "--force" in proc.stderr
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == digest


def test_one_sample_messages_and_fp16_speed_note(conv, tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((1, 3, 8, 8), np.float32))
    out = tmp_path / "m.xrtpkg"
    proc = compile_(conv, "-o", out, "--calibration", tmp_path / "one.npz", "--precision", "fp16")
    assert proc.returncode == 0, proc.stderr
    assert "1 samples" not in proc.stdout + proc.stderr and "(source model, 1 sample)" in proc.stdout, proc.stdout
    decisions = json.loads(xrtpkg.read(out).data("decisions.json"))
    assert "expect no speed-up" in json.dumps(decisions), decisions
    for variant in xrtpkg.read(out).manifest["variants"]:
        assert len(variant["why"]) < 120, variant["why"]


def test_verify_mismatch_note_has_plain_numbers():
    from xrtc.tools.verify import compare

    c = compare("v", "y", np.array([0.418], np.float32), np.array([1.0], np.float32), 1e-3, 1e-4)
    assert not c.passed and c.note == "worst: got 0.418, reference 1", c.note


def test_loading_an_onnx_model_says_compile_it_first(conv):
    with pytest.raises(xrt.DataCorrupt, match=r"bad magic .*xrtc compile"):
        xrt.load(conv)


def test_seed_gives_the_same_inputs_in_xrtc_run_and_xrt_run(tmp_path):
    """Outputs echo the inputs (x * 1, i + 0, not b), so equal outputs mean equal random inputs."""
    model = save(tmp_path / "echo.onnx",
                 [h.make_node("Mul", ["x", "one"], ["xo"]), h.make_node("Mul", ["d", "done"], ["do"]),
                  h.make_node("Add", ["i", "zero"], ["io"]), h.make_node("Not", ["b"], ["bo"])],
                 [h.make_tensor_value_info("x", T.FLOAT, [2, 5]), h.make_tensor_value_info("d", T.DOUBLE, [3]),
                  h.make_tensor_value_info("i", T.INT64, [4]), h.make_tensor_value_info("b", T.BOOL, [6])],
                 [h.make_tensor_value_info(n, t, s) for n, t, s in
                  (("xo", T.FLOAT, [2, 5]), ("do", T.DOUBLE, [3]), ("io", T.INT64, [4]), ("bo", T.BOOL, [6]))],
                 [nh.from_array(np.ones(1, np.float32), "one"), nh.from_array(np.ones(1, np.float64), "done"),
                  nh.from_array(np.zeros(1, np.int64), "zero")])
    out = tmp_path / "echo.xrtpkg"
    assert compile_(model, "-o", out, "-q").returncode == 0
    if "openvino" not in [v["engine"] for v in xrtpkg.read(out).manifest["variants"]]:
        pytest.skip("OpenVINO built no variant: xrt-run has nothing to run")
    variant = "cpu-openvino"
    for seed in ("0", "12345"):
        py, cc = tmp_path / f"py{seed}.npz", tmp_path / f"cc{seed}.npz"
        run_tool("xrtc", "run", out, "--variant", variant, "--seed", seed, "--save-outputs", py, check=True)
        run_tool("xrt-run", out, "--variant", variant, "--seed", seed, "--save-outputs", cc, check=True)
        with np.load(py) as a, np.load(cc) as b:
            assert sorted(a.files) == sorted(b.files) == ["bo", "do", "io", "xo"]
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name], err_msg=f"seed {seed}, output {name}")
            x = a["xo"]
            print(f"seed {seed}: x mean {x.mean():.3f} std {x.std():.3f}, ints {a['io'].tolist()}")


# ---- item 2, values: generated integer samples stay inside the tables the graph indexes -----------------------------

TINY_BERT = __import__("pathlib").Path(__file__).parents[1] / "cuda" / "data" / "tiny_bert_eager_dynamo.onnx"


def test_index_inputs_are_drawn_inside_their_embedding_table(tmp_path):
    """A BERT export (torch.onnx.export) compiles with no --calibration: token_type_ids index a 2-row table, so the
    gate draws them from [0, 2) (it drew [0, 100) and the gate could not run: 'indices element out of data bounds')."""
    from xrtc.gate import index_limits

    assert index_limits(onnx.load(str(TINY_BERT))) == {"token_type_ids": 2}
    shapes = [f"--shape={n}=2x16" for n in ("input_ids", "attention_mask", "token_type_ids")]
    proc = compile_(TINY_BERT, "--target", "cpu", *shapes, "-o", tmp_path / "b.xrtpkg")
    assert proc.returncode == 0, proc.stderr
    assert last_line(proc).startswith("PASSED xrtc compile: built cpu-"), last_line(proc)
    accuracy = [v["accuracy"] for v in xrtpkg.read(str(tmp_path / "b.xrtpkg")).manifest["variants"]]
    assert accuracy and all(a["passed"] and a["samples"] == 2 for a in accuracy), accuracy
