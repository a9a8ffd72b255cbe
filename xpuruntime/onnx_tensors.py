"""Every tensor an ONNX model can hold, and the "no external data, anywhere" check (SECURITY.md, "The engine
boundary"). Shared by the compiler (xrtc reads a source model's external data through ``iter_tensors``) and by the
ONNX Runtime backend (a bundle's ONNX artifact must carry every tensor inline), so both see the same tensors.

Where tensors live in an ONNX ``ModelProto`` (onnx.proto3): graph initializers and sparse initializers; node
attributes (``t``, ``tensors``, ``sparse_tensor``, ``sparse_tensors``; a Constant's ``value``/``sparse_value``
are such attributes); subgraphs in attributes (``g``, ``graphs``: If, Loop, Scan, at any depth); model-local
functions (their nodes, and their attributes' default values, ``attribute_proto``); and training info
(``initialization`` and ``algorithm`` graphs). A sparse tensor holds two tensors, ``values`` and ``indices``.
"""

from __future__ import annotations

from typing import Iterator

# Nesting at which a model is refused rather than walked: protobuf's own parser stops at 100 levels of messages,
# and every graph level costs at least two (node, attribute), so real models never come near.
MAX_GRAPH_DEPTH = 64


class ExternalDataError(ValueError):
    """An ONNX artifact names external data (a file), or is not a plain ONNX model."""


def _sparse(sparse) -> Iterator:
    yield sparse.values
    yield sparse.indices


def _attribute_tensors(attr, graphs: list, depth: int) -> Iterator:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    if attr.HasField("sparse_tensor"):
        yield from _sparse(attr.sparse_tensor)
    for sparse in attr.sparse_tensors:
        yield from _sparse(sparse)
    if attr.HasField("g"):
        graphs.append((attr.g, depth + 1))
    graphs.extend((g, depth + 1) for g in attr.graphs)


def _nodes_tensors(nodes, graphs: list, depth: int) -> Iterator:
    for node in nodes:
        for attr in node.attribute:
            yield from _attribute_tensors(attr, graphs, depth)


def iter_tensors(model) -> Iterator:
    """Yields every ``TensorProto`` of ``model`` (an ``onnx.ModelProto``), wherever it is held. Iterative (no
    recursion): a hostile model's nesting cannot exhaust the stack; deeper than MAX_GRAPH_DEPTH raises
    ExternalDataError."""
    graphs = [(model.graph, 0)]
    for info in model.training_info:
        graphs += [(info.initialization, 0), (info.algorithm, 0)]
    for function in model.functions:
        yield from _nodes_tensors(function.node, graphs, 0)
        for attr in function.attribute_proto:
            yield from _attribute_tensors(attr, graphs, 0)
    while graphs:
        graph, depth = graphs.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise ExternalDataError(f"the ONNX model nests subgraphs over {MAX_GRAPH_DEPTH} levels deep")
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from _sparse(sparse)
        yield from _nodes_tensors(graph.node, graphs, depth)


def uses_external_data(tensor) -> bool:
    """Whether the tensor's bytes are elsewhere: stored as EXTERNAL, or carrying external_data entries at all
    (an engine may honour the entries whatever data_location says)."""
    return tensor.data_location == 1 or len(tensor.external_data) > 0  # TensorProto.EXTERNAL == 1


