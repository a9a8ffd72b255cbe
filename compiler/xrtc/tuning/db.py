"""The tuning database: what `xrtc compile --tune` / `xrtc tune` measured, kept so the same model on the same kind of
machine reuses it without measuring again.

One SQLite file (default: the user cache folder, `$XRT_TUNING_DB` or `~/.cache/xpuruntime/tuning.sqlite`), WAL mode
and a busy timeout: concurrent compiles and merges wait for each other instead of failing. An entry's key is the
digest of three parts, each also stored in its own column so `xrtc tune-db show` can say why an entry does not apply:
  graph     the bundle's lowered graphs (every variant artifact's sha256, OpenVINO's machine-specific blob left out)
            and the source model's sha256: two models never share an entry; a changed model or policy that changes
            a graph gets a new one.
  hardware  CPU model name, a digest of its flags, the CPUs this process may use (a GPU's name, compute capability
            and driver where a tuner measures one): another kind of machine never reuses an entry.
  versions  the engines and libraries that ran the candidates (onnxruntime, openvino, xpuruntime, the tuner's own
            version): after an upgrade nothing stale is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sqlite3
import time
from dataclasses import dataclass

from ..errors import UsageError, XrtcError

DB_ENV = "XRT_TUNING_DB"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000  # a concurrent writer holds the lock for milliseconds; 30 s covers a slow shared disk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,       -- sha256 of graph | hardware | versions | tuner
    tuner TEXT NOT NULL,        -- which tuner wrote it ("cpu-engine-options", ...)
    graph TEXT NOT NULL,
    hardware TEXT NOT NULL,
    versions TEXT NOT NULL,     -- canonical JSON {name: version}
    hardware_desc TEXT NOT NULL,  -- human-readable: "Intel Xeon ... x2 CPUs"
    model TEXT NOT NULL,        -- the source model's file name (display only)
    mode TEXT NOT NULL,         -- fast | full
    result TEXT NOT NULL,       -- canonical JSON: the winner and the candidate table
    created REAL NOT NULL       -- unix time of the measurement
);
"""


def default_path() -> str:
    """$XRT_TUNING_DB, else $XDG_CACHE_HOME/xpuruntime/tuning.sqlite, else ~/.cache/xpuruntime/tuning.sqlite."""
    from xpuruntime._session import user_cache_dir

    return user_cache_dir(DB_ENV, "tuning.sqlite")


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def cpu_fingerprint() -> tuple[str, str]:
    """(digest, description) of this CPU: model name, flags, the CPUs this process may use."""
    from xpuruntime._ort_backend import usable_cpus

    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in (platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    cpus = usable_cpus()
    flags_digest = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return _digest("host-cpu", model, flags_digest, str(cpus)), f"{model} (flags {flags_digest}), {cpus} CPUs"


def graph_signature(bundle) -> str:
    """The digest of what a bundle's variants run: source model sha256 and every variant artifact's sha256, except
    OpenVINO's compiled blob (a cache of the IR for one build and CPU, not a different graph)."""
    manifest = bundle.manifest
    digests = {s.name: s.sha256 for s in bundle.sections}
    parts = [manifest.get("provenance", {}).get("source", {}).get("sha256", "")]
    for variant in manifest["variants"]:
        for role, section in sorted(variant.get("artifacts", {}).items()):
            if role != "compiled":
                parts.append(f"{variant['id']}:{role}:{digests.get(section, '')}")
        parts.append(f"{variant['id']}:precision:{variant.get('precision')}")
    return _digest("graph", *parts)


@dataclass(frozen=True)
class Key:
    tuner: str
    graph: str
    hardware: str
    versions: dict
    hardware_desc: str = ""
    model: str = ""

    @property
    def digest(self) -> str:
        return _digest(self.tuner, self.graph, self.hardware, json.dumps(self.versions, sort_keys=True))


@dataclass(frozen=True)
class Entry:
    key: str
    tuner: str
    graph: str
    hardware: str
    versions: dict
    hardware_desc: str
    model: str
    mode: str
    result: dict
    created: float


class TuningDB:
    """The database at `path` (created with its folder on first use). Every method opens its own short
    transaction; use as a context manager or call close()."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_path()
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise UsageError(f"tuning DB {self.path} has schema {row[0]}, this xrtc reads {SCHEMA_VERSION}: "
                                 "give another --tuning-db or delete it")
        except sqlite3.DatabaseError as err:
            raise XrtcError(f"tuning DB {self.path}: {err} (not a tuning database, or unreadable: give another "
                            "--tuning-db or delete it)") from err
        except OSError as err:
            raise XrtcError(f"tuning DB {self.path}: cannot create it: {err.strerror or err}") from err

    def __enter__(self) -> "TuningDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _execute(self, sql: str, params=()):
        try:
            return self._conn.execute(sql, params)
        except sqlite3.DatabaseError as err:
            raise XrtcError(f"tuning DB {self.path}: {err}") from err

    def get(self, key: Key) -> Entry | None:
        row = self._execute("SELECT * FROM entries WHERE key = ?", (key.digest,)).fetchone()
        return _entry(row) if row else None

    def put(self, key: Key, mode: str, result: dict, created: float | None = None) -> None:
        self._execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (key.digest, key.tuner, key.graph, key.hardware, json.dumps(key.versions, sort_keys=True),
                       key.hardware_desc, key.model, mode, json.dumps(result, sort_keys=True),
                       time.time() if created is None else created))

    def entries(self) -> list[Entry]:
        return [_entry(r) for r in self._execute("SELECT * FROM entries ORDER BY created, key").fetchall()]

    def merge_from(self, other_path: str) -> int:
        """Copies `other_path`'s entries in; where both hold a key the newer measurement stays. Returns the
        number of entries taken from `other_path`."""
        if not os.path.isfile(other_path):
            raise UsageError(f"{other_path}: no such tuning DB")
        with TuningDB(other_path) as other:
            taken = 0
            for e in other.entries():
                row = self._execute("SELECT created FROM entries WHERE key = ?", (e.key,)).fetchone()
                if row is None or row[0] < e.created:
                    self._execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  (e.key, e.tuner, e.graph, e.hardware, json.dumps(e.versions, sort_keys=True),
                                   e.hardware_desc, e.model, e.mode, json.dumps(e.result, sort_keys=True), e.created))
                    taken += 1
            return taken

    def prune(self, older_than_s: float | None = None, stale_versions: dict | None = None) -> int:
        """Deletes entries measured more than `older_than_s` ago, and with `stale_versions` ({name: version} of
        this install) every entry that names one of those tools at another version (it can never be reused by
        this install). Returns how many were deleted."""
        doomed = []
        now = time.time()
        for e in self.entries():
            if older_than_s is not None and now - e.created > older_than_s:
                doomed.append(e.key)
            elif stale_versions and any(name in e.versions and e.versions[name] != version
                                        for name, version in stale_versions.items()):
                doomed.append(e.key)
        for key in doomed:
            self._execute("DELETE FROM entries WHERE key = ?", (key,))
        return len(doomed)


def _entry(row) -> Entry:
    key, tuner, graph, hardware, versions, desc, model, mode, result, created = row
    return Entry(key, tuner, graph, hardware, json.loads(versions), desc, model, mode, json.loads(result), created)
