"""Per-node profiles of a bundle's variant, taken with the engine's own profiler and mapped back to ONNX nodes.

The variant is the one the runtime picks (xpuruntime.load with the caller's device/engine/variant); its artifacts
are then run through the engine's Python API with profiling on, with the options the runtime uses:
- OpenVINO: per-layer performance counters (`PERF_COUNT`; running averages, read before and after the timed runs);
  each executed layer names the ONNX nodes it came from in the runtime model's `originalLayersNames` (a fused layer
  names all of them).
- ONNX Runtime: its profiler (`enable_profiling`); the kernels' node names are matched against the graph ORT
  optimised at load (`optimized_model_filepath`), by name and by the tensors a fused node produces.
- cuda (the C++ engine; needs an NVIDIA GPU, not run on CPU-only machines): its per-launch report
  (`XRT_CUDA_PROFILE=1`, `XRT_CUDA_REPORT=FILE`), whose launches name their ONNX nodes, with the run's input upload,
  output download and final synchronisation timed as their own entries; `from_cuda_report` maps it.

Result (profile_format 1), per-run times in ms averaged over `runs`:
    {"profile_format": 1, "bundle", "variant", "engine", "device", "runs", "run_ms" (engine-measured time of one
     run), "wall_ms" (one run through xpuruntime, for comparison), "entries": [{"name", "type", "kind":
     "compute"|"copy"|"sync"|"overhead", "ms", "stream", "onnx_nodes"}], "nodes": [{"name", "op", "ms", "entries",
     "status": "timed"|"removed by engine"}], "trace": Chrome trace events}
Every node of the bundle's graph (decisions.json's nodes) appears in "nodes": timed, or removed by the engine at
load (constant-folded or a no-op: no run time). The "overhead" entry is the run time no entry accounts for, so
entries sum to run_ms exactly; how large it is says how much the per-node numbers explain.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import defaultdict

from .errors import UsageError, XrtcError

log = logging.getLogger("xrtc.profile")

PROFILE_FORMAT = 1
_COPY_TYPES = {"Reorder", "Convert", "ReorderInput", "ReorderOutput", "MemcpyToHost", "MemcpyFromHost", "Transpose"}
_IO_TYPES = {"Parameter", "Result", "Input", "Output"}


def _kind(op_type: str) -> str:
    """copy: layout/precision conversions and host-device copies (the seed asks for copies to be explained)."""
    if op_type in _COPY_TYPES or op_type.startswith("Memcpy"):
        return "copy"
    if op_type in _IO_TYPES:
        return "io"
    return "compute"


def graph_nodes(bundle, manifest: dict, variant: dict) -> list[dict]:
    """[{name, op}] of the graph the variant runs: decisions.json's nodes (the plan), else the ONNX artifact's."""
    section = manifest.get("decisions")
    if section:
        return [{"name": n["name"], "op": n["op"]} for n in json.loads(bundle.data(section))["nodes"]]
    model = variant.get("artifacts", {}).get("model")
    if model:
        import onnx

        graph = onnx.load_from_string(bundle.data(model)).graph
        return [{"name": n.name, "op": n.op_type} for n in graph.node]
    raise XrtcError("the bundle has neither a decision log nor an ONNX artifact to map the profile to; rebuild it")


def _reconcile(entries: list[dict], nodes: list[dict]) -> dict[str, str]:
    """Nodes no entry names, where the engine's names lost them (a fused activation, an op named after its output
    tensor): an entry that names no node takes the first unnamed node of its op type; any node still unnamed joins
    the entry of the nearest earlier node (engines fuse a node into its producer). Returns node -> how it was
    attributed, for the nodes attributed here."""
    named = {n for e in entries for n in e["onnx_nodes"]}
    how: dict[str, str] = {}
    for e in entries:
        if e["onnx_nodes"] or e["kind"] not in ("compute",):
            continue
        op = e["type"].split(" ")[0]
        match = next((n["name"] for n in nodes if n["name"] not in named and n["op"] == op), None)
        if match:
            e["onnx_nodes"].append(match)
            named.add(match)
            how[match] = "matched by op type"
    owner: dict[str, dict] = {}
    for e in entries:
        for n in e["onnx_nodes"]:
            owner.setdefault(n, e)
    previous = None
    for n in nodes:
        if n["name"] in owner:
            previous = owner[n["name"]]
        elif previous is not None:
            previous["onnx_nodes"].append(n["name"])
            how[n["name"]] = f"fused into the earlier entry {previous['name']} (attributed by graph order)"
    return how


def _finish(entries: list[dict], run_ms: float, nodes: list[dict]) -> tuple:
    """Adds the overhead entry and the per-node view: a node's time is its entries' time, split evenly among the
    nodes a fused entry names."""
    how = _reconcile(entries, nodes)
    accounted = sum(e["ms"] for e in entries)
    if run_ms > accounted:
        entries.append({"name": "(engine overhead)", "type": "overhead", "kind": "overhead", "ms": run_ms - accounted,
                        "stream": "engine", "onnx_nodes": []})
    by_node: dict[str, float] = defaultdict(float)
    entry_names: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        for n in e["onnx_nodes"]:
            by_node[n] += e["ms"] / len(e["onnx_nodes"])
            entry_names[n].append(e["name"])
    out_nodes = []
    for n in nodes:
        timed = n["name"] in entry_names
        out_nodes.append({"name": n["name"], "op": n["op"], "ms": by_node.get(n["name"], 0.0),
                          "entries": entry_names.get(n["name"], []),
                          "status": ("timed" if n["name"] not in how else "timed, " + how[n["name"]]) if timed
                          else "removed by engine"})
    return entries, out_nodes


def _track(e: dict) -> str:
    return f"{e['stream']}: copies and syncs" if e["kind"] in ("copy", "sync") else e["stream"]


def _trace(entries_per_run: list[list[dict]], run_ms: list[float], meta: dict) -> list[dict]:
    """Chrome trace events (chrome://tracing, ui.perfetto.dev): one process; a host track with each run, one track
    per engine stream, and the copies and syncs of each stream on their own track."""
    events = [{"ph": "M", "pid": 1, "name": "process_name", "args": {"name": f"xrt {meta['variant']}"}}]
    tracks: dict[str, int] = {"host: runs": 1}
    for run in entries_per_run:
        for e in run:
            tracks.setdefault(_track(e), len(tracks) + 1)
    for name, tid in tracks.items():
        events.append({"ph": "M", "pid": 1, "tid": tid, "name": "thread_name", "args": {"name": name}})
    for i, (run, ms) in enumerate(zip(entries_per_run, run_ms)):
        if run:
            events.append({"ph": "X", "pid": 1, "tid": 1, "name": f"run {i}", "cat": "run",
                           "ts": round(min(e["ts_us"] for e in run), 3), "dur": round(ms * 1e3, 3), "args": {}})
        for e in run:
            events.append({"ph": "X", "pid": 1, "tid": tracks[_track(e)], "name": e["name"], "cat": e["kind"],
                           "ts": round(e["ts_us"], 3), "dur": round(max(e["ms"], 0.0) * 1e3, 3),
                           "args": {"type": e["type"], "onnx_nodes": e["onnx_nodes"]}})
    return events


# --- OpenVINO ---------------------------------------------------------------------------------------------------

def _openvino_model(bundle, variant: dict):
    import openvino as ov

    arts = variant["artifacts"]
    xml = bundle.data(arts["model"]).decode()
    weights = bundle.data(arts["weights"]) if "weights" in arts else b""
    import numpy as np

    core = ov.Core()
    model = core.read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8).copy()) if weights else ov.Tensor())
    props = {k: v for k, v in variant.get("options", {}).items() if not k.startswith("xrt.")}
    props.setdefault("INFERENCE_PRECISION_HINT", "f32")
    if props["INFERENCE_PRECISION_HINT"] == "f16" and \
            "FP16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        props["INFERENCE_PRECISION_HINT"] = "f32"  # as the runtime does: f16 is honoured only with fp16 units
    props["PERF_COUNT"] = "YES"
    return core.compile_model(model, "CPU", props)


def _onnx_name(ir_name: str, known: set[str]) -> str | None:
    """The ONNX node an OpenVINO IR op came from: its own name, or a prefix of it (the ONNX frontend splits a Conv
    with bias into "<node>/WithoutBiases" and "<node>")."""
    name = ir_name.strip()
    while name:
        if name in known:
            return name
        name = name.rpartition("/")[0]
    return None


def _profile_openvino(bundle, variant, feeds, runs, nodes):
    compiled = _openvino_model(bundle, variant)
    known = {n["name"] for n in nodes}
    original: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else op.get_friendly_name()
        original[op.get_friendly_name()] = list(dict.fromkeys(
            found for found in (_onnx_name(n, known) for n in names.split(",")) if found))
    # The CPU plugin's counters are running averages over every inference of the compiled model. Reading them
    # between runs leaves gaps in which OpenVINO's threads go to sleep (waking them is then counted in the run), so
    # the runs go back to back and the counters are read twice: after the warm-up run (avg_1, its weight packing and
    # first allocations) and after the K timed runs; the timed runs' mean per layer is (avg_(K+1)*(K+1) - avg_1)/K.
    # Each run of the trace shows those mean layer times, laid out from the run's start.
    import numpy as np
    import openvino as ov

    request = compiled.create_infer_request()
    for name, array in feeds.items():  # bound once, shared: the timed infer() converts nothing
        request.set_tensor(name, ov.Tensor(np.asarray(array, order="C"), shared_memory=True))

    def counters() -> dict[str, tuple]:
        return {info.node_name: (info.real_time.total_seconds() * 1e3, info.node_type, info.exec_type)
                for info in request.get_profiling_info() if not str(info.status).endswith("NOT_RUN")}

    request.infer()
    first = counters()
    run_times, starts = [], []
    origin = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer()
        run_times.append((time.perf_counter() - t0) * 1e3)
        starts.append((t0 - origin) * 1e6)
    layers = []
    for name, (avg, op_type, exec_type) in counters().items():
        ms = ((runs + 1) * avg - first.get(name, (avg,))[0]) / runs
        layers.append({"name": name, "type": f"{op_type} ({exec_type})", "kind": _kind(op_type), "ms": ms,
                       "stream": "openvino stream 0", "onnx_nodes": original.get(name, [])})
    entries_per_run = []
    for start in starts:
        clock, run = start, []
        for layer in layers:
            run.append(dict(layer, onnx_nodes=list(layer["onnx_nodes"]), ts_us=clock))
            clock += max(layer["ms"], 0.0) * 1e3
        entries_per_run.append(run)
    return entries_per_run, run_times


# --- ONNX Runtime -----------------------------------------------------------------------------------------------

_ELEMENTWISE = {"Add", "Sum", "Relu", "Clip", "Sigmoid", "Mul", "LeakyRelu", "HardSigmoid", "Tanh"}


def _ort_mapping(source, optimized, known: set[str]) -> dict[str, list[str]]:
    """Optimised node name -> the source nodes it runs. ORT keeps the names of nodes it does not rewrite; a node it
    rewrites (NCHWc layout, fusions) is named after the source tensor its first fused node wrote
    ("block1a.relu_nchwc"). From that tensor's producer the mapping walks backwards through single-consumer
    producers (a Conv whose activation was fused) and forwards through single-consumer elementwise consumers (an
    Add/Relu fused as the Conv's sum), never into a node claimed already. A layout copy (ReorderOutput) names the
    producer of the source tensor it restores."""
    producer: dict[str, object] = {}
    consumers: dict[str, list] = defaultdict(list)
    for n in source.graph.node:
        for t in n.output:
            producer[t] = n
        for t in n.input:
            consumers[t].append(n)
    out: dict[str, list[str]] = {n.name: ([n.name] if n.name in known else []) for n in optimized.graph.node}
    claimed = {k for v in out.values() for k in v}
    anchors = {}
    for n in optimized.graph.node:
        if out[n.name]:
            continue
        base = n.name[: -len("_nchwc")] if n.name.endswith("_nchwc") else n.name
        if base in producer and producer[base].name not in claimed:
            anchors[n.name] = producer[base]
            out[n.name].append(producer[base].name)
            claimed.add(producer[base].name)
    for name, node in anchors.items():  # forwards: a fused sum and its activation
        tensor = node.output[0]
        while len(consumers[tensor]) == 1 and consumers[tensor][0].op_type in _ELEMENTWISE and \
                consumers[tensor][0].name not in claimed:
            nxt = consumers[tensor][0]
            out[name].append(nxt.name)
            claimed.add(nxt.name)
            tensor = nxt.output[0]
    for name, node in anchors.items():  # backwards: the producers whose only reader is this chain
        frontier = [node]
        while frontier:
            current = frontier.pop()
            for t in current.input:
                prev = producer.get(t)
                if prev is None or prev.name in claimed or len(consumers[t]) != 1:
                    continue
                out[name].append(prev.name)
                claimed.add(prev.name)
                frontier.append(prev)
    for n in optimized.graph.node:  # layout copies back to a source tensor
        if not out[n.name]:
            owner = next((producer[t].name for t in n.output if t in producer), None)
            out[n.name] = [owner] if owner else []
    return out


def _profile_onnxruntime(bundle, variant, feeds, runs, nodes):
    import onnx
    import onnxruntime as ort
    from xpuruntime._ort_backend import session_options

    from .weight_store import standalone_model

    arts = variant["artifacts"]
    model_bytes = standalone_model(bundle.data(arts["model"]), bundle.data(arts["weights"]) if "weights" in arts
                                   else None)
    with tempfile.TemporaryDirectory(prefix="xrtc-profile-") as tmp:
        so = session_options(json.dumps(variant.get("options", {})))
        so.enable_profiling = True
        so.log_severity_level = 3  # ORT warns that the optimised model it saves is machine-specific: we know
        so.profile_file_prefix = os.path.join(tmp, "ort")
        so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        session.run(None, feeds)  # warm-up
        run_times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(None, feeds)
            run_times.append((time.perf_counter() - t0) * 1e3)
        with open(session.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
        optimized = onnx.load(os.path.join(tmp, "optimized.onnx"), load_external_data=False)
    artifact = onnx.load_from_string(model_bytes)
    mapping = _ort_mapping(artifact, optimized, {n.name for n in artifact.graph.node})
    plan_names = {n["name"] for n in nodes}
    mapping = {k: [p for p in v if p in plan_names] for k, v in mapping.items()}
    # The profiler's "model_run" events are the engine-measured run times; skip the warm-up's.
    model_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][1:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    entries_per_run: list[list[dict]] = [[] for _ in model_runs]
    for e in kernels:
        index = next((i for i, r in enumerate(model_runs) if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]), None)
        if index is None:
            continue  # the warm-up run
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        provider = e.get("args", {}).get("provider", "CPUExecutionProvider")
        entries_per_run[index].append({"name": node, "type": f"{op} ({provider})", "kind": _kind(op),
                                       "ms": e["dur"] / 1e3, "stream": f"onnxruntime thread {e.get('tid', 0)}",
                                       "onnx_nodes": mapping.get(node, []), "ts_us": float(e["ts"])})
    engine_ms = [r["dur"] / 1e3 for r in model_runs] or run_times
    return entries_per_run, engine_ms


# --- cuda (C++ engine report) -------------------------------------------------------------------------------------

def from_cuda_report(report_lines: list[str]) -> tuple[list[list[dict]], list[float]]:
    """Entries per run from the cuda engine's JSON-lines report (XRT_CUDA_PROFILE=1): each {"event": "profile"}
    line is one run whose launches (kernel or GEMM, timed with CUDA events one by one) name their ONNX nodes; its
    "copies" (the input upload before the launches, the output download after them) and "syncs" (the run's final
    synchronisation) are entries of kind copy / sync, on the stream's "copies and syncs" track.
    Not exercised on CPU-only machines; the format is runtime_cpp/backends/cuda/engine.cc, Engine::Profile and
    ExecutePlaced."""
    entries_per_run, run_ms, clock = [], [], 0.0
    for line in report_lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("event") != "profile":
            continue
        copies = record.get("copies", [])
        before = [c for c in copies if c.get("name") == "input upload"]
        after = [c for c in copies if c.get("name") != "input upload"]
        items = [(c, "copy") for c in before] + [(launch, "compute") for launch in record.get("launches", [])] + \
                [(c, "copy") for c in after] + [(c, "sync") for c in record.get("syncs", [])]
        run = []
        for item, kind in items:
            ms = float(item.get("ms", 0.0))
            if kind == "compute":
                entry = {"name": f"{item.get('launch')}: {item.get('name')}",
                         "type": f"{item.get('kind')} {item.get('group')}", "onnx_nodes": list(item.get("onnx_nodes", []))}
            else:
                entry = {"name": str(item.get("name")), "type": str(item.get("type", kind)), "onnx_nodes": []}
            run.append(dict(entry, kind=kind, ms=ms, stream="cuda stream 0", ts_us=clock))
            clock += ms * 1e3
        entries_per_run.append(run)
        launches_ms = float(record.get("total_ms", sum(e["ms"] for e in run if e["kind"] == "compute")))
        run_ms.append(launches_ms + sum(e["ms"] for e in run if e["kind"] != "compute"))
    return entries_per_run, run_ms


# --- the driver ---------------------------------------------------------------------------------------------------

def _average(entries_per_run: list[list[dict]]) -> list[dict]:
    """Entries averaged over runs, keyed by (stream, name); order of first appearance."""
    total: dict[tuple, dict] = {}
    for run in entries_per_run:
        for e in run:
            key = (e["stream"], e["name"])
            if key not in total:
                total[key] = dict(e, ms=0.0)
                total[key].pop("ts_us", None)
            total[key]["ms"] += e["ms"] / len(entries_per_run)
    return list(total.values())


def profile(session, bundle, feeds: dict, runs: int = 20) -> dict:
    """Profiles the variant `session` (an xpuruntime.Session) runs, from `bundle` (xrtpkg.read) with `feeds`."""
    manifest = bundle.manifest
    chosen = session.explain()
    variant = next((v for v in manifest.get("variants", []) if v["id"] == chosen["variant"]), None)
    if variant is None:
        raise XrtcError(f"variant {chosen['variant']!r} is not in the bundle's manifest")
    engine, device = variant["engine"], chosen.get("device", variant.get("device"))
    nodes = graph_nodes(bundle, manifest, variant)
    wall = []
    for _ in range(max(3, runs // 4)):
        t0 = time.perf_counter()
        session.run(feeds)
        wall.append((time.perf_counter() - t0) * 1e3)
    if engine == "openvino" and str(device).lower().startswith("cpu"):
        per_run, run_ms = _profile_openvino(bundle, variant, feeds, runs, nodes)
    elif engine == "onnxruntime" and str(device).lower().startswith("cpu"):
        per_run, run_ms = _profile_onnxruntime(bundle, variant, feeds, runs, nodes)
    elif engine == "cuda":
        raise UsageError("cuda variants are profiled by the engine itself: run with XRT_CUDA_PROFILE=1 "
                         "XRT_CUDA_REPORT=FILE, then `xrtc profile BUNDLE --cuda-report FILE` (needs an NVIDIA GPU)")
    else:
        raise UsageError(f"profiling {engine} on {device} is not supported (supported: openvino and onnxruntime "
                         "on cpu, cuda through its report)")
    return assemble(per_run, run_ms, nodes, {"bundle": str(getattr(bundle, "path", "")), "variant": variant["id"],
                                              "engine": engine, "device": device}, wall,
                    drop_outliers=engine != "openvino")


def assemble(per_run: list[list[dict]], run_ms: list[float], nodes: list[dict], meta: dict,
             wall: list[float] | None = None, drop_outliers: bool = True) -> dict:
    """The profile from per-run entries and run times. `drop_outliers`: leave out runs over twice the median run
    (False where the entries are means over all runs already, as OpenVINO's are)."""
    import statistics

    if not per_run or not run_ms:
        raise XrtcError("the engine's profiler recorded no run")
    # A shared machine stalls now and then; a run over twice the median would swamp the mean of every node in it.
    limit = 2 * statistics.median(run_ms) if drop_outliers else float("inf")
    kept = [(r, ms) for r, ms in zip(per_run, run_ms) if ms <= limit]
    dropped = len(run_ms) - len(kept)
    per_run, run_ms = [r for r, _ in kept], [ms for _, ms in kept]
    mean_run = statistics.fmean(run_ms)
    entries = _average(per_run)
    trace = _trace(per_run, run_ms, meta)
    entries, node_view = _finish(entries, mean_run, nodes)
    return {"profile_format": PROFILE_FORMAT, **meta, "runs": len(per_run), "runs_dropped_as_outliers": dropped,
            "run_ms": mean_run,
            "wall_ms": statistics.median(wall) if wall else None,
            "entries": sorted(entries, key=lambda e: -e["ms"]), "nodes": node_view, "trace": trace}


def top_table(result: dict, top: int = 15) -> str:
    """The top entries by time, with the ONNX nodes each ran, then the per-op-type totals."""
    run = result["run_ms"]
    lines = [f"variant {result['variant']} ({result['engine']} on {result['device']}): {run:.3f} ms per run "
             f"(engine-measured, mean of {result['runs']})"
             + (f"; {result['wall_ms']:.3f} ms through xpuruntime" if result.get("wall_ms") else "")]
    lines.append(f"{'ms':>9} {'%':>6}  {'kind':<8} {'entry':<32} {'type':<28} onnx nodes")
    for e in result["entries"][:top]:
        nodes = ", ".join(e["onnx_nodes"][:4]) + (f" +{len(e['onnx_nodes']) - 4}" if len(e["onnx_nodes"]) > 4 else "")
        lines.append(f"{e['ms']:9.4f} {100 * e['ms'] / run if run else 0:6.1f}  {e['kind']:<8} {e['name'][:32]:<32} "
                     f"{e['type'][:28]:<28} {nodes or '-'}")
    removed = [n["name"] for n in result["nodes"] if not n["status"].startswith("timed")]
    timed = len(result["nodes"]) - len(removed)
    lines.append(f"{timed} of {len(result['nodes'])} ONNX nodes timed"
                 + (f"; removed by the engine at load (no run time): {', '.join(removed)}" if removed else ""))
    lines.append("time by ONNX op type (a fused entry under its first node's op): "
                 + ", ".join(f"{op} {ms:.3f} ms" for op, ms in by_op(result)[:8]))
    return "\n".join(lines)


def by_op(result: dict) -> list[tuple[str, float]]:
    """Time per ONNX op type: a fused entry counts for the op of its first node (the Conv of a Conv+Relu), entries
    that name no node under their kind ("(overhead)", "(copy)")."""
    op_of = {n["name"]: n["op"] for n in result["nodes"]}
    totals: dict[str, float] = defaultdict(float)
    for e in result["entries"]:
        key = op_of.get(e["onnx_nodes"][0], "?") if e["onnx_nodes"] else f"({e['kind']})"
        totals[key] += e["ms"]
    return sorted(totals.items(), key=lambda kv: -kv[1])
