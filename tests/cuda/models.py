"""Small ONNX models for the cuda target's tests, built with onnx.helper (checked in as code, F1)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def mlp(batch=4, dims=(32, 64, 48, 16), act="Relu", seed=0) -> onnx.ModelProto:
    """x[batch, d0] -> (MatMul + Add + act) per layer -> y[batch, dn] (no activation after the last layer)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    cur = "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        inits += [_init(f"w{i}", (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)),
                  _init(f"b{i}", (rng.standard_normal(b) * 0.1).astype(np.float32))]
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"mm{i}"], name=f"MatMul_{i}"),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"h{i}"], name=f"Add_{i}")]
        cur = f"h{i}"
        if i < len(dims) - 2:
            if act == "Gelu":
                nodes.append(helper.make_node("Gelu", [cur], [f"a{i}"], name=f"Gelu_{i}"))
            else:
                nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"{act}_{i}"))
            cur = f"a{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dims[-1]])], inits)
    opset = 20 if act == "Gelu" else 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def bert(batch=2, seq=8, hidden=64, heads=4, layers=2, ffn=128, vocab=50, seed=0) -> onnx.ModelProto:
    """A BERT-style encoder in the shape `torch.onnx.export` gives for HF BertModel: input_ids and attention_mask
    (int64), embeddings (word Gather + constant position/token-type rows) + LayerNorm, the extended mask
    ((1 - mask) * finfo.min), per layer Q/K/V MatMul+Add with Reshape/Transpose head splits (layer 0 with constant
    shapes, later layers with Shape/Gather/Concat shape arithmetic), scores / sqrt(d) + mask, Softmax, P@V,
    Transpose/Reshape back, output projection + residual + LayerNorm (the fused op in layer 0, the decomposed
    ReduceMean/Sub/Pow/Sqrt/Div form after), FFN with erf-GELU (decomposed), residual + LayerNorm; outputs
    last_hidden_state and pooler_output (tanh(W h[:, 0] + b))."""
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    inits, nodes = [], []

    def w(name, *shape, scale=None):
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        inits.append(_init(name, (rng.standard_normal(shape) * scale).astype(np.float32)))
        return name

    def c(name, value, dtype=np.float32):
        inits.append(_init(name, np.asarray(value, dtype)))
        return name

    def node(op, ins, outs, name, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))
        return outs[0]

    def layernorm(x, prefix, fused):
        g, b = c(prefix + ".g", 1 + 0.1 * rng.standard_normal(hidden)), c(prefix + ".b", 0.1 * rng.standard_normal(hidden))
        if fused:
            return node("LayerNormalization", [x, g, b], [prefix + ".out"], prefix, axis=-1, epsilon=1e-12)
        axes = c(prefix + ".axes", [-1], np.int64)
        mean = node("ReduceMean", [x, axes], [prefix + ".mean"], prefix + "/ReduceMean")
        d = node("Sub", [x, mean], [prefix + ".d"], prefix + "/Sub")
        sq = node("Pow", [d, c(prefix + ".two", 2.0)], [prefix + ".sq"], prefix + "/Pow")
        var = node("ReduceMean", [sq, axes], [prefix + ".var"], prefix + "/ReduceMean_1")
        ve = node("Add", [var, c(prefix + ".eps", 1e-12)], [prefix + ".ve"], prefix + "/Add")
        std = node("Sqrt", [ve], [prefix + ".std"], prefix + "/Sqrt")
        nrm = node("Div", [d, std], [prefix + ".n"], prefix + "/Div")
        sc = node("Mul", [nrm, g], [prefix + ".s"], prefix + "/Mul")
        return node("Add", [sc, b], [prefix + ".out"], prefix + "/Add_1")

    def linear(x, prefix, n_in, n_out):
        mm = node("MatMul", [x, w(prefix + ".w", n_in, n_out)], [prefix + ".mm"], prefix + "/MatMul")
        return node("Add", [mm, c(prefix + ".b", 0.02 * rng.standard_normal(n_out))], [prefix + ".out"],
                    prefix + "/Add")

    # embeddings
    we = w("emb.word", vocab, hidden, scale=0.5)
    pos = c("emb.pos_rows", (rng.standard_normal((1, seq, hidden)) * 0.5).astype(np.float32))
    typ = c("emb.type_rows", (rng.standard_normal((1, 1, hidden)) * 0.5).astype(np.float32))
    e = node("Gather", [we, "input_ids"], ["emb.words"], "embeddings/word_embeddings/Gather")
    e = node("Add", [e, typ], ["emb.sum1"], "embeddings/Add")
    e = node("Add", [e, pos], ["emb.sum2"], "embeddings/Add_1")
    h = layernorm(e, "embeddings/LayerNorm", fused=False)
    # extended attention mask
    m = node("Unsqueeze", ["attention_mask", c("ax1", [1], np.int64)], ["mask.u1"], "mask/Unsqueeze")
    m = node("Unsqueeze", [m, c("ax2", [2], np.int64)], ["mask.u2"], "mask/Unsqueeze_1")
    m = node("Cast", [m], ["mask.f"], "mask/Cast", to=TensorProto.FLOAT)
    m = node("Sub", [c("one", 1.0), m], ["mask.inv"], "mask/Sub")
    mask = node("Mul", [m, c("fmin", np.finfo(np.float32).min)], ["mask.add"], "mask/Mul")
    for layer in range(layers):
        p = f"encoder/layer.{layer}"
        if layer == 0:
            split = c(p + ".split", [batch, seq, heads, hd], np.int64)
            merge = c(p + ".merge", [batch, seq, hidden], np.int64)
        else:
            shp = node("Shape", [h], [p + ".shape"], p + "/Shape")
            b0 = node("Gather", [shp, c(p + ".i0", 0, np.int64)], [p + ".b0"], p + "/Gather", axis=0)
            s1 = node("Gather", [shp, c(p + ".i1", 1, np.int64)], [p + ".s1"], p + "/Gather_1", axis=0)
            ub = node("Unsqueeze", [b0, c(p + ".a0", [0], np.int64)], [p + ".ub"], p + "/Unsqueeze")
            us = node("Unsqueeze", [s1, c(p + ".a0b", [0], np.int64)], [p + ".us"], p + "/Unsqueeze_1")
            split = node("Concat", [ub, us, c(p + ".hd", [heads, hd], np.int64)], [p + ".split"], p + "/Concat",
                         axis=0)
            merge = node("Concat", [ub, us, c(p + ".hid", [hidden], np.int64)], [p + ".merge"], p + "/Concat_1",
                         axis=0)
        heads_ = {}
        for name in ("query", "key", "value"):
            x = linear(h, f"{p}/attention/self/{name}", hidden, hidden)
            x = node("Reshape", [x, split], [f"{p}.{name}.r"], f"{p}/attention/self/{name}/Reshape")
            heads_[name] = node("Transpose", [x], [f"{p}.{name}.t"], f"{p}/attention/self/{name}/Transpose",
                                perm=[0, 2, 1, 3])
        kt = node("Transpose", [heads_["key"]], [p + ".kt"], p + "/attention/self/Transpose", perm=[0, 1, 3, 2])
        s = node("MatMul", [heads_["query"], kt], [p + ".scores"], p + "/attention/self/MatMul")
        s = node("Div", [s, c(p + ".sqrtd", np.sqrt(hd))], [p + ".scaled"], p + "/attention/self/Div")
        s = node("Add", [s, mask], [p + ".masked"], p + "/attention/self/Add")
        s = node("Softmax", [s], [p + ".probs"], p + "/attention/self/Softmax", axis=-1)
        ctx = node("MatMul", [s, heads_["value"]], [p + ".ctx"], p + "/attention/self/MatMul_1")
        ctx = node("Transpose", [ctx], [p + ".ctx.t"], p + "/attention/self/Transpose_1", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], [p + ".ctx.r"], p + "/attention/self/Reshape_3")
        o = linear(ctx, p + "/attention/output/dense", hidden, hidden)
        o = node("Add", [o, h], [p + ".res1"], p + "/attention/output/Add")
        h1 = layernorm(o, p + "/attention/output/LayerNorm", fused=(layer == 0))
        f = linear(h1, p + "/intermediate/dense", hidden, ffn)
        g = node("Div", [f, c(p + ".sqrt2", np.sqrt(2.0))], [p + ".g1"], p + "/intermediate/Div")
        g = node("Erf", [g], [p + ".g2"], p + "/intermediate/Erf")
        g = node("Add", [g, c(p + ".one", 1.0)], [p + ".g3"], p + "/intermediate/Add_1")
        g = node("Mul", [f, g], [p + ".g4"], p + "/intermediate/Mul")
        g = node("Mul", [g, c(p + ".half", 0.5)], [p + ".g5"], p + "/intermediate/Mul_1")
        o2 = linear(g, p + "/output/dense", ffn, hidden)
        o2 = node("Add", [o2, h1], [p + ".res2"], p + "/output/Add")
        h = layernorm(o2, p + "/output/LayerNorm", fused=False)
    nodes[-1].output[0] = "last_hidden_state"
    h = "last_hidden_state"
    first = node("Gather", [h, c("tok0", 0, np.int64)], ["pool.first"], "pooler/Gather", axis=1)
    pl = linear(first, "pooler/dense", hidden, hidden)
    node("Tanh", [pl], ["pooler_output"], "pooler/activation/Tanh")
    graph = helper.make_graph(
        nodes, "bert", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
                        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden]),
         helper.make_tensor_value_info("pooler_output", TensorProto.FLOAT, [batch, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def bert_inputs(batch=2, seq=8, vocab=50, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq // 2:] = 0  # padding in the last sequence
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}


def read_safetensors(path: str) -> dict:
    """name -> numpy array of a .safetensors file (F32/F16/I64 tensors; the format is a JSON header + raw bytes)."""
    import json
    import struct

    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[a:b], kinds[t["dtype"]]).reshape(t["shape"])
    return out


def bert_checkpoint(weights: dict, config: dict, batch: int, seq: int) -> onnx.ModelProto:
    """An HF BertModel checkpoint (`weights` by their state-dict names, `config` its config.json) as the graph
    torch.onnx.export gives for it at static shapes: inputs input_ids, attention_mask, token_type_ids (int64
    [batch, seq]); output last_hidden_state. Linear weights are stored [out, in] and used transposed, GELU is the
    erf form, LayerNormalization the fused op (opset 18)."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    hd, eps = hidden // heads, float(config.get("layer_norm_eps", 1e-12))
    inits, nodes = [], []

    def c(name, value):
        inits.append(_init(name, np.ascontiguousarray(value)))
        return name

    def node(op, ins, outs, name, **attrs):
        nodes.append(helper.make_node(op, ins, outs, name=name, **attrs))
        return outs[0]

    def linear(x, p):
        mm = node("MatMul", [x, c(p + ".weight.T", weights[p + ".weight"].T)], [p + ".mm"], p + "/MatMul")
        return node("Add", [mm, c(p + ".bias", weights[p + ".bias"])], [p + ".out"], p + "/Add")

    def layernorm(x, p, out=None):
        g, b = c(p + ".weight", weights[p + ".weight"]), c(p + ".bias", weights[p + ".bias"])
        return node("LayerNormalization", [x, g, b], [out or p + ".out"], p, axis=-1, epsilon=eps)

    e = node("Gather", [c("word", weights["embeddings.word_embeddings.weight"]), "input_ids"], ["e.w"], "emb/word")
    t = node("Gather", [c("type", weights["embeddings.token_type_embeddings.weight"]), "token_type_ids"], ["e.t"],
             "emb/type")
    pos = c("pos_rows", weights["embeddings.position_embeddings.weight"][None, :seq])
    e = node("Add", [node("Add", [e, t], ["e.wt"], "emb/Add"), pos], ["e.sum"], "emb/Add_1")
    h = layernorm(e, "embeddings.LayerNorm")
    m = node("Unsqueeze", ["attention_mask", c("ax12", np.array([1, 2], np.int64))], ["m.u"], "mask/Unsqueeze")
    m = node("Cast", [m], ["m.f"], "mask/Cast", to=TensorProto.FLOAT)
    m = node("Sub", [c("one", np.float32(1)), m], ["m.inv"], "mask/Sub")
    mask = node("Mul", [m, c("fmin", np.finfo(np.float32).min)], ["m.add"], "mask/Mul")
    split = c("split", np.array([batch, seq, heads, hd], np.int64))
    merge = c("merge", np.array([batch, seq, hidden], np.int64))
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        qkv = {}
        for name in ("query", "key", "value"):
            x = node("Reshape", [linear(h, f"{p}.attention.self.{name}"), split], [f"{p}.{name}.r"],
                     f"{p}/{name}/Reshape")
            qkv[name] = node("Transpose", [x], [f"{p}.{name}.t"], f"{p}/{name}/Transpose", perm=[0, 2, 1, 3])
        kt = node("Transpose", [qkv["key"]], [p + ".kt"], p + "/kt", perm=[0, 1, 3, 2])
        s = node("MatMul", [qkv["query"], kt], [p + ".s"], p + "/attention/MatMul")
        s = node("Div", [s, c(p + ".sqrtd", np.float32(np.sqrt(hd)))], [p + ".s2"], p + "/attention/Div")
        s = node("Softmax", [node("Add", [s, mask], [p + ".s3"], p + "/attention/Add")], [p + ".pr"],
                 p + "/attention/Softmax", axis=-1)
        ctx = node("MatMul", [s, qkv["value"]], [p + ".ctx"], p + "/attention/MatMul_1")
        ctx = node("Transpose", [ctx], [p + ".ctx.t"], p + "/attention/Transpose_1", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], [p + ".ctx.r"], p + "/attention/Reshape")
        o = node("Add", [linear(ctx, p + ".attention.output.dense"), h], [p + ".res1"], p + "/attention/output/Add")
        h1 = layernorm(o, p + ".attention.output.LayerNorm")
        f = linear(h1, p + ".intermediate.dense")
        g = node("Erf", [node("Div", [f, c(p + ".sqrt2", np.float32(np.sqrt(2)))], [p + ".g1"], p + "/gelu/Div")],
                 [p + ".g2"], p + "/gelu/Erf")
        g = node("Add", [g, c(p + ".one", np.float32(1))], [p + ".g3"], p + "/gelu/Add")
        g = node("Mul", [node("Mul", [f, g], [p + ".g4"], p + "/gelu/Mul"), c(p + ".half", np.float32(0.5))],
                 [p + ".g5"], p + "/gelu/Mul_1")
        o2 = node("Add", [linear(g, p + ".output.dense"), h1], [p + ".res2"], p + "/output/Add")
        last = i == config["num_hidden_layers"] - 1
        h = layernorm(o2, p + ".output.LayerNorm", "last_hidden_state" if last else None)
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [batch, seq])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(nodes, "bert", ids, [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                                                              [batch, seq, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model
