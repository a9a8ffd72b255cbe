# Produced tests/cuda/data/tiny_bert_*_dynamo.onnx: tiny HF BertModel exports (random weights, seed 0) as torch.onnx.export
# (dynamo exporter, torch 2.11, transformers 5.17, opset 18) writes them, for the cuda lowering's tests. The legacy
# (dynamo=False) export of BertModel needs its inputs as kwargs in transformers 5; it is not among these files.
import os, sys, torch, transformers, onnx
from transformers import BertConfig, BertModel
out = os.environ.get("OUT", "/tmp")
torch.manual_seed(0)
cfg = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000,
           max_position_embeddings=128)
for attn in ("eager", "sdpa"):
    for dynamo in (False, True):
        torch.manual_seed(0)
        m = BertModel(BertConfig(**cfg, attn_implementation=attn)).eval()
        ids = torch.randint(0, 1000, (2, 16)); mask = torch.ones(2, 16, dtype=torch.int64); mask[1, 12:] = 0
        tt = torch.zeros(2, 16, dtype=torch.int64)
        name = f"tiny_bert_{attn}_{'dynamo' if dynamo else 'legacy'}.onnx"
        path = os.path.join(out, name)
        try:
            kw = dict(input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state", "pooler_output"], opset_version=17,
                      dynamic_axes={k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask", "token_type_ids")})
            if dynamo:
                kw["dynamo"] = True; kw.pop("dynamic_axes"); kw["opset_version"] = 18
                kw["dynamic_shapes"] = {"input_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=128)},
                                        "attention_mask": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=128)},
                                        "token_type_ids": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=128)}}
            else:
                kw["dynamo"] = False
            torch.onnx.export(m, (ids, mask, tt), path, **kw)
            mm = onnx.load(path, load_external_data=True)
            onnx.save(mm, path)  # one file
            from collections import Counter
            print(name, os.path.getsize(path), dict(Counter(n.op_type for n in mm.graph.node)))
        except Exception as e:
            print(name, "FAILED", type(e).__name__, str(e)[:300])
print("torch", torch.__version__, "transformers", transformers.__version__, "onnx", onnx.__version__)
