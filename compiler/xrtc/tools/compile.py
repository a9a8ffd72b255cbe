"""`xrtc compile`: ONNX model -> .xrtpkg bundle."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass

from ..errors import InternalError, OutputExistsError, UsageError
from ..progress import Clock

log = logging.getLogger("xrtc.compile")


def _quiet_third_party(level: int) -> None:
    """ONNX Runtime and graphsurgeon print their own warnings (e.g. "UnsqueezeElimination cannot remove node");
    show them only with -v."""
    import onnxruntime as ort
    from onnx_graphsurgeon.logger import G_LOGGER

    debug = level <= logging.DEBUG
    ort.set_default_logger_severity(2 if debug else 3)
    G_LOGGER.severity = G_LOGGER.WARNING if debug else G_LOGGER.ERROR
    G_LOGGER.colors = False


def _check_output(model_path: str, output: str, force: bool) -> None:
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


@dataclass
class CompileResult:
    path: str
    size: int
    manifest: dict


def compile_model(model_path: str, target: str, output: str, force: bool = False,
                  clock: Clock | None = None, precompile: bool = True) -> CompileResult:
    """Compiles `model_path` for `target` into the bundle `output`. Raises XrtcError subclasses.
    `precompile` adds engine-compiled blobs (OpenVINO CPU) that load faster on the same engine build and CPU
    capabilities; without it the bundle's bytes do not depend on the compiling machine's CPU."""
    from ..targets import check_target

    clock = clock or Clock()
    check_target(target)
    _check_output(model_path, output, force)

    with clock.stage("import-tools", log):
        from .. import model_io, package, passes
        from ..targets import cpu

        _quiet_third_party(logging.getLogger("xrtc").getEffectiveLevel())

    with clock.stage("load-model", log):
        source = model_io.load_model(model_path)
        source_inputs, source_outputs = model_io.model_io(source.model)
    log.info("model %s: opset %s, %d nodes, inputs %s", source.name, model_io.default_opset(source.model),
             len(source.model.graph.node), ", ".join(i["name"] for i in source_inputs))

    manager = passes.PassManager(passes.default_pipeline(), clock)
    with clock.stage("run-passes", log):
        optimised, records = manager.run(source.model)
    inputs, outputs = model_io.model_io(optimised)
    if [i["name"] for i in inputs] != [i["name"] for i in source_inputs] or \
            [o["name"] for o in outputs] != [o["name"] for o in source_outputs]:
        raise InternalError("the pass pipeline changed the model's inputs or outputs; this is a bug in xrtc: please "
                            "report it with the model")

    with tempfile.TemporaryDirectory(prefix="xrtc-") as workdir:
        lowering = cpu.lower(optimised, workdir, clock, precompile=precompile)

    stem = os.path.splitext(source.name)[0]
    producer = " ".join(p for p in (source.model.producer_name, source.model.producer_version) if p)
    manifest = package.build_manifest(
        model_name=stem, inputs=inputs, outputs=outputs, variants=lowering.variants, excluded=lowering.excluded,
        source={"name": source.name, "sha256": source.sha256, "opset": model_io.default_opset(source.model),
                "producer": producer},
        tools=package.tool_versions(lowering.tools), command=package.normalised_command(source.name, target) + ("" if precompile else " --no-precompile"),
        passes=[r.to_json() for r in records])
    with clock.stage("write-bundle", log):
        size = package.write_bundle(output, manifest, lowering.payloads, force)
    return CompileResult(path=output, size=size, manifest=manifest)


class Compile:
    """Compile an ONNX model into a self-contained .xrtpkg bundle.

    Loads the model (external data only from inside its folder), runs the ONNX checker, runs the pass pipeline
    (name-nodes, raise-ir-version, infer-shapes, fold-constants, eliminate-dead-nodes, sort-topologically), then
    builds every variant the target has and orders them. For --target cpu: cpu-openvino (OpenVINO IR, fp32) and cpu-onnxruntime (graph optimised
    offline by ONNX Runtime, ORT_ENABLE_EXTENDED); OpenVINO is preferred when the estimated compute is >= 300 MFLOP.
    A variant that cannot be built is recorded under `excluded` with the reason. The same model always gives the
    same bytes. Progress goes to stderr, the summary to stdout.
    """

    name = "compile"

    def add_args(self, parser) -> None:
        parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (never modified)")
        parser.add_argument("--target", default="cpu", metavar="TARGET",
                            help="what to compile for: cpu (default); npu-intel, cuda, tensorrt are planned")
        parser.add_argument("-o", "--output", required=True, metavar="OUT.xrtpkg", help="the bundle to write")
        parser.add_argument("--force", action="store_true", help="overwrite OUT.xrtpkg if it exists")
        parser.add_argument("--no-precompile", dest="precompile", action="store_false",
                            help="leave out engine-compiled blobs (OpenVINO CPU): slower first load, but bytes that "
                                 "do not depend on this machine's CPU capabilities")

    def run(self, args) -> int:
        result = compile_model(args.model, args.target, args.output, args.force, precompile=args.precompile)
        manifest = result.manifest
        order = ", ".join(v["id"] for v in manifest["variants"])
        print(f"wrote {result.path} ({result.size} bytes)")
        print(f"variants (preference order): {order}")
        for variant in manifest["variants"]:
            print(f"  {variant['id']}: {variant['why']}")
        for item in manifest["excluded"]:
            print(f"excluded {item['target']}-{item['engine']}: {item['reason']}")
        sys.stdout.flush()
        return 0


__all__ = ["Compile", "CompileResult", "compile_model"]
