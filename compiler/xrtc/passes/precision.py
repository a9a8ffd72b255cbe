"""Precision passes: fp16 conversion and int8 post-training quantisation, both from ONNX Runtime's own tools
(`onnxruntime.transformers.float16`, `onnxruntime.quantization`), which are what ORT users already trust.

Inputs and outputs keep their declared dtypes (casts at the boundary): a bundle's interface does not change with
its precision.
"""

from __future__ import annotations

import os
import tempfile

import onnx

from ..errors import XrtcError
from .base import Pass, PassState

# Ops kept in fp32 on top of ONNX Runtime's DEFAULT_OP_BLOCK_LIST: numerically sensitive (exponentials and
# reductions overflow or lose the small terms in fp16) or index-producing ops whose fp16 rounding changes results.
SENSITIVE_OPS = ("Exp", "Log", "Pow", "ReduceMean", "ReduceSum", "ReduceProd", "ReduceLogSumExp", "Softmax",
                 "LogSoftmax", "LayerNormalization", "InstanceNormalization", "Resize", "ArgMax", "ArgMin",
                 "Range", "CumSum", "Erf")


def fp16_op_block_list(extra: list[str]) -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(SENSITIVE_OPS) | set(extra))


def _float_initializers(model: onnx.ModelProto, dtype: int) -> int:
    return sum(1 for t in model.graph.initializer if t.data_type == dtype)


class ConvertFloat16(Pass):
    """Converts float32 compute to float16 with ONNX Runtime's converter, inputs and outputs kept as declared.
    Ops in `op_block_list` and nodes in `node_block_list` stay fp32 (casts around them); the manager's record lists
    the nodes kept (matched).

    changed = number of float16 initializers after the pass (weights stored at half size).
    """

    name = "convert-float16"
    optional = False  # later stages rely on it: a failure stops the compile
    description = "convert float32 compute and weights to float16 (onnxruntime.transformers.float16)"
    PARAMS = {
        "op_block_list": (list, None, "op types kept in fp32 (default: ORT's list + SENSITIVE_OPS)"),
        "node_block_list": (list, None, "node names kept in fp32"),
    }

    def apply(self, state: PassState) -> int:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        ops = self.params["op_block_list"] if self.params["op_block_list"] is not None else fp16_op_block_list([])
        nodes = list(self.params["node_block_list"] or [])
        model = state.model
        state.matched.extend(n.name for n in model.graph.node if n.op_type in ops or n.name in nodes)
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=list(ops),
                                             node_block_list=nodes, disable_shape_infer=False)
        state.model = converted
        state.graph.toposort()  # the converter appends its boundary Casts at the end of the node list
        return _float_initializers(converted, onnx.TensorProto.FLOAT16)


class PrecisionPassFailed(XrtcError):
    """A precision pass's tool cannot convert the model; the build falls back (prefer) or fails (fixed)."""


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, samples: list[dict]) -> None:
        self._samples = iter(samples)

    def get_next(self):
        return next(self._samples, None)


class QuantizeInt8(Pass):
    """Static int8 quantisation (QDQ format: QuantizeLinear/DequantizeLinear pairs that both ONNX Runtime and
    OpenVINO execute as int8) calibrated on real samples. Activations uint8 (asymmetric), weights int8 (symmetric,
    per output channel by default): the pairing both engines run with VNNI/AMX on x86. Nodes in `nodes_to_exclude`
    and ops in `op_types_to_exclude` stay in float.

    changed = number of QuantizeLinear nodes in the result.
    """

    name = "quantize-int8"
    optional = False  # later stages rely on it: a failure stops the compile
    description = "int8 post-training quantisation, QDQ, calibrated on --calibration samples (onnxruntime.quantization)"
    PARAMS = {
        "per_channel": (bool, True, "per-output-channel weight scales"),
        "method": (str, "minmax", "calibration method: minmax | entropy | percentile"),
        "nodes_to_exclude": (list, None, "node names kept in float"),
        "op_types_to_exclude": (list, None, "op types kept in float"),
        "samples": (int, 0, "number of calibration samples (recorded; the samples themselves are passed apart)"),
    }

    def __init__(self, calibration: list[dict] | None = None, **overrides) -> None:
        super().__init__(**overrides)
        self.calibration = calibration or []
        self.notes: list[str] = []

    def apply(self, state: PassState) -> int:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.registry import QDQRegistry

        model = state.model
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset < 13:
            # QDQ with per-channel scales (DequantizeLinear `axis`) and ORT's QDQ fusions need opset >= 13.
            from onnx import version_converter

            model = version_converter.convert_version(model, 13)
        excluded_ops = set(self.params["op_types_to_exclude"] or [])
        op_types = sorted(set(QDQRegistry) - excluded_ops)
        exclude = sorted(set(self.params["nodes_to_exclude"] or [])
                         | {n.name for n in model.graph.node if n.op_type in excluded_ops})
        state.matched.extend(exclude)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[self.params["method"]]
        # onnxruntime 1.32's bias-scale adjustment raises on some per-channel Gemm biases (ValueError "truth value of
        # an array"): retry once without it, which only matters for biases that overflow int32.
        attempts = ({}, {"QDQDisableWeightAdjustForInt32Bias": True})
        quantized = None
        for extra in attempts:
            try:
                with tempfile.TemporaryDirectory(prefix="xrtc-int8-") as tmp:
                    out = os.path.join(tmp, "int8.onnx")
                    attempt = onnx.ModelProto()
                    attempt.CopyFrom(model)  # quantize_static moves tensors of its input to external data in place
                    quantize_static(attempt, out, _Reader(self.calibration), quant_format=QuantFormat.QDQ,
                                    op_types_to_quantize=op_types, per_channel=self.params["per_channel"],
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    nodes_to_exclude=exclude, calibrate_method=method,
                                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False, **extra},
                                    calibration_providers=["CPUExecutionProvider"])
                    quantized = onnx.load(out)
                self.notes = [f"retried with {sorted(extra)} after: {first_error}"] if extra else []
                break
            except Exception as err:  # onnxruntime.quantization raises plain Python errors
                first_error = f"{type(err).__name__}: {str(err)[:200]}"
        if quantized is None:
            raise PrecisionPassFailed(f"ONNX Runtime's quantiser cannot quantise this model ({first_error})")
        del quantized.metadata_props[:]  # may name the temp folder
        state.model = quantized
        return sum(1 for n in quantized.graph.node if n.op_type == "QuantizeLinear")
