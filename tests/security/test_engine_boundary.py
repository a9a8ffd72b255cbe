"""The engine boundary (SECURITY.md, "The engine boundary"; issue 10, findings 1-5): a bundle that passes every
format check must still not read files, outlive its verification or steer the host. Every hostile bundle is built
here (tests/security/hostile.py) and goes through Python (xrt.load) and, for OpenVINO, the C++ runner (xrt-run).

1. An engine gets only the artifact type the manifest promises: ONNX bytes in an OpenVINO variant (the original
   exploit: the output was a file of the working directory) are refused before OpenVINO sees them.
2. The one external-data walk (xpuruntime.onnx_tensors) finds a tensor in every place ONNX can hold one.
3. Verified bytes are the bytes used: writing the bundle file after load changes nothing.
4. Truncating or replacing a live bundle file does not kill the process (SIGBUS) on run() or explain().
5. Options that touch the file system or host come from the caller: bundle-set CACHE_DIR, xrt.cache_dir and
   unknown keys are refused, naming the key and the allowed set; thread counts are clamped to the CPUs here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xpuruntime as xrt
import xrtpkg
from xrt_testutil import run_tool

sys.path.insert(0, str(Path(__file__).parent))
import hostile  # noqa: E402
from hostile import SECRET, SECRET_FILE  # noqa: E402

ZEROS = {"x": np.zeros(4, np.float32)}


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """The working directory holds the secret file a hostile bundle tries to read."""
    (tmp_path / SECRET_FILE).write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def xrt_run(bundle: Path, *args) -> subprocess.CompletedProcess:
    np.save(bundle.parent / "zeros.npy", ZEROS["x"])
    return run_tool("xrt-run", bundle, "--input", f"x={bundle.parent / 'zeros.npy'}",
                    "--save-outputs", bundle.parent / "out.npz", *args, timeout=120)


def leaked(out_npz: Path) -> bool:
    if not out_npz.exists():
        return False
    with np.load(out_npz) as z:
        return any(np.array_equal(z[k], SECRET) for k in z.files)


# ---- 1. artifact type: OpenVINO gets IR only -----------------------------------------------------------------------

def test_onnx_bytes_in_an_openvino_variant_are_refused_python_and_xrt_run(workdir):
    """The original exploit: an OpenVINO variant whose model is ONNX with an external-data initializer. OpenVINO's
    ONNX reader resolved it in the working directory and the bundle's output was the secret file."""
    path = workdir / "onnx_in_ov.xrtpkg"
    path.write_bytes(hostile.ov_bundle(hostile.onnx_models()["initializer"]))
    with pytest.raises(xrt.DataCorrupt) as caught:
        xrt.load(path, engine="openvino").run(ZEROS)
    assert "not OpenVINO IR XML" in str(caught.value) and "protobuf" in str(caught.value)
    proc = xrt_run(path)
    assert proc.returncode != 0 and "DATA_CORRUPT" in proc.stderr and "not OpenVINO IR XML" in proc.stderr, proc
    assert not leaked(workdir / "out.npz")
    print(f"\nPython: {caught.value}\nxrt-run: exit {proc.returncode}: {proc.stderr.strip().splitlines()[0][:160]}")


@pytest.mark.parametrize("model, fragment", [
    (b"", "empty"),
    (b"\x00" * 64, "not XML"),
    (b"<?xml version='1.0'?>\n<!DOCTYPE net SYSTEM 'file:///etc/passwd'>\n<net name='x' version='11'/>",
     "first element is not <net>"),
    (b"<?xml version='1.0'?><model/>", "first element is not <net>"),
    (b"<!-- never closed <net version='11'>", "no XML element"),
    (b"TFL3TFL3" + b"\x00" * 56, "not XML"),
])
def test_anything_but_ir_is_refused_before_openvino(workdir, model, fragment):
    path = workdir / "not_ir.xrtpkg"
    path.write_bytes(hostile.ov_bundle(model))
    with pytest.raises(xrt.DataCorrupt, match=fragment):
        xrt.load(path, engine="openvino")


def test_real_ir_still_runs(workdir):
    xml, weights = hostile.ir_add(np.arange(4, dtype=np.float32))
    path = workdir / "ir.xrtpkg"
    path.write_bytes(hostile.ov_bundle(xml, weights))
    np.testing.assert_array_equal(xrt.load(path, engine="openvino").run(ZEROS)["y"], np.arange(4, dtype=np.float32))


# ---- 2. one external-data walk, every tensor ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(hostile.onnx_models()))
def test_onnx_runtime_refuses_external_data_anywhere(workdir, name):
    """Each model reads the secret into y when ONNX Runtime is given it directly (checked here, so the case is
    real); through the bundle it is refused before ONNX Runtime sees it."""
    import onnxruntime as ort

    model = hostile.onnx_models()[name]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    direct = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, ZEROS)[0]
    assert np.array_equal(direct, SECRET), f"{name}: the hostile model no longer reads the file; fix the test"
    path = workdir / f"{name}.xrtpkg"
    path.write_bytes(hostile.ort_bundle(model))
    with pytest.raises(xrt.DataCorrupt, match="external data"):
        xrt.load(path, engine="onnxruntime").run(ZEROS)


