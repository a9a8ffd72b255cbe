"""The machine a measurement was taken on: a fingerprint that says whether two benchmark results are comparable,
and the versions of everything that ran.

The fingerprint hashes what decides speed and does not change between runs on one machine: CPU model, logical
CPUs, usable CPUs (cgroup/affinity), memory size (GiB, rounded), architecture, OS kernel, and the NVIDIA GPUs
`nvidia-smi` lists when it exists. Host names and clocks are left out: two CI runners of one kind compare equal.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> int:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    except (ValueError, OSError, AttributeError):
        return 0


def _gpus() -> list[str]:
    """NVIDIA GPU names (nvidia-smi), empty where there is none or no driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def describe() -> dict:
    """{"fingerprint": 16 hex digits, "cpu_model", "cpus", "usable_cpus", "memory_gib", "arch", "os", "gpus"}."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    facts = {"cpu_model": _cpu_model(), "cpus": os.cpu_count() or 0, "usable_cpus": usable, "memory_gib": _memory_gib(),
             "arch": platform.machine(), "os": f"{platform.system()} {platform.release()}", "gpus": _gpus()}
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return {"fingerprint": digest, **facts}


def versions() -> dict[str, str]:
    """Versions of xrtc and of the engines and libraries a measurement depends on ("-" when not installed)."""
    from . import __version__

    out = {"xrtc": __version__, "python": platform.python_version()}
    for dist in ("xpuruntime", "onnxruntime", "onnxruntime-gpu", "openvino", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            if dist != "onnxruntime-gpu":
                out[dist] = "-"
    return out
