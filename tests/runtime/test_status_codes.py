"""Status codes and exit codes are written in several languages; this test fails when any copy disagrees.

The source of truth for status codes is the C enum in runtime_cpp/include/xrt/xrt.h. Copies checked here:
xpuruntime/_errors.py (exception classes: code and status name), runtime_cpp/src/c_api.cc (xrt_status_code_string),
xpuruntime/_errors.py's table used by tests (tests/security/test_mutation.py derives from it). Exit codes: xrtc's
(compiler/xrtc/errors.py, the source of truth) and xrt-run's (runtime_cpp/tools/xrt_run.cc: its constants, its
status -> exit mapping and its --help text). Reads the sources; needs no build. ~0.1 s."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _header_codes() -> dict[str, int]:
    text = (ROOT / "runtime_cpp" / "include" / "xrt" / "xrt.h").read_text()
    enum = re.search(r"typedef enum xrt_status_code_e \{(.*?)\}", text, re.S).group(1)
    codes = {m.group(1): int(m.group(2)) for m in re.finditer(r"XRT_STATUS_([A-Z_]+)\s*=\s*(\d+)", enum)}
    assert len(codes) >= 13, codes
    return codes


def test_python_error_classes_match_the_c_enum():
    from xpuruntime import _errors

    header = _header_codes()
    python = {cls.status: cls.code for cls in _errors._BY_CODE.values()}
    assert python == {name: code for name, code in header.items() if name != "OK"}
    for code, cls in _errors._BY_CODE.items():
        assert cls.code == code


def test_c_api_status_strings_match_the_enum():
    text = (ROOT / "runtime_cpp" / "src" / "c_api.cc").read_text()
    cases = dict(re.findall(r'case XRT_STATUS_([A-Z_]+):\s*return "([A-Z_]+)";', text))
    assert cases == {name: name for name in _header_codes()}


def _xrt_run() -> str:
    return (ROOT / "runtime_cpp" / "tools" / "xrt_run.cc").read_text()


def test_xrt_run_exit_codes_match_xrtc():
    from xrtc import errors

    text = _xrt_run()
    consts = {m.group(1): int(m.group(2)) for m in re.finditer(r"constexpr int kExit(\w+) = (\d+);", text)}
    same_meaning = {"Ok": errors.EXIT_OK, "Runtime": errors.EXIT_ERROR, "Usage": errors.EXIT_USAGE,
                    "Incompatible": errors.EXIT_INCOMPATIBLE, "Exists": errors.EXIT_OUTPUT_EXISTS}
    assert consts == same_meaning
    # Every exit code the mapping returns is one of the constants, and the --help text names each with its number.
    mapping = re.search(r"int ExitCodeFor\(xrt_status_code_t code\) \{(.*?)\n\}", text, re.S).group(1)
    returned = set(re.findall(r"return kExit(\w+);", mapping))
    assert returned == set(consts)
    help_text = re.search(r'"exit codes: (.*?)\\n";', text, re.S).group(1)
    help_text = re.sub(r'\\n"\s*"', " ", help_text)
    for name, code in consts.items():
        assert re.search(rf"(^|; ){code} ", help_text), f"xrt-run --help does not list exit code {code} ({name})"
    for name in ("INVALID_ARGUMENT", "INCOMPATIBLE", "UNAVAILABLE", "ALREADY_EXISTS", "PERMISSION_DENIED"):
        assert name in _header_codes() and name in help_text


def test_xrtc_exit_help_lists_every_exit_code():
    from xrtc import errors

    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    listed = {int(m) for m in re.findall(r"^\s+(\d+)\s", errors.EXIT_CODES_HELP, re.M)}
    assert listed == codes
