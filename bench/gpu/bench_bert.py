"""BERT-base on the GPU machine: the model, its inputs, the peers and the cold start, for bench/gpu/run.sh.

    python3 bench_bert.py export DIR                  HF BertModel(BertConfig()), seed 0, -> DIR/bert.onnx (fp32,
                                                      torch.onnx.export dynamo, inputs input_ids, attention_mask,
                                                      token_type_ids, dims batch and seq)
    python3 bench_bert.py inputs DIR BxS ...          DIR/in_bBsS.npz: ids from a fixed seed, a mask whose odd
                                                      rows have their last quarter padded
    python3 bench_bert.py peers DIR BxS ...           torch eager fp32, torch.compile(mode="reduce-overhead") under
                                                      fp16 autocast with SDPA, the fp16 HF model (SDPA) captured
                                                      whole in one CUDA graph: median ms of CUDA-event timed runs
                                                      -> DIR/peers.json
    python3 bench_bert.py ortpeers DIR BxS ...        ONNX Runtime's CUDA provider: the transformer-optimised fp16
                                                      model with a CUDA graph, the optimised fp32 model without, inputs
                                                      and outputs bound on the device (IO binding); median ms and the
                                                      process's device memory growth -> merged into DIR/peers.json.
                                                      Skips (exit 0, reason printed and stored) where onnxruntime has
                                                      no CUDAExecutionProvider
    python3 bench_bert.py coldstart BUNDLE INPUTS.npz  xpuruntime.load(device="cuda") + first run, after CUDA init
    python3 bench_bert.py table DIR                   RESULTS.md's table from DIR's JSON files

Timing: warm-up, then CUDA events around each single run or graph replay on device-resident inputs, median.
Ours is timed the same way by the plugin (XRT_CUDA_REPLAY_TIMING: events around each replay of our graph).
"""
import json
import os
import statistics
import sys
import time

import numpy as np

SEED = 0


def shapes(args):
    return [tuple(int(v) for v in a.split("x")) for a in args]