def _has_unknown_fields(root) -> bool:
    """Whether any message in `root` carries fields its schema does not define (iterative; ~20 ms for the 1,500
    messages of a ResNet-50; ByteSize() before and after DiscardUnknownFields() cost 0.3 s)."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    stack = [root]
    while stack:
        message = stack.pop()
        if len(UnknownFieldSet(message)):
            return True
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            if repeated:
                stack.extend(value)
            else:
                stack.append(value)
    return False


def model_proto_class():
    """onnx.ModelProto without importing the onnx package: its __init__ (helper, ml_dtypes, the C++ checker) costs
    ~14 MB of RSS and 0.3-1.7 s on a cold process, on every first load of an ONNX Runtime variant, for a parser that
    is onnx's generated protobuf module alone. That module is executed from onnx's own file; it registers the same
    descriptors in protobuf's default pool as ``import onnx`` does, so the class is onnx.ModelProto itself whichever
    is imported first (tests/runtime/test_onnx_light_import.py)."""
    global _MODEL_PROTO
    if _MODEL_PROTO is None:
        import sys

        if "onnx" in sys.modules:
            _MODEL_PROTO = sys.modules["onnx"].ModelProto
        else:
            import importlib.util
            import os

            package = importlib.util.find_spec("onnx")  # locates the package without running its __init__
            if package is None or not package.submodule_search_locations:
                raise ExternalDataError("the onnx package is not installed; the runtime needs it to check ONNX "
                                        "artifacts (pip install onnx)")
            path = os.path.join(list(package.submodule_search_locations)[0], "onnx_ml_pb2.py")
            spec = importlib.util.spec_from_file_location("xpuruntime._onnx_ml_pb2", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _MODEL_PROTO = module.ModelProto
    return _MODEL_PROTO


_MODEL_PROTO = None


def _onnx_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("onnx")


def check_inline(model_bytes: bytes, store_size: int | None = None):
    """Parses an ONNX artifact and refuses it (ExternalDataError) unless it is a plain ONNX model holding every
    tensor inline: any tensor with external data, anywhere; fields this onnx package does not know (an engine with
    a newer schema could read a tensor from them); a model without a graph. Returns the parsed ModelProto.

    With `store_size` (the variant has a weight store, formats/xrtpkg.md "Weight store"), top-level graph
    initializers may instead reference the store (store_refs checks each reference); any other external data is
    still refused."""
    from google.protobuf.message import DecodeError

    try:
        serialized = bytes(model_bytes)
        model = model_proto_class()()
        decoded = model.ParseFromString(serialized)  # parses only: never follows external data
        if decoded is not None and decoded != len(serialized):
            raise DecodeError(f"parsed {decoded} of {len(serialized)} bytes")
    except (DecodeError, RuntimeError, ValueError) as err:  # RecursionError is a RuntimeError
        raise ExternalDataError(f"the artifact is not an ONNX model ({type(err).__name__}: {str(err)[:200]})") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ExternalDataError("the artifact is not an ONNX model (no graph or no ir_version)")
    if _has_unknown_fields(model):
        raise ExternalDataError(f"the ONNX artifact holds fields onnx {_onnx_version()} does not know; the "
                                "runtime cannot check them (rebuild the bundle with xrtc, or update onnx)")
    external = [t.name or "(unnamed)" for t in iter_tensors(model) if uses_external_data(t)]
    if store_size is not None and external:
        # iter_tensors yields each top-level initializer once; store_refs accepts only those, each checked.
        refs = store_refs(model, STORE_LOCATION, store_size)
        if len(refs) == len(external):
            return model
        top = {t.name for t, _, _ in refs}
        external = [name for name in external if name not in top] or external
    if external:
        raise ExternalDataError(f"the ONNX artifact stores tensor(s) {external[:5]} as external data (a file "
                                "path); bundles carry every tensor inline: rebuild the bundle with xrtc compile")
    return model


# Fixed-size ONNX element types a store entry may hold, with their byte widths (TensorProto.DataType numbers).
# (bfloat16 has no NumPy type to hand ONNX Runtime, so it stays inline.)
STORE_NUMPY_TYPES = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "?", 10: "<f2",
                     11: "<f8", 12: "<u4", 13: "<u8"}
# The external data location of a store reference: the variant's `weights` artifact (a role, never a path).
STORE_LOCATION = "xrt:weights"


def store_arrays(model, store) -> tuple[list[str], list]:
    """(names, arrays): NumPy views (no copy) into `store` (the verified weight store, any buffer) for the
    initializers of `model` that reference it, after store_refs checked every reference."""
    import numpy as np

    names, arrays = [], []
    for tensor, offset, length in store_refs(model, STORE_LOCATION, len(store)):
        dtype = np.dtype(STORE_NUMPY_TYPES[tensor.data_type])
        array = np.frombuffer(store, dtype=dtype, count=length // dtype.itemsize, offset=offset)
        names.append(tensor.name)
        arrays.append(array.reshape(tuple(tensor.dims)))
    return names, arrays


def np_width(data_type: int) -> int | None:
    import numpy as np

    name = STORE_NUMPY_TYPES.get(data_type)
    return None if name is None else np.dtype(name).itemsize


def store_refs(model, store_name: str, store_size: int) -> list[tuple]:
    """[(initializer, offset, length)] for the top-level initializers of `model` that reference the weight store.
    Refuses (ExternalDataError) a reference that is not exactly {location: store_name, offset, length} with
    decimal integers, that reads past `store_size`, whose length is not the tensor's element count times its
    element width, that names a type without a fixed width, or that also carries inline data: the bytes ONNX
    Runtime gets are exactly the store's, and it never opens a file."""
    refs = []
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        name = tensor.name or "(unnamed)"
        entries = {e.key: e.value for e in tensor.external_data}
        if tensor.data_location != 1 or len(entries) != len(tensor.external_data) or \
                set(entries) != {"location", "offset", "length"} or entries["location"] != store_name:
            raise ExternalDataError(f"initializer {name!r}: external data other than the bundle's weight store "
                                    f"{store_name!r} ({sorted(entries.items(), key=repr)[:3]})")  # keys may be bytes (not UTF-8)
        if not all(v.isdigit() and len(v) <= 19 for v in (entries["offset"], entries["length"])):
            raise ExternalDataError(f"initializer {name!r}: weight store offset/length are not integers")
        offset, length = int(entries["offset"]), int(entries["length"])
        if offset + length > store_size:
            raise ExternalDataError(f"initializer {name!r}: reads [{offset}, {offset + length}) past the "
                                    f"{store_size}-byte weight store")
        width = np_width(tensor.data_type)
        count = 1
        for dim in tensor.dims:
            if dim < 0:
                raise ExternalDataError(f"initializer {name!r}: negative dimension {dim}")
            count *= dim
        if width is None or count * width != length:
            raise ExternalDataError(f"initializer {name!r}: {length} store bytes do not hold dims {list(tensor.dims)} "
                                    f"of data type {tensor.data_type}")
        if tensor.raw_data or any(len(getattr(tensor, f)) for f in (
                "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")):
            raise ExternalDataError(f"initializer {name!r}: both inline data and a weight store reference")
        refs.append((tensor, offset, length))
    return refs
