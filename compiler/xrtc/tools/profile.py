"""`xrtc profile`: where a bundle's run time goes, per engine entry and per ONNX node."""

from __future__ import annotations

import json
import os
import sys

from ..errors import OutputExistsError


def write_json(path: str, value, force: bool) -> None:
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists; pass --force to overwrite")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)


class Profile:
    """Profile the variant a bundle runs with the engine's own profiler; map every entry to its ONNX nodes.

    OpenVINO: per-layer performance counters; ONNX Runtime: its profiler; a fused entry names all of its nodes.
    Prints the top entries by time and the time per ONNX op type; --trace writes a Chrome trace (chrome://tracing,
    ui.perfetto.dev) with one track per engine stream, copies (layout/precision reorders) as their own events.
    cuda variants: the engine profiles itself on the GPU (XRT_CUDA_PROFILE=1 XRT_CUDA_REPORT=FILE); pass that
    report with --cuda-report to map it.
    """

    name = "profile"

    def add_args(self, parser) -> None:
        from .run import add_runtime_args

        parser.add_argument("bundle", help="the .xrtpkg to profile")
        add_runtime_args(parser)
        parser.add_argument("--runs", type=int, default=20, metavar="N", help="profiled runs to average (default 20)")
        parser.add_argument("--top", type=int, default=15, metavar="N", help="rows of the top table (default 15)")
        parser.add_argument("--trace", metavar="TRACE.json", help="write a Chrome trace (Perfetto) JSON file")
        parser.add_argument("-o", "--output", metavar="PROFILE.json", help="write the full profile as JSON")
        parser.add_argument("--cuda-report", metavar="FILE", help="map a cuda engine report (XRT_CUDA_REPORT) instead")
        parser.add_argument("--force", action="store_true", help="overwrite --trace / --output")
        parser.add_argument("--json", action="store_true", help="print the profile (without the trace) as JSON")

    def run(self, args) -> int:
        from .. import profiling
        from ..errors import UsageError
        from ..progress import Clock
        from .inspect import read_bundle

        if args.runs < 1:
            raise UsageError("--runs must be at least 1")
        for path in (args.trace, args.output):  # before minutes of profiling, not after
            if path and os.path.exists(path) and not args.force:
                raise OutputExistsError(f"{path} exists; pass --force to overwrite")
        if args.json and not args.verbose:
            import logging

            logging.getLogger("xrtc").setLevel(logging.WARNING)  # --json: quiet unless -v
        clock = Clock()
        bundle = read_bundle(args.bundle)
        if args.cuda_report:
            variant = next((v for v in bundle.manifest.get("variants", []) if v.get("engine") == "cuda"
                            and (not args.variant or v["id"] == args.variant)), None)
            if variant is None:
                raise UsageError(f"{args.bundle} has no cuda variant to map --cuda-report to")
            try:
                with open(args.cuda_report, encoding="utf-8") as f:
                    per_run, run_ms = profiling.from_cuda_report(f.read().splitlines())
            except (OSError, UnicodeDecodeError) as err:
                raise UsageError(f"--cuda-report {args.cuda_report}: cannot read it: {err}") from err
            result = profiling.assemble(per_run, run_ms, profiling.graph_nodes(bundle, bundle.manifest, variant),
                                        {"bundle": args.bundle, "variant": variant["id"], "engine": "cuda",
                                         "device": "cuda"})
        else:
            from .run import feeds_for, load_session

            with clock.stage("load"):
                _, session = load_session(args)
                feeds = feeds_for(session, args)
            with clock.stage(f"profile {args.runs} runs"):
                result = profiling.profile(session, bundle, feeds, args.runs)
            result["bundle"] = args.bundle
        if args.trace:
            write_json(args.trace, {"traceEvents": result["trace"], "displayTimeUnit": "ms"}, args.force)
        if args.output:
            write_json(args.output, result, args.force)
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k != "trace"}, indent=1))
        else:
            print(profiling.top_table(result, args.top))
            if args.trace:
                print(f"trace written to {args.trace} (open in ui.perfetto.dev or chrome://tracing)")
        sys.stdout.flush()
        return 0
