"""Replays tests/security/regressions/*.xrtpkg (fuzzer findings and parity bugs, each named for what it broke)
through both readers: each must be rejected with a typed verdict, the same in Python and C++, and the verdict must
be the one recorded in the file name's `.<STATUS>.xrtpkg` suffix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_mutation import cpp_verdict, libxrt, py_verdict  # noqa: E402, F401  (libxrt is a fixture)

REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("*.xrtpkg"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.name for p in REGRESSIONS])
def test_regression(path, libxrt):  # noqa: F811
    data = path.read_bytes()
    want = path.name.split(".")[-2]
    assert py_verdict(data) == want
    assert cpp_verdict(libxrt, data) == want
