"""Manifest assembly and bundle writing (formats/xrtpkg.md, "Manifest").

Everything that goes into the manifest is deterministic: no timestamps, no absolute paths, no host names; the
`command` is normalised so it does not depend on where the output was written.
"""

from __future__ import annotations

import json
import os
from typing import Any

import xrtpkg

from . import __version__, weight_store
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


def manifest_variants(settled) -> list[dict]:
    """The manifest's `variants`: each built variant's entry with the accuracy the gate measured (none where it was
    not measured)."""
    entries = []
    for built in settled.built:
        accuracy = settled.outcomes[built.id].manifest_accuracy()
        entries.append(dict(built.entry, accuracy=accuracy) if accuracy is not None else dict(built.entry))
    return entries


# requires.cpu_arch spellings (the runtime's HostCpuArch()); Debian's and Go's names are accepted as aliases.
CPU_ARCHS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def check_cpu_arch(cpu_arch: str) -> str:
    """`--cpu-arch` in requires.cpu_arch spelling; UsageError names the choices."""
    from .errors import UsageError

    arch = CPU_ARCHS.get(cpu_arch.lower())
    if arch is None:
        raise UsageError(f"--cpu-arch {cpu_arch!r}: expected one of {', '.join(sorted(set(CPU_ARCHS.values())))}")
    return arch


def require_cpu_arch(manifest: dict, arch: str) -> None:
    """Restricts every variant to CPUs of `arch` (`requires.cpu_arch`; the runtime refuses the variant elsewhere,
    INCOMPATIBLE) and records the flag in provenance.command."""
    for variant in manifest["variants"]:
        variant.setdefault("requires", {})["cpu_arch"] = [arch]
    manifest["provenance"]["command"] += f" --cpu-arch {arch}"


def assemble(prep, target: str, settled, inputs: list[dict], outputs: list[dict], declared: list, precompile: bool):
    """The bundle's manifest and sections from what the compile decided: the built variants with their measured
    accuracy, golden data (the gate's first sample and ONNX Runtime's outputs on it), the plan, the decision log and
    provenance. `prep` is build.Prepared, `settled` settle.Settled (typed: this is where its records become the
    manifest's dicts); `declared` lists (output, shape the model declares but does not produce). Returns (manifest,
    payloads)."""
    from . import gate, model_io
    from .decisions import decision_log

    plan = prep.plan
    samples, references, unmeasured = settled.samples, settled.references, settled.unmeasured
    # Final bundle: the last built variants (the candidate's thread settings were on a copy), plus plan, decision
    # log and golden data.
    variants = manifest_variants(settled)
    excluded = [e.manifest_entry() for e in settled.left_out]
    payloads = [section for built in settled.built for section in built.sections]
    golden = None
    # Golden data is .npy (tensors; strings as unicode arrays): a model with sequences, maps or optionals has none
    # (`xrtc verify --model` checks such bundles against ONNX Runtime on the source model).
    has_values = any("type" in spec for spec in inputs + outputs)
    if references is not None and not unmeasured and not has_values:
        golden = {"reference": "onnxruntime CPU on the source model", "samples": samples.origin,
                  "inputs": [], "outputs": []}
        for i, (name, array) in enumerate(samples.feeds[0].items()):
            golden["inputs"].append({"name": name, "section": f"golden.in.{i}.npy"})
            payloads.append((f"golden.in.{i}.npy", gate.npy_bytes(array), True))
        for i, (name, array) in enumerate(references[0].items()):
            golden["outputs"].append({"name": name, "section": f"golden.out.{i}.npy"})
            payloads.append((f"golden.out.{i}.npy", gate.npy_bytes(array), True))

    shape_notes = [f"output {name!r}: the model declares {gate._shape_text(shape)}, but ONNX Runtime and every "
                   f"variant produce {gate._shape_text(next(o['shape'] for o in outputs if o['name'] == name))} on "
                   "the samples; the bundle declares the shape produced (the model's declaration is wrong: fix "
                   "it in the exporter)" for name, shape in declared]
    log_json = decision_log(plan, variants, excluded, settled.fallbacks,
                            plan.warnings + shape_notes + settled.warnings, gate_fp32=set(settled.gate_fp32))
    payloads.append(("plan.json", plan.dumps().encode(), True))
    payloads.append(("decisions.json", json.dumps(log_json, sort_keys=True, indent=1).encode(), True))

    source = prep.source
    stem = os.path.splitext(source.name)[0]
    producer = " ".join(p for p in (source.model.producer_name, source.model.producer_version) if p)
    command = normalised_command(source.name, target)
    if not precompile:
        command += " --no-precompile"
    if plan.policy:
        command += " --policy/--plan (see provenance.policy and the plan section)"
    if prep.calibration:
        command += " --calibration (see provenance.calibration)"
    manifest = build_manifest(
        model_name=stem, inputs=inputs, outputs=outputs, variants=variants, excluded=excluded,
        source={"name": source.name, "sha256": source.sha256, "opset": model_io.default_opset(source.model),
                "producer": producer},
        tools=tool_versions(settled.tools), command=command,
        passes=[r.to_json() for r in prep.records + settled.records], policy=plan.policy)
    manifest["plan"] = "plan.json"
    manifest["decisions"] = "decisions.json"
    if golden:
        manifest["golden"] = golden
    if settled.unverified:
        manifest["unverified"] = {"reason": settled.unverified, "requested": "--allow-unverified"}
    for name, shape in declared:
        next(o for o in manifest["model"]["outputs"] if o["name"] == name)["declared_shape"] = shape
    if prep.calibration:
        manifest["provenance"]["calibration"] = {"samples": len(prep.calibration), "sha256": prep.calibration_digest}
    payloads = weight_store.share(manifest, payloads)  # weights once, shared by the variants (1.2)
    payloads = weight_store.drop_unpicked_blobs(manifest, payloads)  # blobs only where they pay at load
    from .targets.engines.openvino_weightless import make_blobs_weightless

    # The kept blob without its weights again (they are read from the store at import)
    payloads = make_blobs_weightless(manifest, payloads, [*gate.DYNAMIC_FILLS, *gate.graph_sizes(source.model)])
    return manifest, payloads
