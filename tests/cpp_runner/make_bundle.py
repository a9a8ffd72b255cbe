"""Builds a one-variant (cpu-openvino, fp32) .xrtpkg from an ONNX model, for testing the C++ runtime and xrt-run
before the real compiler (xrtc) exists.

    python tests/cpp_runner/make_bundle.py model.onnx model.xrtpkg [--force] [--option KEY=VALUE ...]

The OpenVINO IR comes from openvino.convert_model + save_model(compress_to_fp16=False); its XML is stored
zstd-compressed as `cpu-openvino.xml` and its weights uncompressed (so the runtime can hand OpenVINO an aligned
pointer into the mapped file) as `cpu-openvino.bin`. The manifest follows formats/xrtpkg.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_ROOT / "formats" / "python"))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import openvino as ov  # noqa: E402
import xrtpkg  # noqa: E402

VARIANT_ID = "cpu-openvino"


def _dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _shape(value_info: onnx.ValueInfoProto) -> list:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _io(values) -> list[dict]:
    return [{"name": v.name, "dtype": _dtype_name(v.type.tensor_type.elem_type), "shape": _shape(v)} for v in values]


def build(
    onnx_path: Path, out_path: Path, *, options: dict[str, str | None] | None = None, force: bool = False
) -> dict:
    """Writes the bundle and returns its manifest. `options` adds to (or, with None values, removes from) the
    variant's OpenVINO options, which default to {"INFERENCE_PRECISION_HINT": "f32"}."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    inputs = _io([v for v in model.graph.input if v.name not in initializers])
    outputs = _io(model.graph.output)

    ov_model = ov.convert_model(str(onnx_path))
    # The runtime passes tensors by index, in manifest order: the IR must keep the ONNX order.
    ov_inputs = [p.get_any_name() for p in ov_model.inputs]
    ov_outputs = [p.get_any_name() for p in ov_model.outputs]
    if ov_inputs != [i["name"] for i in inputs] or ov_outputs != [o["name"] for o in outputs]:
        raise SystemExit(f"IR port order differs from the ONNX graph: {ov_inputs} / {ov_outputs}")
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
        xml = xml_path.read_bytes()
        weights = xml_path.with_suffix(".bin").read_bytes()

    # fp32 variants pin f32 (OpenVINO's CPU default is bf16 on AVX512-BF16 machines); a None value drops a key.
    variant_options = {"INFERENCE_PRECISION_HINT": "f32", **(options or {})}
    variant_options = {k: v for k, v in variant_options.items() if v is not None}
    source = onnx_path.read_bytes()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    manifest = {
        "format": {"name": "xrtpkg", "version": "1.0"},
        "model": {"name": onnx_path.stem, "inputs": inputs, "outputs": outputs},
        "variants": [
            {
                "id": VARIANT_ID,
                "target": "cpu",
                "device": "cpu",
                "engine": "openvino",
                "precision": "fp32",
                "artifacts": {"model": f"{VARIANT_ID}.xml", "weights": f"{VARIANT_ID}.bin"},
                "options": variant_options,
                "requires": {"engine": "openvino", "engine_version": ">=2026.0", "devices": ["CPU"]},
                "why": "test bundle: the only variant (tests/cpp_runner/make_bundle.py)",
            }
        ],
        "excluded": [],
        "provenance": {
            "source": {
                "name": onnx_path.name,
                "sha256": hashlib.sha256(source).hexdigest(),
                "opset": opset,
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
            },
            "tools": {"onnx": onnx.__version__, "openvino": ov.get_version()},
            "command": f"tests/cpp_runner/make_bundle.py {onnx_path.name}",
            "policy": {},
            "passes": [],
        },
    }
    xrtpkg.write(
        out_path,
        manifest,
        [(f"{VARIANT_ID}.xml", xml, True), (f"{VARIANT_ID}.bin", weights, False)],
        force=force,
    )
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--force", action="store_true", help="overwrite the output")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra OpenVINO compile option for the variant (repeatable)")
    args = parser.parse_args(argv)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--option expects KEY=VALUE, got {item!r}")
        options[key] = value
    build(args.onnx, args.output, options=options, force=args.force)
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
