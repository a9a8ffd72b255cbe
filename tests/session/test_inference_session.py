"""xrt.InferenceSession on real models: the compile in memory with the bundle cached by content (a hit compiles
nothing; a corrupt entry is rebuilt), .xrtpkg loading, run(feeds) and run(output_names, feeds), explain(), every
conflict under fixed (a clear error) and prefer (a recorded fallback), the progress display, the lazy compiler
import, and the examples users were promised, as written (CUDA ones fall back to the CPU where there is no GPU,
the NPU one to the CPU through its variant's fallback). Outputs are compared with ONNX Runtime on the source model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import xpuruntime as xrt
from xpuruntime import _inference
from xpuruntime.policy import DEFAULT_TOLERANCES, Knob, PolicyError
from xrt_testutil import SAMPLE

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "cuda"))
import models  # noqa: E402  (tests/cuda/models.py: small onnx.helper models)

CUDA_COUNT, NO_CUDA_WHY = _inference.cuda_device_count()


@pytest.fixture(autouse=True, scope="module")
def shared_bundle_cache(tmp_path_factory):
    """One bundle cache for this module's tests (never the user's): the same small model, written by several tests
    in their own folders, compiles once (the key is the content, not the path). Tests of the cache itself pass
    their own cache_dir."""
    previous = os.environ.get("XRT_BUNDLE_CACHE")
    os.environ["XRT_BUNDLE_CACHE"] = str(tmp_path_factory.mktemp("bundle-cache"))
    yield os.environ["XRT_BUNDLE_CACHE"]
    if previous is None:
        os.environ.pop("XRT_BUNDLE_CACHE", None)
    else:
        os.environ["XRT_BUNDLE_CACHE"] = previous


def mlp_file(folder, name="mlp.onnx", input_name="x", output_name="y") -> str:
    model = models.mlp(batch=4)
    if input_name != "x" or output_name != "y":
        for node in model.graph.node:
            node.input[:] = [input_name if i == "x" else i for i in node.input]
            node.output[:] = [output_name if o == "y" else o for o in node.output]
        model.graph.input[0].name, model.graph.output[0].name = input_name, output_name
    path = os.path.join(folder, name)
    onnx.save(model, path)
    return path


def check_against_ort(model_path: str, got: dict, feeds: dict, precision: str, label: str) -> None:
    ref = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(None, feeds)
    names = [o.name for o in onnx.load(model_path).graph.output]
    tol = DEFAULT_TOLERANCES[precision]
    for name, expected in zip(names, ref):
        err = float(np.max(np.abs(got[name] - expected)))
        print(f"{label}: output {name} max abs err vs ONNX Runtime {err:.3g} ({precision})")
        assert err <= tol["atol"] * max(1.0, float(np.max(np.abs(expected)))) + tol["rtol"] * float(
            np.max(np.abs(expected))), err


X = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)


def test_second_start_loads_the_cached_bundle_without_compiling(tmp_path, monkeypatch):
    monkeypatch.setenv("XRT_BUNDLE_CACHE", str(tmp_path / "cache"))
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    before = _inference.compiles
    first = xrt.InferenceSession(str(SAMPLE))
    info = first.explain()["compile"]
    assert info["cache"] == "miss" and _inference.compiles == before + 1
    bundle = info["bundle"]
    assert os.path.dirname(bundle) == str(tmp_path / "cache")
    written = os.stat(bundle)
    print(f"first start: compiled in {info['seconds']:.2f}s into {os.path.basename(bundle)}")

    second = xrt.InferenceSession(str(SAMPLE))
    assert second.explain()["compile"]["cache"] == "hit"
    assert _inference.compiles == before + 1, "the second start compiled again"
    hit = os.stat(bundle)  # the same file (not rewritten); only its mtime moves: it marks the entry recently used
    assert (hit.st_ino, hit.st_size) == (written.st_ino, written.st_size) and hit.st_mtime_ns >= written.st_mtime_ns
    feeds = {second.inputs[0].name: x}
    check_against_ort(str(SAMPLE), second.run(feeds), feeds, "fp32", "sample_cnn (cache hit)")
    np.testing.assert_array_equal(first.run(feeds)[second.outputs[0].name], second.run(feeds)[second.outputs[0].name])


def test_corrupt_cache_entry_is_compiled_again(tmp_path):
    model = mlp_file(tmp_path)
    cache = str(tmp_path / "cache")
    bundle = xrt.InferenceSession(model, cache_dir=cache).explain()["compile"]["bundle"]
    original = open(bundle, "rb").read()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    open(bundle, "wb").write(bytes(data))
    before = _inference.compiles
    sess = xrt.InferenceSession(model, cache_dir=cache)
    info = sess.explain()["compile"]
    assert info["cache"] == "rebuilt" and "did not open" in info["rebuilt"], info
    assert _inference.compiles == before + 1
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", "mlp (rebuilt entry)")
    # Same inputs, same bytes: the rebuilt entry, and what `xrtc compile` writes for the same model.
    assert open(bundle, "rb").read() == original
    from xrtc.build import compile_model

    compile_model(model, "cpu", str(tmp_path / "cli.xrtpkg"))
    assert (tmp_path / "cli.xrtpkg").read_bytes() == original
    assert xrt.InferenceSession(model, cache_dir=cache).explain()["compile"]["cache"] == "hit"


def test_run_forms_and_xrtpkg(tmp_path):
    model = mlp_file(tmp_path)
    sess = xrt.InferenceSession(model, cache_dir=str(tmp_path / "own-cache"))
    assert sess.explain()["compile"]["bundle"].startswith(str(tmp_path / "own-cache"))
    as_dict = sess.run({"x": X})
    as_list = sess.run(None, {"x": X})
    assert isinstance(as_list, list) and len(as_list) == 1
    np.testing.assert_array_equal(as_list[0], as_dict["y"])
    np.testing.assert_array_equal(sess.run(["y"], {"x": X})[0], as_dict["y"])
    np.testing.assert_array_equal(sess.run({"x": X}, output_names=["y"])["y"], as_dict["y"])
    with pytest.raises(xrt.InvalidArgument, match="unknown output name"):
        sess.run(["nope"], {"x": X})
    with pytest.raises(xrt.InvalidArgument, match="output_names must be a list"):
        sess.run("y", {"x": X})
    assert [i.name for i in sess.get_inputs()] == ["x"] and [o.name for o in sess.get_outputs()] == ["y"]
    check_against_ort(model, as_dict, {"x": X}, "fp32", "mlp")

    # A bundle loads as is; its explain() has no compile.
    bundle = xrt.InferenceSession(sess.bundle_path)
    assert bundle.explain()["compile"] is None
    np.testing.assert_array_equal(bundle.run({"x": X})["y"], as_dict["y"])
    # A fixed policy other than the bundle's cannot hold on a compiled bundle.
    with pytest.raises(xrt.Incompatible, match="give the .onnx model"):
        xrt.InferenceSession(sess.bundle_path, exec_policy=xrt.ExecutionPolicy(precision=Knob("fp16", "fixed")))
    loose = xrt.InferenceSession(sess.bundle_path, fp16=True)
    assert [f["what"] for f in loose.explain()["fallbacks"]] == ["policy"]


def test_engine_that_cannot_exist_fails_when_fixed_falls_back_when_preferred(tmp_path):
    model = mlp_file(tmp_path)
    with pytest.raises(xrt.Unavailable, match="engine 'tensorrt' is fixed, but no TensorRT target"):
        xrt.InferenceSession(model, engine=Knob("tensorrt", "fixed"))
    sess = xrt.InferenceSession(model, engine="tensorrt")
    (fallback,) = sess.explain()["fallbacks"]
    assert fallback["what"] == "engine" and fallback["asked"] == "tensorrt" and "TensorRT" in fallback["reason"]
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", "mlp (engine tensorrt -> fallback)")
    pinned = xrt.InferenceSession(model, backend="onnxruntime")  # an engine every machine has (OpenVINO may be absent)
    assert pinned.engine == "onnxruntime" and pinned.explain()["fallbacks"] == []
    with pytest.raises(xrt.InvalidArgument, match="backend is an alias"):
        xrt.InferenceSession(model, engine="openvino", backend="onnxruntime")


def test_fp16_against_a_fixed_fp32_policy(tmp_path):
    model = mlp_file(tmp_path)
    fixed = xrt.ExecutionPolicy(precision=Knob("fp32", "fixed"))
    before = _inference.compiles
    with pytest.raises(PolicyError, match="fp16=True contradicts the policy's fixed precision fp32"):
        xrt.InferenceSession(model, exec_policy=fixed, fp16=True)
    assert _inference.compiles == before  # refused before any compile
    sess = xrt.InferenceSession(model, exec_policy=xrt.ExecutionPolicy(precision="fp32"), fp16=True)
    (fallback,) = sess.explain()["fallbacks"]
    assert (fallback["what"], fallback["asked"], fallback["used"]) == ("precision", "fp32", "fp16")
    explain = sess.explain()
    assert explain["policy"]["execution"]["precision"] == {"choice": "fp16", "mode": "prefer"}
    assert explain["decisions"]["variant"]["precision"] == "fp16"
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp16", "mlp fp16")


@pytest.mark.skipif(CUDA_COUNT > 1, reason="this machine has a second CUDA device: cuda:1 exists")
def test_absent_cuda_device_fails_when_fixed_falls_back_when_preferred(tmp_path):
    model = mlp_file(tmp_path)
    with pytest.raises(xrt.Unavailable, match="device 'cuda:1' is fixed, but no CUDA device 1"):
        xrt.InferenceSession(model, device=Knob("cuda:1", "fixed"))
    with pytest.raises(xrt.Unavailable, match="no CUDA device 1"):
        xrt.InferenceSession(model, device="cuda:1", fallback=[])
    sess = xrt.InferenceSession(model, device="cuda:1")
    (fallback,) = sess.explain()["fallbacks"]
    assert fallback["what"] == "device" and fallback["asked"] == "cuda:1"
    assert fallback["used"] == ("cuda:0" if CUDA_COUNT else "cpu"), fallback
    print(f"cuda:1 -> {fallback['used']}: {fallback['reason']}")
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32" if not CUDA_COUNT else "fp16", "mlp cuda:1")


def test_no_cache_keeps_nothing_and_sess_options_threads(tmp_path):
    model = mlp_file(tmp_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    before = _inference.compiles
    sess = xrt.InferenceSession(model, cache_dir=False, sess_options=options)
    assert sess.explain()["compile"]["cache"] == "off" and sess.bundle_path is None
    assert not os.path.exists(os.path.dirname(sess.explain()["compile"]["bundle"]))
    assert _inference.compiles == before + 1
    assert sess.explain()["policy"]["execution"]["threads"] == {"choice": 2, "mode": "prefer"}
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", "mlp (no cache, 2 threads)")


def test_fixed_npu_without_an_npu_is_unavailable(tmp_path):
    model = mlp_file(tmp_path)
    sess = xrt.InferenceSession(model, device="npu")
    if sess.explain()["device"] == "npu":
        pytest.skip("this machine has an NPU")
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", f"npu preferred, ran on {sess.explain()['device']}")
    with pytest.raises(xrt.Unavailable, match="npu"):
        xrt.InferenceSession(model, device=Knob("npu", "fixed"))


def test_npu_without_openvino_falls_back_when_preferred_fails_when_fixed(tmp_path, monkeypatch):
    """The NPU is reached through OpenVINO: where it is not installed, a preferred npu falls back to the CPU and says
    why, a fixed one is Unavailable naming the extra to install. (OpenVINO's absence is simulated by hiding it from
    the session's lookup only: the CPU compile and the engines are the real ones.)"""
    import importlib.util as iu

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    model = mlp_file(tmp_path)
    with pytest.raises(xrt.Unavailable, match=r"device 'npu' is fixed, but OpenVINO is not installed"):
        xrt.InferenceSession(model, device=Knob("npu", "fixed"))
    sess = xrt.InferenceSession(model, device="npu")
    fallback = sess.explain()["fallbacks"][0]
    assert (fallback["what"], fallback["asked"], fallback["used"]) == ("device", "npu", "cpu"), fallback
    assert "xpuruntime[openvino]" in fallback["reason"], fallback
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", "npu without OpenVINO -> cpu")


def test_bad_arguments_are_named(tmp_path):
    model = mlp_file(tmp_path)
    with pytest.raises(xrt.NotFound, match="does not exist"):
        xrt.InferenceSession(str(tmp_path / "missing.onnx"))
    with pytest.raises(xrt.InvalidArgument, match="use 'cpu', 'npu', 'cuda' or 'cuda:N'"):
        xrt.InferenceSession(model, device="tpu")
    with pytest.raises(xrt.InvalidArgument, match="provider 'FooExecutionProvider'"):
        xrt.InferenceSession(model, providers=["FooExecutionProvider"])
    with pytest.raises(xrt.InvalidArgument, match="compiling mlp.onnx for target cpu failed"):
        xrt.InferenceSession(model, policy=xrt.Policy(shapes={"nope": [1, 2]}))


def test_onnx_runtime_providers(tmp_path):
    model = mlp_file(tmp_path)
    sess = xrt.InferenceSession(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    expect = "cuda:0" if CUDA_COUNT else "cpu"
    assert sess.explain()["device"].startswith(expect.split(":")[0]), sess.explain()["device"]
    if not CUDA_COUNT:
        assert sess.explain()["fallbacks"][0]["what"] == "device"
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp16" if CUDA_COUNT else "fp32", "mlp via providers")


def test_progress_on_a_terminal_silent_elsewhere(tmp_path, capfd):
    model = mlp_file(tmp_path)
    cache = str(tmp_path / "cache")
    fp32 = xrt.InferenceSession(model, cache_dir=cache)  # stderr is not a terminal under pytest
    assert fp32.explain()["compile"]["cache"] == "miss"
    err = capfd.readouterr().err
    assert "compiling" not in err and "done in" not in err, err
    fp16 = xrt.InferenceSession(model, fp16=True, progress=True, cache_dir=cache)
    err = capfd.readouterr().err
    assert "xpuruntime: compiling mlp.onnx for cpu" in err and "run-passes: done in" in err, err
    # Another policy is another cache entry.
    assert fp16.explain()["compile"]["cache"] == "miss" and fp16.bundle_path != fp32.bundle_path


def test_compiler_is_imported_only_for_onnx_models(tmp_path):
    model = mlp_file(tmp_path)
    bundle = xrt.InferenceSession(model).bundle_path
    code = ("import sys, numpy as np, xpuruntime as xrt\n"
            f"s = xrt.InferenceSession({bundle!r})\n"
            "s.run({'x': np.zeros((4, 32), np.float32)})\n"
            "print(sorted(m for m in ('xrtc', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


# The examples users were promised, as written (model.onnx in the working folder, input "input").

def test_promised_example_cuda_tensorrt(tmp_path, monkeypatch):
    mlp_file(tmp_path, "model.onnx", "input", "output")
    monkeypatch.chdir(tmp_path)
    x = X
    if CUDA_COUNT:
        pytest.importorskip("triton", reason="compiling for cuda needs the [cuda-compile] extra (triton)")

    policy = xrt.KernelPolicy(matmul="cublasLt", attention="flash_v2")
    sess = xrt.InferenceSession(model="model.onnx", device="cuda:0", engine="tensorrt",
                                kernel_policy=policy, fp16=True)          # compiles in memory, same pipeline as xrtc
    out = sess.run({"input": x})

    explain = sess.explain()
    fell_back = {f["what"]: f for f in explain["fallbacks"]}
    assert "tensorrt" in fell_back["engine"]["reason"].lower()
    if CUDA_COUNT:
        assert explain["engine"] == "cuda" and "device" not in fell_back
    else:
        assert fell_back["device"]["used"] == "cpu" and NO_CUDA_WHY in fell_back["device"]["reason"]
        warnings = " ".join(explain["decisions"]["warnings"])
        assert "cublasLt" in warnings, warnings  # the kernel choice, recorded as not held on the CPU's engines
        print(f"no GPU here: {fell_back['device']['reason']}; engine: {fell_back['engine']['reason']}")
    check_against_ort("model.onnx", out, {"input": x}, "fp16", "promised example (cuda:0, tensorrt, fp16)")


def test_promised_example_npu_int8(tmp_path, monkeypatch):
    pytest.importorskip("openvino", reason="the NPU example names backend='openvino'; OpenVINO is not installed here "
                        "(the device's own fallback is tested in test_fixed_npu_without_an_npu_is_unavailable)")
    mlp_file(tmp_path, "model.onnx", "input", "output")
    monkeypatch.chdir(tmp_path)

    sess = xrt.InferenceSession("model.onnx", device="npu", backend="openvino",
                                exec_policy=xrt.ExecutionPolicy(precision="int8", static_shape=True))

    explain = sess.explain()
    assert explain["engine"] == "openvino" and explain["compile"]["target"] == "npu-intel"
    print(f"npu example: ran on {explain['device']}; fallback: {explain.get('fallback')}")
    if explain["device"] != "npu":
        assert explain.get("fallback"), explain  # the NPU variant's stated fallback (cpu), recorded by the runtime
    warnings = " ".join(explain["decisions"]["warnings"])
    assert "int8 needs calibration data" in warnings, warnings  # prefer int8 without --calibration: recorded
    out = sess.run({"input": X})
    check_against_ort("model.onnx", out, {"input": X}, explain["decisions"]["variant"]["precision"],
                      "promised example (npu, int8 preferred)")


def test_planted_cache_entry_is_not_used(tmp_path):
    """An entry replaced by another model's bundle (or one compiled with another policy) opens fine (its digests
    are its own) but is not the compile asked for: its manifest's source sha256 and policy say so; compiled again."""
    model = mlp_file(tmp_path)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = os.path.join(other_dir, "mlp.onnx")
    onnx.save(models.mlp(batch=4, seed=7), other)  # same shapes, other weights
    cache, elsewhere = str(tmp_path / "cache"), str(tmp_path / "elsewhere")
    bundle = xrt.InferenceSession(model, cache_dir=cache).explain()["compile"]["bundle"]
    assert os.stat(cache).st_mode & 0o777 == 0o700
    original = open(bundle, "rb").read()
    planted = [xrt.InferenceSession(other, cache_dir=elsewhere).explain()["compile"]["bundle"],
               xrt.InferenceSession(model, cache_dir=elsewhere,
                                    exec_policy=xrt.ExecutionPolicy(threads=1)).explain()["compile"]["bundle"]]
    for source, why in zip(planted, ("compiled from another model", "compiled with policy")):
        open(bundle, "wb").write(open(source, "rb").read())
        before = _inference.compiles
        sess = xrt.InferenceSession(model, cache_dir=cache)
        info = sess.explain()["compile"]
        assert info["cache"] == "rebuilt" and why in info["rebuilt"], info
        assert _inference.compiles == before + 1
        check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", f"mlp (planted entry: {why})")
        assert open(bundle, "rb").read() == original


def test_cache_entry_of_another_user_is_refused(tmp_path, monkeypatch):
    model = mlp_file(tmp_path)
    cache = str(tmp_path / "cache")
    bundle = xrt.InferenceSession(model, cache_dir=cache).explain()["compile"]["bundle"]
    monkeypatch.setattr(_inference, "_owned", lambda path: False)
    before = _inference.compiles
    sess = xrt.InferenceSession(model, cache_dir=cache)
    info = sess.explain()["compile"]
    assert info["cache"] == "refused" and "not owned by this user" in info["refused"], info
    assert _inference.compiles == before + 1 and sess.bundle_path is None
    assert not os.path.exists(os.path.dirname(info["bundle"])) and os.path.isfile(bundle)
    check_against_ort(model, sess.run({"x": X}), {"x": X}, "fp32", "mlp (entry of another user refused)")


def test_cache_key_holds_the_compiler_and_the_engines(tmp_path, monkeypatch):
    """The key changes with the installed compiler's sources, ONNX Runtime's version (either build) and, for any
    target that includes cuda, triton's."""
    import importlib.metadata
    import types

    from xpuruntime import _ort_backend

    model = mlp_file(tmp_path)

    def key(target="cpu"):
        return _inference.InferenceSession._cache_key(types.SimpleNamespace(), model, xrt.Policy(), target, None)

    base, base_cuda = key(), key("cuda,cpu")
    assert len(_inference._compiler_digest()) == 64 and key() == base
    monkeypatch.setattr(_inference, "_compiler_digest", lambda: "another compiler")
    assert key() != base
    monkeypatch.undo()
    monkeypatch.setattr(_ort_backend, "_version", lambda: "0.0.1-gpu")
    assert key() != base
    monkeypatch.undo()
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.0.1" if d == "triton" else real(d))
    assert key() == base and key("cuda,cpu") != base_cuda


def test_compile_error_without_cache_leaves_no_folder(tmp_path, monkeypatch):
    import tempfile

    model = mlp_file(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(xrt.InvalidArgument, match="compiling mlp.onnx for target cpu failed"):
        xrt.InferenceSession(model, cache_dir=False, policy=xrt.Policy(shapes={"nope": [1, 2]}))
    assert os.listdir(tmp_path / "tmp") == []


def test_providers_and_device(tmp_path):
    """A fixed device that providers= contradicts is InvalidArgument; a preferred one is overridden, recorded."""
    model = mlp_file(tmp_path)
    with pytest.raises(xrt.InvalidArgument, match="device 'cpu' is fixed, but providers= names device 'cuda'"):
        xrt.InferenceSession(model, device=Knob("cpu", "fixed"), providers=["CUDAExecutionProvider"])
    sess = xrt.InferenceSession(model, device=Knob("cpu", "fixed"), providers=["CPUExecutionProvider"])
    assert sess.explain()["fallbacks"] == [] and sess.explain()["requested"]["device"]["mode"] == "fixed"
    sess = xrt.InferenceSession(model, device="cuda", providers=["CPUExecutionProvider"])
    (override,) = sess.explain()["fallbacks"]
    assert (override["what"], override["asked"], override["used"]) == ("device", "cuda", "cpu"), override
    assert "providers=" in override["reason"] and sess.explain()["device"] == "cpu"


def test_cache_keeps_under_its_cap_removing_the_least_recently_used(tmp_path, monkeypatch):
    """Three models into a cache capped at two entries' size: the least recently used entry goes (a hit refreshes
    an entry), the one just compiled never does, and files of the folder that are not entries stay untouched."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.xrtpkg").write_bytes(b"a user's own file")  # not named as an entry: never counted or removed
    (cache / "notes.txt").write_text("kept")
    paths = []
    for i, name in enumerate(("a", "b", "c")):
        model = models.mlp(batch=4, seed=i)  # a different model per name (its weights differ)
        paths.append(str(tmp_path / f"{name}.onnx"))
        onnx.save(model, paths[-1])
    monkeypatch.setenv("XRT_BUNDLE_CACHE_MAX_BYTES", "0")  # no cap while the entries are made
    a = xrt.InferenceSession(paths[0], cache_dir=cache).explain()["compile"]["bundle"]
    b = xrt.InferenceSession(paths[1], cache_dir=cache).explain()["compile"]["bundle"]
    os.utime(a, ns=(1, 1_000_000_000))  # a used long ago ...
    os.utime(b, ns=(1, 2_000_000_000))
    assert xrt.InferenceSession(paths[0], cache_dir=cache).explain()["compile"]["cache"] == "hit"  # ... until now
    size = os.path.getsize(a)
    monkeypatch.setenv("XRT_BUNDLE_CACHE_MAX_BYTES", str(2 * size + size // 2))
    sess = xrt.InferenceSession(paths[2], cache_dir=cache)
    info = sess.explain()["compile"]
    print("evicted:", info.get("evicted"))
    assert info["cache"] == "miss" and info["evicted"] == [os.path.basename(b)]
    assert os.path.isfile(a) and os.path.isfile(info["bundle"]) and not os.path.exists(b)
    assert (cache / "mine.xrtpkg").read_bytes() == b"a user's own file" and (cache / "notes.txt").read_text() == "kept"
    feeds = {"x": X}
    check_against_ort(paths[2], sess.run(feeds), feeds, "fp32", "mlp c after eviction")
    # the public call: a cap below one entry empties the cache of entries, but never what is kept
    removed = xrt.prune_bundle_cache(cache, max_bytes=1, keep=[info["bundle"]])
    assert removed == [a] and os.path.isfile(info["bundle"])


def test_bad_cache_cap_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XRT_BUNDLE_CACHE_MAX_BYTES", "lots")
    with pytest.raises(xrt.InvalidArgument, match="XRT_BUNDLE_CACHE_MAX_BYTES='lots' is not a size"):
        xrt.InferenceSession(mlp_file(tmp_path), cache_dir=tmp_path / "cache")
    monkeypatch.setenv("XRT_BUNDLE_CACHE_MAX_BYTES", "4G")
    assert _inference.bundle_cache_max_bytes() == 4 << 30
