"""Bundle signatures (format 1.1) end to end: `xrtc keygen` / `xrtc sign`, `xrtpkg.sign/read`, `xrt.load(...,
trusted_keys=..., require_signature=...)` and the C++ runner's `--trusted-key` / `--require-signature`.

Every refusal the issue names is checked from Python (the C++ runtime through the binding) and from xrt-run (the
C API): a wrong key, a flipped bit, a signature copied from another bundle, a stripped signature (flag kept, or
flag cleared and the index resealed), an unsigned bundle under a policy; and that the signature policy is decided
before anything past the 64-byte header is parsed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct

import numpy as np
import pytest

import xpuruntime as xrt
import xrtpkg
from xrt_testutil import run_tool

# TEST-ONLY Ed25519 seeds (their private halves are public here: they prove nothing outside this test).
SEED_A = hashlib.sha256(b"xrt signing test TEST-ONLY key A").digest()
SEED_B = hashlib.sha256(b"xrt signing test TEST-ONLY key B").digest()
PUB_A = xrtpkg.public_key_of(SEED_A)
PUB_B = xrtpkg.public_key_of(SEED_B)
TRAILER = 128
SHAPE = ("--shape", "image=1x3x64x64")  # the sample model's input has a dynamic batch dim


def _reseal(buf: bytearray) -> None:
    count = struct.unpack_from("<I", buf, 12)[0]
    buf[32:64] = hashlib.sha256(bytes(buf[0:32]) + bytes(buf[64 : 64 + 96 * count])).digest()


def _sign_unverified(data: bytes, seed: bytes) -> bytes:
    """Signs bytes as the spec says without verifying them first (xrtpkg.sign refuses invalid bundles)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    body = bytearray(data)
    struct.pack_into("<Q", body, 24, struct.unpack_from("<Q", body, 24)[0] | 1)
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return bytes(body) + b"XRTSIG\x01\x00" + xrtpkg.public_key_of(seed) + key.sign(
        hashlib.sha256(bytes(body)).digest()) + bytes(24)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Key files: a.pub/a.key for SEED_A-like use through the CLI are made by keygen; these are the fixed ones."""
    folder = tmp_path_factory.mktemp("keys")
    for name, pub in (("a", PUB_A), ("b", PUB_B)):
        (folder / f"{name}.pub").write_text(pub.hex() + "\n")
    return folder


@pytest.fixture(scope="module")
def variants(sample_bundle, tmp_path_factory):
    """name -> (path of a bundle variant derived from the sample bundle)."""
    folder = tmp_path_factory.mktemp("signed")
    plain = sample_bundle.read_bytes()
    signed_a = xrtpkg.sign(plain, SEED_A)
    body = len(plain)
    out = {"unsigned": plain, "signed_a": signed_a, "signed_b": xrtpkg.sign(plain, SEED_B)}
    flipped = bytearray(signed_a)
    flipped[body - 100] ^= 0x10  # inside the last section's payload
    out["bit_flip"] = bytes(flipped)
    other = xrtpkg.to_bytes({"format": {"name": "xrtpkg", "version": "1.0"}}, [("x.bin", b"other", False)])
    out["other_signature"] = signed_a[:body] + xrtpkg.sign(other, SEED_A)[-TRAILER:]
    out["stripped"] = signed_a[:body]
    resealed = bytearray(signed_a[:body])
    resealed[24] = 0
    _reseal(resealed)
    out["stripped_resealed"] = bytes(resealed)
    garbage = bytearray(plain)
    count = struct.unpack_from("<I", garbage, 12)[0]
    garbage[64 : 64 + 96 * count] = bytes((i * 37 + 11) % 256 for i in range(96 * count))
    out["garbage_table_signed_b"] = _sign_unverified(bytes(garbage), SEED_B)
    paths = {}
    for name, data in out.items():
        paths[name] = folder / f"{name}.xrtpkg"
        paths[name].write_bytes(data)
    return paths


# (variant, policy) -> expected status; policy: trusted key names (files a.pub/b.pub) and require_signature.
REFUSALS = [
    ("unsigned", ("a",), False, "PERMISSION_DENIED"),
    ("unsigned", (), True, "PERMISSION_DENIED"),
    ("signed_b", ("a",), False, "PERMISSION_DENIED"),
    ("bit_flip", ("a",), False, "DATA_CORRUPT"),
    ("bit_flip", (), False, "DATA_CORRUPT"),
    ("other_signature", ("a",), False, "DATA_CORRUPT"),
    ("stripped", ("a",), False, "DATA_CORRUPT"),
    ("stripped_resealed", ("a",), False, "PERMISSION_DENIED"),
    ("stripped_resealed", (), True, "PERMISSION_DENIED"),
    # Nothing past the header is parsed before the policy: a garbage table signed by an untrusted key.
    ("garbage_table_signed_b", ("a",), False, "PERMISSION_DENIED"),
    ("garbage_table_signed_b", (), False, "DATA_CORRUPT"),
]
ACCEPTED = [
    ("unsigned", (), False),
    ("signed_a", (), False),
    ("signed_a", ("a",), False),
    ("signed_a", ("b", "a"), True),
    ("signed_a", (), True),
    ("signed_b", ("b",), False),
    ("stripped_resealed", (), False),
]


def _ids(case):
    return f"{case[0]}-trust[{','.join(case[1])}]-require{int(case[2])}"


# ----------------------------------------------------------------------------- Python (xrt.load)

@pytest.mark.parametrize("case", REFUSALS, ids=_ids)
def test_load_refuses(variants, keys, case):
    name, trusted, require, status = case
    with pytest.raises(xrt.Error) as info:
        xrt.load(variants[name], trusted_keys=[keys / f"{k}.pub" for k in trusted] or None,
                 require_signature=require)
    assert info.value.status == status, info.value
    if status == "PERMISSION_DENIED":
        assert isinstance(info.value, xrt.PermissionDenied) and isinstance(info.value, xrt.SignatureError)
        assert isinstance(info.value, PermissionError)
        assert "xrtc sign" in info.value.message or "not among" in info.value.message
    # The Python reader gives the same verdict.
    with pytest.raises(xrtpkg.FormatError) as finfo:
        xrtpkg.read(variants[name], trusted_keys=[keys / f"{k}.pub" for k in trusted] or None,
                    require_signature=require)
    assert finfo.value.status == status


@pytest.mark.parametrize("case", ACCEPTED, ids=_ids)
def test_load_accepts_and_runs_identically(variants, keys, case):
    name, trusted, require = case
    reference = xrt.load(variants["unsigned"])
    feeds = {reference.inputs[0].name: np.random.default_rng(0).standard_normal(
        [d if isinstance(d, int) else 1 for d in reference.inputs[0].shape]).astype(np.float32)}
    session = xrt.load(variants[name], trusted_keys=[keys / f"{k}.pub" for k in trusted] or None,
                       require_signature=require)
    want_signer = {"signed_a": PUB_A, "signed_b": PUB_B}.get(name)
    assert session.signer == want_signer
    assert xrtpkg.read(variants[name]).signer == want_signer
    got, ref = session.run(feeds), reference.run(feeds)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


def test_trusted_keys_as_raw_bytes(variants):
    assert xrt.load(variants["signed_a"], trusted_keys=[PUB_A]).signer == PUB_A
    assert xrt.load(variants["signed_a"], trusted_keys=PUB_A).signer == PUB_A  # one key on its own
    with pytest.raises(xrt.PermissionDenied, match=PUB_A.hex()):
        xrt.load(variants["signed_a"], trusted_keys=[PUB_B])


@pytest.mark.parametrize("bad, error, fragment", [
    ([], xrt.InvalidArgument, "empty"),
    ([b"\x01" * 31], xrt.InvalidArgument, "32-byte"),
    ([12345], xrt.InvalidArgument, "not int"),
])
def test_bad_trusted_keys_are_argument_errors(variants, bad, error, fragment):
    with pytest.raises(error, match=fragment):
        xrt.load(variants["signed_a"], trusted_keys=bad)


def test_bad_key_files(variants, tmp_path):
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(xrt.InvalidArgument, match="64 hex"):
        xrt.load(variants["signed_a"], trusted_keys=[bad])
    with pytest.raises(xrt.IOFailure):
        xrt.load(variants["signed_a"], trusted_keys=[tmp_path / "absent.pub"])


# ----------------------------------------------------------------------------- the C++ runner (C API)

@pytest.mark.parametrize("case", REFUSALS, ids=_ids)
def test_xrt_run_refuses(variants, keys, case):
    name, trusted, require, status = case
    args = [variants[name]] + [a for k in trusted for a in ("--trusted-key", keys / f"{k}.pub")]
    proc = run_tool("xrt-run", *args, *(["--require-signature"] if require else []))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"xrt-run: error: {status}: " in proc.stderr, proc.stderr
    assert proc.stdout.rstrip().endswith("FAILED xrt-run")


def test_xrt_run_accepts_trusted_and_reports_signer(variants, keys):
    proc = run_tool("xrt-run", variants["signed_a"], "--trusted-key", keys / "b.pub", "--trusted-key",
                    keys / "a.pub", "--require-signature", "--json", *SHAPE)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["signer"] == PUB_A.hex() and report["format_version"] == "1.2"  # 1.2: weight store
    proc = run_tool("xrt-run", variants["unsigned"], "--json", *SHAPE)
    assert proc.returncode == 0 and json.loads(proc.stdout)["signer"] is None
    proc = run_tool("xrt-run", variants["signed_a"], "--trusted-key", keys / "a.pub", *SHAPE)
    assert proc.returncode == 0 and f"signed by ed25519 key {PUB_A.hex()} (trusted)" in proc.stdout


def test_xrt_run_bad_key_file_is_a_usage_error(variants, tmp_path):
    bad = tmp_path / "bad.pub"
    bad.write_text("zz" * 32)
    for path, fragment in ((bad, "64 hex"), (tmp_path / "absent.pub", "cannot open")):
        proc = run_tool("xrt-run", variants["signed_a"], "--trusted-key", path)
        assert proc.returncode == 2 and fragment in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------- xrtc keygen / sign / inspect / run

def test_keygen_sign_inspect_run_round_trip(sample_bundle, tmp_path):
    key = tmp_path / "release"
    proc = run_tool("xrtc", "keygen", "-o", key)
    assert proc.returncode == 0, proc.stderr
    priv, pub = tmp_path / "release.key", tmp_path / "release.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    text = pub.read_text()
    assert len(text) == 65 and text.endswith("\n") and bytes.fromhex(text.strip()) == xrtpkg.public_key_of(priv)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left

    bundle = tmp_path / "m.xrtpkg"
    bundle.write_bytes(sample_bundle.read_bytes())
    os.chmod(bundle, 0o640)
    proc = run_tool("xrtc", "sign", bundle, "--key", priv)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o640  # in place keeps the file's mode
    signed = bundle.read_bytes()
    assert len(signed) == sample_bundle.stat().st_size + TRAILER
    assert xrtpkg.read(signed, trusted_keys=[pub]).signer.hex() == text.strip()

    info = json.loads(run_tool("xrtc", "inspect", bundle, "--json", check=True).stdout)
    assert info["signer"] == text.strip() and info["version"] == "1.2"  # 1.2: weight store
    assert f"ed25519 key {text.strip()}" in run_tool("xrtc", "inspect", bundle, check=True).stdout
    assert json.loads(run_tool("xrtc", "inspect", sample_bundle, "--json", check=True).stdout)["signer"] is None

    ok = run_tool("xrtc", "run", bundle, "--trusted-key", pub, "--require-signature", *SHAPE)
    assert ok.returncode == 0, ok.stderr
    other = tmp_path / "other"
    run_tool("xrtc", "keygen", "-o", other, check=True)
    refused = run_tool("xrtc", "run", bundle, "--trusted-key", f"{other}.pub", *SHAPE)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr, refused.stderr
    unsigned = run_tool("xrtc", "run", sample_bundle, "--require-signature", *SHAPE)
    assert unsigned.returncode == 1 and "not signed" in unsigned.stderr, unsigned.stderr

    # Re-signing replaces the signature (same length, new signer); -o writes elsewhere and refuses to overwrite.
    run_tool("xrtc", "sign", bundle, "--key", f"{other}.key", check=True)
    assert len(bundle.read_bytes()) == len(signed)
    assert xrtpkg.read(bundle).signer == bytes.fromhex((tmp_path / "other.pub").read_text())
    out = tmp_path / "copy.xrtpkg"
    run_tool("xrtc", "sign", sample_bundle, "--key", priv, "-o", out, check=True)
    assert out.read_bytes() == signed  # deterministic
    again = run_tool("xrtc", "sign", sample_bundle, "--key", priv, "-o", out)
    assert again.returncode == 11 and "--force" in again.stderr
    run_tool("xrtc", "sign", sample_bundle, "--key", priv, "-o", out, "--force", check=True)


def test_keygen_never_overwrites_without_force(tmp_path):
    run_tool("xrtc", "keygen", "-o", tmp_path / "k", check=True)
    before = (tmp_path / "k.key").read_bytes(), (tmp_path / "k.pub").read_bytes()
    proc = run_tool("xrtc", "keygen", "-o", tmp_path / "k")
    assert proc.returncode == 11 and "--force" in proc.stderr
    assert ((tmp_path / "k.key").read_bytes(), (tmp_path / "k.pub").read_bytes()) == before
    (tmp_path / "only.pub").write_text("x")  # either file existing blocks the pair
    assert run_tool("xrtc", "keygen", "-o", tmp_path / "only").returncode == 11
    assert not (tmp_path / "only.key").exists()
    run_tool("xrtc", "keygen", "-o", tmp_path / "k.key", "--force", check=True)  # a trailing .key is dropped
    assert (tmp_path / "k.key").read_bytes() != before[0]
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600


def test_sign_refuses_bad_input(sample_bundle, tmp_path):
    run_tool("xrtc", "keygen", "-o", tmp_path / "k", check=True)
    broken = tmp_path / "broken.xrtpkg"
    data = bytearray(sample_bundle.read_bytes())
    data[-5] ^= 1
    broken.write_bytes(bytes(data))
    proc = run_tool("xrtc", "sign", broken, "--key", tmp_path / "k.key")
    assert proc.returncode == 1 and "DATA_CORRUPT" in proc.stderr
    assert broken.read_bytes() == bytes(data)  # untouched
    proc = run_tool("xrtc", "sign", sample_bundle, "--key", tmp_path / "k.pub")
    assert proc.returncode == 2 and "not a PEM private key" in proc.stderr
    proc = run_tool("xrtc", "sign", sample_bundle, "--key", tmp_path / "absent.key")
    assert proc.returncode == 2 and "xrtc keygen" in proc.stderr


# ----------------------------------------------------------------------------- the format rules

def test_sign_api_is_deterministic_and_versioned(sample_bundle):
    plain = sample_bundle.read_bytes()
    a1, a2 = xrtpkg.sign(plain, SEED_A), xrtpkg.sign(plain, SEED_A)
    assert a1 == a2 and a1[: len(plain)] != plain
    b = xrtpkg.read(a1)
    # sample_cnn's bundle has a weight store (1.2); signing keeps its minor (1.2 includes 1.1's flag).
    assert (b.major, b.minor, b.file_size, b.signer) == (1, 2, len(plain), PUB_A)
    assert xrtpkg.read(plain).minor == 2
    bare = xrtpkg.to_bytes({"format": {"name": "xrtpkg", "version": "1.0"}}, [("w.bin", b"w", False)])
    assert xrtpkg.read(bare).minor == 0  # bundles without a store stay 1.0: 1.0 readers keep reading them
    assert xrtpkg.read(xrtpkg.sign(bare, SEED_A)).minor == 1
    assert xrtpkg.sign(xrtpkg.sign(plain, SEED_B), SEED_A) == a1  # re-signing replaces the signature
    with pytest.raises(xrtpkg.FormatError) as info:
        xrtpkg.sign(a1[:-1], SEED_A)
    assert info.value.status == "DATA_CORRUPT"


def test_every_bit_flip_of_a_signed_bundle_is_refused(tmp_path):
    """Every bit of a small signed bundle (body, key, signature, trailer): never accepted under a policy, and a flip
    in the signed bytes or the signature is DATA_CORRUPT from the signature check, before any other check."""
    plain = xrtpkg.to_bytes({"format": {"name": "xrtpkg", "version": "1.0"}}, [("w.bin", bytes(range(200)), False)])
    signed = bytearray(xrtpkg.sign(plain, SEED_A))
    body = len(plain)
    checks = {}
    for pos in range(len(signed)):
        for bit in range(8):
            signed[pos] ^= 1 << bit
            try:
                with pytest.raises(xrtpkg.FormatError) as info:
                    xrtpkg.read(bytes(signed), trusted_keys=[PUB_A])
            finally:
                signed[pos] ^= 1 << bit
            checks.setdefault(info.value.check, 0)
            checks[info.value.check] += 1
            if pos >= 64 and pos < body or body + 40 <= pos < body + 104:  # table/payloads, signature
                assert info.value.check == "signature", (pos, bit, info.value)
    assert set(checks) <= {"magic", "major", "section_count", "header_flags", "file_size", "signature", "trust"}
    assert checks["signature"] > 8 * (body - 64)
