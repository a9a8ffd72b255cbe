"""`xrtc bench`: latency, throughput, load time and memory of a bundle; a CI gate against a baseline."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from ..errors import OutputExistsError, UsageError, XrtcError

log = logging.getLogger("xrtc.bench")

PEERS = ("ort", "openvino")


def _peer_runner(peer: str, model_bytes: bytes, feeds: dict):
    """A run() of the model on a peer engine as users run it stock: ONNX Runtime CPU with its defaults, OpenVINO
    CPU with its defaults (which may compute in bf16 on CPUs with bf16 units)."""
    if peer == "ort":
        import onnxruntime as ort

        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feeds), f"onnxruntime {ort.__version__}"
    try:
        import openvino as ov
    except ImportError as err:
        raise XrtcError("--peers openvino needs OpenVINO: pip install 'xpuruntime[openvino]'") from err
    core = ov.Core()
    compiled = core.compile_model(_ov_read(core, model_bytes), "CPU")
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds), f"openvino {ov.__version__}"


def _ov_read(core, model_bytes: bytes):
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="xrtc-bench-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(model_bytes)
        return core.read_model(path)


class Bench:
    """Benchmark a bundle: load time, first run, latency percentiles, throughput at a concurrency, peak memory.

    Warms up for --warmup-s, then runs at least --iterations and --duration-s. --json writes the result (with the
    machine fingerprint and versions) for a later --baseline; --peers ort,openvino measures the same model on the
    stock engines side by side. With --baseline OLD.json the run fails with exit code 7 when p50 latency or
    throughput is worse than the baseline by more than --max-regression (default 5%); a baseline from another
    machine is refused (exit code 5) unless --allow-other-machine.
    """

    name = "bench"
    ok_codes = (0,)

    def add_args(self, parser) -> None:
        from .run import add_runtime_args

        parser.add_argument("bundle", help="the .xrtpkg to benchmark")
        add_runtime_args(parser)
        parser.add_argument("--iterations", type=int, default=50, metavar="N", help="at least N timed runs (50)")
        parser.add_argument("--duration-s", type=float, default=2.0, metavar="S", help="at least S seconds (2)")
        parser.add_argument("--warmup-s", type=float, default=0.2, metavar="S", help="warm-up seconds (0.2)")
        parser.add_argument("--concurrency", type=int, default=2, metavar="N",
                            help="threads for the throughput measurement (default 2)")
        parser.add_argument("--peers", metavar="ort,openvino", help="also measure the model on these stock engines")
        parser.add_argument("--model", metavar="MODEL.onnx",
                            help="the model the peers run (default: the bundle's ONNX Runtime variant's graph)")
        parser.add_argument("--json", metavar="OUT.json", help="write the result as JSON (and print no table)")
        parser.add_argument("--force", action="store_true", help="overwrite --json")
        parser.add_argument("--baseline", metavar="OLD.json", help="compare against an earlier --json result")
        parser.add_argument("--max-regression", default="5%", metavar="PCT",
                            help="allowed slow-down against --baseline (default 5%%)")
        parser.add_argument("--allow-other-machine", action="store_true",
                            help="compare with a baseline from another machine")

    def run(self, args) -> int:
        from .. import benchmark
        from .profile import write_json

        if args.iterations < 1 or args.duration_s < 0 or args.warmup_s < 0 or args.concurrency < 1:
            raise UsageError("--iterations and --concurrency must be >= 1, --duration-s and --warmup-s >= 0")
        budget = benchmark.parse_budget(args.max_regression)
        if args.json and os.path.exists(args.json) and not args.force:
            raise OutputExistsError(f"{args.json} exists; pass --force to overwrite")
        baseline = None
        if args.baseline:  # read first: a bad baseline fails before minutes of measuring
            try:
                with open(args.baseline, encoding="utf-8") as f:
                    baseline = json.load(f)
            except (OSError, ValueError) as err:
                raise UsageError(f"--baseline {args.baseline}: cannot read it as JSON: {err}") from err
            from .. import machine

            # Same checks as after measuring, on an empty result: another machine's baseline is refused up front.
            benchmark.compare({"machine": machine.describe(), "latency_ms": {"p50": 1.0}}, baseline, budget,
                              args.allow_other_machine)
        peers = [p.strip() for p in (args.peers or "").split(",") if p.strip()]
        unknown = [p for p in peers if p not in PEERS]
        if unknown:
            raise UsageError(f"--peers {','.join(unknown)}: unknown; choose from {','.join(PEERS)}")
        if args.json and not args.verbose:
            logging.getLogger("xrtc").setLevel(logging.WARNING)  # --json: quiet unless -v
        result = measure(args, peers)
        rows = benchmark.compare(result, baseline, budget, args.allow_other_machine) if baseline else []
        if rows:
            result["baseline"] = {"file": args.baseline, "max_regression": budget, "rows": rows}
        if args.json:
            write_json(args.json, result, args.force)
        else:
            print(render(result))
        sys.stdout.flush()
        if rows:
            benchmark.check(rows, budget)  # raises RegressionError (exit 7)
        return 0


def _peer_model(args) -> bytes:
    if args.model:
        with open(args.model, "rb") as f:
            return f.read()
    from .inspect import read_bundle

    bundle = read_bundle(args.bundle)
    for v in bundle.manifest.get("variants", []):
        if v.get("engine") == "onnxruntime" and "model" in v.get("artifacts", {}):
            log.info("peers run the bundle's ONNX Runtime variant's graph (%s); --model picks another", v["id"])
            from ..weight_store import standalone_model

            arts = v["artifacts"]
            return standalone_model(bundle.data(arts["model"]), bundle.data(arts["weights"]) if "weights" in arts
                                    else None)
    raise UsageError("--peers: the bundle has no ONNX graph (no ONNX Runtime variant); pass --model MODEL.onnx")


def measure(args, peers: list[str] = ()) -> dict:
    """The bench result for `args` (the runtime options of add_runtime_args plus iterations, duration_s, warmup_s,
    concurrency, seed, model)."""
    from .. import benchmark, machine
    from ..progress import Clock
    from .run import feeds_for, load_session

    clock = Clock()
    rss_before = benchmark.rss_mib()
    with clock.stage("load"):
        t0 = time.perf_counter()
        _, session = load_session(args)
        load_ms = (time.perf_counter() - t0) * 1e3
    feeds = feeds_for(session, args)
    t0 = time.perf_counter()
    session.run(feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    with clock.stage(f"latency (>= {args.iterations} runs, >= {args.duration_s:g} s)"):
        times = benchmark.time_runs(lambda: session.run(feeds), args.warmup_s, args.iterations, args.duration_s)
    with clock.stage(f"throughput at concurrency {args.concurrency}"):
        per_s = benchmark.throughput(lambda: session.run(feeds), args.concurrency, max(args.duration_s, 0.1))
    explain = session.explain()
    result = {"bench_format": benchmark.BENCH_FORMAT, "bundle": args.bundle,
              "bundle_sha256": benchmark.file_sha256(args.bundle), "variant": explain.get("variant"),
              "engine": explain.get("engine"), "device": explain.get("device"),
              "machine": machine.describe(), "versions": machine.versions(),
              "config": {"iterations": args.iterations, "duration_s": args.duration_s,
                         "warmup_s": args.warmup_s, "concurrency": args.concurrency, "seed": args.seed,
                         "inputs": {k: [str(v.dtype), list(v.shape)] for k, v in feeds.items()}},
              "load_ms": load_ms, "first_run_ms": first_ms, "latency_ms": benchmark.percentiles(times),
              "samples_ms": times[:benchmark.SAMPLES_KEPT],
              "throughput": {"concurrency": args.concurrency, "per_s": per_s},
              "memory_mib": {"rss_after_load_and_runs": benchmark.rss_mib(),
                             "rss_growth": benchmark.rss_mib() - rss_before,
                             "peak_rss": benchmark.peak_rss_mib()},
              "peers": {}}
    if peers:
        model_bytes = _peer_model(args)
        for peer in peers:
            with clock.stage(f"peer {peer}"):
                run, version = _peer_runner(peer, model_bytes, feeds)
                peer_times = benchmark.time_runs(run, args.warmup_s, args.iterations, args.duration_s)
                result["peers"][peer] = {"version": version, "latency_ms": benchmark.percentiles(peer_times)}
    return result


def render(result: dict) -> str:
    lat = result["latency_ms"]
    m = result["machine"]
    lines = [f"variant {result['variant']} (engine {result['engine']}, device {result['device']}) on {m['cpu_model']}, "
             f"{m['usable_cpus']} usable CPUs (fingerprint {m['fingerprint']})",
             f"load {result['load_ms']:.1f} ms, first run {result['first_run_ms']:.2f} ms, peak RSS "
             f"{result['memory_mib']['peak_rss']:.0f} MiB",
             f"{'':<14} {'runs':>6} {'p50':>9} {'p90':>9} {'p95':>9} {'p99':>9} {'mean':>9}  (ms)",
             _row("xrt", lat)]
    for peer, p in result["peers"].items():
        lines.append(_row(f"{peer}", p["latency_ms"]) + f"  {p['version']}")
    t = result["throughput"]
    lines.append(f"throughput {t['per_s']:.1f} runs/s at concurrency {t['concurrency']}")
    for r in result.get("baseline", {}).get("rows", []):
        lines.append(f"vs baseline {r['metric']:<17} {r['baseline']:10.4g} -> {r['now']:10.4g} ({r['change']:+.1%})"
                     f"{'  REGRESSION' if r['regressed'] else ''}")
    return "\n".join(lines)


def _row(name: str, lat: dict) -> str:
    return (f"{name:<14} {lat['runs']:>6} {lat['p50']:9.4f} {lat['p90']:9.4f} {lat['p95']:9.4f} {lat['p99']:9.4f} "
            f"{lat['mean']:9.4f}")
