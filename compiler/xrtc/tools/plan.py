"""`xrtc plan`: resolve a policy for a model and target into the per-node plan, without compiling."""

from __future__ import annotations

import json
import os
import sys

from ..errors import OutputExistsError, UsageError


def _plan_of_bundle(path: str) -> str:
    from .inspect import read_bundle

    bundle = read_bundle(path)
    section = bundle.manifest.get("plan")
    if not section:
        raise UsageError(f"{path} has no plan (bundles from xrtc < 0.2 do not); compile it again")
    return bundle.data(section).decode()


def print_plan(plan: dict, out=sys.stdout) -> None:
    print(f"plan for {plan['source']['name']} --target {plan['target']}", file=out)
    print(f"policy: {json.dumps(plan['policy'], sort_keys=True) if plan['policy'] else '(defaults)'}", file=out)
    print("variants:", file=out)
    for v in plan["variants"]:
        state = f"EXCLUDED: {v['excluded']}" if "excluded" in v else f"{v['precision']}, options {v['options']}"
        print(f"  {v['id']:<18} {state}", file=out)
        for note in v.get("notes", []):
            print(f"  {'':<18} note: {note}", file=out)
    counts: dict[str, int] = {}
    for n in plan["nodes"]:
        counts[n["precision"]] = counts.get(n["precision"], 0) + 1
    print(f"nodes: {len(plan['nodes'])} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})", file=out)
    width = max([len(n["name"]) for n in plan["nodes"]] + [4])
    width = min(width, 48)
    print(f"  {'node':<{width}} {'op':<22} {'prec':<5} why", file=out)
    for n in plan["nodes"]:
        kernel = f"; kernel {n['kernel']['family']}={n['kernel']['choice']} ({n['kernel']['mode']})" \
            if "kernel" in n else ""
        print(f"  {n['name'][:width]:<{width}} {n['op'][:22]:<22} {n['precision']:<5} {n['why']}{kernel}", file=out)
    for w in plan["warnings"]:
        print(f"warning: {w}", file=out)


class Plan:
    """Resolve a policy into the per-node plan (the compile's lockfile) without compiling.

    Runs the graph passes (no engine), then decides per variant (engine, precision, options, or why it is left out)
    and per node (precision and its rule; the kernel knob and what each engine can do with it). A fixed knob that
    cannot hold fails here already (exit 6). Prints the plan as a table, or with -o writes it as JSON for
    `xrtc compile --plan` (which builds exactly that plan: same bytes as compiling from the policy). Given a bundle
    instead of a model, prints or writes the plan the bundle was built from.
    """

    name = "plan"

    def add_args(self, parser) -> None:
        from .compile import add_policy_args

        parser.add_argument("model", metavar="MODEL.onnx|BUNDLE.xrtpkg", help="the ONNX model, or a bundle")
        parser.add_argument("--target", default="cpu", metavar="TARGET",
                            help="cpu (default), npu-intel or cuda; several comma-separated, in preference order "
                                 "(npu-intel,cpu)")
        add_policy_args(parser, plan=False)
        parser.add_argument("-o", "--output", metavar="PLAN.json", help="write the plan as JSON")
        parser.add_argument("--force", action="store_true", help="overwrite PLAN.json if it exists")
        parser.add_argument("--json", action="store_true", help="print the plan as JSON")

    def run(self, args) -> int:
        if args.output and os.path.exists(args.output) and not args.force:
            raise OutputExistsError(f"{args.output} exists; pass --force to overwrite it")
        if args.model.endswith(".xrtpkg"):
            text = _plan_of_bundle(args.model)
        else:
            from ..build import prepare
            from ..targets import check_target
            from .compile import policy_from_args, quiet_third_party

            import logging

            check_target(args.target)
            quiet_third_party(logging.getLogger("xrtc").getEffectiveLevel())
            prepared = prepare(args.model, args.target, policy=policy_from_args(args),
                               calibration_path=args.calibration)
            text = prepared.plan.dumps()
        if args.output:
            tmp = args.output + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, args.output)
            print(f"wrote {args.output}")
        if args.json:
            sys.stdout.write(text)
        elif not args.output:
            print_plan(json.loads(text))
        sys.stdout.flush()
        return 0
