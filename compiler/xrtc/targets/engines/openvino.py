"""The OpenVINO engine builder: OpenVINO IR converted in a child process (targets/_openvino_worker: determinism),
checked to compile on OpenVINO's CPU plugin, optionally with the CPU-compiled blob."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys

from ..base import BuildFailed, condense

log = logging.getLogger("xrtc.targets.openvino")

# INFERENCE_PRECISION_HINT per variant precision: always set, because a CPU may default to bf16 and a variant
# promises the precision it declares.
OPENVINO_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
OPENVINO_MIN_VERSION = ">=2026.0"  # oldest OpenVINO a CPU variant may load on (`requires.engine_version`)


def check_carries(model) -> None:
    """Raises BuildFailed for a model whose inputs or outputs are strings, sequences, maps or optionals: OpenVINO
    variants are not built for it (the runtime hands OpenVINO only numeric tensors)."""
    from ...model_io import model_io

    inputs, outputs = model_io(model)
    for role, specs in (("input", inputs), ("output", outputs)):
        for spec in specs:
            if "type" in spec or spec.get("dtype") == "string":
                kind = "a string tensor" if "type" not in spec else f"a {next(iter(spec['type']))}"
                raise BuildFailed(f"{role} {spec['name']!r} is {kind}; OpenVINO variants carry only numeric "
                                  "tensors (ONNX Runtime runs this model)")


def run_worker(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    """`python -m xrtc.targets._openvino_worker ARGS` in `cwd` (a child process: determinism, see the worker), with
    this xrtc first on its PYTHONPATH; its output captured, its exit status not checked."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "xrtc.targets._openvino_worker", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)


def build(model_bytes: bytes, workdir: str, tools: dict[str, str], *, prefix: str, precompile: bool = True,
          precision: str = "fp32") -> list[tuple[str, bytes, bool]]:
    """Converts in a child process (see _openvino_worker: determinism) and checks OpenVINO compiles it on CPU.
    Raises BuildFailed with a reason; records the engine version in `tools` when OpenVINO could be imported.
    Sections are named `<prefix>.xml|bin|blob`. With `precompile`, also returns the CPU-compiled blob and records in `tools` the build and
    CPU capabilities it is valid for (`openvino_blob`). `precision` fp16 stores fp16 weights and compiles with the
    f16 hint; bf16 compiles with the bf16 hint; int8 is a QDQ graph (OpenVINO runs its quantised parts as int8)."""
    if importlib.util.find_spec("openvino") is None:
        raise BuildFailed("OpenVINO is not installed; install it with `pip install xpuruntime[openvino]`")
    outdir = os.path.join(workdir, prefix)
    os.makedirs(outdir)
    with open(os.path.join(workdir, f"{prefix}.onnx"), "wb") as f:
        f.write(model_bytes)
    # Relative paths, run from workdir: engine messages then never contain the (random) temp folder.
    proc = run_worker([f"{prefix}.onnx", prefix, *(["--precompile"] if precompile else []),
                       *(["--compress-fp16"] if precision == "fp16" else []),
                       "--hint", OPENVINO_HINTS.get(precision, "f32")], workdir)
    if proc.stdout.strip() or proc.stderr.strip():
        log.debug("OpenVINO worker output:\n%s%s", proc.stdout, proc.stderr)
    result_path = os.path.join(outdir, "result.json")
    if proc.returncode != 0 or not os.path.exists(result_path):
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        # The child's output may hold addresses or paths: log it, keep it out of the (deterministic) manifest.
        log.warning("OpenVINO worker died (%s); its last output:\n%s", how, proc.stderr[-2000:])
        raise BuildFailed(f"OpenVINO crashed while lowering the model ({how})")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    if result["version"]:
        tools["openvino"] = result["version"]
    if not result["ok"]:
        verb = {"import": "OpenVINO cannot be imported", "convert": "OpenVINO cannot convert the model",
                "save": "OpenVINO cannot save the IR", "compile": "OpenVINO cannot compile the IR for CPU"}
        raise BuildFailed(f"{verb.get(result['stage'], 'OpenVINO failed')}: {condense(result['error'], workdir)}")
    with open(os.path.join(outdir, "model.xml"), "rb") as f:
        xml = f.read()
    with open(os.path.join(outdir, "model.bin"), "rb") as f:
        weights = f.read()
    payloads = [(f"{prefix}.xml", xml, True), (f"{prefix}.bin", weights, False)]
    if precompile and result.get("export_error"):
        log.warning("%s has no precompiled blob (loads compile the IR): %s", prefix, result["export_error"])
    elif precompile:
        with open(os.path.join(outdir, "model.blob"), "rb") as f:
            payloads.append((f"{prefix}.blob", f.read(), False))
        tools["openvino_blob_capabilities"] = result["capabilities"]
    return payloads
