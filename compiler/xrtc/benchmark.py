"""Benchmarks of a bundle (and of its peers), and their comparison against a baseline, for `xrtc bench`.

A result (bench_format 1) carries the machine fingerprint and the versions (machine.py), so a baseline from another
machine is refused unless the caller allows it: latency on a 2-core CI runner says nothing about a laptop.
Timing follows the peers' conventions (UX.md): a warm-up of `warmup_s`, then at least `iterations` runs and at least
`duration_s`; load and first-run times are reported on their own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import statistics
import threading
import time

from .errors import OtherMachineError, RegressionError, UsageError

log = logging.getLogger("xrtc.bench")

BENCH_FORMAT = 1
SAMPLES_KEPT = 2000  # latency samples kept in the result (for the report's distribution plot)


def percentiles(times_ms: list[float]) -> dict:
    times = sorted(times_ms)
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
    return {"runs": len(times), "p50": q[49], "p90": q[89], "p95": q[94], "p99": q[98], "min": times[0],
            "max": times[-1], "mean": statistics.fmean(times)}


def time_runs(run, warmup_s: float, iterations: int, duration_s: float) -> list[float]:
    """Per-run latencies (ms) of `run()` after a warm-up: at least `iterations` runs and `duration_s` seconds."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        run()
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while len(times) < iterations or time.perf_counter() < end:
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def throughput(run, concurrency: int, duration_s: float) -> float:
    """Runs per second with `concurrency` threads each calling `run()` back to back for `duration_s` (the runtime's
    run() releases the GIL and is thread-safe)."""
    counts = [0] * concurrency
    stop = time.perf_counter() + duration_s

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            run()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,), name=f"xrtc-bench-{i}") for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def rss_mib() -> float:
    """The process's resident memory now (MiB), from /proc; 0 where there is none."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_budget(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"--max-regression {text!r}: expected a percentage such as 5% (or a fraction, 0.05)") \
            from None
    if not 0 <= value < 100:
        raise UsageError(f"--max-regression {text!r}: must be between 0% and 10000%")
    return value


# Metrics compared against a baseline: (path in the result, higher is better).
COMPARED = (("latency_ms.p50", False), ("throughput.per_s", True))  # p90+ is too noisy on shared CI runners


def _get(result: dict, path: str):
    value = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def compare(result: dict, baseline: dict, budget: float, allow_other_machine: bool) -> list[dict]:
    """Rows {metric, baseline, now, change, regressed}; raises OtherMachineError for a baseline from another
    machine (unless allowed) and UsageError for a file that is not a bench result."""
    if not isinstance(baseline, dict) or baseline.get("bench_format") != BENCH_FORMAT:
        raise UsageError(f"the baseline is not an `xrtc bench --json` result (bench_format {BENCH_FORMAT})")
    ours, theirs = result["machine"]["fingerprint"], baseline.get("machine", {}).get("fingerprint")
    if ours != theirs and not allow_other_machine:
        raise OtherMachineError(
            f"the baseline was measured on another machine (fingerprint {theirs}: "
            f"{baseline.get('machine', {}).get('cpu_model', '?')}, {baseline.get('machine', {}).get('usable_cpus', '?')} "
            f"usable CPUs; this one is {ours}: {result['machine']['cpu_model']}, {result['machine']['usable_cpus']}); "
            "timings are not comparable across machines: measure a baseline here, or pass --allow-other-machine")
    rows = []
    for path, higher_better in COMPARED:
        now, then = _get(result, path), _get(baseline, path)
        if now is None or then is None or then <= 0:
            continue
        change = (now - then) / then  # + means bigger
        worse = -change if higher_better else change
        rows.append({"metric": path, "baseline": then, "now": now, "change": change, "regressed": worse > budget})
    if not rows:
        raise UsageError("the baseline has none of the compared metrics (" +
                         ", ".join(p for p, _ in COMPARED) + ")")
    return rows


def check(rows: list[dict], budget: float) -> None:
    bad = [r for r in rows if r["regressed"]]
    if bad:
        raise RegressionError("regression beyond --max-regression {:.1%}: ".format(budget) + "; ".join(
            f"{r['metric']} {r['baseline']:.4g} -> {r['now']:.4g} ({r['change']:+.1%})" for r in bad))