def export(d):
    """torch.onnx.export as torch 2.11 does by default (the dynamo exporter, opset 18), batch and seq dynamic."""
    import onnx
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    model = BertModel(BertConfig(attn_implementation="sdpa")).eval()
    ids = torch.randint(0, 30522, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    tt = torch.zeros(2, 16, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dims = {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=512)}
    path = os.path.join(d, "bert.onnx")
    torch.onnx.export(model, (ids, mask, tt), path, input_names=names,
                      output_names=["last_hidden_state", "pooler_output"], opset_version=18, dynamo=True,
                      dynamic_shapes={n: dims for n in names})
    onnx.save(onnx.load(path, load_external_data=True), path)  # one file
    torch.save(model.state_dict(), os.path.join(d, "bert_state.pt"))


def make_inputs(b, s):
    rng = np.random.default_rng(1000 * b + s)
    ids = rng.integers(0, 30522, (b, s)).astype(np.int64)
    mask = np.ones((b, s), np.int64)
    mask[1::2, s - s // 4:] = 0  # padding on odd rows exercises the mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros((b, s), np.int64)}


def inputs(d, args):
    for b, s in shapes(args):
        np.savez(os.path.join(d, f"in_b{b}s{s}.npz"), **make_inputs(b, s))


def _events_median(fn, iters=100, warm=20):
    import torch
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def _graph_of(fn):
    """`fn` captured in one CUDA graph, after three warm-up calls on a side stream (as torch's docs capture)."""
    import torch
    st = torch.cuda.Stream()
    st.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(st):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(st)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g


def peers(d, args):
    import copy
    import torch
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig())
    model.load_state_dict(torch.load(os.path.join(d, "bert_state.pt")))
    model = model.eval().cuda()
    m16 = copy.deepcopy(model).half()
    for m in (model, m16):
        if hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation("sdpa")
        else:
            m.config._attn_implementation = "sdpa"
    path = os.path.join(d, "peers.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    for b, s in shapes(args):
        feeds = make_inputs(b, s)
        ids = torch.from_numpy(feeds["input_ids"]).cuda()
        mask = torch.from_numpy(feeds["attention_mask"]).cuda()
        tt = torch.from_numpy(feeds["token_type_ids"]).cuda()
        row = {}
        with torch.inference_mode():
            row["torch_eager_fp32"] = _events_median(lambda: model(input_ids=ids, attention_mask=mask, token_type_ids=tt), 30, 5)
            with torch.autocast("cuda", dtype=torch.float16):
                row["torch_eager_amp_fp16"] = _events_median(lambda: model(input_ids=ids, attention_mask=mask, token_type_ids=tt), 30, 5)
        try:
            t0 = time.perf_counter()
            cm = torch.compile(model, mode="reduce-overhead")
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
                cm(input_ids=ids, attention_mask=mask, token_type_ids=tt)
                torch.cuda.synchronize()
                row["torch_compile_cold_s"] = time.perf_counter() - t0
                row["torch_compile_ro_fp16"] = _events_median(lambda: cm(input_ids=ids, attention_mask=mask, token_type_ids=tt), 100, 20)
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
            row["torch_compile_ro_fp16"] = f"ERR {type(e).__name__}: {str(e)[:100]}"
        run16 = lambda: m16(input_ids=ids, attention_mask=mask, token_type_ids=tt)  # noqa: E731
        run32 = lambda: model(input_ids=ids, attention_mask=mask, token_type_ids=tt)  # noqa: E731
        try:
            with torch.inference_mode():
                g = _graph_of(run16)
                row["torch_fp16_cuda_graph"] = _events_median(g.replay, 200, 20)
                del g
        except Exception as e:  # noqa: BLE001
            row["torch_fp16_cuda_graph"] = f"ERR {type(e).__name__}: {str(e)[:100]}"
        try:
            with torch.inference_mode():
                g = _graph_of(run32)
                row["torch_fp32_cuda_graph"] = _events_median(g.replay, 100, 10)
                torch.backends.cuda.matmul.allow_tf32 = True
                g2 = _graph_of(run32)
                row["torch_tf32_cuda_graph"] = _events_median(g2.replay, 100, 10)
                torch.backends.cuda.matmul.allow_tf32 = False
                del g, g2
        except Exception as e:  # noqa: BLE001
            row["torch_fp32_cuda_graph"] = f"ERR {type(e).__name__}: {str(e)[:100]}"
        res[f"b{b}s{s}"] = row
        print(f"peers b{b}s{s}", json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
        json.dump(res, open(path, "w"), indent=1)


def ort_cuda_missing():
    """None where onnxruntime's CUDA provider is importable here, else why not (what the ORT peer prints)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        return f"onnxruntime is not importable ({err})"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)} has no CUDAExecutionProvider "
                f"(providers: {', '.join(ort.get_available_providers())}): put onnxruntime-gpu first on PYTHONPATH")
    return None


def ort_models(d):
    """DIR/bert.onnx transformer-optimised by onnxruntime.transformers (BERT-base: 12 heads, hidden 768): the fp32
    graph and its fp16 conversion (inputs/outputs kept, the optimizer's op block list) -> paths, fused-op counts."""
    from onnxruntime.transformers import optimizer

    out = {}
    for precision in ("fp32", "fp16"):
        om = optimizer.optimize_model(os.path.join(d, "bert.onnx"), model_type="bert", num_heads=12, hidden_size=768,
                                      opt_level=0, use_gpu=True)
        fused = {k: v for k, v in om.get_fused_operator_statistics().items() if v}
        if precision == "fp16":
            om.convert_float_to_float16(keep_io_types=True)
        path = os.path.join(d, f"bert_ort_{precision}.onnx")
        om.save_model_to_file(path)
        out[precision] = (path, fused)
    return out


def _device_mib():
    """This process's device memory in MiB (nvidia-smi's per-process used_memory), or None."""
    import subprocess
    try:
        text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(mib)
    return 0.0


def _ort_time(path, feeds, cuda_graph, iters, warm):
    """One session on the CUDA provider with inputs/outputs bound on the device; median ms (synchronised host
    timer: run_with_iobinding returns after the provider's stream synchronises) and the device memory the session
    added (MiB, nvidia-smi; ONNX Runtime's arena keeps what it took, so after the runs ~ its peak)."""
    import onnxruntime as ort

    before = _device_mib()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=[("CUDAExecutionProvider",
                                                      {"enable_cuda_graph": "1" if cuda_graph else "0"})])
    binding = sess.io_binding()
    keep = []
    for name, array in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    for _ in range(warm):  # the first run with enable_cuda_graph captures; later ones replay
        sess.run_with_iobinding(binding)
    if cuda_graph:  # outputs stay bound to the addresses of the captured run
        outputs = binding.get_outputs()
        binding = sess.io_binding()
        for (name, _), value in zip(feeds.items(), keep):
            binding.bind_ortvalue_input(name, value)
        for out, value in zip(sess.get_outputs(), outputs):
            binding.bind_ortvalue_output(out.name, value)
        sess.run_with_iobinding(binding)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        sess.run_with_iobinding(binding)
        times.append((time.perf_counter() - t0) * 1e3)
    result = [o.numpy() for o in binding.get_outputs()]
    after = _device_mib()
    del sess, binding, keep
    grown = after - before if after is not None and before is not None else None
    return statistics.median(times), grown, result


def ortpeers(d, args):
    path = os.path.join(d, "peers.json")
    res = json.load(open(path)) if os.path.exists(path) else {}
    missing = ort_cuda_missing()
    if missing:
        print(f"ORT CUDA peer SKIPPED: {missing}", flush=True)
        for b, s in shapes(args):
            res.setdefault(f"b{b}s{s}", {})["ort_cuda_fp16_graph"] = "SKIPPED: no CUDAExecutionProvider"
        json.dump(res, open(path, "w"), indent=1)
        return
    import onnxruntime as ort

    models = ort_models(d)
    print(f"ORT CUDA peer: onnxruntime {ort.__version__}; fused fp16 {models['fp16'][1]}", flush=True)
    ref_sess = ort.InferenceSession(os.path.join(d, "bert.onnx"), providers=["CPUExecutionProvider"])
    for b, s in shapes(args):
        feeds = make_inputs(b, s)
        row = res.setdefault(f"b{b}s{s}", {})
        ref = ref_sess.run(None, feeds)[0]
        for key, precision, graph in (("ort_cuda_fp16_graph", "fp16", True), ("ort_cuda_fp32", "fp32", False)):
            try:
                ms, mib, out = _ort_time(models[precision][0], feeds, graph, 200 if graph else 100, 20)
                row[key] = ms
                row[f"{key}_device_mib"] = mib
                # as compare.py: ||out - ref|| / ||ref|| on last_hidden_state
                row[f"{key}_rel_err"] = float(np.linalg.norm(out[0].astype(np.float64) - ref) / np.linalg.norm(ref))
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
                row[key] = f"ERR {type(e).__name__}: {str(e)[:160]}"
        print(f"ortpeers b{b}s{s}", json.dumps({k: v for k, v in row.items() if k.startswith("ort_")}), flush=True)
        json.dump(res, open(path, "w"), indent=1)


def _cuda_init():
    """cuInit and the primary context, so the cold start below excludes what any CUDA program pays once."""
    import ctypes
    cu = ctypes.CDLL("libcuda.so.1")
    assert cu.cuInit(0) == 0
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    assert cu.cuDeviceGet(ctypes.byref(dev), 0) == 0
    assert cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) == 0
    return cu, ctx


def coldstart(bundle, inputs_npz):
    t0 = time.perf_counter()
    cu_keep = _cuda_init()
    t_init = time.perf_counter() - t0
    feeds = dict(np.load(inputs_npz))
    import xpuruntime as xrt
    from xpuruntime import _ort_backend
    tv = time.perf_counter()
    _ort_backend._version()  # what load's registration of the ONNX Runtime backend pays (not cached: paid again)
    t_version = time.perf_counter() - tv
    t1 = time.perf_counter()
    sess = xrt.load(bundle, device="cuda")
    t2 = time.perf_counter()
    out = sess.run(feeds)
    t3 = time.perf_counter()
    sess.run(feeds)
    t4 = time.perf_counter()
    # the runs after it, back to back for 400 ms from open: where the GEMMs' stand-ins hand over to cuBLASLt (PLAN.md)
    # the run time drops; each entry is (ms since open, ms of that run)
    later = []
    while time.perf_counter() - t1 < 0.4:
        ta = time.perf_counter()
        sess.run(feeds)
        later.append((round((ta - t1) * 1e3, 1), round((time.perf_counter() - ta) * 1e3, 3)))
    desc = sess.explain()
    print(json.dumps({"event": "coldstart", "bundle": os.path.basename(bundle), "cuda_init_ms": t_init * 1e3,
                      "load_ms": (t2 - t1) * 1e3, "first_run_ms": (t3 - t2) * 1e3,
                      "open_to_first_result_ms": (t3 - t1) * 1e3, "second_run_ms": (t4 - t3) * 1e3,
                      "later_runs": later[:: max(1, len(later) // 40)],
                      "ort_version_lookup_ms": t_version * 1e3,
                      "outputs": {k: list(v.shape) for k, v in out.items()},
                      "engine_info": desc.get("engine_info", {}),
                      "load_profile": sess.load_profile() if hasattr(sess, "load_profile") else None}, default=str))
    del cu_keep


def gemm_rates(plan: dict, profile: dict) -> list[dict]:
    """Per GEMM configuration (m x n x k, epilogue) of a plan: how many, and the median time and TFLOP/s of its
    launches in the engine's profiling mode (each launch timed alone with CUDA events, outside the graph: an upper
    bound on its time inside the graph)."""
    by: dict = {}
    for launch in profile.get("launches", []):
        if launch.get("kind") != "gemm":
            continue
        g = plan["gemms"][int(launch["name"].split()[-1])]
        key = (int(g["m"]), int(g["n"]), int(g["k"]), g.get("epilogue", "none"))
        by.setdefault(key, []).append(float(launch["ms"]))
    rows = []
    for (m, n, k, epilogue), times in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        us = statistics.median(times) * 1000
        rows.append({"gemm": f"{m}x{n}x{k}", "epilogue": epilogue, "count": len(times), "median_us": round(us, 2),
                     "tflops": round(2 * m * n * k / (us * 1e-6) / 1e12, 1)})
    return rows


def table(d):
    rows = []
    ours = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("ours_") and name.endswith(".json"):
            r = json.load(open(os.path.join(d, name)))
            ours[r["shape"]] = r
    peers = json.load(open(os.path.join(d, "peers.json"))) if os.path.exists(os.path.join(d, "peers.json")) else {}

    def f(v, nd=3):
        return f"{v:.{nd}f}" if isinstance(v, (int, float)) else (str(v) if v is not None else "-")
    order = sorted({k for k in ours if "_" not in k} | set(peers), key=lambda k: (int(k.split("s")[1]), int(k[1:].split("s")[0])))
    rows.append("| BERT-base | ours fp16 (graph replay) | torch.compile r-o fp16 | HF fp16 in one CUDA graph | "
                "ORT CUDA fp16 (optimised, CUDA graph) | torch eager fp32 | torch eager fp16 | ours: rel err vs ORT "
                "fp32 | ORT CUDA fp16: rel err | cuda-onnxruntime via xrt: rel err | kernels/inference | arena MiB | "
                "ORT CUDA fp16 device MiB | cold start ms |")
    rows.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in order:
        o, p = ours.get(k, {}), peers.get(k, {})
        rows.append(f"| {k} | {f(o.get('median_ms'))} | {f(p.get('torch_compile_ro_fp16'))} | "
                    f"{f(p.get('torch_fp16_cuda_graph'))} | {f(p.get('ort_cuda_fp16_graph'))} | "
                    f"{f(p.get('torch_eager_fp32'))} | "
                    f"{f(p.get('torch_eager_amp_fp16'))} | {f(o.get('rel_err'), 5) if 'rel_err' in o else '-'} | "
                    f"{f(p.get('ort_cuda_fp16_graph_rel_err'), 5)} | {f(o.get('ort_variant_rel_err'), 5)} | "
                    f"{o.get('launches', '-')} | {f(o.get('arena_bytes', 0) / 2**20, 1) if 'arena_bytes' in o else '-'} "
                    f"| {f(p.get('ort_cuda_fp16_graph_device_mib'), 1)} | {f(o.get('cold_ms'), 1)} |")
    rows += ["", "| BERT-base tf32 | ours tf32 (graph replay) | HF fp32 in one CUDA graph | HF tf32 in one CUDA graph | "
             "ORT CUDA fp32 (optimised, no graph) | torch eager fp32 | ours: rel err vs ORT fp32 |",
             "|---|---|---|---|---|---|---|"]
    for k in sorted(ours):
        if not k.startswith("tf32_"):
            continue
        o, p = ours[k], peers.get(k[5:], {})
        rows.append(f"| {k[5:]} | {f(o.get('median_ms'))} | {f(p.get('torch_fp32_cuda_graph'))} | "
                    f"{f(p.get('torch_tf32_cuda_graph'))} | {f(p.get('ort_cuda_fp32'))} | "
                    f"{f(p.get('torch_eager_fp32'))} | "
                    f"{f(o.get('rel_err'), 5) if 'rel_err' in o else '-'} |")
    per_gemm = [(k, r) for k in order for r in ours.get(k, {}).get("profile_gemms", [])]
    if per_gemm:
        rows += ["", "| shape | GEMM m x n x k | epilogue | GEMMs | median us (profiling mode, each launch alone) | "
                 "TFLOP/s |", "|---|---|---|---|---|---|"]
        rows += [f"| {k} | {r['gemm']} | {r['epilogue']} | {r['count']} | {r['median_us']:.1f} | {r['tflops']:.0f} |"
                 for k, r in per_gemm]
    print("\n".join(rows))


def main():
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "export":
        export(rest[0])
    elif cmd == "inputs":
        inputs(rest[0], rest[1:])
    elif cmd == "peers":
        peers(rest[0], rest[1:])
    elif cmd == "ortpeers":
        ortpeers(rest[0], rest[1:])
    elif cmd == "coldstart":
        coldstart(rest[0], rest[1])
    elif cmd == "table":
        table(rest[0])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
