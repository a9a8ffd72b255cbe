"""`xrtc tune`: tune a bundle on the machine it will run on and store what was chosen in a new bundle."""

from __future__ import annotations

import logging
import os

from ..errors import OutputExistsError, UsageError, XrtcError

log = logging.getLogger("xrtc.tune")


class Tune:
    """Tune BUNDLE on this machine and write the tuned bundle (BUNDLE is never modified).

    A bundle with CPU variants (and no cuda one): the CPU tuner (xrtc.tuning.cpu) measures each variant with engine
    options (threads; OpenVINO performance hints with --mode full), gates every candidate on the golden data and
    puts the fastest first with its options; the candidate table goes into the manifest's `tuning` entry and the
    decision log (`xrtc explain`). Results are kept in the tuning DB (--tuning-db) and reused for the same bundle on
    the same kind of machine and versions.

    A bundle with a cuda variant: the GEMM algorithms of xpuruntime's cuda engine, on the GPU here. Every cuBLASLt candidate (up to
    --candidates per GEMM configuration) is tried in the captured CUDA graph and the whole graph's replay timed; the
    fastest stays. The tuned variant must still meet its accuracy tolerance on the bundle's golden data (else exit
    3, nothing written). The new bundle's plan stores each GEMM's algorithm, so loading it skips both cuBLASLt's
    heuristic queries and the tuning (a stored algorithm the installed cuBLASLt refuses falls back to the heuristic,
    recorded). The manifest records the device, driver and cuBLASLt it was tuned with. Each measured GEMM
    configuration goes into the tuning DB (keyed by its shape, layout, epilogue and precision, the GPU, driver and
    cuBLASLt): a later `xrtc tune` of any bundle with that GEMM on the same kind of GPU reuses it without measuring.
    A signed bundle's signature does not carry over: sign the tuned bundle again (`xrtc sign`).
    """

    name = "tune"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", metavar="BUNDLE.xrtpkg", help="the bundle to tune (not modified)")
        parser.add_argument("-o", "--output", metavar="OUT.xrtpkg",
                            help="the tuned bundle (default: BUNDLE.tuned.xrtpkg next to BUNDLE)")
        parser.add_argument("--force", action="store_true", help="overwrite OUT.xrtpkg if it exists")
        parser.add_argument("--candidates", type=int, default=16, metavar="N",
                            help="cuBLASLt candidates tried per GEMM configuration, 2..64 (default 16)")
        parser.add_argument("--variant", metavar="ID", help="the cuda variant to tune (default: the first)")
        parser.add_argument("--mode", choices=("fast", "full"), default="fast",
                            help="CPU bundles: fast (about a minute) or full (more candidates and runs)")
        parser.add_argument("--tuning-db", metavar="PATH", help="the tuning database (default "
                            "$XRT_TUNING_DB, else ~/.cache/xpuruntime/tuning.sqlite)")
        parser.add_argument("--no-db", action="store_true", help="measure even where the tuning DB has an entry, "
                            "and store nothing")

    def run(self, args) -> int:
        from ..targets.cuda.tune import tune_bundle

        if not os.path.isfile(args.bundle):
            raise UsageError(f"{args.bundle}: no such bundle file")
        root, _ = os.path.splitext(args.bundle)
        out = args.output or root + ".tuned.xrtpkg"
        if os.path.abspath(out) == os.path.abspath(args.bundle):
            raise UsageError(f"-o {out} is the bundle being tuned; write the tuned bundle elsewhere")
        if not args.force and os.path.lexists(out):
            raise OutputExistsError(f"{out} already exists; pass --force to overwrite it")
        if not self._has_cuda(args):
            return self._tune_cpu(args, out)
        result = tune_bundle(args.bundle, args.candidates, args.variant, args.tuning_db, use_db=not args.no_db)
        self._write(args, out, result)
        errs = ", ".join(f"{k} {v:g}" for k, v in result.errors.items()) or "no golden data to check"
        print(f"{result.variant}: {result.gemms} GEMM algorithms stored; golden max abs err: {errs}")
        for note, n in sorted(result.notes.items()):
            print(f"  {n:3d} x {note}")
        if result.per_configuration:  # the gain of each GEMM configuration over the cuBLASLt heuristic's first
            print("| GEMM m x n x k | epilogue | GEMMs | candidates | chosen | graph ms: heuristic | tuned | gain |")
            print("|---|---|---|---|---|---|---|---|")
            for r in result.per_configuration:
                print(f"| {r['shape']} | {r['epilogue']} | {r['gemms']} | {r['candidates']} | {r['chosen']} | "
                      f"{r['heuristic_graph_ms']:.4f} | {r['tuned_graph_ms']:.4f} | {r['gain_pct']:.2f}% |")
        if result.db_path:
            print(f"tuning DB {result.db_path}: {result.reused} GEMMs reused without measuring, {result.stored} "
                  "GEMM configurations stored")
        print(f"PASSED xrtc tune: wrote {out} ({len(result.bundle)} bytes)")
        return 0

    @staticmethod
    def _write(args, out: str, result) -> None:
        """The tuned bundle (`result.bundle`) written atomically to `out`; a signature the tuning dropped is said."""
        from .sign import write_atomic

        try:
            write_atomic(out, result.bundle, force=args.force)
        except FileExistsError as err:
            raise OutputExistsError(f"{out} already exists; pass --force to overwrite it") from err
        except OSError as err:
            raise XrtcError(f"cannot write {out}: {err.strerror or err}") from err
        if result.dropped_signature:
            log.warning("%s was signed; the tuned bundle is not: sign it again (xrtc sign %s --key ...)",
                        args.bundle, out)

    @staticmethod
    def _has_cuda(args) -> bool:
        from .inspect import read_bundle

        variants = read_bundle(args.bundle).manifest.get("variants", [])
        return any(v.get("engine") == "cuda" for v in variants) or bool(args.variant)

    @staticmethod
    def _tune_cpu(args, out: str) -> int:
        from ..tuning.cpu import table_lines, tune_cpu_bundle

        result = tune_cpu_bundle(args.bundle, args.mode, args.tuning_db, use_db=not args.no_db)
        Tune._write(args, out, result)
        print("\n".join(table_lines(result.record)))
        print(f"wrote {out} ({len(result.bundle)} bytes)")
        return 0
