"""`xrtc explain`: the decision log of a bundle, as a table or JSON."""

from __future__ import annotations

import json
import sys

from ..errors import UsageError


def load_decisions(bundle, path: str) -> dict:
    section = bundle.manifest.get("decisions")
    if not section:
        raise UsageError(f"{path} has no decision log (bundles from xrtc < 0.2 do not); compile it again")
    return json.loads(bundle.data(section))


def print_decisions(log: dict, variant: str | None = None, out=sys.stdout) -> None:
    print("variants (preference order):", file=out)
    for v in log["variants"]:
        if v["status"] == "excluded":
            print(f"  {v['id']:<18} excluded: {v['why']}", file=out)
            continue
        planned = v["precision_planned"]
        precision = v["precision"] if planned == v["precision"] else f"{v['precision']} (planned {planned})"
        print(f"  {v['rank']}. {v['id']:<15} {precision}: {v['why']}", file=out)
        acc = v.get("accuracy")
        if acc:
            errs = ", ".join(f"{k} {e:.3g}" for k, e in acc["max_abs_err"].items())
            print(f"     accuracy: max abs err {errs} vs ONNX Runtime on the source model ({acc['samples']} samples; "
                  f"tolerance rtol {acc['rtol']:g} atol {acc['atol']:g}): {'pass' if acc['passed'] else 'FAIL'}",
                  file=out)
        else:
            print("     accuracy: not measured", file=out)
        if v.get("fallback"):
            print(f"     fallback: {v['fallback']}", file=out)
        for note in v.get("notes", []):
            print(f"     note: {note}", file=out)
    built = [v["id"] for v in log["variants"] if v["status"] == "built"]
    shown = [variant] if variant else built
    unknown = [s for s in shown if s not in built]
    if unknown:
        raise UsageError(f"--variant {unknown[0]}: not in the bundle; built variants: {', '.join(built)}")
    width = min(max([len(n["name"]) for n in log["nodes"]] + [4]), 40)
    head = "".join(f" {vid[:26]:<27}" for vid in shown)
    print(f"\n{'node':<{width}} {'op':<20}{head} why", file=out)
    for n in log["nodes"]:
        cells = ""
        for vid in shown:
            c = n["choices"].get(vid, {})
            kernel = c.get("kernel", "")
            kernel = "" if kernel == "engine default" else " k:" + kernel.split(":")[0]
            cells += f" {(c.get('precision', '?') + kernel)[:26]:<27}"
        print(f"{n['name'][:width]:<{width}} {n['op'][:20]:<20}{cells} {n['why']}", file=out)
        for r in n["rejected"]:
            print(f"{'':<{width}}   rejected {r['alternative']}: {r['reason']}", file=out)
    for w in log.get("warnings", []):
        print(f"warning: {w}", file=out)
    if log.get("tuning"):  # xrtc compile --tune / xrtc tune: the measured candidates
        from ..tuning.cpu import table_lines

        print("", file=out)
        print("\n".join(table_lines(log["tuning"])), file=out)


def cuda_kernels(bundle, variant: str | None = None) -> dict:
    """variant id -> its launches (xrtc.targets.cuda.describe) for every cuda variant of the bundle."""
    out = {}
    for v in bundle.manifest.get("variants", []):
        if v.get("engine") != "cuda" or (variant and v["id"] != variant):
            continue
        from ..targets.cuda import describe

        out[v["id"]] = describe(json.loads(bundle.data(v["artifacts"]["plan"])))
    return out


def print_kernels(kernels: dict, out=sys.stdout) -> None:
    for vid, rows in kernels.items():
        print(f"\n{vid}: {len(rows)} launches in order (GEMM: shape, epilogue, algorithm; Triton kernel: "
              "grid, warps, shared memory, block config, source hash, images)", file=out)
        for r in rows:
            nodes = r["onnx_nodes"]
            shown = ", ".join(nodes[:4]) + (f" +{len(nodes) - 4}" if len(nodes) > 4 else "")
            where = f" [{','.join(r['archs'])}]" if "archs" in r else ""
            print(f"  {r['launch']:>3} {r['kind']:<6} {r['group']:<15} {r['config']}{where} algo {r['algorithm']}"
                  f" <- {shown}", file=out)


class Explain:
    """Show a bundle's decision log: what was chosen per variant and node, and why.

    Per variant: engine, precision (planned and built), order rule, measured accuracy and fallbacks. Per node: the
    precision and kernel each variant runs it with, the rule that chose them, and the alternatives rejected and why.
    --json prints the log as stored (decisions.json).
    """

    name = "explain"

    def add_args(self, parser) -> None:
        parser.add_argument("bundle", help="the .xrtpkg")
        parser.add_argument("--variant", help="show the node table for this variant only")
        parser.add_argument("--json", action="store_true", help="print the decision log as JSON")

    def run(self, args) -> int:
        from .inspect import read_bundle

        bundle = read_bundle(args.bundle)
        log = load_decisions(bundle, args.bundle)
        kernels = cuda_kernels(bundle, args.variant)
        if args.json:
            print(json.dumps(dict(log, kernels=kernels) if kernels else log, indent=1, sort_keys=True))
        else:
            print_decisions(log, args.variant)
            print_kernels(kernels)
        sys.stdout.flush()
        return 0
