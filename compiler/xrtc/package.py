"""Manifest assembly and bundle writing (formats/xrtpkg.md, "Manifest").

Everything that goes into the manifest is deterministic: no timestamps, no absolute paths, no host names; the
`command` is normalised so it does not depend on where the output was written.
"""

from __future__ import annotations

import os
from typing import Any

import xrtpkg

from . import __version__
from .errors import OutputExistsError, XrtcError


def tool_versions(engines: dict[str, str]) -> dict[str, str]:
    """Versions of every tool whose behaviour shapes the bundle's bytes."""
    import onnx
    import onnx_graphsurgeon

    tools = {"xrtc": __version__, "onnx": onnx.__version__, "onnx_graphsurgeon": onnx_graphsurgeon.__version__}
    tools.update(engines)
    return tools


def normalised_command(source_name: str, target: str) -> str:
    """The equivalent command, independent of the output path and of the model's folder."""
    return f"xrtc compile {source_name} --target {target}"


def build_manifest(*, model_name: str, inputs: list[dict], outputs: list[dict], variants: list[dict],
                   excluded: list[dict], source: dict[str, Any], tools: dict[str, str], command: str,
                   passes: list[dict], policy: dict | None = None) -> dict:
    return {
        "format": {"name": "xrtpkg", "version": f"{xrtpkg.FORMAT_MAJOR}.{xrtpkg.FORMAT_MINOR}"},
        "model": {"name": model_name, "inputs": inputs, "outputs": outputs},
        "variants": variants,
        "excluded": excluded,
        "provenance": {"source": source, "tools": tools, "command": command, "policy": policy or {},
                       "passes": passes},
    }


def write_bundle(path: str, manifest: dict, payloads: list[tuple[str, bytes, bool]], force: bool) -> int:
    """Writes atomically; OutputExistsError unless `force`. Returns the file size."""
    try:
        xrtpkg.write(path, manifest, payloads, force=force)
    except FileExistsError as err:
        raise OutputExistsError(f"{path} exists; pass --force to overwrite it") from err
    except OSError as err:
        raise XrtcError(f"cannot write {path}: {err.strerror or err}") from err
    return os.path.getsize(path)
