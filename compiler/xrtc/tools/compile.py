"""`xrtc compile`: ONNX model -> .xrtpkg bundle."""

from __future__ import annotations

import logging
import sys

from ..errors import UsageError
from ..package import check_output  # noqa: F401 - re-exported
from ..progress import quiet_third_party  # noqa: F401 - re-exported

log = logging.getLogger("xrtc.compile")


def policy_from_args(args):
    """The policy: --policy FILE (TOML), then --precision / --shape / --static-shape flags over it."""
    from xpuruntime.policy import Policy, PolicyError

    from ..inputs import parse_shapes

    try:
        policy = Policy.from_toml(args.policy) if getattr(args, "policy", None) else Policy()
        return policy.with_overrides(precision=getattr(args, "precision", None),
                                     shapes={k: list(v) for k, v in parse_shapes(getattr(args, "shape", None)).items()},
                                     static_shape=True if getattr(args, "static_shape", False) else None)
    except PolicyError as err:
        raise UsageError(err.message) from err


def add_policy_args(parser, plan: bool = True) -> None:
    parser.add_argument("--policy", metavar="POLICY.toml", help="the policy file ([kernel], [execution], [tolerance], "
                        "[shapes], [nodes], [precision], [quantization])")
    if plan:
        parser.add_argument("--plan", metavar="PLAN.json", help="build exactly this plan (from `xrtc plan`); "
                            "excludes --policy and the policy flags")
    parser.add_argument("--precision", metavar="{fp32,tf32,fp16,bf16,int8}", help="overrides [execution] precision (keeps its mode; "
                        "prefer if the file has none)")
    parser.add_argument("--shape", action="append", metavar="NAME=1x3x640x640",
                        help="bind an input's shape (repeatable); overrides [shapes]")
    parser.add_argument("--static-shape", action="store_true", help="require static shapes (static_shape = true)")
    parser.add_argument("--calibration", metavar="DATA.npz", help="real input samples for int8 calibration and the "
                        "accuracy gate, per input name: N samples as [N, *input shape], or along a batch-1 axis "
                        "([8,3,H,W] for a [1,3,H,W] input), or one array per sample as NAME/0, NAME/1, ...")


