"""The ONNX backend node test suite (onnx/backend/test/data/node) through the bundle path, next to ONNX Runtime.

For each case (a folder with model.onnx and test_data_set_*/{input,output}_*.pb) it
  1. runs ONNX Runtime directly on model.onnx and compares with the expected outputs,
  2. compiles the model into a bundle (xrtc, in-process) and, for every CPU variant, loads it with
     ``xpuruntime.load(variant=...)``, runs it and compares the same way; then once more with the runtime's default
     variant choice.
Comparison follows onnx.backend.test.runner (same count, shape, dtype; assert_allclose with rtol=1e-3, atol=1e-7;
exact equality for strings).

Each path of each case ends as one of
    pass, fail (wrong numbers/shape/dtype), error (an exception: status name + first line),
    crash (the worker process died: a finding), timeout, excluded (variant not built: the compiler's reason),
    unsupported (inputs/outputs the bundle format cannot carry: element types it has no dtype for).

Cases run in long-lived worker processes (one case at a time each, per-case timeout); a worker that dies or hangs is
killed and replaced, so one bad case cannot stop the run.

Data: the onnx wheel does not ship data/node, so the suite regenerates it from the wheel's own case generators
(onnx.backend.test.case.node, the same code onnx uses to write data/node) into a cache folder, once
(~/.cache/xrt-onnx-node/onnx-<version>/node; override with XRT_ONNX_NODE_DATA or --data, e.g. an onnx source
checkout's onnx/backend/test/data/node).

CLI (run with the installed packages, i.e. not from the repository root, or with ``python -P``):
    python -P tests/onnx_node/node_suite.py [--filter REGEX] [--limit N] [--json out.json] [-j 2] [--timeout S]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Path keys, in table order. "default" is the runtime's own variant choice (xrt.load without variant=).
ORT = "ort"
BUNDLE_ORT = "cpu-onnxruntime"
BUNDLE_OV = "cpu-openvino"
DEFAULT = "default"
PATHS = (ORT, BUNDLE_ORT, BUNDLE_OV, DEFAULT)
PATH_TITLES = {ORT: "ORT direct", BUNDLE_ORT: "bundle cpu-onnxruntime", BUNDLE_OV: "bundle cpu-openvino",
               DEFAULT: "bundle (default variant)"}
STATUSES = ("pass", "fail", "error", "crash", "timeout", "excluded", "unsupported")

RTOL, ATOL = 1e-3, 1e-7  # onnx.backend.test defaults (every generated node case uses them)

# dtypes a bundle's inputs/outputs may have (formats/xrtpkg.md, "dtype uses NumPy names").
BUNDLE_DTYPES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                 "int64", "uint64", "bool"}

DEFAULT_TIMEOUT = 180.0


# --------------------------------------------------------------------------------------------------------------
# Data


def _onnx_version() -> str:
    import onnx
    return onnx.__version__


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The node-test folder: `explicit`, $XRT_ONNX_NODE_DATA, the onnx wheel's data/node, or the generated cache
    (made on first use, ~10 s)."""
    if explicit:
        path = Path(explicit)
        if not path.is_dir():
            raise FileNotFoundError(f"--data {path}: no such folder; give an onnx/backend/test/data/node folder")
        return path
    env = os.environ.get("XRT_ONNX_NODE_DATA")
    if env:
        return data_dir(env)
    import onnx.backend.test

    shipped = Path(onnx.backend.test.__file__).parent / "data" / "node"
    if shipped.is_dir() and any(shipped.iterdir()):
        return shipped
    cache = Path.home() / ".cache" / "xrt-onnx-node" / f"onnx-{_onnx_version()}" / "node"
    if not (cache / ".complete").exists():
        generate(cache)
    return cache


