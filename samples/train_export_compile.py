"""One policy from training to the bundle: train a small attention model for a few steps with xpuruntime.pytorch
under a policy, export it to ONNX, compile it with the same policy (xrt.InferenceSession runs xrtc's compile), and
check that the bundle's outputs match PyTorch's.

    pip install 'xpuruntime[torch]'
    python samples/train_export_compile.py [--steps 20] [--out DIR]

Runs on the CPU (a CUDA device is used when present). Prints what each side did with the policy: PyTorch's switches
and warnings (xrt_torch.explain()), the bundle's variant and the compiler's decisions (sess.explain()), and the
largest difference between the two outputs. Exits 1 when they differ beyond the fp32 tolerance.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

import xpuruntime as xrt
import xpuruntime.pytorch as xrt_torch
from xpuruntime.policy import DEFAULT_TOLERANCES

# The one policy both sides take: the kernel knobs PyTorch maps onto its switches and xrtc onto its engines
# (each records what it could not honour on this machine), and the execution precision (fp32: TF32 off in training,
# fp32 variants in the bundle).
POLICY = xrt.Policy(kernel=xrt.KernelPolicy(matmul="cublasLt", attention="flash"),
                    execution=xrt.ExecutionPolicy(precision="fp32"))


class TinyAttention(torch.nn.Module):
    """Tokens [batch, seq, dim] -> one self-attention layer (scaled dot-product attention) + MLP -> class logits."""

    def __init__(self, dim: int = 32, heads: int = 4, classes: int = 5) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.ReLU(), torch.nn.Linear(2 * dim, dim))
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, s, d))
        x = x + self.mlp(x)
        return self.head(x.mean(dim=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    parser.add_argument("--out", default=None, help="folder for model.onnx (default: a temporary folder)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="xrt-train-")
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # Train under the policy.
    print("training:", xrt_torch.set_kernel_policy(policy=POLICY.kernel, exec_policy=POLICY.execution)["warnings"])
    model = TinyAttention().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.randn(64, 8, 32, device=device)
    labels = (data.sum(dim=(1, 2)) > 0).long() + 2 * (data[:, 0, 0] > 0).long()
    for step in range(args.steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data), labels)
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == args.steps - 1:
            print(f"step {step:3d}: loss {loss.item():.4f}")
    report = xrt_torch.explain()
    print(f"PyTorch: attention backend {report['attention_backend_selected']}, switches {report['switches']}")

    # Export, then compile with the same policy and run the bundle.
    model.eval().cpu()
    x = torch.randn(2, 8, 32)
    path = os.path.join(out, "model.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter (no onnxscript dependency) warns it is the legacy one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), path, input_names=["tokens"], output_names=["logits"], opset_version=17,
                          dynamo=False)
    sess = xrt.InferenceSession(path, device="cpu", policy=POLICY)
    explain = sess.explain()
    print(f"bundle: variant {explain['variant']} ({explain['engine']}), compile {explain['compile']['cache']}; "
          f"compiler warnings: {explain['decisions']['warnings']}")

    with torch.no_grad():
        expected = model(x).numpy()
    got = sess.run({"tokens": x.numpy()})["logits"]
    err = float(np.max(np.abs(got - expected)))
    tol = DEFAULT_TOLERANCES["fp32"]
    bound = tol["atol"] * max(1.0, float(np.max(np.abs(expected)))) + tol["rtol"] * float(np.max(np.abs(expected)))
    print(f"bundle vs PyTorch: max abs err {err:.3g} (fp32 bound {bound:.3g}): {'ok' if err <= bound else 'OVER'}")
    return 0 if err <= bound else 1


if __name__ == "__main__":
    sys.exit(main())