class Compile:
    """Compile an ONNX model into a self-contained .xrtpkg bundle, under a policy.

    The policy (--policy FILE, --precision, --shape, or a plan from `xrtc plan` with --plan) is resolved into a
    per-node plan; a knob in mode "fixed" that cannot hold fails the compile (exit 6) naming node and reason, one in
    mode "prefer" is recorded as a warning. Precision passes run per variant (fp16: ONNX Runtime's converter for the
    ONNX Runtime variant, fp16 weights + f16 hint for OpenVINO; int8: QDQ calibrated on --calibration for both).
    Every variant then runs through the runtime against ONNX Runtime on the source model (the accuracy gate): over
    tolerance, a fixed precision fails (exit 3), a preferred one falls back to fp32, recorded. The bundle carries
    the plan, the decision log (`xrtc explain`) and golden inputs/outputs (`xrtc verify BUNDLE` without the model).

    Loads the model (external data only from inside its folder), runs the ONNX checker, runs the pass pipeline
    (name-nodes, raise-ir-version, [bind-shapes], infer-shapes, fold-constants, eliminate-dead-nodes,
    eliminate-identity, fold-batchnorm, fuse-matmul-add, sort-topologically), then builds every variant the target
    has and orders them. For --target cpu: cpu-openvino (OpenVINO IR) and cpu-onnxruntime (graph optimised offline by
    ONNX Runtime, ORT_ENABLE_EXTENDED); OpenVINO is preferred when the estimated compute is >= 300 MFLOP.
    A variant that cannot be built is recorded under `excluded` with the reason. The same model always gives the
    same bytes. Progress goes to stderr, the summary to stdout.
    """

    name = "compile"

    def add_args(self, parser) -> None:
        parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model (never modified)")
        parser.add_argument("--target", default="cpu", metavar="TARGET",
                            help="what to compile for: cpu (default), npu-intel or cuda; several comma-separated, in "
                                 "preference order (npu-intel,cpu); tensorrt is planned")
        parser.add_argument("-o", "--output", metavar="OUT.xrtpkg", help="the bundle to write (default: next to "
                            "the model, MODEL.xrtpkg; never overwritten without --force)")
        parser.add_argument("--force", action="store_true", help="overwrite OUT.xrtpkg if it exists")
        add_policy_args(parser)
        parser.add_argument("--validate-passes", action="store_true",
                            help="run the graph after every pass against the source model (ONNX Runtime, same "
                                 "inputs); a pass that breaks numerics is rolled back and named")
        parser.add_argument("--allow-unverified", action="store_true",
                            help="write the bundle even where the accuracy gate cannot check a variant (no samples "
                                 "the model accepts); the bundle is marked unverified (inspect, verify, the summary)")
        parser.add_argument("--arch", default=None, metavar="ARCHS",
                            help="--target cuda: cubin architectures, comma-separated (sm_90a, sm_89, sm_86, sm_80; "
                                 "default sm_90a); PTX for sm_80 is always added for newer GPUs")
        parser.add_argument("--tune", choices=("off", "fast", "full"), default="off",
                            help="measure the CPU variants' engine options on this machine and keep the fastest that "
                                 "meets the accuracy gate (fast: about a minute; full: more candidates and runs). "
                                 "Default off: the bundle is deterministic; a tuned one records its measurements")
        parser.add_argument("--tuning-db", metavar="PATH", help="the tuning database (default $XRT_TUNING_DB, else "
                            "~/.cache/xpuruntime/tuning.sqlite): same model and machine kind reuse its results")
        parser.add_argument("--cpu-arch", default=None, metavar="ARCH",
                            help="restrict the bundle to CPUs of this architecture, x86_64 or aarch64 "
                                 "(requires.cpu_arch; runtimes elsewhere refuse it); default: any")
        parser.add_argument("--no-precompile", dest="precompile", action="store_false",
                            help="leave out engine-compiled blobs (OpenVINO CPU): slower first load, but bytes that "
                                 "do not depend on this machine's CPU capabilities")

    def run(self, args) -> int:
        from ..build import compile_model
        from ..gate import plural

        if args.plan and (args.policy or args.precision or args.shape or args.static_shape):
            raise UsageError("--plan fixes every decision: drop --policy/--precision/--shape/--static-shape, or "
                             "drop --plan and compile from the policy")
        policy = None if args.plan else policy_from_args(args)
        archs = None
        if args.arch:
            from ..targets.cuda.aot import parse_archs

            archs = parse_archs(args.arch)
        result = compile_model(args.model, args.target, args.output, args.force, precompile=args.precompile,
                               policy=policy, plan_path=args.plan, calibration_path=args.calibration,
                               validate_passes=args.validate_passes, allow_unverified=args.allow_unverified,
                               archs=archs, tune=args.tune, tuning_db=args.tuning_db, cpu_arch=args.cpu_arch)
        manifest = result.manifest
        order = ", ".join(f"{v['id']} ({v['precision']})" for v in manifest["variants"])
        print(f"wrote {result.path} ({result.size} bytes)")
        print(f"variants (preference order): {order}")
        for variant in manifest["variants"]:
            print(f"  {variant['id']}: {variant['why']}")
            acc = variant.get("accuracy")
            if acc:
                errs = ", ".join(f"{k} {v:.3g}" for k, v in acc["max_abs_err"].items())
                where = f" [ran on {acc['ran_on']}; NOT run on a GPU: {acc['not_run_on_device']}]" \
                    if acc.get("not_run_on_device") else ""
                print(f"    accuracy vs ONNX Runtime (source model, {plural(acc['samples'], 'sample')}): max abs err "
                      f"{errs} (tolerance rtol {acc['rtol']:g}, atol {acc['atol']:g}): "
                      f"{'ok' if acc['passed'] else 'OVER'}{where}")
            elif variant["engine"] == "cuda":
                print("    accuracy: NOT MEASURED (no CUDA device here; see the warnings): run `xrtc verify` on a GPU")
        if manifest.get("tuning"):
            from ..tuning.cpu import table_lines

            print("\n".join(table_lines(manifest["tuning"])))
        for item in manifest["excluded"]:
            print(f"excluded {item['target']}-{item['engine']}: {item['reason']}")
        rolled_back = [p for p in manifest["provenance"]["passes"] if p.get("rolled_back")]
        if rolled_back:  # the bundle is valid without them; the user should still know (and may report it)
            print(f"passes rolled back ({len(rolled_back)}): "
                  + "; ".join(f"{p['name']}: {p['rolled_back']}" for p in rolled_back))
        if manifest.get("unverified"):
            print(f"UNVERIFIED: {manifest['unverified']['reason']}")
        self.final_note = result.summary  # the CLI's last line: PASSED xrtc compile: built ...
        sys.stdout.flush()
        return 0


def compile_model(*args, **kwargs):
    """See xrtc.build.compile_model (kept here for callers of the earlier module)."""
    from ..build import compile_model as build_compile

    return build_compile(*args, **kwargs)


__all__ = ["Compile", "compile_model", "check_output", "quiet_third_party", "policy_from_args", "add_policy_args"]
