"""The package version, from one place: [project].version in pyproject.toml. Installed, it is read from the package
metadata (written from pyproject.toml at build); in a source checkout, from pyproject.toml itself. The C++ runtime's
xrt_version() gets the same string from CMake, which reads pyproject.toml too."""

from __future__ import annotations


def _read() -> str:
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    pyproject = os.path.join(os.path.dirname(here), "pyproject.toml")
    if os.path.exists(pyproject):  # a source checkout: the file is the truth
        import tomllib

        with open(pyproject, "rb") as f:
            project = tomllib.load(f).get("project", {})
        if project.get("name") == "xpuruntime":
            return project["version"]
    from importlib.metadata import version

    return version("xpuruntime")


VERSION = _read()
