"""xrt-run, the C++ command-line runner, end to end: real corpus models, bundled by make_bundle.py (ONNX ->
OpenVINO IR, fp32), run through libxrt and the OpenVINO plugin, compared with ONNX Runtime on the source model;
then every documented error path (exit code, message, files left untouched).

The binary is $XRT_RUN (they fail without it), else build/cmake/bin/xrt-run (they skip without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xrtpkg

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parent))

import make_bundle  # noqa: E402
from xrt_testutil import CORPUS, ROOT  # noqa: E402

# Exit codes documented in `xrt-run --help`.
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INCOMPATIBLE, EXIT_EXISTS = 0, 1, 2, 5, 11

# Small, fast corpus models covering: dynamic dims (ppocr), int32 input (magika), two inputs and outputs (silero).
MODELS = ["ppocr_mobile_v2_cls", "magika_v3_3", "silero_vad_openvino_16k"]


def _find_binary() -> tuple[Path, bool]:
    """$XRT_RUN (set by scripts/test.sh: a missing binary or plugin is then a failure), else build/cmake's."""
    env = os.environ.get("XRT_RUN")
    return (Path(env), True) if env else (ROOT / "build" / "cmake" / "bin" / "xrt-run", False)


@pytest.fixture(scope="module")
def xrt_run() -> Path:
    binary, required = _find_binary()
    missing = None
    if not binary.exists():
        missing = f"xrt-run is not built at {binary}: build with cmake (see CMakeLists.txt) or set XRT_RUN"
    else:
        plugin_dirs = [binary.parent.parent / "lib", *map(Path, os.environ.get("XRT_BACKEND_PATH", "").split(":"))]
        if not any((d / "libxrt_backend_openvino.so").exists() for d in plugin_dirs if str(d)):
            missing = f"the OpenVINO plugin was not built next to {binary} (configure with -DXRT_BUILD_OPENVINO=ON)"
    if missing:
        (pytest.fail if required else pytest.skip)(missing)
    return binary


def run(binary: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    return proc


def assert_failed(proc: subprocess.CompletedProcess, code: int, status: str, *fragments: str) -> None:
    """The run failed with the documented exit code, error line and final FAILED line."""
    info = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == code, info
    assert f"xrt-run: error: {status}: " in proc.stderr, info
    for fragment in fragments:
        assert fragment in proc.stderr, f"missing {fragment!r}\n{info}"
    assert proc.stdout.rstrip().endswith("FAILED xrt-run"), info


def assert_passed(proc: subprocess.CompletedProcess) -> None:
    info = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == EXIT_OK, info
    assert proc.stdout.rstrip().endswith("PASSED xrt-run"), info
    assert proc.stderr == "", info


def corpus_model(name: str) -> Path:
    path = CORPUS / "models" / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"corpus model missing: {path} (run tests/corpus/fetch.sh)")
    return path


def corpus_inputs_file(name: str) -> Path:
    path = CORPUS / "inputs" / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"corpus inputs missing: {path} (run tests/corpus/make_inputs.py)")
    return path


def load_corpus_inputs(name: str) -> dict[str, np.ndarray]:
    with np.load(corpus_inputs_file(name)) as data:
        return {str(n): data[f"in{i}"] for i, n in enumerate(data["__names__"])}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """bundles(name, **options) -> a cpu-openvino bundle of the corpus model, built once per module."""
    folder = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple, Path] = {}

    def get(name: str, **options: str) -> Path:
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            out = folder / f"{name}-{len(cache)}.xrtpkg"
            make_bundle.build(corpus_model(name), out, options=options)
            cache[key] = out
        return cache[key]

    return get


def onnxruntime_outputs(name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(corpus_model(name)), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def assert_close_to_onnxruntime(name: str, saved: Path, feeds: dict[str, np.ndarray]) -> None:
    reference = onnxruntime_outputs(name, feeds)
    with np.load(saved) as got:
        assert sorted(got.files) == sorted(reference), (got.files, list(reference))
        for key, want in reference.items():
            have = got[key]
            assert have.dtype == want.dtype and have.shape == want.shape, (key, have.dtype, have.shape, want.shape)
            err = float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
            print(f"{name}: output {key!r} {have.dtype}{list(have.shape)} max abs error vs onnxruntime = {err:.3g}")
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, err_msg=f"{name}:{key}")


