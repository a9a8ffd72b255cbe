"""The ONNX Runtime engine builder: the graph optimised offline by ONNX Runtime (CPU provider), checked to load."""

from __future__ import annotations

import os

from ..base import BuildFailed, condense

ORT_OPTIONS = {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}  # not ALL: its layout transforms are machine specific
ORT_MIN_VERSION = ">=1.20"  # oldest ONNX Runtime a variant may load on (`requires.engine_version`)


def build(model_bytes: bytes, workdir: str, tools: dict[str, str], *, prefix: str) -> list[tuple[str, bytes, bool]]:
    """Optimises offline with ONNX Runtime and checks the result loads; the section is `<prefix>.onnx`. Raises BuildFailed with a reason.
    Records the engine version in `tools` (also when it fails: provenance says which version refused)."""
    import onnxruntime as ort

    tools["onnxruntime"] = ort.__version__
    path = os.path.join(workdir, f"{prefix}.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = path
    # Graph rewrites do not depend on thread counts; one thread keeps the offline step light.
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped pybind errors
        raise BuildFailed(f"ONNX Runtime cannot optimise the model: {condense(str(err), workdir)}") from err
    with open(path, "rb") as f:
        data = f.read()
    check = ort.SessionOptions()
    check.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    check.intra_op_num_threads = 1
    check.log_severity_level = 3
    try:
        ort.InferenceSession(data, check, providers=["CPUExecutionProvider"])
    except Exception as err:  # as above
        raise BuildFailed(f"ONNX Runtime cannot load its own optimised model: {condense(str(err), workdir)}") \
            from err
    return [(f"{prefix}.onnx", data, False)]
