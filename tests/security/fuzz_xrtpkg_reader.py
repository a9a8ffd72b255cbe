"""atheris (libFuzzer for Python) target for the Python reader, xrtpkg.read(bytes).

Run through scripts/fuzz.sh, or by hand with the *installed* package (repository root not on sys.path):
    .venv/bin/python -P tests/security/fuzz_xrtpkg_reader.py -max_total_time=60 CORPUS_DIR SEED_DIR
Each input is read twice: as given, and with its digests repaired (as formats/cpp/xrtpkg_fuzz_repair.h does) so
mutations reach the layout, zstd and JSON checks behind them. A rejection must be xrtpkg.FormatError with one of
the spec's statuses; any other exception, a hang or an OOM is a finding. Crashers go to tests/security/regressions/.
Both are read again with ``verify="on_use"``: once every section has been asked for, the verdict must be the full
reader's.

Second surface: the decision log `Session.explain()` parses (xpuruntime._session.decisions_view). Each input is
also given to it as a decisions.json, and a verified bundle's own decisions section is; a rejection must be
xpuruntime.DataCorrupt / ResourceExhausted, never KeyError, RecursionError, JSONDecodeError or TypeError.
"""

from __future__ import annotations

import hashlib
import struct
import sys

import atheris
import xpuruntime
from xpuruntime._session import decisions_view

decisions_view = atheris.instrument_func(decisions_view)

with atheris.instrument_imports():
    import xrtpkg
    from xrtpkg import _reader  # noqa: F401  (instrumented for coverage feedback)

_STATUSES = {"DATA_CORRUPT", "INCOMPATIBLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"}
_MATERIALISE_CAP = 64 << 20  # sections larger than this are verified but not materialised again (fuzzer RSS limit)


def repair_digests(data: bytes) -> bytes:
    """Recompute in-bounds section sha256s, then index_sha256; leave everything else as the fuzzer made it."""
    buf = bytearray(data)
    if len(buf) < 64:
        return bytes(buf)
    (count,) = struct.unpack_from("<I", buf, 12)
    table_end = 64 + 96 * count
    if count == 0 or count > 1024 or table_end > len(buf):
        return bytes(buf)
    for i in range(count):
        e = 64 + 96 * i
        offset, stored = struct.unpack_from("<QQ", buf, e + 40)
        if offset <= len(buf) and stored <= len(buf) - offset:
            buf[e + 64 : e + 96] = hashlib.sha256(buf[offset : offset + stored]).digest()
    buf[32:64] = hashlib.sha256(bytes(buf[0:32]) + bytes(buf[64:table_end])).digest()
    return bytes(buf)


def check(buf: bytes) -> None:
    try:
        bundle = xrtpkg.read(buf)
    except xrtpkg.FormatError as err:
        if err.status not in _STATUSES or not err.message:
            raise AssertionError(f"untyped rejection: {err!r}") from err
        return
    assert isinstance(bundle.manifest, dict)
    for s in bundle.sections:
        if s.size <= _MATERIALISE_CAP:
            assert len(bundle.data(s.name)) == s.size
    section = bundle.manifest.get("decisions")
    if isinstance(section, str) and any(s.name == section for s in bundle.sections):
        variants = bundle.manifest.get("variants")
        first = variants[0] if isinstance(variants, list) and variants else None
        vid = first.get("id") if isinstance(first, dict) else None
        check_decisions(bundle.data(section), vid if isinstance(vid, str) else "")


def check_decisions(raw: bytes, variant_id: str) -> None:
    try:
        view = decisions_view(raw, variant_id)
    except (xpuruntime.DataCorrupt, xpuruntime.ResourceExhausted) as err:
        if not err.message:
            raise AssertionError(f"rejection without a message: {err!r}") from err
        return
    assert isinstance(view, dict) and isinstance(view["nodes"], list)


def verdict(read) -> str:
    try:
        read()
    except xrtpkg.FormatError as err:
        return err.status
    return "OK"


def check_on_use(buf: bytes) -> None:
    """verify="on_use", once every section has been asked for, reaches the full reader's verdict."""
    skipped = []

    def read_all():
        bundle = xrtpkg.read(buf, verify="on_use")
        for s in bundle.sections:
            if s.size > _MATERIALISE_CAP:
                skipped.append(s.name)  # not every section asked for: no verdict to compare
                return
            bundle.data(s.name)

    try:
        full = verdict(lambda: xrtpkg.read(buf))
    except Exception:  # noqa: BLE001 (check() reports it)
        return
    on_use = verdict(read_all)
    if skipped:
        return
    assert on_use == full, f"verify='on_use' gives {on_use}, the full reader {full}"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    check(data)
    check(repair_digests(data))
    check_on_use(data)
    check_on_use(repair_digests(data))
    check_decisions(data, "cpu-openvino")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
