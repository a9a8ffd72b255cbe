"""Training-step time with and without xpuruntime.pytorch's capture_graph(), on a GPU: a 6-layer transformer encoder
(d_model 512, 8 heads, sequence 128) at batch 8 under autocast(fp16=True) and the kernel policy of the promised
example (attention flash_v2, matmul cublasLt). Forward and backward are in the captured block; the optimizer step and
zeroing the gradients (in place) stay outside it. Prints ms per step (median of --steps after warm-up) for both, the
speed-up, the losses of the last step (same weights, same batch: they must agree) and xrt_torch.explain().

    PYTHONPATH=. python bench/gpu/bench_torch_capture.py [--steps 50] [--layers 6] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

import xpuruntime.pytorch as xrt_torch


def make_model(layers: int) -> torch.nn.Module:
    layer = torch.nn.TransformerEncoderLayer(d_model=512, nhead=8, dim_feedforward=2048, batch_first=True,
                                             dropout=0.0)
    return torch.nn.Sequential(torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False),
                               torch.nn.Linear(512, 16)).cuda()


def run(model, x, t, steps: int, capture: bool) -> tuple[list[float], float]:
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    times, loss = [], None
    for step in range(steps + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        if capture:
            with xrt_torch.autocast(fp16=True), xrt_torch.capture_graph():
                y = model(x); loss = criterion(y.float().mean(dim=1), t); loss.backward()  # noqa: E702
        else:
            with xrt_torch.autocast(fp16=True):
                y = model(x); loss = criterion(y.float().mean(dim=1), t); loss.backward()  # noqa: E702
        optimizer.step()
        torch.cuda.synchronize()
        if step >= 5:
            times.append((time.perf_counter() - t0) * 1e3)
    return times, float(loss.item())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    print(xrt_torch.set_kernel_policy(attention="flash_v2", matmul="cublasLt"))
    torch.manual_seed(0)
    x = torch.randn(args.batch, 128, 512, device="cuda")
    t = torch.randint(0, 16, (args.batch,), device="cuda")
    state = make_model(args.layers).state_dict()
    results = {}
    for capture in (False, True):
        model = make_model(args.layers)
        model.load_state_dict(state)
        times, loss = run(model, x, t, args.steps, capture)
        results[capture] = (statistics.median(times), loss)
        print(f"{'capture_graph' if capture else 'eager'}: {statistics.median(times):.3f} ms/step (median of "
              f"{len(times)}), last loss {loss:.5f}")
    print(f"speed-up with capture_graph(): {results[False][0] / results[True][0]:.2f}x "
          f"({args.layers} layers, batch {args.batch}, {torch.cuda.get_device_name()})")
    print(json.dumps(xrt_torch.explain(), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