def generate(dest: Path) -> None:
    """Writes every node case of the installed onnx (model.onnx + test_data_set_N/{input,output}_M.pb, as onnx's
    own data/node layout) into `dest`, atomically: a temp sibling folder renamed into place."""
    import warnings

    import onnx
    from onnx import numpy_helper
    from onnx.backend.test.case import node

    def proto(value, type_proto, name):
        kind = type_proto.WhichOneof("value")
        if kind == "sequence_type":
            return numpy_helper.from_list(value, name)
        if kind == "optional_type":
            return numpy_helper.from_optional(value, name)
        if kind == "map_type":
            return numpy_helper.from_dict(value, name)
        return value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(value, name)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".node-", dir=dest.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases()
    for case in cases:
        folder = tmp / case.name
        folder.mkdir()
        (folder / "model.onnx").write_bytes(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            ds = folder / f"test_data_set_{i}"
            ds.mkdir()
            graph = case.model.graph
            for j, value in enumerate(inputs):
                (ds / f"input_{j}.pb").write_bytes(
                    proto(value, graph.input[j].type, graph.input[j].name).SerializeToString())
            for j, value in enumerate(outputs):
                (ds / f"output_{j}.pb").write_bytes(
                    proto(value, graph.output[j].type, graph.output[j].name).SerializeToString())
    (tmp / ".complete").write_text(f"{len(cases)} cases from onnx {_onnx_version()}\n")
    try:
        tmp.rename(dest)
    except OSError:  # another process generated it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / ".complete").exists():
            raise


def list_cases(data: Path, pattern: str | None = None, limit: int | None = None) -> list[str]:
    names = sorted(p.name for p in data.iterdir() if (p / "model.onnx").is_file())
    if pattern:
        rx = re.compile(pattern)
        names = [n for n in names if rx.search(n)]
    return names[:limit] if limit else names


def sample_cases(data: Path, every: int = 40) -> list[str]:
    """A fixed, deterministic sample: every `every`-th case by sorted name."""
    return list_cases(data)[::every]


def typed_cases(data: Path) -> list[str]:
    """The cases whose graph inputs or outputs are strings, sequences, maps or optionals (by their models' types)."""
    import onnx

    names = []
    for name in list_cases(data):
        model = onnx.load(str(data / name / "model.onnx"), load_external_data=False)
        inits = {t.name for t in model.graph.initializer}
        values = [v for v in model.graph.input if v.name not in inits] + list(model.graph.output)
        if any(v.type.WhichOneof("value") != "tensor_type" or v.type.tensor_type.elem_type == onnx.TensorProto.STRING
               for v in values):
            names.append(name)
    return names


# --------------------------------------------------------------------------------------------------------------
# One case (runs inside a worker process)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if len(lines) > 1 and line.endswith("Traceback (most recent call last):"):
        # The ONNX Runtime backend forwards a whole Python traceback; its last line is the engine's message.
        line = f"{line[:-len('Traceback (most recent call last):')]}... {lines[-1]}"
    return f"{type(err).__name__}: {line}"[:400]


def _no_variant_reasons(err: BaseException) -> dict[str, str]:
    """{engine: reason} from xrtc's NoVariantError ("no CPU variant could be built: openvino: R1; onnxruntime: R2.
    Neither engine ..."; see xrtc.targets.cpu.lower), else {}."""
    if type(err).__name__ != "NoVariantError":
        return {}
    text = str(err).split("no CPU variant could be built: ", 1)[-1]
    text = text.split(". Neither engine runs the model", 1)[0]
    out = {}
    cut = text.find("; onnxruntime: ")
    if text.startswith("openvino: ") and cut > 0:
        out["openvino"] = text[len("openvino: "):cut]
        out["onnxruntime"] = text[cut + len("; onnxruntime: "):]
    return {k: " ".join(v.split())[:600] for k, v in out.items()}


def _load_value(path: Path, type_proto):
    import onnx
    from onnx import numpy_helper

    data = path.read_bytes()
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        msg = onnx.SequenceProto()
        msg.ParseFromString(data)
        return numpy_helper.to_list(msg)
    if kind == "optional_type":
        msg = onnx.OptionalProto()
        msg.ParseFromString(data)
        return numpy_helper.to_optional(msg)
    if kind == "map_type":
        msg = onnx.MapProto()
        msg.ParseFromString(data)
        return numpy_helper.to_dict(msg)
    msg = onnx.TensorProto()
    msg.ParseFromString(data)
    return numpy_helper.to_array(msg)


def _data_sets(folder: Path, model) -> list[tuple[dict, list]]:
    """[(feeds by graph-input name, expected outputs in graph-output order)] for each test_data_set_N."""
    sets = []
    graph = model.graph
    for ds in sorted(folder.glob("test_data_set_*"), key=lambda p: int(p.name.rsplit("_", 1)[1])):
        n_in = len(list(ds.glob("input_*.pb")))
        n_out = len(list(ds.glob("output_*.pb")))
        feeds = {graph.input[j].name: _load_value(ds / f"input_{j}.pb", graph.input[j].type) for j in range(n_in)}
        expected = [_load_value(ds / f"output_{j}.pb", graph.output[j].type) for j in range(n_out)]
        sets.append((feeds, expected))
    return sets


def compare(expected: list, got: list) -> str | None:
    """None when `got` matches `expected` as onnx.backend.test.runner.assert_similar_outputs would accept, else
    why not (one line)."""
    import numpy as np

    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, got)):
        if isinstance(ref, (list, tuple)) or isinstance(out, (list, tuple)):
            if not isinstance(ref, (list, tuple)) or not isinstance(out, (list, tuple)):
                return f"output {i}: got {type(out).__name__}, expected {type(ref).__name__}"
            why = compare(list(ref), list(out))
            if why:
                return f"output {i}: {why}"
            continue
        if ref is None or out is None:
            if ref is not out:
                return f"output {i}: got {type(out).__name__}, expected {type(ref).__name__}"
            continue
        out = np.asarray(out)
        ref = np.asarray(ref)
        if out.shape != ref.shape:
            return f"output {i}: shape {out.shape}, expected {ref.shape}"
        if ref.dtype == object:
            if not np.array_equal(out, ref):
                return f"output {i}: string values differ"
            continue
        if out.dtype != ref.dtype:
            return f"output {i}: dtype {out.dtype}, expected {ref.dtype}"
        rtol = RTOL
        if out.dtype.name == "bfloat16":
            rtol = max(rtol, 2 ** -6)  # as the onnx runner: two bfloat16 ULPs
        if out.dtype.name not in ("bool",) and out.dtype.kind not in "biuf":  # float8/int4 etc. (ml_dtypes)
            out, ref = out.astype(np.float32), ref.astype(np.float32)
        elif out.dtype.name == "bfloat16":
            out, ref = out.astype(np.float32), ref.astype(np.float32)
        try:
            np.testing.assert_allclose(out, ref, rtol=rtol, atol=ATOL)
        except AssertionError as err:
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            detail = "; ".join(ln for ln in lines if ln.startswith(("Mismatched", "Max absolute")))
            return f"output {i} ({out.dtype}): {detail or 'values differ'}"
    return None


