"""Verification on use (formats/xrtpkg.md, "Verification on use"): a bundle's header, table, padding and manifest are
verified at open, each other section before its first use. Checked here on both readers:

- the Python reader's ``verify="on_use"`` reaches the full reader's verdict on every golden file once every section
  has been asked for, and a damaged section nobody asks for does not fail the read;
- the loader (C++ core, ``xrt.load``): a damaged section of a variant that does not run leaves the load and its
  results unchanged; a damaged section of the variant that runs fails the load before the engine sees it
  (DataCorrupt naming the section); a signed bundle is still verified whole at open;
- the load profile (``Session.load_profile()``, ``xrtc run --profile-load``) reports the stages.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import xpuruntime as xrt
import xrtpkg

from xrt_testutil import run_tool

GOLDEN = Path(__file__).resolve().parents[2] / "formats" / "golden"
FEEDS = {"image": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}


def verdict(read) -> str:
    try:
        read()
    except xrtpkg.FormatError as err:
        return err.status
    return "OK"


def read_every_section(data: bytes) -> None:
    bundle = xrtpkg.read(data, verify="on_use")
    for s in bundle.sections:
        assert len(bundle.data(s.name)) == s.size


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.xrtpkg")), ids=lambda p: p.name)
def test_python_reader_on_use_reaches_the_full_verdict(path):
    data = path.read_bytes()
    assert verdict(lambda: read_every_section(data)) == verdict(lambda: xrtpkg.read(data))


def flip(data: bytes, bundle: xrtpkg.Bundle, section: str) -> bytes:
    """`data` with one bit of `section`'s stored bytes flipped (the table, and so index_sha256, unchanged)."""
    s = bundle.section(section)
    out = bytearray(data)
    out[s.offset + s.stored_size // 2] ^= 0x04
    return bytes(out)


def test_python_reader_on_use_checks_each_section_before_returning_it(sample_bundle):
    data = Path(sample_bundle).read_bytes()
    damaged = flip(data, xrtpkg.read(data), "cpu-openvino.xml")
    with pytest.raises(xrtpkg.FormatError, match="cpu-openvino.xml"):
        xrtpkg.read(damaged)
    bundle = xrtpkg.read(damaged, verify="on_use")
    assert bundle.data("cpu-onnxruntime.onnx") == xrtpkg.read(data).data("cpu-onnxruntime.onnx")
    for _ in range(2):  # a failed check is not remembered as passed
        with pytest.raises(xrtpkg.FormatError, match=r"section \d+ \('cpu-openvino.xml'\): sha256") as caught:
            bundle.data("cpu-openvino.xml")
        assert caught.value.status == "DATA_CORRUPT"
    with pytest.raises(ValueError, match="verify must be one of"):
        xrtpkg.read(data, verify="later")


@pytest.fixture(scope="module")
def sample(sample_bundle, tmp_path_factory):
    data = Path(sample_bundle).read_bytes()
    return data, xrtpkg.read(data), tmp_path_factory.mktemp("on_use")


def test_loader_a_damaged_unused_variant_does_not_fail_the_load(sample):
    data, bundle, folder = sample
    good = folder / "good.xrtpkg"
    good.write_bytes(data)
    with xrt.load(good, engine="onnxruntime") as s:
        expected = s.run(FEEDS)
    for section in ("cpu-openvino.xml", "golden.in.0.npy"):  # (no blob: OpenVINO is sample_cnn's second choice)
        path = folder / f"damaged-{section}.xrtpkg"
        path.write_bytes(flip(data, bundle, section))
        with xrt.load(path, engine="onnxruntime") as s:
            assert s.variant == "cpu-onnxruntime"
            got = s.run(FEEDS)
            assert all(np.array_equal(got[k], expected[k]) for k in expected)
            assert s.load_profile()["sections_verified_on_use"] is True


@pytest.mark.parametrize("engine, section", [("onnxruntime", "cpu-onnxruntime.onnx"),
                                             ("openvino", "shared.weights"),
                                             ("onnxruntime", "shared.weights"),
                                             ("openvino", "cpu-openvino.xml")])
def test_loader_a_damaged_used_section_fails_before_the_engine(sample, engine, section):
    data, bundle, folder = sample
    path = folder / f"used-{section}.xrtpkg"
    path.write_bytes(flip(data, bundle, section))
    with pytest.raises(xrt.DataCorrupt) as caught:
        xrt.load(path, engine=engine)
    message = str(caught.value)
    assert f'("{section}"): sha256 mismatch' in message, message
    assert "checked on first use" in message, message


def test_loader_a_signed_bundle_is_still_verified_whole_at_open(sample):
    data, bundle, folder = sample
    seed = hashlib.sha256(b"xrt verify-on-use TEST-ONLY key").digest()
    signed = xrtpkg.sign(data, seed)
    path = folder / "signed-damaged.xrtpkg"
    path.write_bytes(flip(signed, bundle, "golden.in.0.npy"))  # a section no engine uses: still checked at open
    with pytest.raises(xrt.DataCorrupt, match="signature .* does not match the bundle's bytes"):
        xrt.load(path, engine="onnxruntime")
    path.write_bytes(signed)
    with xrt.load(path, engine="onnxruntime") as s:
        assert s.load_profile()["sections_verified_on_use"] is False


def test_load_profile_stages(sample):
    data, _, folder = sample
    path = folder / "profile.xrtpkg"
    path.write_bytes(data)
    with xrt.load(path, engine="openvino") as s:
        p = s.load_profile()
    assert set(p) == {"open_s", "verify_s", "engine_init_s", "other_s", "load_s", "sections_verified_on_use"}
    assert all(p[k] >= 0 for k in ("open_s", "verify_s", "engine_init_s", "other_s"))
    assert p["verify_s"] > 0 and p["engine_init_s"] > 0  # its sections read and hashed; OpenVINO compiles the IR
    assert p["load_s"] >= p["open_s"] + p["verify_s"] + p["engine_init_s"]
    proc = run_tool("xrtc", "run", path, "--engine", "openvino", "--shape", "image=1x3x64x64", "--profile-load",
                    "--json", check=True)
    stages = json.loads(proc.stdout)["load_profile"]
    assert stages["load_to_first_result_s"] == pytest.approx(stages["load_s"] + stages["first_run_s"])
    text = run_tool("xrtc", "run", path, "--shape", "image=1x3x64x64", "--profile-load", check=True).stdout
    for label in ("open (header, table, manifest)", "verify (sections, on first use)", "engine init", "first run",
                  "load to first result"):
        assert label in text, text
