"""Logging setup and stage timing for the CLI: progress goes to stderr, results to stdout.

Verbosity is counted: default INFO (each stage with its elapsed time), -v DEBUG, -q WARNING, -qq ERROR.
A stage that runs longer than `HEARTBEAT_S` logs a heartbeat so a long compile never looks hung.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

HEARTBEAT_S = 10.0

log = logging.getLogger("xrtc")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the handler was made: a caller that runs
    main() in-process with stderr redirected (a test's capture) must not leave the logger on a closed stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(verbose: int = 0, quiet: int = 0) -> int:
    """Sends the `xrtc` logger to stderr at the level chosen by the -v/-q counts; returns that level."""
    level = logging.INFO - 10 * verbose + 10 * quiet
    level = max(logging.DEBUG, min(logging.CRITICAL, level))
    log.setLevel(level)
    for handler in list(log.handlers):
        if getattr(handler, "_xrtc", False):
            log.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("[%(levelname).1s] %(message)s"))
    handler._xrtc = True  # type: ignore[attr-defined]  # marks our handler so a second main() call replaces it
    log.addHandler(handler)
    log.propagate = False
    return level


class Clock:
    """Elapsed time since the command started, for stage messages."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def stage(self, name: str, logger: logging.Logger = log) -> Iterator[None]:
        """Logs `name` when it starts (debug) and ends (info, with its duration), with a heartbeat meanwhile."""
        t0 = time.perf_counter()
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(HEARTBEAT_S):
                logger.info("[%7.2fs] %s: still running (%.0fs so far)", self.elapsed(), name,
                            time.perf_counter() - t0)

        logger.debug("[%7.2fs] %s: started", self.elapsed(), name)
        beat = threading.Thread(target=heartbeat, name=f"xrtc-heartbeat-{name}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
        logger.info("[%7.2fs] %s: done in %.2fs", self.elapsed(), name, time.perf_counter() - t0)


def quiet_third_party(level: int) -> None:
    """ONNX Runtime and graphsurgeon print their own warnings (e.g. "UnsqueezeElimination cannot remove node");
    show them only with -v."""
    import onnxruntime as ort
    from onnx_graphsurgeon.logger import G_LOGGER

    debug = level <= logging.DEBUG
    ort.set_default_logger_severity(2 if debug else 3)
    G_LOGGER.severity = G_LOGGER.WARNING if debug else G_LOGGER.ERROR
    # onnxruntime.quantization warns through the root logger ("consider pre-processing"): -v shows it.
    logging.getLogger().setLevel(logging.WARNING if debug else logging.ERROR)
    G_LOGGER.colors = False


@contextmanager
def session_progress(enabled: bool, title: str) -> Iterator[None]:
    """Progress of a compile started from the Python API (xpuruntime.InferenceSession): with `enabled`, the stage
    messages (and the heartbeat of a long stage) go to stderr as in the CLI, under a first line `title`; without
    it, nothing is printed (warnings are still recorded in the bundle's decision log). The `xrtc` logger's level,
    handlers and propagation are restored afterwards, so an application's own logging setup is left as it was."""
    root = logging.getLogger()
    saved = (log.level, list(log.handlers), log.propagate, root.level)  # quiet_third_party sets the root's level
    if enabled:
        configure_logging()
        log.info("%s", title)
    else:
        log.setLevel(logging.CRITICAL + 1)
        log.propagate = False
    try:
        yield
    finally:
        log.setLevel(saved[0])
        log.handlers[:] = saved[1]
        log.propagate = saved[2]
        root.setLevel(saved[3])


class Progress:
    """A counted progress bar for a long measurement (the tuner): each step logs `[####....] done/total what`
    at INFO on the `xrtc` logger, so -q hides it and the output stays line-based (no terminal control)."""

    WIDTH = 20

    def __init__(self, title: str, total: int, logger: logging.Logger = log) -> None:
        self.title, self.total, self.count, self.logger = title, max(1, total), 0, logger
        self.start = time.perf_counter()

    def step(self, what: str) -> None:
        self.count = min(self.total, self.count + 1)
        if what:
            filled = self.WIDTH * self.count // self.total
            self.logger.info("%s [%s%s] %d/%d %s (%.0fs)", self.title, "#" * filled, "." * (self.WIDTH - filled),
                             self.count, self.total, what, time.perf_counter() - self.start)

    def done(self) -> None:
        self.logger.info("%s: done in %.1fs", self.title, time.perf_counter() - self.start)