# ---- Runs that must succeed ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_outputs_match_onnxruntime(xrt_run, bundles, tmp_path, name):
    bundle = bundles(name)
    saved = tmp_path / "out.npz"
    proc = run(xrt_run, bundle, "--inputs", corpus_inputs_file(name), "--save-outputs", saved)
    assert_passed(proc)
    assert "variant cpu-openvino: engine openvino" in proc.stdout and "on device cpu" in proc.stdout, proc.stdout
    assert "why: " in proc.stdout, proc.stdout
    feeds = load_corpus_inputs(name)
    for input_name in feeds:
        assert f"input  {input_name} " in proc.stdout, proc.stdout
    assert_close_to_onnxruntime(name, saved, feeds)


def test_cpu_precision_defaults_to_f32(xrt_run, bundles, tmp_path):
    """A variant without INFERENCE_PRECISION_HINT still runs in f32: the plugin pins it, because OpenVINO's CPU
    default is bf16 on AVX512-BF16/AMX machines. The bf16 run shows the comparison would catch the difference."""
    import openvino as ov

    name = "ppocr_mobile_v2_cls"
    feeds = load_corpus_inputs(name)
    bundle = bundles(name, INFERENCE_PRECISION_HINT=None)
    assert_passed(run(xrt_run, bundle, "--inputs", corpus_inputs_file(name), "--save-outputs", tmp_path / "f32.npz"))
    assert_close_to_onnxruntime(name, tmp_path / "f32.npz", feeds)

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return  # No native bf16 here: OpenVINO would not lower precision by default anyway.
    bundle = bundles(name, INFERENCE_PRECISION_HINT="bf16")
    assert_passed(run(xrt_run, bundle, "--inputs", corpus_inputs_file(name), "--save-outputs", tmp_path / "bf16.npz"))
    with pytest.raises(AssertionError):
        assert_close_to_onnxruntime(name, tmp_path / "bf16.npz", feeds)


def test_plain_npz_and_npy_inputs_give_the_same_outputs(xrt_run, bundles, tmp_path):
    name = "silero_vad_openvino_16k"
    bundle = bundles(name)
    feeds = load_corpus_inputs(name)
    plain = tmp_path / "plain.npz"
    np.savez(plain, **feeds)
    np.save(tmp_path / "input.npy", feeds["input"])
    np.save(tmp_path / "state.npy", feeds["state"])
    assert_passed(run(xrt_run, bundle, "--inputs", plain, "--save-outputs", tmp_path / "a.npz"))
    assert_passed(run(xrt_run, bundle, "--input", f"input={tmp_path / 'input.npy'}",
                      f"--input=state={tmp_path / 'state.npy'}", "--save-outputs=" + str(tmp_path / "b.npz")))
    # --input overrides the same name from --inputs.
    np.save(tmp_path / "state0.npy", np.zeros_like(feeds["state"]))
    assert_passed(run(xrt_run, bundle, "--inputs", plain, "--input", f"state={tmp_path / 'state0.npy'}",
                      "--save-outputs", tmp_path / "c.npz"))
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b, np.load(tmp_path / "c.npz") as c:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["stateN"], c["stateN"])
    assert_close_to_onnxruntime(name, tmp_path / "c.npz", {**feeds, "state": np.zeros_like(feeds["state"])})


IDENTITY_DTYPES = ["float16", "float32", "float64", "bool", "int8", "uint8", "int16", "int32", "int64"]


