"""An application finds the installed runtime with find_package(xpuruntime) and runs a bundle through the C API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import xpuruntime
from xrt_testutil import ROOT


def test_find_package_app_runs_bundle(sample_bundle, tmp_path):
    config_dir = Path(xpuruntime.__file__).parent / "cmake"
    assert (config_dir / "xpuruntimeConfig.cmake").exists(), "the wheel must ship the CMake package config"
    bin_dir = Path(sys.executable).parent
    cmake = str(bin_dir / "cmake") if (bin_dir / "cmake").exists() else "cmake"
    build = tmp_path / "app"
    gen = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={bin_dir / 'ninja'}"] if (bin_dir / "ninja").exists() else []
    subprocess.run([cmake, "-S", str(ROOT / "samples" / "cpp_app"), "-B", str(build), *gen,
                    f"-Dxpuruntime_DIR={config_dir}"], check=True, capture_output=True)
    subprocess.run([cmake, "--build", str(build)], check=True, capture_output=True)
    proc = subprocess.run([str(build / "xrt_sample_app"), str(sample_bundle)], capture_output=True, text=True,
                          env={**os.environ, "XRT_BACKEND_PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "output probabilities: float32 [1,10]" in proc.stdout
    assert "openvino" in proc.stdout
