"""Child process that lowers an ONNX file to OpenVINO IR:
`python -m xrtc.targets._openvino_worker MODEL OUTDIR [--precompile] [--compress-fp16] [--hint f32|f16|bf16]`.

Why a child process: OpenVINO names nodes it creates (`Multiply_13020`) from a process-wide counter, so a second
conversion in the same process writes different XML. A fresh process starts the counter at the same value, which
makes the IR byte-identical from run to run. The child also keeps an engine crash from killing the compiler.

Telemetry: `openvino.convert_model` sends usage data (openvino_telemetry, opt-out by default) and, without network,
waits ~7 s at exit after a failed conversion. A compiler must not phone home, so the worker hides
`openvino_telemetry`; OpenVINO then uses its own no-op stub (`openvino.tools.ovc.telemetry_stub`).

Writes OUTDIR/model.xml, OUTDIR/model.bin, with --precompile OUTDIR/model.blob (the CPU-compiled model,
`CompiledModel.export_model()`: deterministic for one OpenVINO build and CPU capability set), and OUTDIR/result.json:
    {"ok": bool, "stage": "import|convert|save|compile|done", "error": str, "version": str,
     "capabilities": str, "export_error": str (only when --precompile failed)}   # the CPU's OPTIMIZATION_CAPABILITIES, space-separated (what the blob was compiled for)
Exit status 0 when result.json was written (whatever `ok` says); anything else means the child died.

Second mode, `python -m xrtc.targets._openvino_worker --weightless XML WEIGHTS OUTDIR [--hint H] [--fills 224,...]`:
compiles the IR (XML over the WEIGHTS file: the bundle's weight store, offsets already pointing into it) and exports
a blob *without* weights (`CACHE_MODE=OPTIMIZE_SIZE` + `ENABLE_WEIGHTLESS`: the blob records each constant's offset
into WEIGHTS; importing it takes `ENABLE_WEIGHTLESS` + `WEIGHTS_PATH`). Writes OUTDIR/weightless.blob after checking
that the blob imported over WEIGHTS computes exactly what the compiled IR computes, and OUTDIR/result.json:
    {"ok": bool, "error": str, "capabilities": str}
"""

from __future__ import annotations

import json
import os
import sys