def _bundle_io_problem(model) -> str | None:
    """Why the bundle format cannot carry this model's inputs/outputs, or None. Strings, sequences, maps and
    optionals are carried since xrtc 0.3 (formats/xrtpkg.md, "Value types"); the compiler's own check decides."""
    from xrtc.errors import UnsupportedModelError
    from xrtc.model_io import model_io

    try:
        model_io(model)
    except UnsupportedModelError as err:
        return str(err).split(", which")[0].split("; ")[0]
    return None


def _run_checked(run, data_sets) -> dict:
    """Runs `run(feeds) -> outputs list` on each data set; pass / fail / error."""
    for feeds, expected in data_sets:
        try:
            got = run(feeds)
        except Exception as err:  # noqa: BLE001 - every engine error is a result here
            return {"status": "error", "detail": _first_line(err)}
        why = compare(expected, got)
        if why:
            return {"status": "fail", "detail": why}
    return {"status": "pass"}


def run_case(folder: Path) -> dict:
    """Every path of one case: {"case", "paths": {path: {"status", "detail"?, "variant"?}}, "seconds"}."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    start = time.monotonic()
    paths: dict[str, dict] = {}
    result = {"case": folder.name, "paths": paths}
    model = onnx.load(str(folder / "model.onnx"))
    data_sets = _data_sets(folder, model)
    out_names = [o.name for o in model.graph.output]

    # 1. ONNX Runtime directly (its default options, as onnxruntime's own backend test does).
    def ort_load():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        return ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])

    try:
        sess = ort_load()
        paths[ORT] = _run_checked(lambda feeds: sess.run(out_names, feeds), data_sets)
    except Exception as err:  # noqa: BLE001
        paths[ORT] = {"status": "error", "detail": _first_line(err)}

    # 2. The bundle.
    problem = _bundle_io_problem(model)
    if problem:
        for key in (BUNDLE_ORT, BUNDLE_OV, DEFAULT):
            paths[key] = {"status": "unsupported", "detail": problem}
        result["seconds"] = round(time.monotonic() - start, 3)
        return result

    import xpuruntime as xrt
    from xrtc.tools.compile import compile_model

    def xrt_runner(session):
        def run(feeds):
            # Sequences (lists) and empty optionals (None) go as they are; tensors as arrays.
            arrays = {k: v if isinstance(v, list) or v is None else np.asarray(v) for k, v in feeds.items()}
            outs = session.run(arrays)
            return [outs[n] for n in out_names]
        return run

    with tempfile.TemporaryDirectory(prefix="xrt-node-") as tmp:
        bundle = os.path.join(tmp, "model.xrtpkg")
        try:
            # The suite checks every variant on the case's own data below; the gate's generated samples may not
            # suit a node case (an int input that sizes an output), so an unchecked bundle is allowed here.
            manifest = compile_model(str(folder / "model.onnx"), "cpu", bundle, allow_unverified=True).manifest
        except Exception as err:  # noqa: BLE001 - XrtcError subclasses and anything unexpected
            detail = "compile: " + _first_line(err)
            reasons = _no_variant_reasons(err)
            for key in (BUNDLE_ORT, BUNDLE_OV):
                engine = key.split("-", 1)[1]
                if engine in reasons:  # neither variant built: each is excluded with its engine's own reason
                    paths[key] = {"status": "excluded", "detail": reasons[engine]}
                else:
                    paths[key] = {"status": "error", "detail": detail}
            paths[DEFAULT] = {"status": "error", "detail": detail}
            result["seconds"] = round(time.monotonic() - start, 3)
            return result
        built = {v["id"] for v in manifest["variants"]}
        excluded = {f"{e['target']}-{e['engine']}": e["reason"] for e in manifest.get("excluded", [])}
        for key in (BUNDLE_ORT, BUNDLE_OV):
            if key not in built:
                paths[key] = {"status": "excluded", "detail": excluded.get(key, "not in the bundle")}
                continue
            try:
                session = xrt.load(bundle, variant=key)
            except Exception as err:  # noqa: BLE001
                paths[key] = {"status": "error", "detail": "load: " + _first_line(err)}
                continue
            paths[key] = _run_checked(xrt_runner(session), data_sets)
            session.close()
        try:
            session = xrt.load(bundle)
            variant = session.variant
            paths[DEFAULT] = _run_checked(xrt_runner(session), data_sets)
            paths[DEFAULT]["variant"] = variant
            session.close()
        except Exception as err:  # noqa: BLE001
            paths[DEFAULT] = {"status": "error", "detail": "load: " + _first_line(err)}
    result["seconds"] = round(time.monotonic() - start, 3)
    return result


def _worker_main(data: str) -> None:
    """Reads case names (one per line) on stdin; writes one JSON result line each on the protocol fd. Native code
    printing to stdout must not corrupt the protocol, so fd 1 is pointed at stderr."""
    import logging
    import warnings

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    warnings.simplefilter("ignore")
    logging.basicConfig(level=logging.ERROR)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    root = Path(data)
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        print(f"=== {name}", file=sys.stderr, flush=True)
        # Self-test hooks (tests/onnx_node/test_node_suite.py): prove a crash or a hang costs one case, not the run.
        if name == os.environ.get("XRT_NODE_SUITE_ABORT_ON"):
            os.abort()
        if name == os.environ.get("XRT_NODE_SUITE_HANG_ON"):
            time.sleep(3600)
        try:
            result = run_case(root / name)
        except Exception as err:  # noqa: BLE001 - a harness failure on this case; report it, keep serving
            result = {"case": name, "harness_error": _first_line(err),
                      "paths": {p: {"status": "error", "detail": "harness: " + _first_line(err)} for p in PATHS}}
        proto.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------------------------------------------
# The pool (parent side)


class _Worker:
    def __init__(self, data: Path, log_dir: Path, index: int):
        self.log_path = log_dir / f"worker-{index}.log"
        self.log = open(self.log_path, "ab")  # O_APPEND: truncating it between cases stays safe
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-P", os.path.abspath(__file__), "--worker", str(data)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, start_new_session=True,
            cwd=tempfile.gettempdir())
        self.case: str | None = None
        self.started = 0.0
        self.buffer = b""
        self.ready = False

    def send(self, name: str) -> None:
        self.log.truncate(0)
        self.case = name
        self.started = time.monotonic()
        self.proc.stdin.write((name + "\n").encode())
        self.proc.stdin.flush()

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " ".join(text[-chars:].split())

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)  # its own session: the worker and any engine child it started
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.log.close()


def run_suite(cases: list[str], data: Path, jobs: int = 2, timeout: float = DEFAULT_TIMEOUT,
              progress=None) -> list[dict]:
    """Runs `cases` on `jobs` workers; returns results in `cases` order. `progress(result, done, total)` is called
    after each case. A worker that crashes or passes `timeout` seconds on a case is killed and replaced; that
    case's not-yet-reported paths become crash/timeout."""
    pending = collections.deque(cases)
    results: dict[str, dict] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="xrt-node-logs-"))
    sel = selectors.DefaultSelector()
    workers: list[_Worker] = []
    counter = [0]

    def spawn() -> _Worker:
        counter[0] += 1
        w = _Worker(data, log_dir, counter[0])
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)
        workers.append(w)
        return w

    def retire(w: _Worker) -> None:
        sel.unregister(w.proc.stdout)
        workers.remove(w)
        w.kill()

    def finish(result: dict) -> None:
        results[result["case"]] = result
        if progress:
            progress(result, len(results), len(cases))

    def dead_case(w: _Worker, status: str, why: str) -> None:
        finish({"case": w.case, "paths": {p: {"status": status, "detail": why} for p in PATHS},
                "seconds": round(time.monotonic() - w.started, 3), "log_tail": w.log_tail()})

    def feed(w: _Worker) -> None:
        if pending:
            w.send(pending.popleft())
        else:
            w.case = None

    try:
        for _ in range(max(1, min(jobs, len(cases)))):
            spawn()
        while len(results) < len(cases):
            for key, _ in sel.select(timeout=1.0):
                w: _Worker = key.data
                chunk = os.read(w.proc.stdout.fileno(), 1 << 16)
                if not chunk:  # the worker died
                    w.proc.wait()
                    code = w.proc.returncode
                    how = f"signal {-code}" if code < 0 else f"exit status {code}"
                    if w.case:
                        dead_case(w, "crash", f"worker died ({how}) while running this case")
                    retire(w)
                    if pending:
                        spawn()
                    continue
                w.buffer += chunk
                while b"\n" in w.buffer:
                    line, w.buffer = w.buffer.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg.get("ready"):
                        w.ready = True
                    else:
                        finish(msg)
                    feed(w)
            now = time.monotonic()
            for w in list(workers):
                if w.case and now - w.started > timeout:
                    dead_case(w, "timeout", f"no result within {timeout:.0f} s")
                    retire(w)
                    if pending:
                        spawn()
            if not workers and pending:
                spawn()
    finally:
        for w in list(workers):
            retire(w)
        shutil.rmtree(log_dir, ignore_errors=True)
    return [results[c] for c in cases]


