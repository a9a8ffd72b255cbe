"""`xrtc verify`: compare a bundle's variants with ONNX Runtime on the source model."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict

from ..errors import UsageError, XrtcError
from .run import add_runtime_args, device_args, feeds_for, trust_args

log = logging.getLogger("xrtc.verify")

# The numeric comparison lives in the library (xrtc.numeric); re-exported for callers of `xrtc.tools.verify`.
from ..numeric import Comparison, compare, default_tolerance  # noqa: E402,F401


class Verify:
    """Compare every variant of a bundle that can run here with ONNX Runtime on the source model, or, without
    --model, with the golden outputs stored in the bundle (reference outputs of the source model on the compile's
    samples): checks a deployed bundle on the device itself.

    Inputs come from --inputs/--input or are random (seeded); without --model, the bundle's golden inputs.
    Tolerances: --rtol/--atol, else the ones the bundle's accuracy gate used for the variant, else per precision
    (fp32: rtol 1e-3, atol 1e-4 x max(1, max|ref|)). Exit code 3 on any mismatch.
    """

    name = "verify"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", help="the .xrtpkg to check")
        parser.add_argument("--model", help="the source .onnx model (the reference); default: the bundle's golden "
                                             "outputs")
        add_runtime_args(parser)
        parser.add_argument("--rtol", type=float, help="relative tolerance (default: per precision)")
        parser.add_argument("--atol", type=float, help="absolute tolerance, scaled by max(1, max|ref|)")
        parser.add_argument("--json", action="store_true", help="print the comparisons as JSON")

    def run(self, args) -> int:
        import onnxruntime

        import xpuruntime as xrt

        first = xrt.load(args.bundle, device=args.device, engine=args.engine, variant=args.variant,
                         **trust_args(args), **device_args(args))
        manifest = first.manifest
        if args.model:
            feeds = feeds_for(first, args)
            try:
                ref_session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])
            except Exception as err:  # onnxruntime raises its own untyped errors for unreadable models
                raise XrtcError(f"ONNX Runtime cannot load the reference model {args.model}: {err}") from err
            reference = dict(zip([o.name for o in ref_session.get_outputs()], ref_session.run(None, feeds)))
        else:
            if args.inputs or args.input:
                raise UsageError("--inputs/--input need --model (the golden outputs belong to the golden inputs)")
            feeds, reference = _golden(args.bundle, manifest)
        # Variants for the device, and those that declare it a fallback (an NPU IR checked on the CPU).
        wanted = [v for v in manifest["variants"]
                  if (v.get("device") == args.device or args.device in v.get("fallback_devices", []))
                  and (args.engine is None or v.get("engine") == args.engine)
                  and (args.variant is None or v.get("id") == args.variant)]
        results: list[Comparison] = []
        skipped: dict[str, str] = {}
        for variant in wanted:
            try:
                session = xrt.load(args.bundle, device=args.device, variant=variant["id"], **trust_args(args),
                                   **device_args(args))
            except (xrt.Unavailable, xrt.NotFound) as err:
                skipped[variant["id"]] = str(err)
                continue
            rtol, atol = default_tolerance(variant.get("precision", "fp32"))
            if variant.get("accuracy"):
                rtol, atol = variant["accuracy"]["rtol"], variant["accuracy"]["atol"]
            rtol = args.rtol if args.rtol is not None else rtol
            atol = args.atol if args.atol is not None else atol
            outputs = session.run(feeds)
            for name, ref in reference.items():
                if name not in outputs:
                    results.append(Comparison(variant["id"], name, float("inf"), float("inf"), [], rtol, atol, False,
                                              "output missing from the bundle"))
                    continue
                results.append(compare(variant["id"], name, outputs[name], ref, rtol, atol))
        if not results:
            raise XrtcError("no variant of the bundle could run here: " + json.dumps(skipped))
        ok = all(c.passed for c in results)
        if manifest.get("unverified"):
            log.warning("%s is UNVERIFIED (compiled with --allow-unverified: %s)", args.bundle,
                        manifest["unverified"].get("reason", ""))
        if args.json:
            print(json.dumps({"passed": ok, "comparisons": [asdict(c) for c in results], "skipped": skipped},
                             indent=2))
        else:
            print(f"{'variant':<18} {'output':<28} {'max abs err':>12} {'max rel err':>12} {'rtol':>7} {'atol':>7}  "
                  "result")
            for c in results:
                print(f"{c.variant:<18} {c.output[:28]:<28} {c.max_abs_err:>12.3e} {c.max_rel_err:>12.3e} "
                      f"{c.rtol:>7.0e} {c.atol:>7.0e}  {'ok' if c.passed else 'MISMATCH'} {c.note}")
            for vid, why in skipped.items():
                print(f"{vid:<18} not run here: {why}")
        sys.stdout.flush()
        return 0 if ok else 3


def _golden(path: str, manifest: dict) -> tuple[dict, dict]:
    """The bundle's golden inputs and reference outputs."""
    from ..gate import golden_arrays
    from .inspect import read_bundle

    golden = manifest.get("golden")
    if not golden and manifest.get("unverified"):
        raise UsageError(f"{path} is UNVERIFIED: it was compiled with --allow-unverified "
                         f"({manifest['unverified'].get('reason', '')}), so it carries no golden data; pass --model "
                         "(the source model) and --inputs or --shape to compare it now")
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    typed = [t.get("name") for role in ("inputs", "outputs") for t in model.get(role) or []
             if isinstance(t, dict) and "type" in t]
    if not golden and typed:
        raise UsageError(f"{path} carries no golden data: {typed[0]!r} is a sequence, map or optional, which .npy "
                         "golden data cannot hold; pass --model (the source model) to compare with it")
    if not golden:
        raise UsageError(f"{path} carries no golden data (compiled without samples: dynamic dims and no "
                         "--calibration/--shape, or by xrtc < 0.2); pass --model to compare with the source model")
    return golden_arrays(read_bundle(path), golden)