@pytest.fixture(scope="module")
def identity_bundle(tmp_path_factory) -> Path:
    """A generated ONNX model with one Identity per dtype (x_<dtype> [2, n] -> y_<dtype>), bundled for OpenVINO."""
    import onnx
    from onnx import helper

    def elem(dtype):
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))

    graph = helper.make_graph(
        [helper.make_node("Identity", [f"x_{d}"], [f"y_{d}"]) for d in IDENTITY_DTYPES],
        "identities",
        [helper.make_tensor_value_info(f"x_{d}", elem(d), [2, "n"]) for d in IDENTITY_DTYPES],
        [helper.make_tensor_value_info(f"y_{d}", elem(d), [2, "n"]) for d in IDENTITY_DTYPES],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("identity")
    onnx.save(model, folder / "identities.onnx")
    make_bundle.build(folder / "identities.onnx", folder / "identities.xrtpkg")
    return folder / "identities.xrtpkg"


def test_every_dtype_random_stats_and_round_trip(xrt_run, identity_bundle, tmp_path):
    shapes = [f"--shape=x_{d}=2x500" for d in IDENTITY_DTYPES]
    proc = run(xrt_run, identity_bundle, "--json", "--seed", "3", "--save-outputs", tmp_path / "out.npz", *shapes)
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)
    with np.load(tmp_path / "out.npz") as z:
        saved = {k: z[k] for k in z.files}
    for out in report["outputs"]:
        dtype = out["name"][2:]
        array = saved[out["name"]]
        assert array.dtype == np.dtype(dtype) and array.shape == (2, 500) and out["shape"] == [2, 500]
        values = array.astype(np.float64)
        # The runner's stats (computed in C++, fp16 decoded by hand) equal numpy's.
        assert out["min"] == values.min() and out["max"] == values.max(), out
        assert out["mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-12), out
        if dtype.startswith("float"):  # ~ N(0, 1)
            assert abs(values.mean()) < 0.2 and 0.8 < values.std() < 1.2, (dtype, values.mean(), values.std())
        elif dtype == "bool":
            assert 0.3 < values.mean() < 0.7
        else:  # uniform integers in [0, 100)
            assert values.min() >= 0 and values.max() <= 99 and len(np.unique(array)) > 50, dtype

    # Feed the outputs back as inputs (plain name-keyed npz): Identity returns them bit for bit.
    np.savez(tmp_path / "in.npz", **{f"x_{k[2:]}": v for k, v in saved.items()})
    assert_passed(run(xrt_run, identity_bundle, "--inputs", tmp_path / "in.npz", "--save-outputs", tmp_path / "b.npz"))
    with np.load(tmp_path / "b.npz") as z:
        for key, want in saved.items():
            assert z[key].dtype == want.dtype
            np.testing.assert_array_equal(z[key], want)


def test_json_report_and_bench(xrt_run, bundles):
    name = "magika_v3_3"
    proc = run(xrt_run, bundles(name), "--inputs", corpus_inputs_file(name), "--json", "--bench", "5",
               "--warmup", "2")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr.strip().endswith("PASSED xrt-run")
    report = json.loads(proc.stdout)
    assert report["status"] == "PASSED"
    assert report["session"]["variant"] == "cpu-openvino"
    assert report["session"]["engine"] == "openvino"
    assert report["session"]["engine_version"].startswith("2026."), report["session"]
    assert report["format_version"] == "1.0"
    assert [i["name"] for i in report["inputs"]] == ["bytes"]
    assert report["inputs"][0]["dtype"] == "int32" and report["inputs"][0]["shape"] == [1, 2048]
    (out,) = report["outputs"]
    assert out["name"] == "target_label" and out["dtype"] == "float32" and out["shape"] == [1, 214]
    assert 0.0 <= out["min"] <= out["mean"] <= out["max"] <= 1.0  # softmax probabilities
    bench = report["bench"]
    assert bench["runs"] == 5 and bench["warmup"] == 2
    assert 0 < bench["min_ms"] <= bench["p50_ms"] <= bench["p90_ms"] <= bench["p99_ms"]
    assert bench["min_ms"] <= bench["mean_ms"]
    assert report["load_ms"] > 0 and report["first_run_ms"] > 0


def test_bench_text_output(xrt_run, bundles):
    name = "silero_vad_openvino_16k"
    proc = run(xrt_run, bundles(name), "--bench", "3", "--warmup=0")
    assert_passed(proc)
    assert "bench  3 runs after 0 warmup: p50 " in proc.stdout, proc.stdout
    assert "load   " in proc.stdout and "first run" in proc.stdout


def test_random_inputs_follow_the_seed(xrt_run, bundles, tmp_path):
    bundle = bundles("silero_vad_openvino_16k")  # static shapes: random inputs need no --shape
    outs = {}
    for tag, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        proc = run(xrt_run, bundle, "--seed", seed, "--save-outputs", tmp_path / f"{tag}.npz", "--quiet")
        assert proc.returncode == EXIT_OK, proc.stderr
        assert proc.stdout.strip() == "PASSED xrt-run", proc.stdout  # --quiet prints only the verdict
        with np.load(tmp_path / f"{tag}.npz") as z:
            outs[tag] = {k: z[k] for k in z.files}
    for key in outs["a"]:
        np.testing.assert_array_equal(outs["a"][key], outs["b"][key])
    assert not np.array_equal(outs["a"]["stateN"], outs["c"]["stateN"])


def test_dynamic_dims_need_a_shape(xrt_run, bundles, tmp_path):
    bundle = bundles("ppocr_mobile_v2_cls")  # x: [?, 3, ?, ?]
    proc = run(xrt_run, bundle)
    assert_failed(proc, EXIT_USAGE, "INVALID_ARGUMENT", "input 'x'", "dynamic dimension 0", "--shape x=1x3x1x1")
    proc = run(xrt_run, bundle, "--shape", "x=2x3x48x192", "--save-outputs", tmp_path / "o.npz")
    assert_passed(proc)
    assert "input  x float32 [2,3,48,192] (random, seed 0)" in proc.stdout, proc.stdout
    with np.load(tmp_path / "o.npz") as z:
        assert z["save_infer_model/scale_0.tmp_1"].shape == (2, 2)
    assert_failed(run(xrt_run, bundle, "--shape", "x=1x3x48"), EXIT_USAGE, "INVALID_ARGUMENT", "rank 3")
    assert_failed(run(xrt_run, bundle, "--shape", "x=1x4x48x192"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "dimension 1 is static 3")
    assert_failed(run(xrt_run, bundle, "--shape", "y=1"), EXIT_USAGE, "INVALID_ARGUMENT", "unknown input 'y'")


# ---- Errors -------------------------------------------------------------------------------------------------------


def test_bad_inputs_files(xrt_run, bundles, tmp_path):
    bundle = bundles("ppocr_mobile_v2_cls")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"definitely not a zip archive")
    assert_failed(run(xrt_run, bundle, "--inputs", junk), EXIT_USAGE, "INVALID_ARGUMENT", "bad inputs file",
                  str(junk), "numpy.savez")
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x))
    assert_failed(run(xrt_run, bundle, "--input", f"x={tmp_path / 'fortran.npy'}"), EXIT_USAGE,
                  "INVALID_ARGUMENT", "Fortran", "ascontiguousarray")
    np.save(tmp_path / "big.npy", x.astype(">f4"))
    assert_failed(run(xrt_run, bundle, "--input", f"x={tmp_path / 'big.npy'}"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "big-endian")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_failed(run(xrt_run, bundle, "--input", f"x={tmp_path / 'obj.npy'}"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "object")
    assert_failed(run(xrt_run, bundle, "--input", f"x={tmp_path / 'missing.npy'}"), EXIT_USAGE,
                  "INVALID_ARGUMENT", "missing.npy")


def test_wrong_input_name_dtype_and_missing_input(xrt_run, bundles, tmp_path):
    bundle = bundles("silero_vad_openvino_16k")
    feeds = load_corpus_inputs("silero_vad_openvino_16k")
    np.savez(tmp_path / "named.npz", bogus=feeds["input"], state=feeds["state"])
    assert_failed(run(xrt_run, bundle, "--inputs", tmp_path / "named.npz"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "unknown input 'bogus'", "input (float32 [1,576])", "state (float32 [2,1,128])")
    np.savez(tmp_path / "f64.npz", input=feeds["input"].astype(np.float64), state=feeds["state"])
    assert_failed(run(xrt_run, bundle, "--inputs", tmp_path / "f64.npz"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "input 'input'", "is float64", "expects float32", "astype(numpy.float32)")
    np.savez(tmp_path / "partial.npz", input=feeds["input"])
    assert_failed(run(xrt_run, bundle, "--inputs", tmp_path / "partial.npz"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "input 'state'", "not given")
    # A right name and dtype with a wrong shape is caught by the runtime (xrt_session_run), not the runner.
    np.savez(tmp_path / "shape.npz", input=feeds["input"][:, :100], state=feeds["state"])
    assert_failed(run(xrt_run, bundle, "--inputs", tmp_path / "shape.npz"), EXIT_USAGE, "INVALID_ARGUMENT",
                  "input")


def test_existing_output_is_not_overwritten_without_force(xrt_run, bundles, tmp_path):
    bundle = bundles("silero_vad_openvino_16k")
    out = tmp_path / "out.npz"
    out.write_bytes(b"precious")
    assert_failed(run(xrt_run, bundle, "--save-outputs", out), EXIT_EXISTS, "ALREADY_EXISTS", str(out), "--force")
    assert out.read_bytes() == b"precious"
    assert_passed(run(xrt_run, bundle, "--save-outputs", out, "--force"))
    with np.load(out) as z:
        assert sorted(z.files) == ["output", "stateN"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]  # no temporary files left behind


def test_saved_outputs_are_deterministic(xrt_run, bundles, tmp_path):
    bundle = bundles("silero_vad_openvino_16k")
    for tag in ("a", "b"):
        assert_passed(run(xrt_run, bundle, "--save-outputs", tmp_path / f"{tag}.npz"))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_corrupt_truncated_and_missing_bundles(xrt_run, bundles, tmp_path):
    good = bundles("silero_vad_openvino_16k").read_bytes()
    flipped = bytearray(good)
    # Inside the weights of the variant xrt-run runs (sections are verified on first use: formats/xrtpkg.md), so
    # its sha256 no longer matches when the session reads it.
    weights = xrtpkg.read(good).section("cpu-openvino.bin")
    flipped[weights.offset + weights.stored_size // 2] ^= 0xFF
    (tmp_path / "flipped.xrtpkg").write_bytes(bytes(flipped))
    assert_failed(run(xrt_run, tmp_path / "flipped.xrtpkg"), EXIT_RUNTIME, "DATA_CORRUPT", "cpu-openvino.bin")
    (tmp_path / "truncated.xrtpkg").write_bytes(good[: len(good) - 100])
    assert_failed(run(xrt_run, tmp_path / "truncated.xrtpkg"), EXIT_RUNTIME, "DATA_CORRUPT")
    assert_failed(run(xrt_run, tmp_path / "nope.xrtpkg"), EXIT_RUNTIME, "NOT_FOUND", "nope.xrtpkg")
    golden = ROOT / "formats" / "golden" / "major_2.xrtpkg"
    if golden.exists():
        assert_failed(run(xrt_run, golden), EXIT_INCOMPATIBLE, "INCOMPATIBLE")


def test_no_variant_for_the_device_or_engine(xrt_run, bundles):
    bundle = bundles("silero_vad_openvino_16k")
    for args in (("--device", "npu"), ("--engine", "tensorrt"), ("--variant", "gpu-nope")):
        proc = run(xrt_run, bundle, *args)
        assert proc.returncode != EXIT_OK, proc.stdout
        status = proc.stderr.split("xrt-run: error: ", 1)[1].split(":", 1)[0]
        expected = {"NOT_FOUND": EXIT_RUNTIME, "UNAVAILABLE": EXIT_INCOMPATIBLE, "INCOMPATIBLE": EXIT_INCOMPATIBLE}
        assert status in expected, proc.stderr
        assert proc.returncode == expected[status], proc.stderr


def test_unavailable_engine_exits_5(xrt_run):
    golden = ROOT / "formats" / "golden" / "tiny_model.xrtpkg"  # variants: cpu-openvino, cpu-onnxruntime
    if not golden.exists():
        pytest.skip(f"{golden} missing")
    if (xrt_run.parent.parent / "lib" / "libxrt_backend_onnxruntime.so").exists():
        pytest.skip("an onnxruntime plugin is built, so that engine is available here")
    # The onnxruntime engine is registered only by the Python loader: a C++ host cannot run that variant.
    assert_failed(run(xrt_run, golden, "--engine", "onnxruntime"), EXIT_INCOMPATIBLE, "UNAVAILABLE", "onnxruntime")
    # The same bundle runs through its OpenVINO variant.
    proc = run(xrt_run, golden)
    assert_passed(proc)
    assert "variant cpu-openvino" in proc.stdout


def test_skipped_variants_are_explained(xrt_run, tmp_path):
    import xrtpkg  # make_bundle put formats/python on sys.path

    golden = ROOT / "formats" / "golden" / "tiny_model.xrtpkg"
    if not golden.exists():
        pytest.skip(f"{golden} missing")
    if (xrt_run.parent.parent / "lib" / "libxrt_backend_onnxruntime.so").exists():
        pytest.skip("an onnxruntime plugin is built, so no variant is skipped")
    bundle = xrtpkg.read(golden)
    manifest = dict(bundle.manifest)
    manifest["variants"] = sorted(manifest["variants"], key=lambda v: v["engine"] != "onnxruntime")  # ORT first
    payloads = [(s.name, bundle.data(s.name), s.compressed) for s in bundle.sections if s.name != "manifest"]
    xrtpkg.write(tmp_path / "ort_first.xrtpkg", manifest, payloads)
    proc = run(xrt_run, tmp_path / "ort_first.xrtpkg")
    assert_passed(proc)
    assert "variant cpu-openvino" in proc.stdout, proc.stdout
    assert "  skipped: cpu-onnxruntime (onnxruntime on cpu): " in proc.stdout, proc.stdout
    report = json.loads(run(xrt_run, tmp_path / "ort_first.xrtpkg", "--json").stdout)
    assert [s["variant"] for s in report["session"]["skipped"]] == ["cpu-onnxruntime"]


def test_unreadable_ir_is_an_engine_error(xrt_run, bundles, tmp_path):
    import xrtpkg

    bundle = xrtpkg.read(bundles("silero_vad_openvino_16k"))
    payloads = [(s.name, bundle.data(s.name), s.compressed) for s in bundle.sections if s.name != "manifest"]
    payloads = [(n, d[: len(d) // 2] if n.endswith(".xml") else d, c) for n, d, c in payloads]  # digests stay valid
    xrtpkg.write(tmp_path / "half_ir.xrtpkg", bundle.manifest, payloads)
    assert_failed(run(xrt_run, tmp_path / "half_ir.xrtpkg"), EXIT_RUNTIME, "INTERNAL", "cannot read the variant's IR")


def test_bad_variant_option_is_reported(xrt_run, bundles):
    bundle = bundles("silero_vad_openvino_16k", INFERENCE_PRECISION_HINT="bogus")
    # The plugin reports a bad option value as INVALID_ARGUMENT with OpenVINO's message (exit codes follow codes).
    assert_failed(run(xrt_run, bundle), EXIT_USAGE, "INVALID_ARGUMENT", "INFERENCE_PRECISION_HINT", "bogus")
    bundle = bundles("silero_vad_openvino_16k", NOT_A_CPU_PROPERTY="1")
    assert_failed(run(xrt_run, bundle), EXIT_USAGE, "INVALID_ARGUMENT", "NOT_A_CPU_PROPERTY")


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((), "missing BUNDLE"),
        (("a.xrtpkg", "b.xrtpkg"), "only one BUNDLE"),
        (("a.xrtpkg", "--frobnicate"), "unknown option '--frobnicate'"),
        (("a.xrtpkg", "--bench", "ten"), "--bench expects a non-negative integer"),
        (("a.xrtpkg", "--bench", "0"), "at least 1"),
        (("a.xrtpkg", "--warmup", "3"), "--warmup needs --bench"),
        (("a.xrtpkg", "--input", "x.npy"), "--input expects NAME=FILE.npy"),
        (("a.xrtpkg", "--shape", "x=1xAx3"), "--shape expects a non-negative integer"),
        (("a.xrtpkg", "--device"), "--device needs a value"),
        (("a.xrtpkg", "--json=yes"), "--json takes no value"),
        (("a.xrtpkg", "--inputs", "a.npz", "--shape", "x=1"), "cannot be combined"),
    ],
)
def test_usage_errors(xrt_run, tmp_path, args, fragment):
    proc = run(xrt_run, *args)
    assert_failed(proc, EXIT_USAGE, "INVALID_ARGUMENT", fragment, "--help")
    assert not (tmp_path / "a.xrtpkg").exists()


def test_help(xrt_run):
    proc = run(xrt_run, "--help")
    assert proc.returncode == EXIT_OK
    for flag in ("--inputs", "--input", "--shape", "--device", "--engine", "--variant", "--save-outputs", "--force",
                 "--bench", "--warmup", "--seed", "--quiet", "--json", "exit codes"):
        assert flag in proc.stdout, flag


def test_string_and_value_types_are_refused_by_name(xrt_run, tmp_path):
    """xrt-run reads and writes numeric arrays only: a bundle whose input is a string tensor, or whose output is a
    sequence of maps, is refused naming the value and pointing at the Python loader, before anything runs (the
    tiny model's real OpenVINO variant loads; only the manifest's declarations change)."""
    from bundle_craft import tiny_manifest, with_manifest

    for role, entry, words in (
            ("inputs", {"name": "x", "dtype": "string", "shape": [1, 4]}, "input 'x' is a string tensor"),
            ("outputs", {"name": "y", "type": {"sequence": {"map": {"key": "int64", "value": "float32"}}}},
             "output 'y' is a sequence, map or optional")):
        manifest = tiny_manifest()
        manifest["model"][role] = [entry]
        bundle = tmp_path / f"{role}.xrtpkg"
        bundle.write_bytes(with_manifest(manifest))
        assert_failed(run(xrt_run, bundle, "--variant", "cpu-openvino"), EXIT_RUNTIME, "UNIMPLEMENTED", words,
                      "xpuruntime.load")
    strings = tmp_path / "strings.npz"
    np.savez(strings, x=np.array(["a", "b"]))
    assert_failed(run(xrt_run, ROOT / "formats" / "golden" / "tiny_model.xrtpkg", "--inputs", strings),
                  EXIT_USAGE, "INVALID_ARGUMENT", "unsupported dtype '<U1'", "xrt-run does not read them")