# --------------------------------------------------------------------------------------------------------------
# Reporting


def _norm_reason(detail: str) -> str:
    """Groups similar messages: quoted names, numbers and node names are blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", detail)
    text = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", text)
    text = re.sub(r"\s+", " ", text)
    return text[:180]


def summary_table(results: list[dict]) -> str:
    cols = ("cases",) + STATUSES
    rows = [("path",) + cols]
    for path in PATHS:
        counts = collections.Counter(r["paths"][path]["status"] for r in results)
        rows.append((PATH_TITLES[path], str(len(results))) + tuple(str(counts.get(s, 0)) for s in STATUSES))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    default_variants = collections.Counter(r["paths"][DEFAULT].get("variant", "-") for r in results
                                           if r["paths"][DEFAULT]["status"] in ("pass", "fail"))
    lines.append("default variant chosen (cases that ran): "
                 + ", ".join(f"{k} {v}" for k, v in sorted(default_variants.items())))
    return "\n".join(lines)


def top_reasons(results: list[dict], top: int = 15) -> str:
    lines = []
    for path in PATHS:
        groups: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        for r in results:
            entry = r["paths"][path]
            if entry["status"] in ("error", "fail", "crash", "timeout", "excluded", "unsupported"):
                groups[(entry["status"], _norm_reason(entry.get("detail", "")))].append(r["case"])
        if not groups:
            continue
        lines.append(f"{PATH_TITLES[path]}:")
        for (status, reason), names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]:
            eg = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            lines.append(f"  {len(names):4d}  {status:<11} {reason}  [{eg}]")
    return "\n".join(lines)


def regressions(results: list[dict], path: str = BUNDLE_ORT) -> list[dict]:
    """Cases ORT passes directly that `path` does not pass (excluded/unsupported included: listed, not hidden)."""
    return [r for r in results if r["paths"][ORT]["status"] == "pass" and r["paths"][path]["status"] != "pass"]


def crashes(results: list[dict]) -> list[dict]:
    return [r for r in results if any(e["status"] in ("crash", "timeout") for e in r["paths"].values())]


def report(results: list[dict]) -> str:
    out = ["ONNX backend node suite: " + str(len(results)) + " cases", "", summary_table(results), "",
           "top reasons (grouped):", top_reasons(results)]
    for path in (BUNDLE_ORT, BUNDLE_OV, DEFAULT):
        regs = [r for r in regressions(results, path) if r["paths"][path]["status"] not in ("unsupported",)]
        out += ["", f"ORT direct passes, {PATH_TITLES[path]} does not ({len(regs)}; unsupported-io not listed):"]
        for r in regs:
            e = r["paths"][path]
            out.append(f"  {r['case']}: {e['status']}: {e.get('detail', '')[:300]}")
    bad = crashes(results)
    out += ["", f"crashes/timeouts ({len(bad)}):"]
    for r in bad:
        statuses = ", ".join(f"{p}={e['status']}" for p, e in r["paths"].items() if e["status"] in ("crash", "timeout"))
        out.append(f"  {r['case']}: {statuses}; log: {r.get('log_tail', '')[-300:]}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filter", metavar="REGEX", help="only cases whose name matches (re.search)")
    parser.add_argument("--limit", type=int, help="at most N cases (after --filter)")
    parser.add_argument("--every", type=int, help="every N-th case (the pytest sample uses 40)")
    parser.add_argument("--json", metavar="OUT.json", help="write every result here")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per case (default 180)")
    parser.add_argument("--data", help="an onnx backend data/node folder (default: generated cache)")
    parser.add_argument("--worker", metavar="DATA", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main(args.worker)
        return 0
    data = data_dir(args.data)
    cases = list_cases(data, args.filter)
    if args.every:
        cases = cases[::args.every]
    if args.limit:
        cases = cases[:args.limit]
    print(f"{len(cases)} cases from {data}, {args.jobs} workers", file=sys.stderr)
    t0 = time.monotonic()

    def progress(result, done, total):
        marks = " ".join(f"{p}={result['paths'][p]['status']}" for p in PATHS)
        print(f"[{done}/{total} {time.monotonic() - t0:6.0f}s] {result['case']}: {marks}", file=sys.stderr,
              flush=True)

    results = run_suite(cases, data, args.jobs, args.timeout, progress)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnx": _onnx_version(), "data": str(data), "results": results}, f, indent=1)
    print(report(results))
    print(f"\n{len(cases)} cases in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
