#!/usr/bin/env python3
"""Sweep the configurations of the cuda target's generated Triton kernels on a GPU (the device machine), to set the
rules in codegen.layernorm_config / codegen.attention_config from measurements rather than guesses.

The kernels are the compiler's own (xrtc.targets.cuda.codegen, with the configuration passed explicitly), on the
tensors BERT-base hands them: add + LayerNorm over [rows, 768] fp16 with fp16 gamma/beta; flash attention over a fused
QKV buffer [B, S, 3*768] (12 heads of 64) with an additive fp32 mask [B, 1, 1, S]. Each configuration is checked
against torch (fp32 reference) and timed as 50 launches captured in one CUDA graph (median of 20 replays / 50), the
way the engine runs them.

    python bench/gpu/sweep_kernels.py [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys

import torch

from xrtc.targets.cuda import aot, codegen
from xrtc.targets.cuda.ir import View


def time_in_graph(launch, n=50, replays=20) -> float:
    """Median microseconds per launch: `n` launches captured in one graph, replayed."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for _ in range(3):
            launch()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, stream=s):
        for _ in range(n):
            launch()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000 / n)
    return statistics.median(times)


def sweep_layernorm(rows: int, n: int = 768) -> list[dict]:
    x = torch.randn(rows, n, device="cuda", dtype=torch.float16)
    r = torch.randn(rows, n, device="cuda", dtype=torch.float16)
    gamma = torch.randn(n, device="cuda", dtype=torch.float16)
    beta = torch.randn(n, device="cuda", dtype=torch.float16)
    out = torch.empty(rows, n, device="cuda", dtype=torch.float16)
    ref = torch.nn.functional.layer_norm((x.float() + r.float()), (n,), gamma.float(), beta.float(), 1e-12)
    shape = (rows, n)
    expr = ("op", "Add", (("leaf", View.whole(0, shape), "float16"), ("leaf", View.whole(1, shape), "float16")), (),
            "float16")
    bufs = {0: x, 1: r, 2: gamma, 3: beta, 4: out}
    results = []
    for rpp, warps in itertools.product((1, 2, 4, 8, 16), (1, 2, 4, 8)):
        if rpp * 1024 // (32 * warps) > 256:  # more than 256 elements per thread: registers spill
            continue
        src, params, grid, w, cfg = codegen.layernorm(expr, shape, View.whole(2, (n,)), View.whole(3, (n,)), 1e-12, 4,
                                                      "float16", None, rows_per_program=rpp, warps=warps)
        kernel = aot.load_kernel(src)
        args = [bufs[p] for p in params]
        launch = lambda: kernel[grid](*args, GDC=False, num_warps=w, num_stages=1)  # noqa: E731
        out.zero_()
        launch()
        torch.cuda.synchronize()
        err = (out.float() - ref).abs().max().item()
        us = time_in_graph(launch)
        gbs = 4 * rows * n * 2 / us / 1e3
        results.append({"kernel": "add_layernorm", "rows": rows, "n": n, "rows_per_program": rpp, "warps": w,
                        "us": round(us, 3), "GB/s": round(gbs, 1), "max_abs_err": round(err, 5)})
        print(json.dumps(results[-1]), flush=True)
    return results