def test_walker_finds_every_slot():
    import onnx
    from xpuruntime.onnx_tensors import iter_tensors, uses_external_data

    data, expected = hostile.onnx_holding_everywhere()
    found = [t.name for t in iter_tensors(onnx.load_from_string(data)) if uses_external_data(t)]
    assert len(found) == expected, sorted(found)
    for slot in ("init", "sparse", "top_t", "top_t1", "top_st", "top_st1", "inner_init", "inner_sparse", "fn_t",
                 "fn_default", "train_init", "train_algo"):
        assert slot in found, slot


def test_unknown_fields_and_non_onnx_are_refused(workdir):
    from xpuruntime.onnx_tensors import ExternalDataError, check_inline

    model = hostile.onnx_models()["initializer"]
    with pytest.raises(ExternalDataError, match="does not know"):
        check_inline(model + b"\xf8\xff\x03\x01")  # field 65535 (varint): not in onnx.proto
    import onnx

    nested = onnx.load_from_string(model)  # the same, deep inside: an unknown field of a node's attribute
    value = nested.graph.node[0]
    value.ParseFromString(value.SerializeToString() + b"\xf8\xff\x03\x01")
    with pytest.raises(ExternalDataError, match="does not know"):
        check_inline(nested.SerializeToString())
    with pytest.raises(ExternalDataError, match="not an ONNX model"):
        check_inline(b"\x00\x00\x00\x00ORTM" + bytes(64))  # ONNX Runtime's own format
    path = workdir / "ort_format.xrtpkg"
    path.write_bytes(hostile.ort_bundle(b"\x10\x00\x00\x00ORTM" + bytes(64)))
    with pytest.raises(xrt.DataCorrupt, match="not an ONNX model"):
        xrt.load(path, engine="onnxruntime")


# ---- 3 and 4. the file after load ----------------------------------------------------------------------------------

LIVE_FILE = textwrap.dedent("""
    import json, os, shutil, sys
    import numpy as np, xpuruntime as xrt
    path, engine, action, other = sys.argv[1:5]
    x = {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    s = xrt.load(path, engine=engine, trusted_keys=[sys.argv[5]])
    before, why = s.run(x), s.explain()
    if action == "overwrite":      # same length, every byte past the header changed, in place
        with open(path, "r+b") as f:
            f.seek(64); f.write(bytes(os.path.getsize(path) - 64))
    elif action == "truncate":
        os.truncate(path, 0)
    elif action == "cp":           # what `cp new.xrtpkg live.xrtpkg` does: truncate, then write in place
        shutil.copyfile(other, path)
    after = s.run(x)
    same = all(np.array_equal(before[k], after[k]) for k in before)
    try:
        explain_same = s.explain() == why
    except xrt.Error as err:  # what an in-place write did before: the decision log read from the changed file
        explain_same = str(err)
    print(json.dumps({"same": same, "explain_same": explain_same}))
""")


