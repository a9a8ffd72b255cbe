"""Ed25519 edge cases (issue 10, class 7): small-order public keys and non-canonical encodings are refused.

A public key of small order verifies forged signatures: for the identity point, (R = identity, S = 0) satisfies
[S]B = R + [k]A for every message, so `require_signature` alone was satisfied by anyone and `xrtc inspect` said
"signature valid". The test derives the 8 small-order points itself (RFC 8032 curve arithmetic, below), forges
a signature for each (trying every small-order R with S = 0), and checks that both readers (Python: `xrtpkg`;
C++: libxrt through `xrt.load` and `xrt-run`) and `xrtc inspect` refuse every one, as they refuse S >= L and
non-canonical R / A encodings. ~3 s.
"""

from __future__ import annotations

import hashlib

import pytest

import xpuruntime as xrt
import xrtpkg
from xrt_testutil import ROOT, run_tool

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
TINY = ROOT / "formats" / "golden" / "tiny_model.xrtpkg"
SEED = hashlib.sha256(b"xrt signature edge cases TEST-ONLY key").digest()


def _add(p1, p2):
    (x1, y1), (x2, y2) = p1, p2
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


def _x_from_y(y: int):
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x2 = u * pow(v, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if (x * x - x2) % P == 0 else None


def _encode(point, sign_flip: bool = False) -> bytes:
    x, y = point
    return (y | (((x & 1) ^ sign_flip) << 255)).to_bytes(32, "little")


def _order(point) -> int:
    acc, k = point, 1
    while acc != (0, 1):
        acc, k = _add(acc, point), k + 1
        if k > 8:
            return 0
    return k


def small_order_points() -> list[tuple[int, int]]:
    """The 8 points of order dividing 8 (RFC 8032's curve), derived here and checked by their order: (0, 1),
    (0, -1), (+-sqrt(-1), 0) and the four of order 8, whose doubles are the order-4 points."""
    i = _x_from_y(0)
    candidates = {(0, 1), (0, P - 1), (i, 0), (P - i, 0)}
    # Halve (i, 0): doubling gives y' = (y^2 + x^2) / (2 + x^2 - y^2) (a = -1), which is 0 when x^2 = -y^2; the
    # curve equation -x^2 + y^2 = 1 + d x^2 y^2 then reads d y^4 + 2 y^2 - 1 = 0, so y^2 = (-1 +- sqrt(1 + d)) / d.
    root = _sqrt((1 + D) % P)
    for y2 in ((-1 + root) * pow(D, -1, P) % P, (-1 - root) * pow(D, -1, P) % P):
        y = _sqrt(y2)
        if y is None:
            continue
        for yy in (y, P - y):
            x = _x_from_y(yy)
            if x is not None:
                candidates |= {(x, yy), (P - x, yy)}
    points = sorted(p for p in candidates if _order(p))
    assert len(points) == 8 and sorted(_order(p) for p in points) == [1, 2, 4, 4, 8, 8, 8, 8]
    return points


def _sqrt(a: int):
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    return x if (x * x - a) % P == 0 else None


def _signed_with(key: bytes, signature: bytes) -> bytes:
    """The tiny model signed by SEED, with the trailer's key and signature replaced (the signed bytes stay)."""
    signed = xrtpkg.sign(TINY.read_bytes(), SEED)
    return signed[:-120] + key + signature + bytes(24)


def _library_accepts(key: bytes, signature: bytes, data: bytes) -> bool:
    """What `cryptography` (OpenSSL) alone says, i.e. the readers' verdict before the fix."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, hashlib.sha256(data[:-128]).digest())
    except (InvalidSignature, ValueError):
        return False
    return True


def _refused_everywhere(tmp_path, data: bytes, name: str, inspect: bool = True) -> None:
    with pytest.raises(xrtpkg.FormatError) as info:
        xrtpkg.read(data)
    assert (info.value.status, info.value.check) == ("DATA_CORRUPT", "signature"), info.value.message
    path = tmp_path / f"{name}.xrtpkg"
    path.write_bytes(data)
    with pytest.raises(xrt.DataCorrupt, match="signature"):
        xrt.load(path, require_signature=True)
    if inspect:  # a subprocess (~0.3 s): done for one key of each order and for each encoding case
        proc = run_tool("xrtc", "inspect", path)
        assert proc.returncode != 0 and "signature valid" not in proc.stdout, proc.stdout


def test_small_order_keys_are_refused(tmp_path):
    points = small_order_points()
    forged = 0
    for n, a in enumerate(points):
        for flip in (False, True):  # both sign bits: for x = 0 the flipped one is a non-canonical encoding
            key = _encode(a, flip)
            for r in points:
                signature = _encode(r) + bytes(32)  # S = 0
                data = _signed_with(key, signature)
                forged += _library_accepts(key, signature, data)
                with pytest.raises(xrtpkg.FormatError) as info:
                    xrtpkg.read(data)
                assert info.value.status == "DATA_CORRUPT", (key.hex(), info.value.message)
                assert not xrtpkg._signing.verify_signature(key, signature, hashlib.sha256(data[:-128]).digest())
            _refused_everywhere(tmp_path, _signed_with(key, _encode((0, 1)) + bytes(32)), f"small{n}{int(flip)}",
                                inspect=not flip and n in (0, 1, 2, 4))
            with pytest.raises(ValueError, match="small order|canonical"):
                xrtpkg._signing.trusted_key_set([key])
    print(f"\n8 small-order points x 2 sign bits x 8 R: {forged} of 128 forged signatures verify with the "
          "library alone; 0 with the readers")
    assert forged > 0  # the identity key with R = identity, S = 0 forges: the test exercises a real hole
    # The forged identity-key bundle passes `require_signature` in neither runtime (checked above) nor xrt-run:
    path = tmp_path / "identity.xrtpkg"
    path.write_bytes(_signed_with(_encode((0, 1)), _encode((0, 1)) + bytes(32)))
    proc = run_tool("xrt-run", path, "--require-signature", "--quiet")
    assert proc.returncode != 0 and "DATA_CORRUPT" in proc.stderr + proc.stdout, proc.stderr


def test_non_canonical_signatures_and_keys_are_refused(tmp_path):
    good = xrtpkg.sign(TINY.read_bytes(), SEED)
    key, signature = good[-120:-88], good[-88:-24]
    assert xrtpkg.read(good, require_signature=True).signer == key
    s = int.from_bytes(signature[32:], "little")
    # S + L: the same scalar mod L, not reduced (the classic malleability); fits in 32 bytes since S < L < 2^253.
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    _refused_everywhere(tmp_path, good[:-88] + malleated + bytes(24), "s_plus_l")
    _refused_everywhere(tmp_path, good[:-88] + signature[:32] + L.to_bytes(32, "little") + bytes(24), "s_eq_l")
    # Non-canonical R: y >= p (p + 1 encodes the identity's y = 1 a second way).
    r_bad = (P + 1).to_bytes(32, "little")
    _refused_everywhere(tmp_path, good[:-88] + r_bad + signature[32:] + bytes(24), "r_noncanonical")
    # Non-canonical A: y >= p.
    for y in (P, P + 1, P + 18):
        _refused_everywhere(tmp_path, _signed_with(y.to_bytes(32, "little"), signature), f"a_{y - P}")
    # The genuine signature still verifies in both readers.
    path = tmp_path / "good.xrtpkg"
    path.write_bytes(good)
    session = xrt.load(path, trusted_keys=[key])
    assert session.signer == key
    assert "signature valid" in run_tool("xrtc", "inspect", path, check=True).stdout
