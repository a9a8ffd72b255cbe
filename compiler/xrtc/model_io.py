"""Loading and checking the source model; describing its inputs and outputs.

Contract of `load_model`: the file is read once and never written; external data is read only from regular files
inside the model's folder (after resolving symlinks), so a model cannot make xrtc read anything else (ONNX external
data has had several path-traversal CVEs: `../`, `a/../../`, absolute paths, symlinks). The returned model holds
all tensor data in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass

import onnx
from google.protobuf.message import DecodeError

from xpuruntime.onnx_tensors import iter_tensors

from .errors import ExternalDataError, ModelCheckError, ModelLoadError, UnsupportedModelError

log = logging.getLogger("xrtc.model_io")

# The protobuf wire format caps one message at 2 GiB; bigger models need external data throughout the pipeline.
_PROTOBUF_LIMIT = 2**31 - 1

# ONNX TensorProto element types that bundles can carry, by NumPy name (formats/xrtpkg.md, "dtype").
_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
# Nesting cap of a value `type` (formats/xrtpkg.md, "Value types"); the runtime refuses deeper ones.
MAX_TYPE_DEPTH = 8
_MAP_KEYS = ("string", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8")


@dataclass
class SourceModel:
    """The loaded source model. `model` holds all data in memory; `path`/`sha256` describe the file as given."""

    path: str
    name: str  # file name without folders, e.g. "ppocrv4_det.onnx"
    sha256: str
    model: onnx.ModelProto
    external_files: tuple[str, ...]  # external-data locations read, as written in the model (sorted)


def load_model(path: str) -> SourceModel:
    """Reads, parses, resolves external data and runs the ONNX checker. Raises ModelLoadError, ExternalDataError,
    ModelCheckError or UnsupportedModelError (over 2 GiB) naming the file and what to do."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file. Give the path of an .onnx model")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: not a regular file. Give the path of an .onnx model")
    too_big = ("ONNX files over 2 GiB cannot be parsed. Save the model with external data "
               "(onnx.save(..., save_as_external_data=True))")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > _PROTOBUF_LIMIT:  # checked before reading: never hold a file we must refuse
                raise UnsupportedModelError(f"{path}: {size} bytes; {too_big}")
            data = f.read(_PROTOBUF_LIMIT + 1)
    except OSError as err:
        raise ModelLoadError(f"{path}: cannot read the file: {err.strerror or err}") from err
    if len(data) > _PROTOBUF_LIMIT:
        raise UnsupportedModelError(f"{path}: over {_PROTOBUF_LIMIT} bytes; {too_big}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ModelLoadError(f"{path} is not an ONNX model: the protobuf does not parse ({err}). "
                             "Give a .onnx file exported by an ONNX exporter") from err
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelLoadError(f"{path} is not an ONNX model: it has no IR version or no graph. "
                             "Give a .onnx file exported by an ONNX exporter")
    folder = os.path.dirname(os.path.abspath(path))
    external = _load_external_data(model, folder, path, budget=_PROTOBUF_LIMIT - len(data))
    if model.ByteSize() > _PROTOBUF_LIMIT:
        raise UnsupportedModelError(f"{path}: the model with its external data is over 2 GiB; xrtc does not "
                                    "support models that large yet")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelCheckError(f"{path} failed the ONNX checker: {_first_lines(str(err))}. "
                              "Fix or re-export the model (onnx.checker.check_model reproduces this)") from err
    return SourceModel(path=path, name=os.path.basename(path), sha256=hashlib.sha256(data).hexdigest(),
                       model=model, external_files=tuple(sorted(external)))


def _first_lines(text: str, lines: int = 6, chars: int = 800) -> str:
    kept = "\n".join(text.strip().splitlines()[:lines])
    return kept if len(kept) <= chars else kept[: chars - 3] + "..."


def _resolve_location(location: str, folder: str, model_path: str, tensor: str) -> str:
    """Returns the real path of an external-data file, or raises ExternalDataError if it is unsafe or missing."""
    where = f"{model_path}: tensor {tensor!r} stores its data in {location!r}"
    fix = "keep external-data files next to the model (or below its folder) and name them by relative paths"
    if not location:
        raise ExternalDataError(f"{model_path}: tensor {tensor!r} has external data without a location")
    if "\0" in location:
        raise ExternalDataError(f"{model_path}: tensor {tensor!r} stores its data in {location!r}, which contains a "
                                f"NUL byte (no file can have that name); refused: {fix}")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", location):
        raise ExternalDataError(f"{where}, an absolute path; refused: {fix}")
    if ".." in re.split(r"[\\/]", location):
        raise ExternalDataError(f"{where}, which goes up out of the model's folder ('..'); refused: {fix}")
    real_folder = os.path.realpath(folder)
    resolved = os.path.realpath(os.path.join(real_folder, location))
    if os.path.commonpath([real_folder, resolved]) != real_folder:
        raise ExternalDataError(f"{where}, which resolves (through a symlink) to {resolved}, outside the "
                                f"model's folder {real_folder}; refused: {fix}")
    if not os.path.isfile(resolved):
        raise ExternalDataError(f"{where}, but that file does not exist in {real_folder} (or is not a regular "
                                "file). Copy the model together with its data files")
    return resolved


