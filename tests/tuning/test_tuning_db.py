"""The tuning DB's keying and maintenance: an entry is reused only for the same graphs, machine kind and versions;
merge keeps the newer measurement; prune drops old and stale entries; concurrent writers all land; a file that is
not a tuning DB is a clear error. Real bundles (the sample model and a second model) give the graph signatures.
~10 s."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest
import xrtpkg
from xrt_testutil import overflow_model, run_tool

from xrtc.errors import XrtcError
from xrtc.tuning import cpu
from xrtc.tuning.db import Key, TuningDB, cpu_fingerprint, graph_signature


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("second")
    out = folder / "overflow.xrtpkg"
    run_tool("xrtc", "compile", overflow_model(folder / "overflow.onnx"), "--target", "cpu", "-o", out, check=True)
    return out


def _key(graph: str, hardware: str = "hw", versions: dict | None = None) -> Key:
    return Key(cpu.TUNER, graph, hardware, versions or {"onnxruntime": "1", "tuner": cpu.TUNER_VERSION})


def test_same_model_and_machine_reuse_other_machine_version_or_model_never(tmp_path, sample_bundle, second_bundle):
    sample, other = xrtpkg.read(sample_bundle), xrtpkg.read(second_bundle)
    assert graph_signature(sample) == graph_signature(xrtpkg.read(sample_bundle))
    assert graph_signature(sample) != graph_signature(other)
    hardware, desc = cpu_fingerprint()
    assert hardware == cpu_fingerprint()[0] and "CPUs" in desc
    with TuningDB(str(tmp_path / "t.sqlite")) as db:
        key = _key(graph_signature(sample), hardware)
        db.put(key, "fast", {"winner": {"candidate": "a"}})
        assert db.get(_key(graph_signature(sample), hardware)).result == {"winner": {"candidate": "a"}}
        assert db.get(_key(graph_signature(other), hardware)) is None  # another model
        assert db.get(_key(graph_signature(sample), "another-cpu")) is None  # another machine
        assert db.get(_key(graph_signature(sample), hardware, {"onnxruntime": "2",
                                                               "tuner": cpu.TUNER_VERSION})) is None  # upgraded
        assert cpu.key_for(sample).digest == cpu.key_for(xrtpkg.read(sample_bundle)).digest
        assert cpu.key_for(sample).digest != cpu.key_for(other).digest


def test_merge_keeps_the_newer_and_prune(tmp_path):
    a, b, c = (str(tmp_path / f"{n}.sqlite") for n in "abc")
    with TuningDB(a) as db:
        db.put(_key("g1"), "fast", {"v": "old"}, created=time.time() - 100)
        db.put(_key("g2"), "fast", {"v": "a-only"}, created=time.time() - 200 * 86400)
    with TuningDB(b) as db:
        db.put(_key("g1"), "full", {"v": "new"})
        db.put(_key("g3", versions={"onnxruntime": "0.1", "tuner": "cpu-0"}), "fast", {"v": "stale"})
    proc = run_tool("xrtc", "tune-db", "merge", a, b, "-o", c)
    assert proc.returncode == 0, proc.stderr
    with TuningDB(c) as db:
        results = {e.graph: e.result["v"] for e in db.entries()}
        assert results == {"g1": "new", "g2": "a-only", "g3": "stale"}
    assert run_tool("xrtc", "tune-db", "merge", a, b, "-o", c).returncode == 11  # exists, no --force
    shown = run_tool("xrtc", "tune-db", "show", "--tuning-db", c)
    assert shown.returncode == 0 and "3 entries" in shown.stdout and "other machine" in shown.stdout
    pruned = run_tool("xrtc", "tune-db", "prune", "--tuning-db", c, "--older-than", "90")
    assert pruned.returncode == 0 and "pruned 1 entries" in pruned.stdout
    with TuningDB(c) as db:
        assert db.prune(stale_versions=cpu.versions()) == 2  # neither names this install's versions
        assert db.entries() == []


_WRITER = """
import sys
from xrtc.tuning.db import Key, TuningDB
with TuningDB(sys.argv[1]) as db:
    for i in range(40):
        db.put(Key("cpu", f"w{sys.argv[2]}-{i}", "hw", {"tuner": "t"}), "fast", {"i": i})
"""


def test_concurrent_writers_all_land(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    TuningDB(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, str(w)]) for w in range(4)]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    with TuningDB(path) as db:
        assert len(db.entries()) == 160
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(XrtcError, match="not a tuning database"):
        TuningDB(str(bad))
    proc = run_tool("xrtc", "tune-db", "show", "--tuning-db", bad)
    assert proc.returncode == 1 and "not a tuning database" in proc.stderr and "Traceback" not in proc.stderr