def sweep_attention(b: int, s: int, h: int = 12, d: int = 64) -> list[dict]:
    hid = h * d
    qkv = torch.randn(b, s, 3 * hid, device="cuda", dtype=torch.float16)
    mask = torch.zeros(b, 1, 1, s, device="cuda", dtype=torch.float32)
    mask[:, :, :, s - s // 8:] = -10000.0  # padding at the end of every sequence
    out = torch.empty(b, s, hid, device="cuda", dtype=torch.float16)
    q4 = qkv[..., :hid].view(b, s, h, d).transpose(1, 2).float()
    k4 = qkv[..., hid:2 * hid].view(b, s, h, d).transpose(1, 2).float()
    v4 = qkv[..., 2 * hid:].view(b, s, h, d).transpose(1, 2).float()
    scale = d ** -0.5
    ref = torch.softmax(q4 @ k4.transpose(-1, -2) * scale + mask, -1) @ v4  # [b, h, s, d]
    ref = ref.transpose(1, 2).reshape(b, s, hid)
    st = (s * 3 * hid, d, 3 * hid, 1)
    q, k, v = View(0, (b, h, s, d), st, 0), View(0, (b, h, s, d), st, hid), View(0, (b, h, s, d), st, 2 * hid)
    mv = View.whole(1, (b, 1, 1, s))
    o = View(2, (b, h, s, d), (s * hid, d, hid, 1), 0)
    bufs = {0: qkv, 1: mask, 2: out}
    dtypes = {0: "float16", 1: "float32", 2: "float16"}
    results = []
    for bm, bn, warps, stages, preload in itertools.product((32, 64, 128), (64, 128), (4, 8), (2, 3),
                                                            (False, True)):
        if bm > s or bn > s or (bm == 32 and warps == 8) or (preload and bn < s) or (preload and stages != 2) or \
                (bn < 128 and s == 128):
            continue
        cfg = {"BM": bm, "BN": bn, "warps": warps, "stages": stages, "preload": preload}
        src, params, grid, w, c = codegen.attention(q, k, v, mv, o, scale, "fp16", dtypes, config=cfg)
        kernel = aot.load_kernel(src)
        args = [bufs[p] for p in params]
        launch = lambda: kernel[grid](*args, GDC=False, num_warps=w, num_stages=stages)  # noqa: E731
        try:
            out.zero_()
            launch()
            torch.cuda.synchronize()
        except Exception as e:  # e.g. out of shared memory for this block size
            results.append({"kernel": "attention", "B": b, "S": s, **cfg, "error": str(e)[:120]})
            print(json.dumps(results[-1]), flush=True)
            continue
        err = (out.float() - ref).abs().max().item()
        us = time_in_graph(launch)
        tflops = 4 * b * h * s * s * d / us / 1e6
        results.append({"kernel": "attention", "B": b, "S": s, **cfg, "us": round(us, 3),
                        "TFLOP/s": round(tflops, 1), "max_abs_err": round(err, 5)})
        print(json.dumps(results[-1]), flush=True)
    return results


GEMM_SHAPES = ((768, 2304, "bias"), (768, 768, "bias"), (768, 3072, "gelu_bias"), (3072, 768, "bias"))  # (K, N)


def sweep_gemm(m: int) -> list[dict]:
    """BERT-base's four GEMMs at M rows: cuBLAS through torch in both weight layouts (W as [K, N] like our plan, and
    [N, K], torch's Linear layout), against the Triton GEMM (`matmul = triton`) in a few configurations. All in a
    CUDA graph, with bias (and GELU for FFN1) in the epilogue where the library has one."""
    results = []
    for k, n, epilogue in GEMM_SHAPES:
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        w = (torch.randn(k, n, device="cuda", dtype=torch.float16) / k ** 0.5).contiguous()
        wt = w.t().contiguous()
        bias = torch.randn(n, device="cuda", dtype=torch.float16)
        out = torch.empty(m, n, device="cuda", dtype=torch.float16)
        ref = x.float() @ w.float() + bias.float()
        if epilogue == "gelu_bias":
            ref = torch.nn.functional.gelu(ref)
        flops = 2 * m * n * k
        act = torch.nn.functional.gelu if epilogue == "gelu_bias" else (lambda t: t)
        for name, fn in (("cublas_w_kn", lambda: torch.addmm(bias, x, w, out=out)),
                         ("cublas_w_nk", lambda: torch.nn.functional.linear(x, wt, bias)),
                         ("cublas_w_nk_act", lambda: act(torch.nn.functional.linear(x, wt, bias)))):
            us = time_in_graph(fn)
            results.append({"kernel": "gemm", "M": m, "K": k, "N": n, "impl": name, "us": round(us, 3),
                            "TFLOP/s": round(flops / us / 1e6, 1)})
            print(json.dumps(results[-1]), flush=True)
        default = codegen.gemm_config(m, n, k, "float16")
        cands = [default]
        if m <= 256:
            for bm, bn, bk, warps, stages in itertools.product((32, 64), (64, 128), (64,), (4,), (3, 4)):
                cands.append({"BM": bm, "BN": bn, "BK": bk, "warps": warps, "stages": stages, "group_m": 1})
        else:
            for bm, bn, warps, stages, gm in itertools.product((128,), (128, 256), (4, 8), (3, 4), (8,)):
                cands.append({"BM": bm, "BN": bn, "BK": 64, "warps": warps, "stages": stages, "group_m": gm})
        seen = set()
        for cfg in cands:
            key = tuple(sorted(cfg.items()))
            if key in seen:
                continue
            seen.add(key)
            src, params, grid, warps, c = codegen.gemm(0, 1, 2, 3, m, n, k, epilogue, "fp16",
                                                       {0: "float16", 1: "float16", 2: "float16", 3: "float16"},
                                                       config=cfg)
            kernel = aot.load_kernel(src)
            bufs = {0: x, 1: w, 2: bias, 3: out}
            args = [bufs[p] for p in params]
            launch = lambda: kernel[grid](*args, GDC=False, num_warps=warps, num_stages=c["stages"])  # noqa: E731
            try:
                out.zero_()
                launch()
                torch.cuda.synchronize()
            except Exception as e:  # e.g. out of shared memory
                results.append({"kernel": "gemm", "M": m, "K": k, "N": n, "impl": "triton", **cfg,
                                "error": str(e)[:120]})
                print(json.dumps(results[-1]), flush=True)
                continue
            err = (out.float() - ref).abs().max().item()
            us = time_in_graph(launch)
            results.append({"kernel": "gemm", "M": m, "K": k, "N": n, "impl": "triton", **cfg,
                            "default": cfg is default, "us": round(us, 3), "TFLOP/s": round(flops / us / 1e6, 1),
                            "max_abs_err": round(err, 4)})
            print(json.dumps(results[-1]), flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--kernels", default="layernorm,attention,gemm", help="comma-separated: layernorm,attention,gemm")
    args = ap.parse_args()
    kinds = set(args.kernels.split(","))
    if not torch.cuda.is_available():
        print("sweep_kernels: no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    results = []
    for rows in (128, 1024, 4096, 12288) if "layernorm" in kinds else ():
        results += sweep_layernorm(rows)
    for b, s in ((1, 128), (32, 128)) if "attention" in kinds else ():
        results += sweep_attention(b, s)
    for m in (128, 4096) if "gemm" in kinds else ():
        results += sweep_gemm(m)
    print("\n| kernel | shape | default config | default us | best config | best us | speed-up | best max abs err |")
    print("|---|---|---|---|---|---|---|---|")
    groups: dict = {}
    for r in results:
        if "us" not in r:
            continue
        if r["kernel"] == "gemm":
            key = ("gemm", f"M={r['M']} K={r['K']} N={r['N']}")
        else:
            key = (r["kernel"], f"rows={r['rows']}" if r["kernel"] == "add_layernorm" else f"B={r['B']} S={r['S']}")
        groups.setdefault(key, []).append(r)
    for (kernel, shape), rs in groups.items():
        best = min((r for r in rs if r.get("impl", "triton") == "triton"), key=lambda r: r["us"])
        if kernel == "add_layernorm":
            rows = rs[0]["rows"]
            dr, dw = codegen.layernorm_config(rows, 768)
            default = next((r for r in rs if r["rows_per_program"] == dr and r["warps"] == dw), None)
            fmt = lambda r: f"rows/program {r['rows_per_program']}, warps {r['warps']}"  # noqa: E731
        elif kernel == "gemm":
            default = next((r for r in rs if r.get("default")), None)
            fmt = lambda r: r["impl"] if r["impl"] != "triton" else (  # noqa: E731
                f"triton BM {r['BM']} BN {r['BN']} BK {r['BK']} w{r['warps']} s{r['stages']} g{r['group_m']}")
            for lib in (r for r in rs if r["impl"] != "triton"):
                print(f"| gemm | {shape} | {lib['impl']} | {lib['us']:.2f} us | {lib['TFLOP/s']} TFLOP/s | | | |")
        else:
            dc = codegen.attention_config(rs[0]["S"], rs[0]["S"], 64, False, rs[0]["B"] * 12)
            default = next((r for r in rs if all(r[k] == dc[k] for k in ("BM", "BN", "warps", "stages", "preload"))),
                           None)
            fmt = lambda r: (f"BM {r['BM']}, BN {r['BN']}, warps {r['warps']}, stages {r['stages']}"  # noqa: E731
                             + (", preload" if r.get("preload") else ""))
        du = default["us"] if default else float("nan")
        print(f"| {kernel} | {shape} | {fmt(default) if default else '-'} | {du:.2f} | {fmt(best)} | {best['us']:.2f} | "
              f"{du / best['us']:.2f}x | {best.get('max_abs_err', '-')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
