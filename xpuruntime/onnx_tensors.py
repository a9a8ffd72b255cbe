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


def check_inline(model_bytes: bytes):
    """Parses an ONNX artifact and refuses it (ExternalDataError) unless it is a plain ONNX model holding every
    tensor inline: any tensor with external data, anywhere; fields this onnx package does not know (an engine with
    a newer schema could read a tensor from them); a model without a graph. Returns the parsed ModelProto."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_from_string(bytes(model_bytes))  # parses only: never follows external data
    except (DecodeError, RuntimeError, ValueError) as err:  # RecursionError is a RuntimeError
        raise ExternalDataError(f"the artifact is not an ONNX model ({type(err).__name__}: {str(err)[:200]})") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        raise ExternalDataError("the artifact is not an ONNX model (no graph or no ir_version)")
    if _has_unknown_fields(model):
        raise ExternalDataError(f"the ONNX artifact holds fields onnx {onnx.__version__} does not know; the "
                                "runtime cannot check them (rebuild the bundle with xrtc, or update onnx)")
    external = [t.name or "(unnamed)" for t in iter_tensors(model) if uses_external_data(t)]
    if external:
        raise ExternalDataError(f"the ONNX artifact stores tensor(s) {external[:5]} as external data (a file "
                                "path); bundles carry every tensor inline: rebuild the bundle with xrtc compile")
    return model
