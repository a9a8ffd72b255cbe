#!/usr/bin/env python3
"""Probe: does prefetching the next layer's weights into L2, on a side branch of the CUDA graph, speed up a small-batch
BERT-base forward? (Design question for the cuda target; run on the device machine, torch + Triton only.)

Why: at batch 1 (M = 128 rows) our graph replays in ~0.36 ms, but the same kernels timed alone, with their weights hot
in L2 (bench/gpu/sweep_kernels.py), add up to ~0.31 ms. In the model each GEMM reads its weights from HBM with the few
CTAs a 128-row GEMM has (6-36), so it is latency-bound on those reads. The whole model's fp16 weights (~170 MB) do not
fit the H200's L2, but one layer's (14.2 MB) does: a kernel on a parallel branch, on SMs the GEMMs leave idle, can pull
layer i+1's weights into L2 (`prefetch.global.L2`) while layer i computes.

The chain per layer is BERT-base's GEMMs through torch (cuBLASLt with bias epilogues) with cheap stand-ins for the
Triton kernels between them (an elementwise op for attention, layer_norm for add + LayerNorm). Variants, one CUDA graph
each, timed interleaved (A B C ... A B C ..., 30 rounds x 20 replays, median per replay):
  cold      distinct weights per layer (the real case)
  pf-NxL    cold + a Triton prefetch kernel of N CTAs (L lines per step) per layer on a side stream (fork at the layer's start, join at
            the end of the graph), fetching the next layer's weights
  hot       every layer shares one layer's weights (the upper bound for what L2 residency can give)

    python bench/gpu/l2_prefetch_probe.py [--rows 128 512 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import triton
import triton.language as tl

H, F, LAYERS = 768, 3072, 12
LINE = 128  # bytes per L2 prefetch


@triton.jit
def prefetch_l2(base, n_bytes, LINES: tl.constexpr):
    """Each program walks its share of [base, base + n_bytes) in steps of LINES cache lines, one prefetch per line."""
    pid = tl.program_id(0)
    step = tl.num_programs(0) * LINES * 128
    offs = tl.arange(0, LINES) * 128
    for start in range(pid * LINES * 128, n_bytes, step):
        p = base + tl.minimum(start + offs, n_bytes - 1)
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [p], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def prefetch_load(base, sink, n_words, BLOCK: tl.constexpr):
    """Side branch, real loads: each program reads its share of the int32 words [base, base + n_words) marked
    evict_last (kept in L2 over evict_normal data), and stores their sum to `sink` so the loads are not removed."""
    pid = tl.program_id(0)
    acc = tl.zeros([BLOCK], tl.int32)
    for start in range(pid * BLOCK, n_words, tl.num_programs(0) * BLOCK):
        o = start + tl.arange(0, BLOCK)
        acc += tl.load(base + o, mask=o < n_words, other=0, eviction_policy="evict_last")
    tl.store(sink + pid, tl.sum(acc, 0))


@triton.jit
def prefetch_lines(base, n_bytes, DO: tl.constexpr):
    """In-stream: every program issues one prefetch per line of its 128-line slice and exits (DO=0: the same launch
    doing nothing, the control)."""
    if DO:
        offs = tl.program_id(0) * 128 * 128 + tl.arange(0, 128) * 128
        p = base + tl.minimum(offs, n_bytes - 1)
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [p], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def prefetch_bulk(base, n_bytes):
    """In-stream: each thread asks the copy engine for one 4 KiB chunk into L2 (cp.async.bulk.prefetch.L2, sm_90)."""
    offs = tl.program_id(0) * 128 * 4096 + tl.arange(0, 128) * 4096
    p = base + tl.minimum(offs, n_bytes - 4096)
    tl.inline_asm_elementwise("cp.async.bulk.prefetch.L2.global [$1], 4096;\n\tmov.u32 $0, 0;", "=r,l", [p],
                              dtype=tl.int32, is_pure=False, pack=1)


def make_layers(shared: bool):
    """Per layer: one contiguous fp16 buffer holding Wqkv, Wo, W1, W2 (torch's [out, in] layout) and the biases."""
    sizes = [3 * H * H, H * H, F * H, H * F]
    total = sum(sizes)
    bufs = []
    for i in range(1 if shared else LAYERS):
        buf = torch.randn(total + 3 * H + H + F + H, device="cuda", dtype=torch.float16) * 0.02
        bufs.append(buf)
    layers = []
    for i in range(LAYERS):
        buf = bufs[0 if shared else i]
        o = 0
        ws = []
        for (n_out, n_in), sz in zip(((3 * H, H), (H, H), (F, H), (H, F)), sizes):
            ws.append(buf[o:o + sz].view(n_out, n_in))
            o += sz
        bs = []
        for n in (3 * H, H, F, H):
            bs.append(buf[o:o + n])
            o += n
        layers.append((buf, ws, bs))
    return layers


def inline_prefetch(ws, do: int):
    """One in-stream launch covering the given weights (what a preceding Triton kernel would issue itself)."""
    for w in ws:
        n = w.numel() * 2
        if do == 2:
            prefetch_bulk[(-(-n // (128 * 4096)),)](w.view(torch.int8), n)
        else:
            prefetch_lines[(-(-n // (128 * 128)),)](w.view(torch.int8), n, DO=do)


def layer(x, ws, bs, inline: int = -1, nxt=None):
    """`inline` 1: prefetch each GEMM's weights just before the kernel that precedes it; 0: the same launches empty."""
    if inline >= 0:
        inline_prefetch([ws[0]], inline)
    qkv = torch.nn.functional.linear(x, ws[0], bs[0])
    if inline >= 0:
        inline_prefetch([ws[1]], inline)
    a = qkv[:, :H] * 1.0001  # stands in for the attention kernel (one light launch)
    o = torch.nn.functional.linear(a, ws[1], bs[1])
    if inline >= 0:
        inline_prefetch([ws[2], ws[3]], inline)
    h = torch.nn.functional.layer_norm(o + x, (H,))
    f = torch.nn.functional.linear(h, ws[2], bs[2])
    f = torch.nn.functional.gelu(f)
    y = torch.nn.functional.linear(f, ws[3], bs[3])
    return torch.nn.functional.layer_norm(y + h, (H,))


SINK = None


def side_prefetch(buf, ctas: int, lines: int):
    """lines > 0: prefetch instructions (prefetch_l2); lines == 0: real loads (prefetch_load)."""
    if lines:
        prefetch_l2[(ctas,)](buf.view(torch.int8), buf.numel() * 2, LINES=lines)
    else:
        prefetch_load[(ctas,)](buf.view(torch.int32), SINK, buf.numel() // 2, BLOCK=1024)


def capture(x0, layers, prefetch_ctas: int, lines: int = 8, inline: int = -1):
    global SINK
    if SINK is None:
        SINK = torch.zeros(1024, device="cuda", dtype=torch.int32)
    side = torch.cuda.Stream()
    main = torch.cuda.Stream()
    with torch.cuda.stream(main):  # warm-up (cuBLASLt workspaces, Triton compile)
        for _ in range(2):
            x = x0
            for buf, ws, bs in layers:
                x = layer(x, ws, bs, inline)
            if prefetch_ctas:
                side_prefetch(layers[0][0], prefetch_ctas, lines)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=main):
        x = x0
        for i, (buf, ws, bs) in enumerate(layers):
            if prefetch_ctas and i + 1 < len(layers):
                side.wait_stream(main)
                with torch.cuda.stream(side):
                    side_prefetch(layers[i + 1][0], prefetch_ctas, lines)
            x = layer(x, ws, bs, inline)
        if prefetch_ctas:
            main.wait_stream(side)
        out = x
    return g, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[128, 512, 4096])
    ap.add_argument("--ctas", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--lines", type=int, nargs="+", default=[256, 1024], help="cache lines per program per step (0: real loads instead of prefetches)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cold, hot = make_layers(False), make_layers(True)
    results = []
    print("| rows | variant | graph replay us (median) | vs cold |")
    print("|---|---|---|---|")
    for rows in args.rows:
        x0 = torch.randn(rows, H, device="cuda", dtype=torch.float16)
        variants = {"cold": capture(x0, cold, 0)}
        for n in args.ctas:
            for lines in args.lines:
                variants[f"pf-{n}x{lines}" if lines else f"pf-load-{n}"] = capture(x0, cold, n, lines)
        variants["inline-empty"] = capture(x0, cold, 0, inline=0)
        variants["inline-prefetch"] = capture(x0, cold, 0, inline=1)
        variants["inline-bulk"] = capture(x0, cold, 0, inline=2)
        variants["hot"] = capture(x0, hot, 0)
        # the prefetch must not change results
        for g, _ in variants.values():
            g.replay()
        torch.cuda.synchronize()
        ref = variants["cold"][1].float()
        for name, (g, out) in variants.items():
            if name != "hot" and not name.startswith("inline"):
                err = (out.float() - ref).abs().max().item()
                assert err == 0.0, f"{name}: output differs from cold by {err}"
        times = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (g, _) in variants.items():
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(20):
                    g.replay()
                b.record()
                b.synchronize()
                times[name].append(a.elapsed_time(b) * 1000 / 20)
        base = statistics.median(times["cold"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"| {rows} | {name} | {med:.1f} | {med / base:.3f} |")
            results.append({"rows": rows, "variant": name, "us": round(med, 2), "vs_cold": round(med / base, 4)})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
