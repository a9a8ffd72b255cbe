"""The exceptions xrtc raises for anything the user can act on.

Every error is an `XrtcError`; its class fixes the process exit code (`exit_code`), so scripts branch on the code,
never on the message. Messages say what was wrong and what to do. Raise with `raise ... from err` so the cause
stays visible with -v.

Exit codes (also in `xrtc --help`):
    0 ok, 1 error, 2 usage, 3 verify mismatch / accuracy gate / pass validation, 4 unsupported op/target,
    5 incompatible bundle/device (or a bench baseline from another machine), 6 a fixed policy cannot hold,
    7 bench regression beyond --max-regression, 11 output exists.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MISMATCH = 3
EXIT_UNSUPPORTED = 4
EXIT_INCOMPATIBLE = 5
EXIT_POLICY = 6
EXIT_REGRESSION = 7
EXIT_OUTPUT_EXISTS = 11

EXIT_CODES_HELP = """exit codes:
  0   success
  1   error (bad or unreadable model, I/O failure, internal error)
  2   usage error (bad arguments)
  3   verify, accuracy gate or --validate-passes: outputs differ beyond tolerance
  4   unsupported operator, data type or target
  5   incompatible bundle (format version) or device; bench --baseline from another machine (--allow-other-machine)
  6   a policy knob in mode "fixed" cannot hold on this target/engine (the message names node and reason)
  7   bench --baseline: slower than the baseline by more than --max-regression
  11  output exists (pass --force to overwrite)"""


class XrtcError(Exception):
    """Base of every error xrtc reports to the user (exit code 1)."""

    exit_code = EXIT_ERROR


class UsageError(XrtcError):
    """Bad command-line arguments (exit code 2)."""

    exit_code = EXIT_USAGE


class ModelLoadError(XrtcError):
    """The model file is missing, unreadable, or not an ONNX model."""


class ModelCheckError(XrtcError):
    """The ONNX checker rejected the model."""


class ExternalDataError(XrtcError):
    """An external-data reference is unsafe (outside the model's folder) or broken (missing file, bad range)."""


class UnsupportedError(XrtcError):
    """The model or the request needs something xrtc does not support (exit code 4)."""

    exit_code = EXIT_UNSUPPORTED


class UnsupportedTargetError(UnsupportedError):
    """A planned target that is not implemented yet."""


class UnsupportedModelError(UnsupportedError):
    """An element type, operator or model feature no variant can handle (e.g. string tensors)."""


class NoVariantError(UnsupportedError):
    """No engine could build a variant for the target; the message carries every engine's reason."""


class VerifyMismatchError(XrtcError):
    """Outputs differ beyond tolerance (exit code 3)."""

    exit_code = EXIT_MISMATCH


class IncompatibleError(XrtcError):
    """A bundle of another format version, or for another device (exit code 5)."""

    exit_code = EXIT_INCOMPATIBLE


class OtherMachineError(IncompatibleError):
    """A bench baseline measured on another machine (fingerprint differs) and no --allow-other-machine (exit 5)."""


class RegressionError(XrtcError):
    """bench --baseline: a metric is worse than the baseline by more than --max-regression (exit code 7)."""

    exit_code = EXIT_REGRESSION


class OutputExistsError(XrtcError):
    """The output path exists and --force was not given (exit code 11)."""

    exit_code = EXIT_OUTPUT_EXISTS


class InternalError(XrtcError):
    """A bug in xrtc (e.g. a pass produced an invalid graph). Please report it with the model."""


class PolicyViolationError(XrtcError):
    """A `fixed` policy knob cannot hold on the target or any of its engines (exit code 6)."""

    exit_code = EXIT_POLICY


class AccuracyGateError(VerifyMismatchError):
    """A variant is over the policy's tolerance and the precision knob is `fixed` (exit code 3)."""


class PassValidationError(VerifyMismatchError):
    """--validate-passes: the graph after a pass differs from the source model beyond tolerance (exit code 3)."""
