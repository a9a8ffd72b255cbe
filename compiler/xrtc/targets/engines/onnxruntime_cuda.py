"""The ONNX Runtime CUDA engine builder (`--target cuda`'s `cuda-onnxruntime` variant): the graph transformer-optimised
offline by onnxruntime.transformers' optimizer (BERT-like fusions: Attention, SkipLayerNormalization, BiasGelu /
FastGelu, where its patterns match) and, at fp16, converted by the optimizer's own fp16 conversion (inputs and outputs
kept in their types, its default list of numerically sensitive ops kept fp32). fp32 and tf32 variants are the fp32
graph optimised; tf32 is the CUDA provider's `use_tf32` at run time.

Only Python fusions run here (opt_level 0): no ONNX Runtime session optimises the graph offline, so nothing in the
artifact depends on the compiling machine's provider; ONNX Runtime's own CUDA-provider rewrites run at load, on the
device. The result is deterministic for one onnxruntime version (recorded in provenance).
"""

from __future__ import annotations

import collections

import onnx

from ..base import BuildFailed, condense

ORT_CUDA_MIN_VERSION = ">=1.20"  # oldest ONNX Runtime a variant may load on (`requires.engine_version`)
# The optimizer's fused ops it reports, in the order they are named in notes.
_FUSED = ("Attention", "MultiHeadAttention", "EmbedLayerNormalization", "SkipLayerNormalization",
          "LayerNormalization", "BiasGelu", "FastGelu", "Gelu", "GemmFastGelu")


def build(model: onnx.ModelProto, precision: str, tools: dict[str, str], *, prefix: str,
          static_shapes: bool) -> tuple[list[tuple[str, bytes, bool]], dict, list[str]]:
    """Returns (payloads, options, notes): the section `<prefix>.onnx`, the variant's engine options (the CUDA
    provider's `enable_cuda_graph` where every input dim is static, `use_tf32`), and notes naming the fusions and
    the graph's ops. Raises BuildFailed with a reason. Records the engine version in `tools`."""
    import onnxruntime as ort

    tools["onnxruntime"] = ort.__version__
    try:
        from onnxruntime.transformers import optimizer
    except ImportError as err:  # sympy (its symbolic shape inference) is in the cuda-compile extra
        raise BuildFailed(f"onnxruntime.transformers' optimizer cannot be imported ({err}); install "
                          "xpuruntime[cuda-compile]") from err
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        optimised = optimizer.optimize_model(copy, model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                                             use_gpu=True)
        fused = {op: n for op, n in optimised.get_fused_operator_statistics().items() if n}
        if precision == "fp16":
            # keep_io_types: the manifest's inputs/outputs stay as the source declares them; the optimizer's
            # default op_block_list keeps its numerically sensitive ops in fp32.
            optimised.convert_float_to_float16(keep_io_types=True)
    except Exception as err:  # noqa: BLE001 - the optimizer raises untyped errors; the reason goes to `excluded`
        raise BuildFailed(f"onnxruntime.transformers' optimizer cannot optimise the model: "
                          f"{condense(f'{type(err).__name__}: {err}', '.')}") from err
    data = optimised.model.SerializeToString(deterministic=True)
    ops = collections.Counter(n.op_type for n in optimised.model.graph.node)
    named = [op for op in _FUSED if fused.get(op)]
    fused_text = ", ".join(f"{op} x{fused[op]}" for op in named) or "none"
    notes = [f"onnxruntime.transformers optimizer (BERT patterns): fused {fused_text}"
             + ("; attention not fused (its patterns do not match this graph's attention subgraph)"
                if ops.get("Softmax") and not (fused.get("Attention") or fused.get("MultiHeadAttention")) else ""),
             "graph ops: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items()))]
    if precision == "fp16":
        notes.append("fp16: converted by the optimizer (inputs/outputs keep their types; its default op block list "
                     "stays fp32)")
    options = {"enable_cuda_graph": "1" if static_shapes else "0", "use_tf32": "1" if precision == "tf32" else "0"}
    if not static_shapes:
        notes.append("CUDA graph off: input dims are dynamic (a captured graph replays one shape)")
    return [(f"{prefix}.onnx", data, False)], options, notes


def fused_ops(model_bytes: bytes) -> dict[str, int]:
    """{op type: count} of the optimizer's fused ops in a built artifact (for explain and tests)."""
    model = onnx.load_from_string(model_bytes)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return {op: ops[op] for op in _FUSED if ops.get(op)}