def _write(outdir: str, result: dict) -> None:
    with open(os.path.join(outdir, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


def _onnx_io(model_path: str) -> tuple[list[str], list[str]]:
    """The ONNX graph's real inputs (initializers listed as inputs excluded) and outputs, in order."""
    import onnx

    graph = onnx.load(model_path, load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers], [o.name for o in graph.output]


def _require_same_io(model, model_path: str) -> None:
    """Raises ValueError saying why unless the IR's parameters and results are the ONNX inputs and outputs, in order
    (the runtime binds by position). convert_model drops unused or statically empty inputs (CastLike's `like`,
    `axes` of shape [0])."""
    onnx_in, onnx_out = _onnx_io(model_path)
    # A port may carry several tensor names (ONNX functions expanded inline add theirs): match any of them.
    ir_in = [p.get_names() for p in model.inputs]
    ir_out = [o.get_names() for o in model.outputs]
    if len(ir_in) != len(onnx_in) or any(n not in names for n, names in zip(onnx_in, ir_in)):
        shown = [sorted(names)[0] if names else "?" for names in ir_in]
        raise ValueError(f"OpenVINO's IR has inputs {shown}, the ONNX model {onnx_in} (it drops unused or empty "
                         "inputs)")
    if len(ir_out) != len(onnx_out) or any(n not in names for n, names in zip(onnx_out, ir_out)):
        shown = [sorted(names)[0] if names else "?" for names in ir_out]
        raise ValueError(f"OpenVINO's IR has outputs {shown}, the ONNX model {onnx_out}")


def _require_same_results(core, compiled, blob: bytes, hint: str, fills=(224, 256, 640, 32),
                          import_properties: dict | None = None) -> None:
    """Raises ValueError saying why unless the imported blob computes exactly what the compiled IR computes on
    seeded inputs.
    Guards against export/import bugs (seen: fused RoPE subgraphs come back wrong). Dynamic dims: the first (batch)
    as 1, the others tried as `fills` (the gate's: 224, 256, 640, 32, then the sizes the graph suggests) until the
    model accepts a shape (image models need realistic sizes)."""
    import io

    import numpy as np

    imported = core.import_model(io.BytesIO(blob), "CPU",
                                 {"INFERENCE_PRECISION_HINT": hint, **(import_properties or {})})
    last_error = ""
    for fill in fills:
        rng = np.random.default_rng(0)
        feeds = []
        for port in compiled.inputs:
            shape = [d.get_length() if d.is_static else (1 if i == 0 else fill)
                     for i, d in enumerate(port.get_partial_shape())]
            dtype = np.dtype(port.get_element_type().to_dtype())
            if dtype.kind == "f":
                feeds.append(rng.standard_normal(shape).astype(dtype))
            elif dtype.kind == "b":
                feeds.append(rng.integers(0, 2, size=shape).astype(bool))
            else:
                feeds.append(rng.integers(0, 3, size=shape).astype(dtype))
        try:
            a = compiled.create_infer_request().infer(feeds)
        except RuntimeError as err:  # this shape does not suit the model: try the next
            last_error = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            continue
        b = imported.create_infer_request().infer(feeds)
        for i, (x, y) in enumerate(zip(a.values(), b.values())):
            if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                raise ValueError(f"the imported blob's output {i} differs from the compiled IR's")
        return
    raise ValueError(f"no generated input shape runs the model to compare the blob with the IR ({last_error})")


def weightless_main(argv: list[str]) -> int:
    """The --weightless mode (module docstring)."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("xml")
    parser.add_argument("weights")
    parser.add_argument("outdir")
    parser.add_argument("--hint", default="f32")
    parser.add_argument("--fills", default="224,256,640,32", help="dynamic dimension sizes to try, comma-separated")
    args = parser.parse_args(argv)
    result = {"ok": False, "error": "", "capabilities": ""}
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # as in main()
    try:
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(args.xml, args.weights), "CPU",
                                      {"INFERENCE_PRECISION_HINT": args.hint, "CACHE_MODE": "OPTIMIZE_SIZE",
                                       "ENABLE_WEIGHTLESS": True})
        blob = compiled.export_model().getvalue()
        fills = tuple(int(f) for f in args.fills.split(",") if f)
        _require_same_results(core, compiled, blob, args.hint, fills,
                              {"ENABLE_WEIGHTLESS": True, "WEIGHTS_PATH": os.path.abspath(args.weights)})
        result["capabilities"] = " ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        with open(os.path.join(args.outdir, "weightless.blob"), "wb") as f:
            f.write(blob)
        result["ok"] = True
    except Exception as err:  # any OpenVINO failure is reported, not raised: the caller keeps the whole blob
        result["error"] = f"{type(err).__name__}: {err}"
    _write(args.outdir, result)
    return 0


def main(argv: list[str]) -> int:
    import argparse

    if argv[:1] == ["--weightless"]:
        return weightless_main(argv[1:])

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("outdir")
    parser.add_argument("--precompile", action="store_true")
    parser.add_argument("--compress-fp16", action="store_true", help="store weights as fp16 in the IR")
    parser.add_argument("--hint", default="f32", help="INFERENCE_PRECISION_HINT for the check and the blob")
    args = parser.parse_args(argv)
    precompile, model_path, outdir, hint = args.precompile, args.model, args.outdir, args.hint
    result = {"ok": False, "stage": "import", "error": "", "version": "", "capabilities": ""}
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import now fails -> OpenVINO's stub
    try:
        import openvino as ov
    except ImportError as err:
        result["error"] = f"{err}"
        _write(outdir, result)
        return 0
    result["version"] = ov.get_version()
    xml = os.path.join(outdir, "model.xml")
    try:
        result["stage"] = "convert"
        model = ov.convert_model(model_path)
        _require_same_io(model, model_path)
        result["stage"] = "save"
        ov.save_model(model, xml, compress_to_fp16=args.compress_fp16)
        result["stage"] = "compile"
        core = ov.Core()
        compiled = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
        if precompile:
            # Optional: without a blob the variant is still complete (the runtime compiles the IR).
            try:
                blob = compiled.export_model().getvalue()
                import onnx

                from xrtc.gate import DYNAMIC_FILLS, graph_sizes  # the gate's sizes, then the graph's own

                _require_same_results(core, compiled, blob, hint,
                                      (*DYNAMIC_FILLS, *graph_sizes(onnx.load(model_path))))
                result["capabilities"] = " ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
                with open(os.path.join(outdir, "model.blob"), "wb") as f:
                    f.write(blob)
            except Exception as err:  # as below: any OpenVINO failure is reported, not raised
                result["export_error"] = f"{type(err).__name__}: {err}"
        result["stage"] = "done"
        result["ok"] = True
    except Exception as err:  # OpenVINO raises RuntimeError subclasses and its own types; report any of them
        result["error"] = f"{type(err).__name__}: {err}"
    _write(outdir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
