"""A source build without the system libraries stops at configure with ONE message naming all of them and the
packages to install (cmake/XrtCheckSystemDeps.cmake), not with the first find_package() failure.

The libraries stay installed (other builds on this machine use them): CMake's find root is pointed at an empty folder
and pkg-config at none, so every search comes back empty exactly as on a machine without the -dev packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xrt_testutil import ROOT


def cmake() -> str:
    found = shutil.which("cmake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("cmake is not installed")
    return found


def configure(tmp_path: Path, *defines: str) -> subprocess.CompletedProcess:
    empty = tmp_path / "empty-root"
    empty.mkdir()
    env = {**os.environ, "PKG_CONFIG_LIBDIR": str(empty), "PKG_CONFIG_PATH": ""}
    return subprocess.run(
        [cmake(), "-S", str(ROOT), "-B", str(tmp_path / "build"), f"-DCMAKE_FIND_ROOT_PATH={empty}",
         "-DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY", "-DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY",
         "-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY", "-DXRT_BUILD_OPENVINO=OFF", "-DXRT_BUILD_CUDA=OFF", *defines],
        capture_output=True, text=True, env=env, timeout=120)


def test_missing_libraries_are_named_in_one_message(tmp_path):
    proc = configure(tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert err.count("CMake Error") == 1, err
    assert "xpuruntime needs system libraries that are not installed" in err, err
    for what in ("OpenSSL 3", "nlohmann_json", "zstd", "libzip", "GoogleTest"):
        assert what in err, (what, err)
    assert ("apt-get install libssl-dev nlohmann-json3-dev libzstd-dev libzip-dev pkg-config libgtest-dev"
            in " ".join(err.split())), err
    assert "Could not find a package configuration file" not in err, err


def test_optional_parts_are_not_asked_for(tmp_path):
    proc = configure(tmp_path, "-DXRT_BUILD_RUNNER=OFF", "-DXRT_BUILD_TESTS=OFF")
    assert proc.returncode != 0
    assert "libzip" not in proc.stderr and "GoogleTest" not in proc.stderr, proc.stderr
    assert "nlohmann-json3-dev" in proc.stderr, proc.stderr
