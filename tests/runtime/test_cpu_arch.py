"""requires.cpu_arch: a bundle restricted to another CPU architecture is refused (INCOMPATIBLE, naming both
architectures) by the C++ runtime, the Python loader and xrt-run; one restricted to this machine's runs.

Nothing is faked: the bundle is compiled here by xrtc with --cpu-arch naming the architecture this machine is not
(aarch64 on x86-64, x86_64 on Arm), and the real runtime checks it against the CPU it was built for."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import xrtpkg

import xpuruntime as xrt
from xrt_testutil import SAMPLE, run_tool

HOST = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(platform.machine().lower())
if HOST is None:
    pytest.skip(f"no other architecture to compare with on {platform.machine()}", allow_module_level=True)
OTHER = "aarch64" if HOST == "x86_64" else "x86_64"


def image():
    return np.random.default_rng(5).standard_normal((2, 3, 64, 64), dtype=np.float32)


@pytest.fixture(scope="module")
def foreign_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_arch") / f"sample_{OTHER}.xrtpkg"
    # --no-precompile: the IR and the ONNX graph only, as a build host for another CPU would ship them.
    run_tool("xrtc", "compile", SAMPLE, "--cpu-arch", OTHER, "--no-precompile", "-o", out, check=True)
    return out


def rewrite(src, dst, edit):
    """A new bundle with an edited manifest (the real writer recomputes every digest)."""
    bundle = xrtpkg.read(src)
    manifest = bundle.manifest
    edit(manifest)
    xrtpkg.write(dst, manifest, [(s.name, bundle.data(s.name), s.compressed) for s in bundle.sections[1:]])
    return dst


def test_compile_records_the_architecture(foreign_bundle):
    manifest = xrtpkg.read(foreign_bundle).manifest
    assert manifest["variants"]
    assert all(v["requires"]["cpu_arch"] == [OTHER] for v in manifest["variants"])
    assert manifest["provenance"]["command"].endswith(f"--cpu-arch {OTHER}")


def test_loader_refuses_another_architecture(foreign_bundle):
    with pytest.raises(xrt.Incompatible) as err:
        xrt.load(foreign_bundle)
    message = str(err.value)
    assert f"built for CPU architecture {OTHER} (requires.cpu_arch), this machine is {HOST}" in message, message
    for engine in ("openvino", "onnxruntime"):  # each variant is named with the reason, not just the first
        assert f"cpu-{engine}" in message, message


def test_xrt_run_refuses_another_architecture(foreign_bundle):
    proc = run_tool("xrt-run", foreign_bundle)
    assert proc.returncode == 5, proc.stderr  # EXIT_INCOMPATIBLE (xrt-run --help)
    assert "INCOMPATIBLE" in proc.stderr and f"this machine is {HOST}" in proc.stderr, proc.stderr


def test_this_architecture_runs_and_matches(sample_bundle, tmp_path):
    # Debian's spelling (amd64/arm64) is the same architecture.
    alias = {"x86_64": "amd64", "aarch64": "arm64"}[HOST]
    ours = rewrite(sample_bundle, tmp_path / "ours.xrtpkg",
                   lambda m: [v.setdefault("requires", {}).update(cpu_arch=[OTHER, alias]) for v in m["variants"]])
    expected = xrt.load(sample_bundle).run({"image": image()})["probabilities"]
    np.testing.assert_array_equal(xrt.load(ours).run({"image": image()})["probabilities"], expected)


@pytest.mark.parametrize("value", [[], "", ["x86 64"], [1], {"arch": "x86_64"}, ["a"] * 17])
def test_malformed_requirement_is_data_corrupt(sample_bundle, tmp_path, value):
    bad = rewrite(sample_bundle, tmp_path / "bad.xrtpkg",
                  lambda m: m["variants"][0].setdefault("requires", {}).update(cpu_arch=value))
    with pytest.raises(xrt.DataCorrupt, match=r"requires\.cpu_arch"):
        xrt.load(bad)


def test_unknown_cpu_arch_flag_is_a_usage_error(tmp_path):
    proc = run_tool("xrtc", "compile", SAMPLE, "--cpu-arch", "sparc", "-o", tmp_path / "x.xrtpkg")
    assert proc.returncode == 2, proc.stderr
    assert "--cpu-arch 'sparc': expected one of aarch64, x86_64" in proc.stderr
    assert not (tmp_path / "x.xrtpkg").exists()
