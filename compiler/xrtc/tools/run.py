"""`xrtc run`: run a bundle through the C++ runtime (xpuruntime), print or save the outputs, optionally time it."""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time

from ..errors import XrtcError
from .. import inputs as _data

log = logging.getLogger("xrtc.run")


def add_runtime_args(parser) -> None:
    """Runtime options shared by `run` and `verify`."""
    parser.add_argument("--device", default="cpu", help="device to run on (default: cpu)")
    parser.add_argument("--engine", help="only use variants of this engine (openvino, onnxruntime)")
    parser.add_argument("--variant", help="run exactly this variant id (see `xrtc inspect`)")
    parser.add_argument("--inputs", metavar="FILE.npz", help="inputs: an .npz whose keys are input names")
    parser.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="one input from an .npy (repeatable)")
    parser.add_argument("--shape", action="append", metavar="NAME=1x3x224x224",
                        help="shape for random inputs with dynamic dims (repeatable)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for random inputs (default 0; the same inputs as xrt-run --seed)")
    parser.add_argument("--fallback", metavar="DEV[,DEV]",
                        help="devices to try when --device has no usable variant (e.g. cpu); 'none' allows none; "
                             "default: the bundle's chain")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="engine compile cache for variants compiled at load (NPU; CPU without a matching blob)")
    parser.add_argument("--trusted-key", action="append", metavar="NAME.pub",
                        help="accept only bundles signed by this key (repeatable; `xrtc keygen` writes NAME.pub)")
    parser.add_argument("--require-signature", action="store_true",
                        help="refuse unsigned bundles (any valid signer is accepted unless --trusted-key is given)")


def trust_args(args) -> dict:
    """The signature policy of `--trusted-key` / `--require-signature` as xrt.load() keywords."""
    return {"trusted_keys": args.trusted_key, "require_signature": args.require_signature}


def load_session(args):
    try:
        import xpuruntime as xrt
    except ImportError as err:
        raise XrtcError(f"cannot import the runtime (xpuruntime): {err}. Reinstall with `pip install xpuruntime`") \
            from err
    return xrt, xrt.load(args.bundle, device=args.device, engine=args.engine, variant=args.variant,
                         **trust_args(args), **device_args(args))


def device_args(args) -> dict:
    """--fallback / --cache-dir as xrt.load() keywords."""
    fallback = None
    if getattr(args, "fallback", None):
        fallback = [] if args.fallback == "none" else [d.strip() for d in args.fallback.split(",") if d.strip()]
    return {"fallback": fallback, "cache_dir": getattr(args, "cache_dir", None)}


def feeds_for(session, args):
    feeds = _data.load_inputs(args.inputs, args.input)
    if not feeds:
        feeds = _data.seeded_inputs(session.inputs, _data.parse_shapes(args.shape), args.seed)
        log.info("no inputs given: random inputs (seed %d)", args.seed)
    return feeds


class Run:
    """Run a bundle through the C++ runtime and print (or save) its outputs.

    Picks the variant the bundle prefers for the device (or --engine/--variant), says which ran and why, prints
    each output's dtype, shape and statistics; --bench N times N runs after a warm-up.
    """

    name = "run"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", help="the .xrtpkg to run")
        add_runtime_args(parser)
        parser.add_argument("--save-outputs", metavar="OUT.npz", help="write outputs to an .npz (keys: output names)")
        parser.add_argument("--force", action="store_true", help="overwrite --save-outputs if it exists")
        parser.add_argument("--bench", type=int, default=0, metavar="N", help="time N runs and print percentiles")
        parser.add_argument("--warmup", type=int, default=10, metavar="N", help="warm-up runs before --bench")
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        parser.add_argument("--profile-load", action="store_true",
                            help="break the load into stages (open, verify, engine init, first run) with times")

    def run(self, args) -> int:
        t0 = time.perf_counter()
        xrt, session = load_session(args)
        feeds = feeds_for(session, args)
        t1 = time.perf_counter()
        outputs = session.run(feeds)
        t2 = time.perf_counter()
        report = {"bundle": args.bundle, "explain": session.explain(),
                  "load_ms": (t1 - t0) * 1e3, "first_run_ms": (t2 - t1) * 1e3,
                  "outputs": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in outputs.items()}}
        if args.profile_load:
            stages = session.load_profile()
            stages["first_run_s"] = t2 - t1
            stages["load_to_first_result_s"] = stages["load_s"] + stages["first_run_s"]
            report["load_profile"] = stages
        if args.bench > 0:
            for _ in range(args.warmup):
                session.run(feeds)
            times = []
            for _ in range(args.bench):
                s = time.perf_counter()
                session.run(feeds)
                times.append((time.perf_counter() - s) * 1e3)
            times.sort()
            q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
            report["bench_ms"] = {"runs": len(times), "p50": q[49], "p90": q[89], "p99": q[98], "min": times[0],
                                  "mean": statistics.fmean(times)}
        if args.save_outputs:
            _data.save_npz(args.save_outputs, outputs, args.force)
        if args.json:
            print(json.dumps(report, indent=2))
            return 0
        ex = report["explain"]
        print(f"variant {ex.get('variant')} (engine {ex.get('engine')} {ex.get('engine_version', '')}, "
              f"device {ex.get('device')}): {ex.get('reason', '')}")
        if ex.get("fallback"):
            print(f"  fallback: {ex['fallback']}")
        if ex.get("unverified"):
            print(f"  UNVERIFIED bundle (compiled with --allow-unverified): {ex['unverified']}")
        if ex.get("cpp_runs"):  # the same bundle runs another variant from C/C++ (xrt-run): say so
            print(f"  note: {ex['cpp_runs']['why']}")
        if ex.get("engine_info"):
            print(f"  engine: {', '.join(f'{k} {v}' for k, v in sorted(ex['engine_info'].items()))}")
        for skipped in ex.get("skipped", []):
            print(f"  skipped {skipped}")
        print(f"load {report['load_ms']:.1f} ms, first run {report['first_run_ms']:.2f} ms")
        if "load_profile" in report:
            print(format_load_profile(report["load_profile"]))
        for name, value in outputs.items():
            print(f"  {name}: {_data.describe_array(value)}")
        if "bench_ms" in report:
            b = report["bench_ms"]
            print(f"latency over {b['runs']} runs: p50 {b['p50']:.3f} ms, p90 {b['p90']:.3f} ms, "
                  f"p99 {b['p99']:.3f} ms, min {b['min']:.3f} ms, mean {b['mean']:.3f} ms")
        if args.save_outputs:
            print(f"outputs written to {args.save_outputs}")
        sys.stdout.flush()
        return 0


# (key, label) of the stages `--profile-load` prints, in load order.
LOAD_STAGES = [("open_s", "open (header, table, manifest)"), ("verify_s", "verify (sections, on first use)"),
               ("engine_init_s", "engine init"), ("other_s", "other (variant choice)"), ("first_run_s", "first run")]


def format_load_profile(stages: dict) -> str:
    """The --profile-load table: one line per stage, its time and share of load-to-first-result."""
    total = stages["load_to_first_result_s"]
    lines = [f"load profile ({'sections verified on first use' if stages['sections_verified_on_use'] else 'verified whole at open'}):"]
    for key, label in LOAD_STAGES:
        share = 100.0 * stages[key] / total if total > 0 else 0.0
        lines.append(f"  {label:<34} {stages[key] * 1e3:9.2f} ms  {share:5.1f}%")
    lines.append(f"  {'load to first result':<34} {total * 1e3:9.2f} ms")
    return "\n".join(lines)