@pytest.fixture(scope="module")
def signed(sample_bundle, tmp_path_factory):
    """The sample bundle signed with a test key (so the load is a verified, trusted one), and its .pub file."""
    import hashlib

    seed = hashlib.sha256(b"xrt engine-boundary TEST-ONLY key").digest()
    folder = tmp_path_factory.mktemp("signed")
    (folder / "k.pub").write_text(xrtpkg.public_key_of(seed).hex() + "\n")
    (folder / "signed.xrtpkg").write_bytes(xrtpkg.sign(Path(sample_bundle).read_bytes(), seed))
    return folder


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("action", ["overwrite", "truncate", "cp"])
def test_the_file_after_a_verified_load_changes_nothing(signed, tmp_path, sample_bundle, engine, action):
    """In a child process, so a SIGBUS (what truncation did to a mapped bundle) is seen as a signal, not a crash of
    the test run."""
    live = tmp_path / "live.xrtpkg"
    live.write_bytes((signed / "signed.xrtpkg").read_bytes())
    other = tmp_path / "other.xrtpkg"
    other.write_bytes(hostile.ov_bundle(b"<net version='11'/>"))  # a different, smaller bundle
    proc = subprocess.run([sys.executable, "-P", "-c", LIVE_FILE, live, engine, action, other, signed / "k.pub"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode} (-7 is SIGBUS)\n{proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "explain_same": True}, result


def test_python_reader_copies_too(signed, tmp_path):
    live = tmp_path / "live.xrtpkg"
    live.write_bytes((signed / "signed.xrtpkg").read_bytes())
    bundle = xrtpkg.read(live)
    first = bundle.data("shared.weights")
    os.truncate(live, 0)
    assert bundle.data("shared.weights") == first


# ---- 5. options: the caller's, not the bundle's --------------------------------------------------------------------

@pytest.fixture(scope="module")
def ir():
    return hostile.ir_add(np.ones(4, np.float32))


@pytest.mark.parametrize("key, value", [
    ("CACHE_DIR", "planted_cache"),
    ("NUM_STREAMS", "64"),
    ("AFFINITY", "NONE"),
    ("NOT_A_CPU_PROPERTY", "1"),
])
def test_openvino_refuses_options_outside_the_allow_list(workdir, ir, key, value):
    path = workdir / "opt.xrtpkg"
    path.write_bytes(hostile.ov_bundle(*ir, options={key: value}))
    with pytest.raises(xrt.InvalidArgument) as caught:
        xrt.load(path, engine="openvino")
    message = str(caught.value)
    assert f"'{key}' is not allowed in a bundle" in message and "INFERENCE_NUM_THREADS, INFERENCE_PRECISION_HINT" in message
    proc = xrt_run(path)
    assert proc.returncode == 2 and "INVALID_ARGUMENT" in proc.stderr and key in proc.stderr, proc
    assert not (workdir / "planted_cache").exists()


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_a_bundle_cannot_set_the_callers_cache_dir(workdir, ir, engine):
    options = {"xrt.cache_dir": str(workdir / "planted")}
    data = (hostile.ov_bundle(*ir, options=options) if engine == "openvino" else
            hostile.ort_bundle(onnx_add_one(), options=options))
    path = workdir / "cache.xrtpkg"
    path.write_bytes(data)
    with pytest.raises(xrt.InvalidArgument, match="xrt.cache_dir.*caller's choice"):
        xrt.load(path, engine=engine)
    if engine == "openvino":
        proc = xrt_run(path)
        assert proc.returncode == 2 and "xrt.cache_dir" in proc.stderr, proc
    assert not (workdir / "planted").exists()
    # The caller's own cache_dir still works (and is the only one used).
    ok = workdir / "ok.xrtpkg"
    ok.write_bytes(hostile.ov_bundle(*ir) if engine == "openvino" else hostile.ort_bundle(onnx_add_one()))
    xrt.load(ok, engine=engine, cache_dir=workdir / "mine").run(ZEROS)


def onnx_add_one() -> bytes:
    from onnx import helper, numpy_helper

    one = numpy_helper.from_array(np.ones(4, np.float32), "one")
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [hostile.X], [hostile.Y], [one])
    model = helper.make_model(graph, opset_imports=hostile.OPSET)
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("key, value, fragment", [
    ("session.use_env_allocators", "1", "'session.use_env_allocators' is not allowed"),
    ("optimized_model_filepath", "/tmp/x.onnx", "'optimized_model_filepath' is not allowed"),
    ("intra_op_num_threads", "-1", "integer >= 0"),
    ("intra_op_num_threads", "1e9", "integer >= 0"),
    ("enable_cpu_mem_arena", "maybe", "allowed: 0, 1"),
])
def test_onnx_runtime_refuses_options_outside_the_allow_list(workdir, key, value, fragment):
    path = workdir / "opt.xrtpkg"
    path.write_bytes(hostile.ort_bundle(onnx_add_one(), options={key: value}))
    with pytest.raises(xrt.InvalidArgument, match=fragment):
        xrt.load(path, engine="onnxruntime")


def test_thread_counts_from_a_bundle_are_clamped(workdir, ir):
    """2,000 threads from a bundle hung the load; now both engines clamp to the CPUs this process may use."""
    from xpuruntime import _ort_backend

    cpus = _ort_backend.usable_cpus()
    assert _ort_backend.session_options('{"intra_op_num_threads": "2000"}').intra_op_num_threads == cpus
    assert _ort_backend.session_options('{"intra_op_num_threads": "1"}').intra_op_num_threads == 1
    path = workdir / "threads_ort.xrtpkg"
    path.write_bytes(hostile.ort_bundle(onnx_add_one(), options={"intra_op_num_threads": "2000"}))
    start = time.perf_counter()
    np.testing.assert_array_equal(xrt.load(path, engine="onnxruntime").run(ZEROS)["y"], np.ones(4, np.float32))
    ort_seconds = time.perf_counter() - start
    path = workdir / "threads_ov.xrtpkg"
    path.write_bytes(hostile.ov_bundle(*ir, options={"INFERENCE_NUM_THREADS": "2000"}))
    s = xrt.load(path, engine="openvino")
    assert s.explain()["engine_info"]["options"] == f"INFERENCE_NUM_THREADS 2000 clamped to {cpus} (the CPUs this process may use)"
    np.testing.assert_array_equal(s.run(ZEROS)["y"], np.ones(4, np.float32))
    proc = run_tool("xrt-run", path, "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "clamped to" in proc.stdout
    print(f"\nclamped to {cpus} CPUs; ONNX Runtime load + run {ort_seconds:.2f} s")


def test_a_blob_is_imported_only_when_it_embeds_ir(workdir):
    """The precompiled blob's embedded model must be IR too; otherwise the plugin compiles the IR (same outputs)."""
    good, evil = hostile.ov_blob_bundles()
    for name, data, expected in (("good", good, "precompiled blob"), ("evil", evil, "IR")):
        path = workdir / f"{name}.xrtpkg"
        path.write_bytes(data)
        s = xrt.load(path, engine="openvino")
        assert s.explain()["engine_info"]["compiled_from"] == expected, name
        np.testing.assert_array_equal(s.run(ZEROS)["y"], np.ones(4, np.float32))
