"""Manifest assembly and bundle writing (formats/xrtpkg.md, "Manifest").

Everything that goes into the manifest is deterministic: no timestamps, no absolute paths, no host names; the
`command` is normalised so it does not depend on where the output was written.
"""

from __future__ import annotations

import os
from typing import Any

import xrtpkg

from . import __version__
from .errors import OutputExistsError, UsageError, XrtcError


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


def check_output(model_path: str, output: str, force: bool) -> None:
    """Fails before any work if the output cannot or must not be written."""
    if os.path.isdir(output):
        raise UsageError(f"-o {output} is a folder; give a file path such as {os.path.join(output, 'model.xrtpkg')}")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise UsageError(f"-o {output}: the folder {folder} does not exist; create it first")
    if os.path.exists(model_path) and os.path.exists(output) and os.path.samefile(model_path, output):
        raise UsageError(f"-o {output} is the input model; xrtc never overwrites its input. Choose another path")
    if os.path.exists(output) and not force:
        raise OutputExistsError(f"{output} exists; pass --force to overwrite it")
