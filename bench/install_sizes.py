"""Installed size of xpuruntime's core and of each extra, by distribution, each in a fresh virtual environment.

    .venv/bin/python bench/install_sizes.py [--wheel dist/xpuruntime-*.whl] [--extras openvino,cuda,...]

For the core and for each extra: a throwaway venv, `pip install WHEEL[extra]`, then every installed distribution's
size (the files its RECORD lists, as they are on disk), site-packages in total, and any file that two distributions
both claim (two packages owning one module). Prints one table per install and a summary; exits 1 when the core is
over CORE_LIMIT_MB or carries torch/openvino, or when any install has a file owned twice."""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import venv

CORE_LIMIT_MB = 300
NOT_IN_CORE = {"torch", "openvino"}
EXTRAS = ["openvino", "cuda", "cuda-compile", "torch", "all"]

# Runs inside each venv: {dist: bytes}, the files claimed by more than one dist, and site-packages' total size.
_MEASURE = r"""
import json, os, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
sizes, owners = {}, {}
for dist in metadata.distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    total = 0
    for f in dist.files or []:
        path = os.path.realpath(dist.locate_file(f))
        if os.path.isfile(path):
            total += os.path.getsize(path)
            if not path.endswith((".pyc", "RECORD", "INSTALLER", "REQUESTED")) and ".dist-info" not in path:
                owners.setdefault(path, set()).add(name)
    sizes[name] = sizes.get(name, 0) + total
site_total = 0
for root, _, files in os.walk(site):
    site_total += sum(os.path.getsize(os.path.join(root, f)) for f in files if os.path.isfile(os.path.join(root, f)))
shared = {p: sorted(o) for p, o in owners.items() if len(o) > 1}
print(json.dumps({"sizes": sizes, "shared": shared, "site_total": site_total}))
"""


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def install(wheel: str, extra: str | None, root: str) -> dict:
    env_dir = os.path.join(root, extra or "core")
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = os.path.join(env_dir, "bin", "python")
    spec = f"{wheel}[{extra}]" if extra else wheel
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", spec], check=True)
    out = subprocess.run([python, "-c", _MEASURE], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", help="the xpuruntime wheel (default: the newest dist/xpuruntime-*.whl)")
    ap.add_argument("--extras", default=",".join(EXTRAS), help="comma-separated extras to measure besides the core")
    ap.add_argument("--keep", metavar="DIR", help="install into DIR and keep the venvs (default: a temp folder)")
    args = ap.parse_args()
    wheel = args.wheel or max(glob.glob("dist/xpuruntime-*.whl"), key=os.path.getmtime, default=None)
    if not wheel:
        print("install_sizes: no wheel: run `make wheel` or pass --wheel", file=sys.stderr)
        return 2
    wheel = os.path.abspath(wheel)
    root = args.keep or tempfile.mkdtemp(prefix="xrt-sizes-")
    failures = []
    core = install(wheel, None, root)
    results = {"core": core}
    for extra in filter(None, args.extras.split(",")):
        results[extra] = install(wheel, extra, root)

    print(f"# Installed sizes (MB = 10^6 bytes), wheel {os.path.basename(wheel)}, Python {sys.version.split()[0]}\n")
    print("| install | site-packages MB | added to core MB | distributions added to core (MB) |")
    print("| --- | ---: | ---: | --- |")
    for name, res in results.items():
        added = {d: s for d, s in res["sizes"].items() if name == "core" or d not in core["sizes"]}
        listed = ", ".join(f"{d} {mb(s)}" for d, s in sorted(added.items(), key=lambda kv: -kv[1]) if s >= 1e6)
        extra_mb = "-" if name == "core" else mb(res["site_total"] - core["site_total"])
        print(f"| {'core' if name == 'core' else f'[{name}]'} | {mb(res['site_total'])} | {extra_mb} | {listed} |")
        if res["shared"]:
            failures.append(f"{name}: files owned by two distributions: "
                            + "; ".join(f"{p} ({', '.join(o)})" for p, o in list(res["shared"].items())[:5]))
    if core["site_total"] > CORE_LIMIT_MB * 1e6:
        failures.append(f"core: {mb(core['site_total'])} MB > {CORE_LIMIT_MB} MB")
    if NOT_IN_CORE & set(core["sizes"]):
        failures.append(f"core: installs {sorted(NOT_IN_CORE & set(core['sizes']))}")
    print()
    for f in failures:
        print(f"FAIL {f}")
    print("OK: core within limits, no file owned twice" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
