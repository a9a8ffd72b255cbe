"""`xrtc report`: one self-contained HTML page about a bundle (compiler/xrtc/report.py draws it)."""

from __future__ import annotations

import logging
import os
import sys

from ..errors import OutputExistsError, UsageError

log = logging.getLogger("xrtc.report")


class Report:
    """Write one self-contained HTML report of a bundle (no network fetches): variants and why each was chosen or
    excluded, the accuracy gate's numbers per output, the per-node plan, a latency distribution plot, time by op
    type and by node, size by section, and optionally a comparison against a baseline (`xrtc bench --json`).

    Measures a short bench and a profile on this machine unless --bench / --profile give earlier results; plots
    need the `[report]` extra (matplotlib).
    """

    name = "report"

    def add_args(self, parser) -> None:
        from .run import add_runtime_args

        parser.add_argument("bundle", help="the .xrtpkg to report on")
        parser.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="the HTML file to write")
        add_runtime_args(parser)
        parser.add_argument("--bench", metavar="BENCH.json", help="an `xrtc bench --json` result to show "
                            "(default: measure one now)")
        parser.add_argument("--profile", metavar="PROFILE.json", help="an `xrtc profile -o` result to show "
                            "(default: profile now)")
        parser.add_argument("--baseline", metavar="OLD.json", help="compare the bench with this earlier result")
        parser.add_argument("--allow-other-machine", action="store_true",
                            help="compare with a baseline from another machine")
        parser.add_argument("--max-regression", default="5%", metavar="PCT",
                            help="the budget the comparison marks (default 5%%)")
        parser.add_argument("--duration-s", type=float, default=1.0, metavar="S", help="bench seconds (default 1)")
        parser.add_argument("--runs", type=int, default=20, metavar="N", help="profiled runs (default 20)")
        parser.add_argument("--no-measure", action="store_true",
                            help="only what the bundle holds (and --bench/--profile): no runs on this machine")
        parser.add_argument("--force", action="store_true", help="overwrite the output")

    def run(self, args) -> int:
        import argparse

        from .. import benchmark, profiling, report
        from ..progress import Clock
        from .explain import load_decisions
        from .inspect import describe, read_bundle

        if os.path.exists(args.output) and not args.force:
            raise OutputExistsError(f"{args.output} exists; pass --force to overwrite")
        clock = Clock()
        bundle = read_bundle(args.bundle)
        info = describe(args.bundle, bundle)
        decisions = load_decisions(bundle, args.bundle) if bundle.manifest.get("decisions") else None
        bench = report.load_json(args.bench, "--bench")
        prof = report.load_json(args.profile, "--profile")
        for value, key, what in ((bench, "bench_format", "--bench: not an `xrtc bench --json` result"),
                                 (prof, "profile_format", "--profile: not an `xrtc profile -o` result")):
            if value is not None and (not isinstance(value, dict) or value.get(key) != 1):
                raise UsageError(f"{what} ({key} 1)")
        if not args.no_measure and (bench is None or prof is None):
            from .bench import measure
            from .run import feeds_for, load_session

            if bench is None:
                with clock.stage("bench"):
                    bench = measure(argparse.Namespace(**vars(args), iterations=50, warmup_s=0.2, concurrency=2,
                                                       model=None))
            if prof is None:
                with clock.stage(f"profile {args.runs} runs"):
                    _, session = load_session(args)
                    prof = profiling.profile(session, bundle, feeds_for(session, args), args.runs)
        baseline = None
        if args.baseline:
            if bench is None:
                raise UsageError("--baseline needs a bench: give --bench or leave out --no-measure")
            rows = benchmark.compare(bench, report.load_json(args.baseline, "--baseline"),
                                     benchmark.parse_budget(args.max_regression), args.allow_other_machine)
            baseline = {"file": args.baseline, "rows": rows}
        with clock.stage("render"):
            page = report.render(info, decisions, bench, prof, baseline)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(page)
        print(f"report written to {os.path.abspath(args.output)} ({len(page.encode()):,} bytes; open it in a "
              "browser)")
        sys.stdout.flush()
        return 0
