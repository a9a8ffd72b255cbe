"""The `xrtc` command line: `main(argv) -> exit code`.

Subcommands are listed once, in REGISTRY, as "module:Class". Each class has a docstring (its help; the first
paragraph is the one-line summary), `add_args(parser)` and `run(args) -> int`. A subcommand whose module fails to
import still appears in `--help` and, when run, explains the import error (Polygraphy's MissingTool). Modules keep
heavy imports (onnx, onnxruntime, openvino) inside `run`, so `xrtc --help` is fast and works without them.

Every command ends with `PASSED xrtc <cmd>` or `FAILED xrtc <cmd>` on stderr; exit codes are in errors.py.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
import traceback

from . import __version__
from .errors import (EXIT_CODES_HELP, EXIT_ERROR, EXIT_INCOMPATIBLE, EXIT_OUTPUT_EXISTS, EXIT_USAGE,
                     XrtcError)
from .progress import configure_logging

log = logging.getLogger("xrtc")

REGISTRY: tuple[tuple[str, str], ...] = (
    ("compile", "xrtc.tools.compile:Compile"),
    ("plan", "xrtc.tools.plan:Plan"),
    ("explain", "xrtc.tools.explain:Explain"),
    ("diff", "xrtc.tools.diff:Diff"),
    ("inspect", "xrtc.tools.inspect:Inspect"),
    ("run", "xrtc.tools.run:Run"),
    ("verify", "xrtc.tools.verify:Verify"),
    ("keygen", "xrtc.tools.keygen:Keygen"),
    ("sign", "xrtc.tools.sign:Sign"),
    ("tune", "xrtc.tools.tune:Tune"),
    ("tune-db", "xrtc.tools.tune_db:TuneDb"),
    ("profile", "xrtc.tools.profile:Profile"),
    ("bench", "xrtc.tools.bench:Bench"),
    ("report", "xrtc.tools.report:Report"),
)

# Where a missing third-party module comes from, for the "how to fix" part of import errors. Never auto-install.
_PIP_HINTS = {
    "openvino": "pip install 'xpuruntime[openvino]'",
    "xpuruntime": "pip install xpuruntime (or build it: pip install -e .)",
    "onnxruntime": "pip install xpuruntime (it depends on onnxruntime)",
    "onnx": "pip install xpuruntime (it depends on onnx)",
    "onnx_graphsurgeon": "pip install xpuruntime (it depends on onnx-graphsurgeon)",
    "zstandard": "pip install xpuruntime (it depends on zstandard)",
    "numpy": "pip install xpuruntime (it depends on numpy)",
    "cryptography": "pip install xpuruntime (it depends on cryptography)",
}


class MissingTool:
    """Stands in for a subcommand whose module could not be imported; running it explains why."""

    def __init__(self, name: str, target: str, error: BaseException) -> None:
        self.name = name
        self.target = target
        self.error = error
        self.__doc__ = f"(unavailable: {type(error).__name__}: {error})"

    def add_args(self, parser) -> None:
        pass  # accepts anything (main uses parse_known_args) so the import error, not a usage error, is reported

    def run(self, args) -> int:
        missing = getattr(self.error, "name", None) if isinstance(self.error, ModuleNotFoundError) else None
        top = (missing or "").split(".")[0]
        hint = f" Install it: {_PIP_HINTS[top]}." if top in _PIP_HINTS else ""
        raise XrtcError(f"`xrtc {self.name}` is unavailable: importing {self.target} failed: "
                        f"{type(self.error).__name__}: {self.error}.{hint}") from self.error


def load_tool(name: str, target: str):
    module_name, _, class_name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), class_name)()
    except Exception as err:  # any import-time failure must not take down the other subcommands
        return MissingTool(name, target, err)


def _summary(doc: str | None) -> str:
    text = inspect.cleandoc(doc or "")
    return " ".join(text.split("\n\n", 1)[0].split())


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object], dict[str, argparse.ArgumentParser]]:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr (repeatable)")
    group.add_argument("-q", "--quiet", action="count", default=0, help="less detail on stderr (repeatable)")

    parser = argparse.ArgumentParser(
        prog="xrtc", description="xrtc: compile ONNX models into self-contained .xrtpkg bundles, inspect, run and "
        "verify them.", epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xrtc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    tools: dict[str, object] = {}
    subs: dict[str, argparse.ArgumentParser] = {}
    for name, target in REGISTRY:
        tool = load_tool(name, target)
        doc = tool.__doc__ or ""
        sub = subparsers.add_parser(name, help=_summary(doc), description=inspect.cleandoc(doc),
                                    parents=[common], epilog=EXIT_CODES_HELP,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        tool.add_args(sub)
        tools[name] = tool
        subs[name] = sub
    return parser, tools, subs


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in argv (for the FAILED line after a usage error), if any."""
    names = {name for name, _ in REGISTRY}
    return next((a for a in argv if a in names), None)


def _runtime_exit_code(err: Exception) -> int | None:
    """Exit code for an xpuruntime.Error (by its C status), None for anything else. Imports nothing new: the
    runtime is already loaded when one of its errors exists."""
    runtime = sys.modules.get("xpuruntime")
    if runtime is None or not isinstance(err, runtime.Error):
        return None
    return {"INCOMPATIBLE": EXIT_INCOMPATIBLE, "UNAVAILABLE": EXIT_INCOMPATIBLE, "ALREADY_EXISTS": EXIT_OUTPUT_EXISTS,
            "INVALID_ARGUMENT": EXIT_USAGE}.get(err.status, EXIT_ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, tools, subs = build_parser()
    command = _command_in(argv)
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if extra and not isinstance(tools[args.command], MissingTool):
            subs[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # argparse exits for --help/--version (0) and usage errors (2)
        code = stop.code if isinstance(stop.code, int) else EXIT_USAGE
        if code != 0 and command in tools:
            print(f"FAILED xrtc {command}", file=sys.stderr)
        return code

    configure_logging(args.verbose, args.quiet)
    try:
        try:
            code = int(tools[args.command].run(args))
        except XrtcError:
            raise
        except Exception as err:  # the runtime's typed errors (xpuruntime.Error) map to exit codes by status
            runtime_code = _runtime_exit_code(err)
            if runtime_code is None:
                raise
            log.error("%s", err)
            code = runtime_code
    except XrtcError as err:
        log.error("%s", err)
        if err.__cause__ is not None:
            log.debug("cause:", exc_info=err)
        code = err.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        code = 130
    except Exception:  # a bug: show the traceback, still end with FAILED and a non-zero code
        log.error("internal error in xrtc %s (please report it):\n%s", args.command, traceback.format_exc())
        code = EXIT_ERROR
    sys.stdout.flush()
    # A tool may define other successful codes (diff: 1 = "they differ", like diff(1)).
    passed = code in getattr(tools[args.command], "ok_codes", (0,))
    note = getattr(tools[args.command], "final_note", "") if passed else ""  # compile: what was built
    print(f"{'PASSED' if passed else 'FAILED'} xrtc {args.command}{': ' + note if note else ''}", file=sys.stderr)
    return code