def _load_external_data(model: onnx.ModelProto, folder: str, model_path: str, budget: int) -> set[str]:
    """Reads every external tensor's bytes into the model (in place). Validates each location, and that the bytes
    still fit in ``budget`` (what the 2 GiB protobuf limit leaves), before opening: a model whose external data
    cannot fit is refused from the sizes alone, without reading (or holding) any of it."""
    locations: set[str] = set()
    pending = []  # (tensor, location, resolved path, offset, end): everything is checked before anything is read
    total = 0
    for tensor in iter_tensors(model):  # the walk the runtime's external-data guard uses: the same tensors
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            del tensor.external_data[:]  # stray entries on an inline tensor: the runtime would refuse them
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        resolved = _resolve_location(location, folder, model_path, tensor.name)
        try:
            offset = int(info.get("offset", "0") or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError as err:
            raise ExternalDataError(f"{model_path}: tensor {tensor.name!r} has a non-integer external-data "
                                    f"offset/length ({info}); re-export the model") from err
        size = os.path.getsize(resolved)
        end = size if length is None else offset + length
        if offset < 0 or end < offset or end > size:
            raise ExternalDataError(f"{model_path}: tensor {tensor.name!r} reads bytes [{offset}, {end}) of "
                                    f"{location!r}, which has only {size} bytes; the data file is truncated or "
                                    "belongs to another model")
        total += end - offset
        if total > budget:
            raise UnsupportedModelError(f"{model_path}: the model with its external data is over 2 GiB (its "
                                        f"external data alone is at least {total} bytes); xrtc does not support "
                                        "models that large yet")
        pending.append((tensor, location, resolved, offset, end))
    for tensor, location, resolved, offset, end in pending:
        with open(resolved, "rb") as f:
            f.seek(offset)
            raw = f.read(end - offset)
        if len(raw) != end - offset:
            raise ExternalDataError(f"{model_path}: tensor {tensor.name!r}: {location!r} shrank while it was read; "
                                    "run xrtc again once the data files are complete")
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        locations.add(location)
    if locations:
        log.debug("read external data from %s", ", ".join(sorted(locations)))
    return locations


def _shape_of(tensor_type) -> list | None:
    if not tensor_type.HasField("shape"):
        return None  # rank unknown
    dims: list = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def _value_type(tp, where: str, depth: int = 1):
    """The manifest `type` of an ONNX TypeProto: a dtype name for a tensor (inside a sequence, map or optional),
    else {"sequence": T} / {"optional": T} / {"map": {"key": K, "value": T}}."""
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        elem = tp.tensor_type.elem_type
        if elem not in _DTYPES:
            raise UnsupportedModelError(f"{where} holds element type {elem}, which xrtc does not support; "
                                        f"supported: {', '.join(_DTYPES.values())}")
        return _DTYPES[elem]
    if depth > MAX_TYPE_DEPTH:  # sequences, maps and optionals count; the tensor inside does not
        raise UnsupportedModelError(f"{where} nests types deeper than {MAX_TYPE_DEPTH} levels, which bundles do not "
                                    "carry")
    if kind == "sequence_type":
        return {"sequence": _value_type(tp.sequence_type.elem_type, where, depth + 1)}
    if kind == "optional_type":
        return {"optional": _value_type(tp.optional_type.elem_type, where, depth + 1)}
    if kind == "map_type":
        key = _DTYPES.get(tp.map_type.key_type)
        if key not in _MAP_KEYS:
            raise UnsupportedModelError(f"{where} is a map keyed by element type {tp.map_type.key_type}; bundles "
                                        f"carry maps keyed by {', '.join(_MAP_KEYS)}")
        return {"map": {"key": key, "value": _value_type(tp.map_type.value_type, where, depth + 1)}}
    raise UnsupportedModelError(f"{where} is a {kind or 'untyped value'}; bundles carry tensors, sequences, maps "
                                "and optionals")


def is_value(spec: dict) -> bool:
    """Whether an input/output spec is a sequence, map or optional (a `type`, no dtype)."""
    return "type" in spec


def describe_value(value: onnx.ValueInfoProto, role: str) -> dict:
    """{"name", "dtype", "shape"} for a graph input/output tensor, {"name", "type"} for a sequence, map or optional;
    UnsupportedModelError for types bundles cannot carry."""
    kind = value.type.WhichOneof("value")
    if kind in ("sequence_type", "map_type", "optional_type"):
        return {"name": value.name, "type": _value_type(value.type, f"{role} {value.name!r}")}
    if kind != "tensor_type":
        raise UnsupportedModelError(f"{role} {value.name!r} is a {kind or 'untyped value'}, not a tensor; xrtc "
                                    "supports tensors, sequences, maps and optionals")
    elem = value.type.tensor_type.elem_type
    if elem not in _DTYPES:
        type_name = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else elem
        raise UnsupportedModelError(f"{role} {value.name!r} has element type {type_name}, which xrtc does not "
                                    f"support; supported: {', '.join(_DTYPES.values())}")
    return {"name": value.name, "dtype": _DTYPES[elem], "shape": _shape_of(value.type.tensor_type)}


def model_io(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    """The model's real inputs (graph inputs that are not initializers, as IR < 4 models list them) and outputs."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [describe_value(v, "input") for v in model.graph.input if v.name not in initializers]
    outputs = [describe_value(v, "output") for v in model.graph.output]
    return inputs, outputs


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None
